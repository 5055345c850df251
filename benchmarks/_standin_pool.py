"""The pool of ``cost_methods.py`` and ``cost_lmo.py``: the real TA20 pool config on the hub stand-in.

What is measured is what users run: ``modelpool=clip-vit-base-patch32_TA20`` (FusionBench's TALL20
CLIP pool config, taken whole), composed by Hydra from the installed configs and instantiated as
FusionBench's program instantiates it, every entry resolved offline through a local Hugging Face
cache that ``fusion_bench_fw.hub_standin`` writes under the real repo ids (the real ViT-B/32 shapes,
or tiny ones for smoke runs; fp32 in one file, or e.g. bf16 in 2 shards). The stand-in is written
once, in a child process, to ``<--work-dir>/hf-standin-<variant>`` (or ``--standin-dir``) and reused
(the writer reuses a directory written with the same options and refuses any other).

Pool of n = the first n fine-tunes in the config's order (sun397, stanford-cars, resisc45, eurosat,
svhn, gtsrb, ...): Hydra deletion overrides on the composed config, the ones a user would type on
the CLI, for every later task::

    '~modelpool.models.<task>' '~modelpool.train_datasets.<task>' '~modelpool.test_datasets.<task>'

The test sets a method may read are cut by a split-slice override,
``modelpool.test_datasets.<task>.split='test[:k]'`` (the config's own split name, sliced): FusionBench's
fw_soft reads test data in its AdaMerging inner loop, so its k = the FW samples per task (equal
samples); AdaMerging reads max(S, n) test images split over the n tasks (S = samples of one FW
gradient). The objective tasks are the first 4 of the pool, so they are in the pool at every n >= 4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

POOL = "clip-vit-base-patch32_TA20"
OBJECTIVE_TASKS = 4
# variables that override HF_HOME (huggingface_hub and datasets read them first)
OVERRIDING = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "TRANSFORMERS_CACHE", "HF_ASSETS_CACHE")


@dataclass(frozen=True)
class Variant:
    """How the stand-in is written: ``hub_standin``'s options."""

    dtype: str = "fp32"
    shards: int = 1
    tiny: bool = False
    rows: int = 8  # synthetic rows per dataset split

    @property
    def tag(self) -> str:
        """'fp32', 'bf16_2shards', 'fp32_tiny', ...: names the stand-in directory and the result files."""
        return self.dtype + (f"_{self.shards}shards" if self.shards > 1 else "") + ("_tiny" if self.tiny else "")

    def describe(self) -> str:
        layout = "one safetensors file" if self.shards == 1 else f"{self.shards} safetensors shards (model.safetensors.index.json)"
        return f"{self.dtype}, {layout} per model, {'tiny towers' if self.tiny else 'CLIP ViT-B/32 shapes'}, {self.rows} rows per dataset split"

    def cli_args(self) -> List[str]:
        return ["--shards", str(self.shards), "--dtype", self.dtype, "--rows", str(self.rows)] + (["--tiny"] if self.tiny else [])


