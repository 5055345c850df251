"""The dataset side of the stand-in: each pool task's dataset, where its FusionBench config loads it.

Which repo, builder config, split names and columns each task needs is read from FusionBench's own
dataset configs (``fusion_bench_config/dataset/image_classification/{train,test}/<task>.yaml``), so
the stand-in follows them (e.g. svhn is ``load_dataset("svhn", "cropped_digits")``, food101's test
split is ``validation``, fer2013's loader renames webdataset columns ``jpg``/``cls``).

Two caches are written, as a first online ``load_dataset`` leaves them: the hub dataset repo
(parquet files + a README with the features, ``datasets--ORG--NAME``) and the prepared Arrow cache
(``datasets/ORG___NAME/<config>/0.0.0/<revision>``). The second is the one that matters offline:
datasets 4.x raises on any hub access when ``HF_HUB_OFFLINE=1`` and then only looks for a prepared
cache (``CachedDatasetModuleFactory``); a hub repo alone fails with "Couldn't reach ... on the Hub".
The prepared cache is built from the parquet files by datasets' own Parquet builder, configured as
the hub path configures it (one predefined builder config), so its layout is the library's.
"""

from __future__ import annotations

import inspect
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Tuple

import datasets
import numpy as np
from datasets import ClassLabel, Dataset, Features, Image, Value
from datasets.data_files import DataFilesDict
from datasets.info import DatasetInfosDict
from datasets.naming import camelcase_to_snakecase
from datasets.packaged_modules.parquet.parquet import Parquet, ParquetConfig
from huggingface_hub import DatasetCardData
from omegaconf import OmegaConf
from PIL import Image as PILImage

import fusion_bench_config

from .hub_cache import HubRepo

CONFIG_ROOT = Path(list(fusion_bench_config.__path__)[0])
IMAGE_SIDE = 32  # the processor resizes to 224


@dataclass(frozen=True)
class DatasetRepo:
    task: str
    repo_id: str
    config_name: str
    splits: Tuple[str, ...]  # the split names the train and test configs ask for
    columns: Tuple[str, str] = ("image", "label")  # (image, label) as stored in the repo
    extra_columns: Tuple[str, ...] = ()  # string columns the loader drops

    @property
    def cache_folder(self) -> str:
        """The prepared cache's top folder, named as datasets names it (``ORG___snake_name``)."""
        *namespace, name = self.repo_id.split("/")
        return "___".join(namespace + [camelcase_to_snakecase(name)])


def _location(spec: dict) -> Tuple[str, str, Tuple[str, str], Tuple[str, ...]]:
    target, args = spec["_target_"], list(spec.get("_args_", []))
    if target == "datasets.load_dataset":
        path = spec.get("path", args[0] if args else None)
        return path, spec.get("name", args[1] if len(args) > 1 else None) or "default", ("image", "label"), ()
    if target == "fusion_bench.dataset.fer2013.load_fer2013":
        from fusion_bench.dataset.fer2013 import load_fer2013

        # a webdataset repo: load_fer2013 renames jpg/cls to image/label and drops __key__/__url__
        return spec.get("path", inspect.signature(load_fer2013).parameters["path"].default), "default", ("jpg", "cls"), ("__key__", "__url__")
    raise NotImplementedError(f"no stand-in for datasets loaded by {target}")


def dataset_repo(task: str) -> DatasetRepo:
    specs = [OmegaConf.to_container(OmegaConf.load(CONFIG_ROOT / "dataset" / "image_classification" / kind / f"{task}.yaml"))[task] for kind in ("train", "test")]
    locations = {_location(spec) for spec in specs}
    if len(locations) != 1:
        raise NotImplementedError(f"{task}: its train and test configs load different repos ({locations})")
    (path, config_name, columns, extra), = locations
    splits = tuple(dict.fromkeys(str(spec["split"]) for spec in specs))
    return DatasetRepo(task, path, config_name, splits, columns, extra)


def _rows(repo: DatasetRepo, classnames: Sequence[str], split: str, count: int, seed: int) -> dict:
    rng = np.random.default_rng([seed, zlib.crc32(f"{repo.task}/{split}".encode())])
    pixels = rng.integers(0, 256, size=(count, IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)
    image, label = repo.columns
    rows = {name: [f"{split}/{i:06d}" for i in range(count)] for name in repo.extra_columns}
    rows[image] = [PILImage.fromarray(p) for p in pixels]
    rows[label] = [i % len(classnames) for i in range(count)]
    return rows


@contextmanager
def _quiet():
    """datasets' progress bars off (one per split and file: noise for 8 rows), then as they were."""
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


@_quiet()
def write_dataset_repo(repo: DatasetRepo, classnames: Sequence[str], *, hub_dir: Path, datasets_dir: Path, scratch: Path, revision: str, rows: int, seed: int) -> None:
    """Parquet files in the hub repo ``repo.repo_id`` and their prepared Arrow cache under ``datasets_dir``."""
    image, label = repo.columns
    features = Features({**{c: Value("string") for c in repo.extra_columns}, image: Image(), label: ClassLabel(names=list(classnames))})
    prefix = "data" if repo.config_name == "default" else repo.config_name  # where push_to_hub puts each config
    staged = scratch / repo.cache_folder
    for split in repo.splits:
        (staged / prefix).mkdir(parents=True, exist_ok=True)
        Dataset.from_dict(_rows(repo, classnames, split, rows, seed), features=features).to_parquet(str(staged / prefix / f"{split}-00000-of-00001.parquet"))
    files = DataFilesDict.from_patterns({split: [f"{prefix}/{split}-*.parquet"] for split in repo.splits}, base_path=str(staged))
    # what the hub path builds: a Parquet builder whose one predefined config holds the repo's files
    builder_class = type("Parquet", (Parquet,), {"BUILDER_CONFIGS": [ParquetConfig(name=repo.config_name, data_files=files)], "__module__": Parquet.__module__})
    builder = builder_class(cache_dir=str(datasets_dir), dataset_name=camelcase_to_snakecase(repo.repo_id.split("/")[-1]), repo_id=repo.repo_id, hash=revision, config_name=repo.config_name)
    if Path(builder.cache_dir).relative_to(datasets_dir).parts[0] != repo.cache_folder:
        raise RuntimeError(f"datasets prepares {repo.repo_id} in {builder.cache_dir}, not under {repo.cache_folder}")
    builder.download_and_prepare()
    card = DatasetCardData()
    DatasetInfosDict({repo.config_name: builder.info}).to_dataset_card_data(card)
    card["configs"] = [{"config_name": repo.config_name, "data_files": [{"split": s, "path": f"{prefix}/{s}-*"} for s in repo.splits]}]
    (staged / "README.md").write_text(f"---\n{card.to_yaml()}\n---\n\nHub stand-in for {repo.repo_id}: {rows} synthetic rows per split (fusion_bench_fw.hub_standin).\n")
    HubRepo(hub_dir, repo.repo_id, revision, repo_type="dataset").add_directory(staged)
