"""The text-to-text (T5) family on tiny random models in FusionBench's flan-T5 pool layouts: batches of
FusionBench's padded GLUE rows, the target-token loss, the tokenizer workaround and streamed LoRA adapters."""

from __future__ import annotations

import pytest
import torch
from omegaconf import DictConfig
from peft import LoraConfig, get_peft_model
from transformers import T5Config, T5ForConditionalGeneration

from fusion_bench.modelpool import Seq2SeqLMPool
from fusion_bench.modelpool.seq2seq_lm.modelpool import load_lora_model

from fusion_bench_fw.checkpoints import PoolCheckpoints
from fusion_bench_fw.families import family_for
from fusion_bench_fw.families.seq2seq import Seq2SeqFamily, load_seq2seq_tokenizer, target_losses, text_to_text_batch
from fusion_bench_fw.lora_adapters import SEQ2SEQ_PEFT_LOADER
from fusion_bench_fw.mini_t5.tokenizer import build_t5_tokenizer

LOADER = "transformers.AutoModelForSeq2SeqLM.from_pretrained"
WORDS = "the cat dog sees runs yes no entailment not_entailment premise hypothesis where park".split()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    lines = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(6)) for i in range(200)]
    return build_t5_tokenizer(lines, tmp_path_factory.mktemp("tok"), vocab_size=120)


def _config(tokenizer):
    return T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=4, d_ff=32, num_layers=2, num_decoder_layers=2, num_heads=4,
                    dropout_rate=0.0, feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
                    decoder_start_token_id=0)