def add_options(parser) -> None:
    parser.add_argument("--standin-dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="dtype of the stand-in's checkpoints")
    parser.add_argument("--standin-shards", type=int, default=1, help="safetensors files per model (>1: sharded, with an index)")
    parser.add_argument("--standin-rows", type=int, default=8, help="rows per dataset split of the stand-in (>= the samples any method reads per task)")
    parser.add_argument("--standin-dir", default=None, help="the stand-in (HF_HOME) to use or write; default <work-dir>/hf-standin-<variant>")
    parser.add_argument("--tiny", action="store_true", help="tiny towers instead of ViT-B/32 (smoke runs; results under <work-dir>/results)")


def from_args(args) -> Tuple[Variant, Path]:
    variant = Variant(args.standin_dtype, int(args.standin_shards), bool(args.tiny), int(args.standin_rows))
    directory = Path(args.standin_dir) if args.standin_dir else Path(args.work_dir) / f"hf-standin-{variant.tag}"
    return variant, directory.expanduser().resolve()


def hf_env(directory: Path) -> Dict[str, str]:
    return {"HF_HOME": str(directory), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def child_env(env: Mapping[str, str], directory: Path) -> Dict[str, str]:
    """``env`` pointed at the stand-in, without the variables that would override HF_HOME."""
    return {**{k: v for k, v in env.items() if k not in OVERRIDING}, **hf_env(directory)}


def use_in_this_process(directory: Path) -> None:
    """Point this process's Hugging Face libraries at the stand-in; they read the environment at import."""
    imported = [m for m in ("huggingface_hub", "datasets", "transformers") if m in sys.modules]
    if imported:
        raise RuntimeError(f"{', '.join(imported)} imported before the stand-in's HF_HOME was set: they would read another cache")
    for key in OVERRIDING:
        os.environ.pop(key, None)
    os.environ.update(hf_env(directory))


def ensure(directory: Path, variant: Variant, env: Mapping[str, str]) -> Dict:
    """Write the stand-in (``python -m fusion_bench_fw.hub_standin``, a child process) unless it is
    there; its summary (``hub_standin.json``)."""
    command = [sys.executable, "-m", "fusion_bench_fw.hub_standin", "--out", str(directory), *variant.cli_args()]
    directory.parent.mkdir(parents=True, exist_ok=True)
    if not (directory / "hub_standin.json").exists():
        print(f"writing the hub stand-in ({variant.describe()}) to {directory}: "
              + ("seconds" if variant.tiny else "a few minutes, about 7.6 GB in fp32, 3.8 GB in bf16"), flush=True)
    result = subprocess.run(command, env={k: v for k, v in env.items() if k not in OVERRIDING}, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"writing the hub stand-in failed ({' '.join(command)}):\n{result.stderr[-3000:]}")
    print(result.stdout.splitlines()[0] if result.stdout else f"stand-in in {directory}", flush=True)
    return json.loads((directory / "hub_standin.json").read_text())["summary"]


def pool_tasks() -> List[str]:
    """The fine-tunes of the pool config, in its order (the stand-in's list: FusionBench's TALL20 config)."""
    from fusion_bench_fw.hub_standin import pool_repos

    return list(pool_repos()[1])


def snapshot(directory: Path, repo_id: str) -> Path:
    """The snapshot folder of ``repo_id`` in the stand-in's hub cache (as huggingface_hub finds it)."""
    root = Path(directory) / "hub" / ("models--" + repo_id.replace("/", "--"))
    return root / "snapshots" / (root / "refs" / "main").read_text().strip()


def checkpoint_files(directory: Path, tasks: Sequence[str]) -> List[Path]:
    """The safetensors files (every shard) of the fine-tunes of ``tasks``, in order."""
    from fusion_bench_fw.checkpoint_files import safetensors_weight_map
    from fusion_bench_fw.hub_standin import pool_repos

    repos = pool_repos()[1]
    files: List[Path] = []
    for task in tasks:
        weight_map, why = safetensors_weight_map(snapshot(directory, repos[task]))
        if not weight_map:
            raise FileNotFoundError(f"{task}: {why}")
        files += sorted(set(weight_map.values()))
    return files


def checkpoint_bytes(directory: Path, task: str) -> int:
    return sum(f.stat().st_size for f in checkpoint_files(directory, [task]))


def ada_split(n: int, total: int) -> List[int]:
    """Per-task test-set sizes for AdaMerging over n tasks: ``total`` samples in all, as even as possible."""
    base, extra = divmod(total, n)
    sizes = [base + (1 if i < extra else 0) for i in range(n)]
    if min(sizes) < 1:
        raise ValueError(f"cannot split {total} samples over {n} tasks")
    return sizes


def selection_overrides(tasks: Sequence[str], n: int, test_splits: Mapping[str, str], test_rows: Mapping[str, int]) -> List[str]:
    """Hydra overrides: the pool config, every task after the first n deleted, and the test splits of
    ``test_rows``'s tasks cut to that many rows (``test_splits``: each task's split name in the config)."""
    if not 1 <= n <= len(tasks):
        raise ValueError(f"n={n}: the pool has {len(tasks)} fine-tunes")
    unknown = sorted(set(test_rows) - set(tasks[:n]))
    if unknown:
        raise ValueError(f"test rows for tasks outside the first {n}: {unknown}")
    overrides = [f"modelpool={POOL}"]
    for task in tasks[n:]:
        overrides += [f"~modelpool.models.{task}", f"~modelpool.train_datasets.{task}", f"~modelpool.test_datasets.{task}"]
    overrides += [f"modelpool.test_datasets.{task}.split='{test_splits[task]}[:{int(rows)}]'" for task, rows in test_rows.items()]
    return overrides


def compose_modelpool(n: int, test_rows: Mapping[str, int]) -> Tuple[object, List[str], List[str]]:
    """(the modelpool config of the first n models, its Hydra overrides, the first n tasks), composed
    from FusionBench's ``fabric_model_fusion`` with our config search path, as the CLI composes it."""
    from hydra import compose, initialize_config_dir

    import fusion_bench_config

    root = str(Path(list(fusion_bench_config.__path__)[0]))
    with initialize_config_dir(root, version_base=None):
        full = compose("fabric_model_fusion", overrides=[f"modelpool={POOL}"]).modelpool
        tasks = [name for name in full.models if name != "_pretrained_"]
        overrides = selection_overrides(tasks, n, {t: str(full.test_datasets[t].split) for t in test_rows}, test_rows)
        config = compose("fabric_model_fusion", overrides=overrides).modelpool
    if [name for name in config.models if name != "_pretrained_"] != tasks[:n]:
        raise RuntimeError(f"the overrides left {list(config.models)}, not the first {n} of {tasks}")
    return config, overrides, tasks[:n]


def make_modelpool(n: int, test_rows: Mapping[str, int]):
    """FusionBench's CLIPVisionModelPool of the first n models, instantiated as its program does."""
    from fusion_bench.utils import instantiate

    config, overrides, tasks = compose_modelpool(n, test_rows)
    pool = instantiate(config, _recursive_=config.get("_recursive_", False))
    if list(pool.model_names) != tasks:
        raise RuntimeError(f"the pool holds {pool.model_names}, not the first {n} tasks {tasks}")
    return pool, overrides


def settings(directory: Path, variant: Variant, summary: Optional[Dict] = None) -> Dict:
    """What the result files record about the pool."""
    tasks = pool_tasks()
    return {"kind": "hub_standin", "config": f"modelpool={POOL}", "variant": variant.tag, **asdict(variant), "dir": str(directory),
            "selection": "first n fine-tunes of the config: Hydra deletion overrides ~modelpool.{models,train_datasets,test_datasets}.<task> "
                         "for the later tasks; test splits cut with modelpool.test_datasets.<task>.split='<split>[:rows]'",
            "tasks": tasks, "objective_tasks": tasks[:OBJECTIVE_TASKS], "files_per_checkpoint": len(checkpoint_files(directory, tasks[:1])),
            "bytes_per_checkpoint": checkpoint_bytes(directory, tasks[0]), "bytes": (summary or {}).get("bytes")}
