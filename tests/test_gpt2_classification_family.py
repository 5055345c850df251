"""The GPT-2 text-classification family on tiny random models in FusionBench's gpt-2_glue pool layout:
per-task heads, the streamed backbone of a head-model checkpoint, the loss FusionBench's taskpool scores."""

from __future__ import annotations

import pytest
import torch
from omegaconf import DictConfig
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2Model

from fusion_bench.modelpool.huggingface_gpt2_classification import GPT2ForSequenceClassificationPool

from fusion_bench_fw.checkpoint_files import resolve_pool
from fusion_bench_fw.checkpoints import PoolCheckpoints
from fusion_bench_fw.families import family_for
from fusion_bench_fw.families.gpt2_classification import GPT2ClassificationFamily, tokenized_batch
from fusion_bench_fw.safetensors_slices import stored_prefix

PAD = 0
LOADER = "transformers.GPT2Model.from_pretrained"


def _config(num_labels=2):
    return GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=2, n_head=2, pad_token_id=PAD, num_labels=num_labels,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """``_pretrained_`` (a GPT2Model) and two fine-tuned classifiers with different heads and label counts."""
    root = tmp_path_factory.mktemp("gpt2pool")
    torch.manual_seed(0)
    base = GPT2Model(_config()).eval()
    base.save_pretrained(root / "base")
    entries = {"_pretrained_": {"_target_": LOADER, "pretrained_model_name_or_path": str(root / "base")}}
    for seed, (task, labels) in enumerate((("pairs", 2), ("three_way", 3)), start=1):
        classifier = GPT2ForSequenceClassification(_config(labels))
        classifier.transformer.load_state_dict(base.state_dict())
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in classifier.parameters():
                p.add_(0.05 * torch.randn_like(p))
        classifier.save_pretrained(root / task)
        entries[task] = {"_target_": LOADER, "pretrained_model_name_or_path": str(root / task)}
    return GPT2ForSequenceClassificationPool(tokenizer=None, models=DictConfig(entries))


def _rows(num_labels, n=6, width=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = 3 + i % 5
        ids = torch.randint(1, 40, (length,), generator=g).tolist()
        rows.append({"input_ids": ids + [PAD] * (width - length), "attention_mask": [1] * length + [0] * (width - length),
                     "label": i % num_labels, "idx": i})
    return rows


class _Fabric:
    device = torch.device("cpu")
    global_rank, world_size = 0, 1

    @staticmethod
    def to_device(x):
        return x


def test_the_family_is_chosen_for_fusionbench_gpt2_pools(pool):
    assert family_for(pool) is GPT2ClassificationFamily


def test_head_model_checkpoints_stream_their_backbone_under_its_own_names(pool):
    base = pool.load_pretrained_model()
    names = [n for n, _ in base.named_parameters()]
    files = resolve_pool(pool, ["pairs", "three_way"])
    assert stored_prefix(files["pairs"].weight_map, names) == "transformer."
    source = PoolCheckpoints(pool, ["pairs", "three_way"], names, files=files)
    assert source.reader_counts() == {"safetensors": 2, "pool_loader": 0}
    streamed = source.load("three_way")
    reference = dict(GPT2Model.from_pretrained(pool.get_model_config("three_way")["pretrained_model_name_or_path"]).named_parameters())
    assert set(streamed) == set(names)
    for name in names:
        assert torch.equal(streamed[name], reference[name].detach()), name
    assert not torch.equal(streamed["h.0.attn.c_attn.weight"], dict(base.named_parameters())["h.0.attn.c_attn.weight"])
    # the block-major reader takes the same prefixed keys
    with source.block_reader([0, 1]) as reader:
        stacked = reader.stack("wpe.weight")
    assert torch.equal(stacked[1], reference["wpe.weight"].detach().flatten())


def test_loss_is_each_tasks_own_head_on_the_given_backbone(pool):
    family = GPT2ClassificationFamily(pool, _Fabric())
    model = family.load_base()
    family.prepare(model, ["pairs", "three_way"])
    loss = family.batch_loss(model, "cross_entropy")
    tuned = PoolCheckpoints(pool, ["three_way"], [n for n, _ in model.named_parameters()]).load("three_way")
    rows = _rows(3)
    batch = tokenized_batch(rows)
    # reference: the fine-tuned classifier itself, as FusionBench's taskpool runs it (full padded rows)
    classifier = pool.load_classifier("three_way").eval()
    full = {k: torch.tensor([r[k] for r in rows]) for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        expected = classifier(**full, labels=torch.tensor([r["label"] for r in rows])).loss * len(rows)
        got = loss(tuned, "three_way", batch)
    assert got == pytest.approx(float(expected), rel=1e-5)
    # the base backbone under the same head gives another loss; the other task's head another still
    with torch.no_grad():
        at_base = loss(dict(model.named_parameters()), "three_way", batch)
        other_head = loss(tuned, "pairs", tokenized_batch(_rows(2)))
    assert abs(float(at_base) - float(got)) > 1e-4
    assert family.classifiers["pairs"].score.weight.shape[0] == 2 and family.classifiers["three_way"].score.weight.shape[0] == 3
    assert torch.isfinite(other_head)
    # the heads are the fine-tuned ones, untouched, and the backbone is shared, not copied
    assert torch.equal(family.classifiers["three_way"].score.weight, classifier.score.weight)
    assert family.classifiers["pairs"].transformer is model


def test_trailing_padding_is_dropped_without_changing_logits(pool):
    rows = _rows(2, width=16)
    batch = tokenized_batch(rows)
    assert batch["input_ids"].shape[1] == max(sum(r["attention_mask"]) for r in rows) < 16
    classifier = pool.load_classifier("pairs").eval()
    full = {k: torch.tensor([r[k] for r in rows]) for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        torch.testing.assert_close(classifier(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                   classifier(**full).logits)


def test_a_classifier_without_pad_token_id_is_refused_naming_the_model(pool, tmp_path):
    config = _config()
    config.pad_token_id = None
    GPT2ForSequenceClassification(config).save_pretrained(tmp_path / "nopad")
    entries = dict(pool._models)
    entries["nopad"] = {"_target_": LOADER, "pretrained_model_name_or_path": str(tmp_path / "nopad")}
    broken = GPT2ForSequenceClassificationPool(tokenizer=None, models=DictConfig(entries))
    family = GPT2ClassificationFamily(broken, _Fabric())
    with pytest.raises(ValueError, match="'nopad'.*pad_token_id"):
        family.prepare(family.load_base(), ["nopad"])
