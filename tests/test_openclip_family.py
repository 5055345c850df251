"""OpenCLIP task-vector checkpoints on a tiny open_clip architecture: loading (FusionBench 0.2.33
workarounds), the safetensors copies the streaming reader serves, the family's logits, and the
Hugging Face -> OpenCLIP tower conversion the mini pool is built with."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from omegaconf import DictConfig

from fusion_bench_fw.openclip_checkpoints import build_image_encoder, safetensors_copy  # noqa: I001  (first: Python 3.11 workaround)
from fusion_bench_fw.checkpoint_files import STREAMING, CheckpointNotAvailable, resolve_pool
from fusion_bench_fw.families import family_for
from fusion_bench_fw.families.openclip_vision import OpenCLIPVisionFamily
from fusion_bench_fw.openclip_pool import OpenCLIPTaskVectorPool

from fusion_bench.modelpool import OpenCLIPVisionModelPool
from fusion_bench.models.open_clip import ClassificationHead, ImageClassifier

NAME = "test-tiny-ViT"
CONFIG = {"embed_dim": 16, "quick_gelu": True,
          "vision_cfg": {"image_size": 16, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
          "text_cfg": {"context_length": 8, "vocab_size": 16, "width": 16, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def pickles(tmp_path_factory):
    """A task-vectors layout: zeroshot.pt, two fine-tunes, heads, and a state-dict file."""
    import open_clip

    root = tmp_path_factory.mktemp("task_vectors")
    (root / f"{NAME}.json").write_text(json.dumps(CONFIG))
    open_clip.add_model_config(str(root / f"{NAME}.json"))
    torch.manual_seed(0)
    base = build_image_encoder(NAME).eval()
    torch.save(base, root / "zeroshot.pt")
    for task, shift in (("a", 0.01), ("b", -0.02)):
        encoder = build_image_encoder(NAME)
        encoder.load_state_dict({k: v + shift * torch.randn_like(v) for k, v in base.state_dict().items()})
        (root / task).mkdir()
        torch.save(encoder, root / task / "finetuned.pt")
        torch.save(ClassificationHead(normalize=True, weights=torch.randn(3, 16)), root / f"head_{task}.pt")
    torch.save(base.state_dict(), root / "zeroshot_state.pt")
    return root


def pool(cls, root, **models):
    entries = models or {"_pretrained_": str(root / "zeroshot.pt"), "a": str(root / "a" / "finetuned.pt"),
                         "b": {"model_name": NAME, "pickle_path": str(root / "b" / "finetuned.pt")}}
    return cls(DictConfig(entries), classification_heads=DictConfig({t: str(root / f"head_{t}.pt") for t in "ab"}))


def test_stock_pool_cannot_load_a_pickled_image_encoder(pickles):
    # FusionBench 0.2.33 loads with weights_only=True and catches only RuntimeError: this documents
    # why OpenCLIPTaskVectorPool exists; when it starts failing, the workaround can go
    with pytest.raises(pickle.UnpicklingError):
        pool(OpenCLIPVisionModelPool, pickles).load_model("_pretrained_")


@pytest.mark.parametrize("name", ["_pretrained_", "a", "b"])
def test_task_vector_pool_loads_each_entry_form_offline(pickles, name):
    loaded = pool(OpenCLIPTaskVectorPool, pickles).load_model(name)
    path = pickles / ("zeroshot.pt" if name == "_pretrained_" else f"{name}/finetuned.pt")
    expected = torch.load(path, weights_only=False).state_dict()
    assert set(loaded.state_dict()) == set(expected)
    assert all(torch.equal(loaded.state_dict()[k], expected[k]) for k in expected)


def test_state_dict_entry_builds_the_named_architecture_without_download(pickles):
    entry = {"model_name": NAME, "state_dict_path": str(pickles / "zeroshot_state.pt")}
    loaded = pool(OpenCLIPTaskVectorPool, pickles, _pretrained_=entry).load_model("_pretrained_")
    images = torch.randn(2, 3, 16, 16)
    base = torch.load(pickles / "zeroshot.pt", weights_only=False)
    assert torch.allclose(loaded(images), base(images))
    assert pool(OpenCLIPTaskVectorPool, pickles, _pretrained_=entry).test_processor is not None  # the taskpool's preprocessing


def test_streaming_copies_equal_the_pickles_and_follow_edits(pickles, tmp_path, monkeypatch):
    monkeypatch.setenv("FUSION_BENCH_FW_CACHE", str(tmp_path))
    modelpool = pool(OpenCLIPVisionModelPool, pickles)
    resolved = resolve_pool(modelpool, ["_pretrained_", "a", "b"])
    assert {item.reader for item in resolved.values()} == {STREAMING}
    from safetensors.torch import load_file

    copy = next(iter(resolved["a"].weight_map.values()))
    original = torch.load(pickles / "a" / "finetuned.pt", weights_only=False).state_dict()
    stored = load_file(str(copy))
    assert set(stored) == set(original) and all(torch.equal(stored[k], original[k]) for k in original)
    # the copy is reused while the pickle is unchanged, and made anew once it changes
    assert safetensors_copy("a", pickles / "a" / "finetuned.pt") == copy
    os.utime(pickles / "a" / "finetuned.pt", ns=(1, 1))
    assert safetensors_copy("a", pickles / "a" / "finetuned.pt") != copy


def test_missing_checkpoint_is_named_before_any_work(pickles, tmp_path, monkeypatch):
    monkeypatch.setenv("FUSION_BENCH_FW_CACHE", str(tmp_path))
    modelpool = pool(OpenCLIPVisionModelPool, pickles, _pretrained_=str(pickles / "zeroshot.pt"), c=str(pickles / "c" / "finetuned.pt"))
    with pytest.raises(CheckpointNotAvailable, match=r"model 'c'.*c/finetuned\.pt does not exist"):
        resolve_pool(modelpool, ["_pretrained_", "c"])


class _Fabric:
    global_rank, world_size = 0, 1

    @staticmethod
    def to_device(x):
        return x


def test_family_logits_are_open_clips_own_forward(pickles):
    modelpool = pool(OpenCLIPVisionModelPool, pickles)
    assert family_for(modelpool) is OpenCLIPVisionFamily
    family = OpenCLIPVisionFamily(modelpool, _Fabric())
    model = family.load_base()
    names = family.merged_parameters(model)
    assert names and all(n.startswith("model.visual.") for n in names)
    family.prepare(model, ["a", "b"])
    images = torch.randn(5, 3, 16, 16)
    finetuned = torch.load(pickles / "a" / "finetuned.pt", weights_only=False)
    params = {n: p for n, p in finetuned.named_parameters() if n in names}
    ours = family.task_logits(model)(params, "a", images)
    head = torch.load(pickles / "head_a.pt", weights_only=False)
    theirs = ImageClassifier(finetuned, head)(images)  # FusionBench's classifier = open_clip encode_image + head
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert not torch.allclose(ours, ImageClassifier(model, head)(images), atol=1e-3)  # the params were used
    with pytest.raises(ValueError, match="no classification head"):
        family.prepare(model, ["zzz"])


def test_hugging_face_tower_converts_to_the_same_open_clip_function():
    import open_clip
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from fusion_bench_fw.mini_openclip.convert import open_clip_config, visual_state_dict

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                              image_size=16, patch_size=8, projection_dim=12)
    hf = CLIPVisionModelWithProjection(config).eval()
    with torch.no_grad():  # random LayerNorm affine parameters, so a swapped weight/bias would show
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    oc_config = open_clip_config(config, 12)
    model = open_clip.model.CLIP(**{k: v for k, v in oc_config.items()})
    model.visual.load_state_dict(visual_state_dict(hf.state_dict(), hf.visual_projection.weight, 2))
    images = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.encode_image(images), hf(pixel_values=images).image_embeds, atol=1e-5)


def test_init_from_a_saved_merge_reads_its_image_tower_and_refuses_another_shape(pickles, tmp_path):
    modelpool = pool(OpenCLIPVisionModelPool, pickles)
    family = OpenCLIPVisionFamily(modelpool, _Fabric())
    model = family.load_base()
    names = family.merged_parameters(model)
    finetuned = torch.load(pickles / "a" / "finetuned.pt", weights_only=False)
    torch.save(finetuned.state_dict(), tmp_path / "merged.pt")  # what FusionBench's save_model writes for this pool
    params = family.read_merged_checkpoint(tmp_path / "merged.pt", model, names)
    assert sorted(params) == sorted(names)
    assert all(torch.equal(params[n], finetuned.state_dict()[n]) for n in names)
    broken = {**finetuned.state_dict(), names[0]: torch.zeros(3)}
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match=rf"does not match the pretrained architecture \(parameter '{names[0]}'\)"):
        family.read_merged_checkpoint(tmp_path / "broken.pt", model, names)
