"""A local Hugging Face cache standing in for the hub, under the real repo ids.

Why: the paper's pool (``modelpool=clip-vit-base-patch32_TA20``, FusionBench's TALL20 CLIP pool) and
taskpool (``clip-vit-base-patch32_fw4``) name hub repos; this writes all of them, with the real
ViT-B/32 shapes (or tiny ones) and synthetic data, so the real configs run end to end offline::

    python -m fusion_bench_fw.hub_standin --out DIR [--shards K] [--dtype bf16] [--tiny] [--tasks a,b]
    HF_HOME=DIR HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 fusion_bench method=fw_soft \\
        modelpool=clip-vit-base-patch32_TA20 taskpool=clip-vit-base-patch32_fw4

The repo list is read from FusionBench's pool config, which our TA20 config takes whole. Writing
happens in ``DIR/.hub_standin-staging`` and is moved into ``DIR/hub`` and ``DIR/datasets`` at the
end; ``DIR/hub_standin.json`` records what was written. A second call with the same options reuses
it; other options, or a DIR that holds anything else (another cache), are refused: nothing that
this writer did not create is ever deleted or mixed with stand-in files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from itertools import product
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from huggingface_hub.file_download import repo_folder_name
from omegaconf import OmegaConf

from .data import CONFIG_ROOT, dataset_repo, write_dataset_repo
from .hub_cache import DTYPES, SHAPES, write_model_repos

__all__ = ["StandinExists", "pool_repos", "write_hub_standin", "main"]

POOL_CONFIG = CONFIG_ROOT / "modelpool" / "CLIPVisionModelPool" / "clip-vit-base-patch32_TALL20.yaml"
MARKER, STAGING = "hub_standin.json", ".hub_standin-staging"
WRITER_VERSION = 2  # 2: no all-zero tensors (biases, LayerNorm shifts); a stand-in of another version is refused, not reused
COMMAND = "fusion_bench method=fw_soft modelpool=clip-vit-base-patch32_TA20 taskpool=clip-vit-base-patch32_fw4"


class StandinExists(FileExistsError):
    """DIR already holds another stand-in, or repos this writer did not write."""


def pool_repos() -> tuple:
    """(pretrained repo, {task: fine-tune repo}) of FusionBench's TALL20 CLIP pool config."""
    config = OmegaConf.to_container(OmegaConf.load(POOL_CONFIG))
    models = dict(config["models"])
    pretrained = models.pop("_pretrained_")
    if config["processor"] != pretrained:
        raise NotImplementedError(f"the pool's processor {config['processor']} is not its pretrained model {pretrained}")
    return pretrained, models


def _disk_check(out: Path):
    def check(needed: int) -> None:
        free = shutil.disk_usage(out).free
        if free < 1.1 * needed:
            raise OSError(f"the stand-in needs about {needed / 1e9:.1f} GB; {out} has {free / 1e9:.1f} GB free")

    return check


def _write_marker(out: Path, record: dict) -> None:
    partial = out / (MARKER + ".partial")
    partial.write_text(json.dumps(record, indent=1))
    os.replace(partial, out / MARKER)


