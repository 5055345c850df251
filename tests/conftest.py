"""Shared fixtures. Tests run offline on the CPU."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Dict, Optional  # noqa: E402

import pytest  # noqa: E402

# --- algorithm-test fixtures (FW adapters) ---


@dataclass
class MicroPool:
    """The micro mini-pool build, and plain FusionBench CLIPVisionModelPools made from it."""

    build_dir: Path
    cache_dir: Path

    @property
    def manifest(self):
        from fusion_bench_fw.mini.manifest import load_manifest

        return load_manifest(self.build_dir)

    @property
    def eval_tasks(self):
        return list(self.manifest.eval_tasks)

    @property
    def chance_level(self) -> float:
        m = self.manifest
        return sum(1.0 / len(m.classnames[t]) for t in m.eval_tasks) / len(m.eval_tasks)

    def make_modelpool(self, extra_models: Optional[Dict[str, str]] = None, drop_pretrained: bool = False):
        from omegaconf import DictConfig

        from fusion_bench.modelpool import CLIPVisionModelPool
        from fusion_bench_fw.mini.registry import register_tasks

        m = self.manifest
        register_tasks(m.classnames, m.templates)
        models = {} if drop_pretrained else {"_pretrained_": m.pretrained_dir}
        models.update(m.models)
        models.update(extra_models or {})

        def datasets(split):
            return {t: {"_target_": "datasets.load_from_disk", "dataset_path": d[split]} for t, d in m.datasets.items()}

        return CLIPVisionModelPool(
            DictConfig(models),
            train_datasets=DictConfig(datasets("train")),
            test_datasets=DictConfig(datasets("test")),
            processor=m.processor_dir,
        )


@pytest.fixture(scope="session")
def micro_cache_dir(tmp_path_factory) -> Path:
    configured = os.environ.get("FUSION_BENCH_FW_CACHE")
    return Path(configured) if configured else tmp_path_factory.mktemp("fw_cache")


@pytest.fixture(scope="session")
def micro_pool(micro_cache_dir) -> MicroPool:
    import torch

    from fusion_bench_fw.mini import ensure_built

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    return MicroPool(build_dir=Path(ensure_built("micro", seed=0, cache_dir=micro_cache_dir)), cache_dir=micro_cache_dir)


# --- end of algorithm-test fixtures ---


# --- mini pool fixtures ---
# Self-contained: the offline mini pool (fusion_bench_fw.mini) built once per session into its own
# temporary cache; tests/test_mini_*.py use these.


@pytest.fixture(scope="session")
def mini_cache_dir(micro_cache_dir) -> Path:
    """The session's cache root for the mini pool (never the user's ~/.cache unless
    FUSION_BENCH_FW_CACHE says so): the same as the algorithm tests', so one run builds the micro
    pool once."""
    return micro_cache_dir


@pytest.fixture(scope="session")
def mini_micro_dir(mini_cache_dir) -> Path:
    """The build directory of the micro variant, seed 0."""
    from fusion_bench_fw.mini import ensure_built

    return ensure_built("micro", seed=0, cache_dir=mini_cache_dir)


@pytest.fixture(scope="session")
def mini_micro_manifest(mini_micro_dir):
    from fusion_bench_fw.mini import load_manifest

    return load_manifest(mini_micro_dir)


@pytest.fixture(scope="session")
def mini_micro_card(mini_micro_dir) -> dict:
    import json

    return json.loads((mini_micro_dir / "card.json").read_text())


# --- end of mini pool fixtures ---


# --- mini LLM pool fixtures ---


@pytest.fixture(scope="session")
def llm_micro_dir(micro_cache_dir) -> Path:
    """The build directory of the mini causal-LM pool's micro variant, seed 0 (about a minute on 2 cores)."""
    from fusion_bench_fw.mini_llm.build import ensure_llm_built

    return ensure_llm_built("micro", seed=0, cache_dir=micro_cache_dir)


@pytest.fixture(scope="session")
def llm_micro_card(llm_micro_dir) -> dict:
    import json

    return json.loads((llm_micro_dir / "card.json").read_text())


# --- mini GLUE pool fixtures ---


@pytest.fixture(scope="session")
def glue_micro_dir(micro_cache_dir) -> Path:
    """The build directory of the mini GLUE (GPT-2) pool's micro variant, seed 0 (under a minute on 2 cores)."""
    from fusion_bench_fw.mini_glue.build import ensure_glue_built

    return ensure_glue_built("micro", seed=0, cache_dir=micro_cache_dir)


@pytest.fixture(scope="session")
def glue_micro_card(glue_micro_dir) -> dict:
    import json

    return json.loads((glue_micro_dir / "card.json").read_text())


@pytest.fixture(scope="session")
def t5_micro_dir(micro_cache_dir) -> Path:
    """The build directory of the mini T5 GLUE pool's micro variant, seed 0 (about a minute on 2 cores)."""
    from fusion_bench_fw.mini_t5.build import ensure_t5_built

    return ensure_t5_built("micro", seed=0, cache_dir=micro_cache_dir)


@pytest.fixture(scope="session")
def t5_micro_card(t5_micro_dir) -> dict:
    import json

    return json.loads((t5_micro_dir / "card.json").read_text())


# --- mini OpenCLIP pool fixtures ---


@pytest.fixture(scope="session")
def openclip_micro_dir(micro_cache_dir) -> Path:
    """The mini OpenCLIP pool's micro build (mini CLIP micro's towers as task-vector checkpoints; seconds once that is built)."""
    from fusion_bench_fw.mini_openclip.build import ensure_openclip_built

    return ensure_openclip_built("micro", 0, cache_dir=micro_cache_dir)
