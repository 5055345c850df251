"""The plugin's config for the real task-vector checkpoints (``modelpool=openclip-ViT-B-32_TA8``) on
stand-ins of the real format and shapes: pickled ViT-B-32 ImageEncoders, loaded offline."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from fusion_bench_fw.hub_standin.task_vectors import write_task_vectors

    out = tmp_path_factory.mktemp("tv") / "task_vectors_checkpoints"
    record = write_task_vectors(out, "ViT-B-32", tasks=["sun397"])
    assert not record["reused"] and (out / "ViT-B-32" / "SUN397" / "finetuned.pt").is_file()
    assert write_task_vectors(out, "ViT-B-32", tasks=["sun397"])["reused"]
    with pytest.raises(FileExistsError, match="another --out"):
        write_task_vectors(out, "ViT-B-32", tasks=["dtd"])
    return out


def composed_pool(model_dir: Path, target: str = None):
    from hydra import compose, initialize_config_dir

    import fusion_bench_config
    from fusion_bench.utils import instantiate

    others = ["stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd"]
    overrides = ["modelpool=openclip-ViT-B-32_TA8", f"modelpool.model_dir={model_dir}", *[f"~modelpool.models.{t}" for t in others]]
    if target:
        overrides.append(f"modelpool._target_={target}")
    with initialize_config_dir(str(Path(list(fusion_bench_config.__path__)[0])), version_base=None):
        config = compose("fabric_model_fusion", overrides=overrides).modelpool
    return instantiate(config, _recursive_=False)


def test_real_pool_config_loads_the_pickles_offline_with_openais_architecture(model_dir):
    from fusion_bench_fw.openclip_pool import OpenCLIPTaskVectorPool

    pool = composed_pool(model_dir)
    assert isinstance(pool, OpenCLIPTaskVectorPool) and list(pool.model_names) == ["sun397"]
    encoder = pool.load_model("sun397")  # {model_name: ViT-B-32, pickle_path}: no openai download
    assert sum(p.numel() for n, p in encoder.named_parameters() if n.startswith("model.visual.")) == 87_849_216  # ViT-B/32's image tower
    assert type(encoder.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    head = pool.load_classification_head("sun397")
    assert tuple(head.weight.shape) == (397, 512)
    images = torch.randn(1, 3, 224, 224)
    assert head(encoder(images)).shape == (1, 397)
    # FusionBench's own class on the same config fails on the same file (why the plugin's config names its subclass)
    stock = composed_pool(model_dir, "fusion_bench.modelpool.OpenCLIPVisionModelPool")
    with pytest.raises(pickle.UnpicklingError):
        stock.load_model("sun397")


def test_stand_in_record_lists_every_file(model_dir):
    record = json.loads((model_dir / "task_vectors_standin.json").read_text())
    assert sorted(record["files"])[:3] == ["ViT-B-32/SUN397/finetuned.pt", "ViT-B-32/head_Cars.pt", "ViT-B-32/head_DTD.pt"]
    assert len(record["files"]) == 2 + 8 and record["bytes"] > 2 * 300e6