def write_hub_standin(out: Path, *, shards: int = 1, dtype: str = "fp32", tasks: Optional[Sequence[str]] = None, rows_per_split: int = 8,
                      shape: str = "vit-b-32", seed: int = 0) -> Dict:
    """Write the stand-in under ``out`` (models of ``tasks``, default all 20; datasets of all 20
    tasks); returns a summary: repo ids, bytes, the env to use and the command."""
    pretrained, finetunes = pool_repos()
    tasks = list(finetunes) if tasks is None else list(tasks)
    unknown = sorted(set(tasks) - set(finetunes))
    if unknown or int(shards) < 1 or dtype not in DTYPES or shape not in SHAPES or int(rows_per_split) < 1:
        raise ValueError(f"invalid options: unknown tasks {unknown} (pool tasks: {', '.join(finetunes)}), shards={shards} (>= 1), "
                         f"dtype={dtype!r} ({', '.join(DTYPES)}), shape={shape!r} ({', '.join(SHAPES)}), rows_per_split={rows_per_split} (>= 1)")
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    params = dict(shards=int(shards), dtype=dtype, tasks=sorted(tasks), rows_per_split=int(rows_per_split), shape=shape, seed=int(seed), version=WRITER_VERSION)
    marker = out / MARKER
    if marker.exists():
        record = json.loads(marker.read_text())
        if record.get("state") == "complete":
            if record["params"] == params:
                return {**record["summary"], "reused": True}
            differ = [k for k in params if record["params"].get(k) != params[k]]
            written, asked = (", ".join(f"{k}={p.get(k)!r}" for k in differ) for p in (record["params"], params))
            raise StandinExists(f"{out} already holds a hub stand-in written with {written}, not {asked}: use another --out, or delete {out} yourself")
        for relative in record.get("paths", []):  # an interrupted move: these repo folders were created by this writer
            if relative.split("/")[0] in ("hub", "datasets") and ".." not in Path(relative).parts:
                shutil.rmtree(out / relative, ignore_errors=True)
    else:  # stand-in repos must never mix with another cache's (a real download would shadow or be shadowed)
        foreign = sorted(p.name for p in out.iterdir() if p.name not in (STAGING, MARKER + ".partial"))
        if foreign:
            raise StandinExists(f"{out} is not empty ({', '.join(foreign[:4])}) and was not written by this writer: use an empty or new --out")
    selected = {t: repo for t, repo in finetunes.items() if t in tasks}
    model_repos = [pretrained, *selected.values()]
    data_repos = [dataset_repo(task) for task in finetunes]
    hub_paths = [f"hub/{repo_folder_name(repo_id=r, repo_type='model')}" for r in model_repos]
    hub_paths += [f"hub/{repo_folder_name(repo_id=r.repo_id, repo_type='dataset')}" for r in data_repos]
    paths = hub_paths + [f"datasets/{r.cache_folder}" for r in data_repos]
    clashes = [p for p in paths if os.path.lexists(out / p)]
    if clashes:
        raise StandinExists(f"{out} already holds {', '.join(clashes[:4])}{' ...' if len(clashes) > 4 else ''}, not written by this writer: use an empty or new --out")
    staging = out / STAGING
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted run of this writer
    hub_dir, datasets_dir, scratch = staging / "hub", staging / "datasets", staging / "scratch"
    fingerprint = json.dumps(params, sort_keys=True)
    revision = lambda kind, repo_id: hashlib.sha1(f"hub-standin|{kind}|{repo_id}|{fingerprint}".encode()).hexdigest()

    from fusion_bench.tasks.clip_classification import get_classnames_and_templates

    names = {task: get_classnames_and_templates(task) for task in finetunes}
    prompts = [template(c) for classnames, templates in names.values() for c, template in product(classnames, templates)]
    write_model_repos(hub_dir, scratch, pretrained_repo=pretrained, finetune_repos=selected,
                      revisions={r: revision("model", r) for r in model_repos}, prompts=prompts, shape=shape, dtype=dtype,
                      shards=int(shards), seed=int(seed), check_space=_disk_check(out))
    for repo in data_repos:
        write_dataset_repo(repo, names[repo.task][0], hub_dir=hub_dir, datasets_dir=datasets_dir, scratch=scratch / "datasets",
                           revision=revision("dataset", repo.repo_id), rows=int(rows_per_split), seed=int(seed))
    size = sum(f.stat().st_size for p in paths for f in (staging / p).rglob("*") if f.is_file() and not f.is_symlink())
    _write_marker(out, {"state": "moving", "params": params, "paths": paths})
    for relative in paths:
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / relative, out / relative)
    shutil.rmtree(staging)
    env = {"HF_HOME": str(out), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    summary = {"out": str(out), "params": params, "models": model_repos, "datasets": [r.repo_id for r in data_repos], "bytes": size,
               "env": env, "command": " ".join(f"{k}={v}" for k, v in env.items()) + " " + COMMAND, "reused": False}
    _write_marker(out, {"state": "complete", "params": params, "paths": paths, "summary": summary})
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusion_bench_fw.hub_standin", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the directory to use as HF_HOME")
    parser.add_argument("--shards", type=int, default=1, help="safetensors files per model (>1: sharded with an index json)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--tiny", action="store_true", help="tiny towers (tests) instead of the real ViT-B/32 shapes")
    parser.add_argument("--tasks", default=None, help="comma-separated fine-tunes to write (default: all 20 of the pool)")
    parser.add_argument("--rows", type=int, default=8, help="synthetic rows per dataset split")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    try:
        summary = write_hub_standin(Path(args.out), shards=args.shards, dtype=args.dtype, tasks=tasks, rows_per_split=args.rows,
                                    shape="tiny" if args.tiny else "vit-b-32", seed=args.seed)
    except (StandinExists, ValueError) as error:
        print(f"hub_standin: {error}", file=sys.stderr)
        return 2
    state = "reused the stand-in already" if summary["reused"] else "wrote a stand-in"
    print(f"{state} in {summary['out']}: {len(summary['models'])} model repos, {len(summary['datasets'])} datasets, {summary['bytes'] / 1e6:.1f} MB")
    overridden = [v for v in ("HF_HUB_CACHE", "HF_DATASETS_CACHE") if v in os.environ]
    if overridden:
        print(f"note: {', '.join(overridden)} is set here and overrides HF_HOME; unset it for the run", file=sys.stderr)
    print("run with:\n  " + summary["command"])
    return 0
