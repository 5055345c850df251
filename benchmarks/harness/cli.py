"""The command-line options the measuring scripts share (work dir, threads, guards, output, re-render)."""

from __future__ import annotations

import argparse
from pathlib import Path


def parser(doc: str) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` whose description is the script's docstring."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_common(parser: argparse.ArgumentParser, out_default: Path) -> None:
    parser.add_argument("--work-dir", default="/tmp/fw_cost", help="the hub stand-ins (hf-standin-<variant>/, written once: fp32 ~7.6 GB, bf16 ~3.8 GB; "
                        "see _standin_pool.py) and the smoke runs' results")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads (1: steadier timings on a shared machine)")
    parser.add_argument("--out", default=str(out_default), help="results path without suffix: writes .json, .md and .png")
    parser.add_argument("--report-only", action="store_true", help="re-render .md and .png from the existing .json, measure nothing")


def add_runs(parser: argparse.ArgumentParser, experiment: str) -> None:
    """``--runs``: where the per-run folders (configs, logs, full trajectories) go. Outside
    ``benchmarks/results/``, which holds only the committed summaries, tables and plots."""
    from .machine import ROOT

    parser.add_argument("--runs", default=str(ROOT / "outputs" / "benchmarks" / experiment), help="per-run folders (not committed)")


def add_child(parser: argparse.ArgumentParser) -> None:
    """Options of scripts that measure in child processes."""
    parser.add_argument("--mem-guard-gb", type=float, default=21.5, help="kill a child whose RSS passes this")
    parser.add_argument("--min-available-gb", type=float, default=1.5, help="kill a child when the machine's MemAvailable drops below this")
    parser.add_argument("--child-timeout", type=float, default=1200, help="seconds")
    parser.add_argument("--scratch-dir", default="/tmp/fw_cost_runs", help="per-child run folders and logs")
    parser.add_argument("--no-freeze", action="store_true", help="children import the live tree instead of a frozen copy")
    parser.add_argument("--child-spec", help=argparse.SUPPRESS)