@pytest.fixture(scope="module")
def pool(tokenizer, tmp_path_factory):
    """``_pretrained_``, a full fine-tune (``full``) and a LoRA adapter on q/v (``lora``), as FusionBench lists them."""
    root = tmp_path_factory.mktemp("t5pool")
    torch.manual_seed(0)
    base = T5ForConditionalGeneration(_config(tokenizer)).eval()
    base.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "tok")
    full = T5ForConditionalGeneration.from_pretrained(root / "base")
    with torch.no_grad():
        for p in full.parameters():
            p.add_(0.05 * torch.randn_like(p))
    full.save_pretrained(root / "full")
    adapted = get_peft_model(T5ForConditionalGeneration.from_pretrained(root / "base"),
                             LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v"], lora_dropout=0.0, task_type="SEQ_2_SEQ_LM"))
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_" in name:
                p.copy_(0.2 * torch.randn_like(p))  # lora_B starts at zero: give the adapter a real delta
    adapted.save_pretrained(root / "lora")
    entries = {
        "_pretrained_": {"_target_": LOADER, "pretrained_model_name_or_path": str(root / "base")},
        "full": {"_target_": LOADER, "pretrained_model_name_or_path": str(root / "full")},
        "lora": {"_target_": SEQ2SEQ_PEFT_LOADER, "base_model_path": str(root / "base"), "peft_model_path": str(root / "lora"), "is_trainable": False},
    }
    tok = {"_target_": "transformers.AutoTokenizer.from_pretrained", "pretrained_model_name_or_path": str(root / "tok")}
    return Seq2SeqLMPool(DictConfig(entries), tokenizer=DictConfig(tok))


def _padded_rows(tokenizer, pairs, width=20, target_width=6):
    """Rows as FusionBench's flan-T5 GLUE loader writes them: padded to a fixed width, labels -100 on padding."""
    rows = []
    for source, target in pairs:
        ids, labels = tokenizer(source)["input_ids"], tokenizer(target)["input_ids"]
        rows.append({"input_ids": ids + [0] * (width - len(ids)), "attention_mask": [1] * len(ids) + [0] * (width - len(ids)),
                     "labels": labels + [-100] * (target_width - len(labels)), "input_text": source, "target_text": target})
    return rows


PAIRS = [("premise the cat runs hypothesis the cat", "entailment"), ("where the dog park", "not_entailment"),
         ("the dog sees the cat", "yes"), ("premise the dog hypothesis cat runs where", "no")]


class _Fabric:
    device = torch.device("cpu")
    global_rank, world_size = 0, 1

    @staticmethod
    def to_device(x):
        return x


def test_the_family_is_chosen_for_fusionbench_seq2seq_pools(pool):
    assert family_for(pool) is Seq2SeqFamily


def test_fusionbench_load_tokenizer_is_broken_and_ours_loads_the_pools_tokenizer(pool, tokenizer):
    """FusionBench 0.2.33's Seq2SeqLMPool.load_tokenizer() raises TypeError; when this fails, drop our workaround."""
    with pytest.raises(TypeError):
        pool.load_tokenizer()
    loaded = load_seq2seq_tokenizer(pool._tokenizer)
    assert loaded("the cat")["input_ids"] == tokenizer("the cat")["input_ids"]


def test_padded_rows_are_trimmed_and_equal_the_text_rows(tokenizer):
    rows = _padded_rows(tokenizer, PAIRS)
    tokens = text_to_text_batch([{k: r[k] for k in ("input_ids", "attention_mask", "labels")} for r in rows], tokenizer)
    text = text_to_text_batch([{k: r[k] for k in ("input_text", "target_text")} for r in rows], tokenizer)
    longest = max(sum(r["attention_mask"]) for r in rows)
    assert tokens["input_ids"].shape[1] == longest < 20
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(tokens[key], text[key]), key
    assert int((tokens["labels"][:, -1] != -100).sum()) >= 1  # trimmed to the longest target, ending in </s> somewhere
    assert set(tokens["labels"][tokens["labels"] != -100].tolist()) >= {tokenizer.eos_token_id}


def test_loss_is_the_per_sample_mean_target_ce_summed_and_padding_changes_nothing(pool, tokenizer):
    family = Seq2SeqFamily(pool, _Fabric())
    model = family.load_base()
    params = dict(model.named_parameters())
    rows = _padded_rows(tokenizer, PAIRS)
    batch = text_to_text_batch(rows, tokenizer)
    with torch.no_grad():
        got = float(family.batch_loss(model, "cross_entropy")(params, "t", batch))
        # reference: Hugging Face's own loss of each sample alone (mean over its target tokens), summed
        expected = sum(float(model(**text_to_text_batch([row], tokenizer)).loss) for row in rows)
        # FusionBench's full padded rows give the same per-sample losses as the trimmed batch
        full = {"input_ids": torch.tensor([r["input_ids"] for r in rows]), "attention_mask": torch.tensor([r["attention_mask"] for r in rows]),
                "labels": torch.tensor([r["labels"] for r in rows])}
        untrimmed = float(target_losses(model(**full).logits, full["labels"]).sum())
    assert got == pytest.approx(expected, rel=1e-5)
    assert untrimmed == pytest.approx(got, rel=1e-5)


def test_correct_under_teacher_forcing_matches_greedy_generation(pool, tokenizer):
    """batch_correct (one forward pass) counts exactly the rows whose greedy generation emits the target tokens."""
    family = Seq2SeqFamily(pool, _Fabric())
    model = pool.load_model("full").eval()
    rows = _padded_rows(tokenizer, PAIRS * 3)
    batch = text_to_text_batch(rows, tokenizer)
    width = batch["labels"].shape[1]
    with torch.no_grad():
        greedy = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=width, do_sample=False)
    # make the model's own greedy tokens (up to its first </s>) the target of every other row
    eos = tokenizer.eos_token_id
    for i in range(0, len(rows), 2):
        out = greedy[i, 1:].tolist()
        out = out[: out.index(eos) + 1] if eos in out else out
        rows[i]["labels"] = out + [-100] * (len(rows[i]["labels"]) - len(out))
    batch = text_to_text_batch(rows, tokenizer)
    with torch.no_grad():
        greedy = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=batch["labels"].shape[1], do_sample=False)
    by_generation = 0
    for row, out in zip(batch["labels"].tolist(), greedy[:, 1:].tolist()):
        target = [t for t in row if t != -100]
        by_generation += out[: len(target)] == target
    got = family.batch_correct(model)(dict(model.named_parameters()), "t", batch)
    assert got == by_generation >= len(rows) // 2, (got, by_generation)


def test_a_lora_entry_streams_as_base_plus_delta_equal_to_peft_merge(pool):
    """FusionBench's load_lora_model entry: base safetensors + the adapter's B@A on q and v, as PEFT merges it."""
    names = [n for n, _ in pool.load_pretrained_model().named_parameters()]
    source = PoolCheckpoints(pool, ["full", "lora"], names)
    assert source.reader_counts() == {"safetensors": 1, "pool_loader": 0, "lora_adapter": 1}
    streamed = source.load("lora")
    entry = pool.get_model_config("lora")
    merged = dict(load_lora_model(entry["base_model_path"], entry["peft_model_path"], is_trainable=False).named_parameters())
    base = dict(pool.load_pretrained_model().named_parameters())
    changed = [n for n in names if not torch.equal(streamed[n], base[n].detach())]
    assert changed and all(n.endswith((".q.weight", ".v.weight")) for n in changed), changed
    for name in names:
        assert torch.allclose(streamed[name], merged[name].detach(), atol=1e-6), name
