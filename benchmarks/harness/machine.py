"""Where a number came from: the machine, the commit of the code and the exact command line.

Every result row records these, so a number in a report can be traced and re-run.
"""

from __future__ import annotations

import importlib.metadata
import os
import shlex
import sys
from pathlib import Path
from typing import Dict

ROOT = Path(__file__).resolve().parents[2]
def commit_of(tree: Path = ROOT) -> str:
    """Short HEAD of ``tree``, with ``+dirty`` when the code that runs differs from it."""
    from fusion_bench_fw.compare import source_commit

    return source_commit(tree)


def command_line(prefix: str = "") -> str:
    """This invocation as one would type it in the repository root (``prefix``: e.g. environment variables)."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    python = ".venv/bin/python" if Path(sys.executable).parent.parent.name == ".venv" else "python"
    return " ".join(part for part in (prefix, python, shlex.join([str(script), *sys.argv[1:]])) if part)


def _first_line(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def describe() -> Dict[str, str]:
    """The machine and library versions (``compare.machine_description``'s keys, plus CPU model,
    package versions and the GPU), as strings."""
    import torch

    from fusion_bench_fw.compare import machine_description

    info = dict(machine_description())
    info["cpu_model"] = _first_line("/proc/cpuinfo", "model name")
    for package in ("fusion-bench", "transformers", "lightning"):
        try:
            info[package.replace("-", "_")] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    if hasattr(os, "sched_getaffinity"):
        info["usable_cores"] = str(len(os.sched_getaffinity(0)))
    return info


def one_line(machine: Dict[str, str]) -> str:
    """'Intel Xeon, 2 cores, 23.5 GiB RAM, GPU ...; Python ..., torch ..., fusion-bench ...; platform'."""
    hardware = [machine.get("cpu_model") or "CPU", f"{machine.get('cpu_cores')} cores", f"{machine.get('memory_gib')} GiB RAM", machine.get("gpu") or "no GPU"]
    versions = [f"{name} {machine[key]}" for name, key in (("Python", "python"), ("torch", "torch"), ("fusion-bench", "fusion_bench"), ("transformers", "transformers"), ("lightning", "lightning")) if machine.get(key)]
    return ", ".join(hardware) + "; " + ", ".join(versions) + (f"; {machine['platform']}" if machine.get("platform") else "")
