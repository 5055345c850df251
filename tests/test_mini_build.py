"""The mini pool builder: determinism, artifacts that load offline, task generators, tokenizer."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fusion_bench_fw.mini import BUILDER_VERSION, ensure_built, load_manifest
from fusion_bench_fw.mini.cache import COMPLETE_MARKER, build_name
from fusion_bench_fw.mini.tasks import EVAL_TASKS, TASK_ORDER, TASKS
from fusion_bench_fw.mini.variants import get_variant

pytestmark = pytest.mark.slow


def artifact_hashes(build_dir: Path) -> dict:
    """sha256 of every checkpoint and data file, keyed by path relative to the build dir.

    (datasets' state.json holds a random fingerprint, so only the .arrow data files are compared.)
    """
    files = list(build_dir.glob("**/*.safetensors")) + list(build_dir.glob("data/**/*.arrow"))
    assert files
    return {str(f.relative_to(build_dir)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def test_same_seed_gives_identical_checkpoints_and_data(mini_micro_dir, tmp_path):
    rebuilt = ensure_built("micro", seed=0, cache_dir=tmp_path)
    assert rebuilt != mini_micro_dir
    first, second = artifact_hashes(mini_micro_dir), artifact_hashes(rebuilt)
    n_tasks = len(get_variant("micro").tasks)
    assert len([k for k in first if k.startswith("models/")]) == n_tasks
    assert first == second


def test_different_seed_is_rebuilt_not_reused(mini_micro_dir, tmp_path):
    # A directory named for seed 1 that actually holds the seed-0 build must not be trusted.
    impostor = tmp_path / build_name("micro", 1)
    shutil.copytree(mini_micro_dir, impostor)
    built = ensure_built("micro", seed=1, cache_dir=tmp_path)
    assert built == impostor
    assert load_manifest(built).seed == 1
    assert json.loads((built / COMPLETE_MARKER).read_text())["seed"] == 1
    seed0, seed1 = artifact_hashes(mini_micro_dir), artifact_hashes(built)
    models0 = {k: v for k, v in seed0.items() if k.startswith("models/")}
    models1 = {k: v for k, v in seed1.items() if k.startswith("models/")}
    assert models0.keys() == models1.keys()
    assert all(models0[k] != models1[k] for k in models0)  # every checkpoint changed
    data0 = {k: v for k, v in seed0.items() if k.startswith("data/")}
    assert all(data0[k] != seed1[k] for k in data0)  # and every data split


def test_manifest_describes_loadable_artifacts(mini_micro_dir, mini_micro_manifest):
    from datasets import load_from_disk
    from transformers import CLIPModel, CLIPProcessor, CLIPVisionModel

    m, v = mini_micro_manifest, get_variant("micro")
    assert (m.builder_version, m.variant, m.seed) == (BUILDER_VERSION, "micro", 0)
    assert m.tasks == list(v.tasks) and m.eval_tasks == list(v.eval_tasks)
    assert set(m.eval_tasks) <= set(EVAL_TASKS) and len(m.eval_tasks) >= 2
    assert f"-v{BUILDER_VERSION}-seed0" in m.pretrained_dir  # unique per version + seed

    processor = CLIPProcessor.from_pretrained(m.processor_dir)
    clip = CLIPModel.from_pretrained(m.pretrained_dir)
    tower = CLIPVisionModel.from_pretrained(m.pretrained_dir)  # vision tower of the full CLIP dir
    for k, w in tower.state_dict().items():
        assert torch.equal(w, clip.state_dict()[k])

    for task in m.tasks:
        assert [t.format(c="x") for t in m.templates[task]] == [t.format(c="x") for t in TASKS[task].templates]
        for split, n in (("train", v.n_train), ("test", v.n_test)):
            ds = load_from_disk(m.datasets[task][split])
            assert len(ds) == n and set(ds.column_names) == {"image", "label"}
            assert ds.features["label"].names == m.classnames[task]
            assert ds[0]["image"].size == (32, 32)
            labels = np.array(ds["label"])
            assert labels.min() >= 0 and labels.max() < len(m.classnames[task])
        finetuned = CLIPVisionModel.from_pretrained(m.models[task])
        moved = sum((a - tower.state_dict()[k]).abs().sum().item() for k, a in finetuned.state_dict().items())
        assert moved > 0  # the fine-tune changed the tower

    # pretraining trained the text tower: its class prompts are further apart than an untrained one's
    def mean_cosine(model):
        inputs = processor(text=[f"a photo of a {c}." for c in m.classnames["textures"]], return_tensors="pt", padding=True)
        emb = torch.nn.functional.normalize(model.get_text_features(**inputs), dim=-1)
        return (emb @ emb.t()).masked_select(~torch.eye(len(emb), dtype=torch.bool)).mean().item()

    torch.manual_seed(0)
    untrained = CLIPModel(clip.config)
    with torch.no_grad():
        assert mean_cosine(clip) < mean_cosine(untrained) - 0.05


def test_task_generators_are_seeded_and_cover_every_class():
    assert len(TASKS) == 20 and TASK_ORDER[:4] == EVAL_TASKS
    digit_tasks = [t for t in TASKS if t.startswith("digit")]
    assert len(digit_tasks) >= 8
    for name, spec in TASKS.items():
        x1, y1 = spec.generate(np.random.default_rng(7), 120, "test")
        x2, y2 = spec.generate(np.random.default_rng(7), 120, "test")
        assert x1.shape == (120, 32, 32, 3) and x1.dtype == np.uint8
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
        assert set(np.unique(y1)) == set(range(len(spec.classnames))), name  # every class occurs
        assert x1.std() > 10, name  # not blank


def test_the_published_task_generators_still_draw_the_same_images():
    """v3/v4 builds are named by version, so their generators must not change: a digest of every task's
    first draws (taken when the class-rich stand-ins were added beside them, sharing their helpers)."""
    h = hashlib.sha256()
    for name, spec in TASKS.items():
        for split_id, split in ((1, "train"), (2, "test")):
            x, y = spec.generate(np.random.default_rng([0, len(name), split_id]), 60, split)
            h.update(x.tobytes())
            h.update(y.tobytes())
    assert h.hexdigest() == "c1be869c5f0c2c29436a32e100e89cf9163abd6a6e9d15206ec102649eb7ceff"


def test_class_rich_stand_ins_pair_two_attributes_in_every_label():
    from fusion_bench_fw.mini import fine_tasks as F
    from fusion_bench_fw.mini.digit_tasks import _sample_digits
    from fusion_bench_fw.mini.tasks import FINE_EVAL_TASKS, FINE_TASKS

    assert list(FINE_EVAL_TASKS) == list(EVAL_TASKS) and not set(FINE_TASKS) & set(TASKS)
    assert [len(FINE_TASKS[FINE_EVAL_TASKS[t]].classnames) for t in EVAL_TASKS] == [21, 30, 40, 30]
    for name, spec in FINE_TASKS.items():
        x, y = spec.generate(np.random.default_rng(3), 700, "train")
        assert np.array_equal(x, spec.generate(np.random.default_rng(3), 700, "train")[0])
        assert set(np.unique(y)) == set(range(len(spec.classnames))), name
    # digits_inked: label = digit * 4 + ink, the digit being sklearn's, the ink the brightest channel's
    x, y = F.gen_digits_inked(np.random.default_rng(4), 200, "test")
    _, digits = _sample_digits(np.random.default_rng(4), 200, "test")
    assert np.array_equal(y // len(F.INKS), digits)
    red = (y % len(F.INKS)) == F.INKS.index("red")
    ink = x.reshape(len(x), -1, 3).max(axis=1).astype(float)
    assert (ink[red, 0] > ink[red, 2] + 80).all()
    # textures_scaled: the fine scale changes from pixel to pixel more often than the coarse one
    x, y = F.gen_textures_scaled(np.random.default_rng(5), 600, "test")
    edges = np.abs(np.diff(x.astype(float).mean(-1), axis=2)).mean(axis=(1, 2))
    scale = y % len(F.SCALES)
    assert edges[scale == 0].mean() > 1.5 * edges[scale == 2].mean()


def test_digit_tasks_relabel_sklearn_digits():
    from fusion_bench_fw.mini import digit_tasks as T

    rng = np.random.default_rng(0)
    _, y = T.gen_digit_parity(np.random.default_rng(0), 200, "train")
    _, digits = T._sample_digits(rng, 200, "train")  # same first draw as the generator's
    assert np.array_equal(y, digits % 2)
    x_inv, _ = T.gen_digits_inverted(np.random.default_rng(1), 50, "test")
    x_plain, _ = T.gen_digits(np.random.default_rng(1), 50, "test")
    assert x_inv.mean() > x_plain.mean() + 80  # dark ink on a light ground


def test_tokenizer_gives_prompt_words_single_tokens(mini_micro_manifest):
    from transformers import CLIPProcessor

    tok = CLIPProcessor.from_pretrained(mini_micro_manifest.processor_dir).tokenizer
    ids = tok("a photo of the digit seven.")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == [
        "<|startoftext|>", "a</w>", "photo</w>", "of</w>", "the</w>", "digit</w>", "seven</w>", ".</w>", "<|endoftext|>",
    ]
    # a word outside the prompt corpus still tokenizes, into smaller pieces
    pieces = tok.tokenize("zebra")
    assert len(pieces) > 1 and "".join(pieces).replace("</w>", "") == "zebra"


def test_the_fine_tuning_anchor_keeps_other_images_embedded_as_the_pretrained_tower_does(mini_micro_manifest):
    """finetune_anchor > 0 pulls the embeddings of generic images toward the pretrained tower's;
    with weight 0 the fine-tune is bit-identical to one without anchor images (builder v3)."""
    import dataclasses

    from transformers import CLIPModel

    from fusion_bench_fw.mini.build import _text_head
    from fusion_bench_fw.mini.training import Anchor, TaskTensors, _embed, finetune_vision, vision_tower

    m = mini_micro_manifest
    clip = CLIPModel.from_pretrained(m.pretrained_dir).eval()
    from transformers import CLIPProcessor

    processor = CLIPProcessor.from_pretrained(m.processor_dir)
    head = _text_head(clip, processor, TASKS["scenes"])
    pixels = lambda name, n: processor(images=list(TASKS[name].generate(np.random.default_rng(5), n, "train")[0]), return_tensors="pt")["pixel_values"]  # noqa: E731
    labels = torch.from_numpy(TASKS["scenes"].generate(np.random.default_rng(5), 64, "train")[1]).long()
    train_x = pixels("scenes", 64)
    task = TaskTensors("scenes", [], [], train_x, labels, train_x[:0], labels[:0])
    others = torch.cat([pixels(t, 48) for t in ("shapes", "textures", "digits")])
    anchor_x, held_out = others[::2], others[1::2]
    base = dataclasses.replace(get_variant("micro"), finetune_steps=40, finetune_lr=3e-3, finetune_anchor_batch=32)
    pretrained = vision_tower(clip)

    def run(weight, with_images=True):
        variant = dataclasses.replace(base, finetune_anchor=weight)
        model = finetune_vision(clip, head, task, variant, torch.Generator().manual_seed(0), anchor=Anchor.of(clip, anchor_x) if with_images else None)
        with torch.no_grad():
            drift = (_embed(model, head.projection, held_out) - _embed(pretrained, head.projection, held_out)).pow(2).sum(-1).mean().item()
        return model, drift

    plain, drift_plain = run(0.0, with_images=False)
    unweighted, _ = run(0.0)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), unweighted.state_dict().values()))
    _, drift_anchored = run(5.0)
    assert drift_anchored < 0.5 * drift_plain


def test_weights_only_fine_tuning_leaves_biases_and_layer_norms_at_their_pretrained_values(mini_micro_manifest):
    import dataclasses

    from transformers import CLIPModel, CLIPProcessor

    from fusion_bench_fw.mini.build import _text_head
    from fusion_bench_fw.mini.training import TaskTensors, finetune_vision, is_bias_or_norm, vision_tower

    m = mini_micro_manifest
    clip = CLIPModel.from_pretrained(m.pretrained_dir).eval()
    processor = CLIPProcessor.from_pretrained(m.processor_dir)
    head = _text_head(clip, processor, TASKS["scenes"])
    images, labels = TASKS["scenes"].generate(np.random.default_rng(5), 32, "train")
    train_x = processor(images=list(images), return_tensors="pt")["pixel_values"]
    train_y = torch.from_numpy(labels).long()
    task = TaskTensors("scenes", [], [], train_x, train_y, train_x[:0], train_y[:0])
    variant = dataclasses.replace(get_variant("micro"), finetune_steps=5, finetune_lr=3e-3, finetune_weights_only=True)
    pretrained = vision_tower(clip).state_dict()
    tuned = finetune_vision(clip, head, task, variant, torch.Generator().manual_seed(0)).state_dict()
    frozen = [n for n in tuned if is_bias_or_norm(n)]
    assert "vision_model.pre_layrnorm.weight" in frozen and "vision_model.encoder.layers.0.self_attn.q_proj.bias" in frozen
    assert all(torch.equal(tuned[n], pretrained[n]) for n in frozen)
    moved = [n for n in tuned if n not in frozen and not torch.equal(tuned[n], pretrained[n])]
    assert "vision_model.encoder.layers.0.mlp.fc1.weight" in moved
    # off (v3, v4): the biases move too
    variant = dataclasses.replace(variant, finetune_weights_only=False)
    tuned = finetune_vision(clip, head, task, variant, torch.Generator().manual_seed(0)).state_dict()
    assert not torch.equal(tuned["vision_model.encoder.layers.0.mlp.fc1.bias"], pretrained["vision_model.encoder.layers.0.mlp.fc1.bias"])


def test_the_pretraining_runs_on_the_variants_thread_count_and_the_rest_on_one(tmp_path, monkeypatch):
    """The build fixes every thread count itself (checkpoints depend on it): the variant's for the
    pretraining, one elsewhere. The build is stopped right after its pretraining."""
    import dataclasses

    from fusion_bench_fw.mini import build

    seen = {}

    class Stop(Exception):
        pass

    def pretrain(clip, *args, **kwargs):
        seen["pretraining"] = torch.get_num_threads()
        return clip

    def after_pretraining(module):
        seen["after"] = torch.get_num_threads()
        raise Stop

    monkeypatch.setattr(build, "pretrain_clip", pretrain)
    monkeypatch.setattr(build, "scrub_denormals", after_pretraining)
    for threads in (1, 2):
        variant = dataclasses.replace(get_variant("micro"), tasks=("scenes",), eval_tasks=("scenes",), n_train=8, n_test=8, pretrain_threads=threads)
        with pytest.raises(Stop):
            build.build_pool(variant, 0, tmp_path / str(threads))
        assert seen == {"pretraining": threads, "after": 1}
    assert get_variant("ta20", 3).pretrain_threads == get_variant("ta20", 4).pretrain_threads == 1  # the published builds


def test_override_converts_values_to_the_settings_types_and_names_the_settings_on_a_typo():
    from fusion_bench_fw.mini.variants import override

    variant, changes = override(get_variant("ta20"), ["vision_width=192", "finetune_lr=1e-4", "finetune_weights_only=1"])
    assert changes == {"vision_width": 192, "finetune_lr": 1e-4, "finetune_weights_only": True}
    assert (variant.vision_width, type(variant.vision_width), variant.finetune_weights_only) == (192, int, True)
    assert variant.pretrain_steps == get_variant("ta20").pretrain_steps
    with pytest.raises(ValueError, match="'vision_widht' is not a numeric setting.*vision_width"):
        override(variant, ["vision_widht=192"])
    with pytest.raises(ValueError, match="not a numeric setting"):
        override(variant, ["tasks=scenes"])
    with pytest.raises(ValueError, match="vision_width takes a number, e.g. vision_width=192"):
        override(variant, ["vision_width=wide"])


def test_the_eval_tasks_can_have_their_own_share_of_the_pretraining_mix():
    """eval_pretrain_fraction sets the eval tasks' share only; unset, every task has pretrain_fraction (v3, v4)."""
    import dataclasses

    from fusion_bench_fw.mini.training import TaskTensors, pretrain_share
    from fusion_bench_fw.mini.variants import override

    x = torch.zeros(1000, 1)
    task = lambda name: TaskTensors(name, [], [], x, x, x, x)  # noqa: E731
    v4 = get_variant("ta20")
    assert v4.eval_pretrain_fraction is None and pretrain_share(v4, task("scenes")) == pretrain_share(v4, task("colors")) == 300
    variant, changes = override(v4, ["eval_pretrain_fraction=0.05"])
    assert changes == {"eval_pretrain_fraction": 0.05}
    assert [pretrain_share(variant, task(t)) for t in ("scenes", "shapes", "digits", "textures", "colors")] == [50, 50, 50, 50, 300]
    assert pretrain_share(dataclasses.replace(variant, eval_pretrain_fraction=0.0), task("digits")) == 1  # never an empty share
