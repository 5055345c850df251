"""Pieces of the mini T5 GLUE builder that need no training: its tokenizer and its row layout."""

from __future__ import annotations

import dataclasses

import pytest
from datasets import load_from_disk
from transformers import AutoTokenizer

from fusion_bench_fw.mini_glue.tasks import pretraining_corpus, write_datasets
from fusion_bench_fw.mini_t5.build import tokenize_split
from fusion_bench_fw.mini_t5.templates import text_pair
from fusion_bench_fw.mini_t5.tokenizer import build_t5_tokenizer
from fusion_bench_fw.mini_t5.variants import get_variant


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("t5rows")
    raw = write_datasets(root / "raw", ["nli", "sentiment"], 40, 10, seed=0)
    texts = pretraining_corpus(200, 1) + [" ".join(text_pair(t, r)) for t in raw for r in load_from_disk(raw[t]["train"])]
    return root, raw, texts, build_t5_tokenizer(texts, root / "tok", 300)


def test_the_tokenizer_has_t5s_special_ids_and_is_deterministic(built, tmp_path):
    root, _, texts, tokenizer = built
    loaded = AutoTokenizer.from_pretrained(str(root / "tok"))
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.unk_token_id) == (0, 1, 2)
    ids = loaded("the cat sat")["input_ids"]
    assert ids[-1] == 1 and 1 not in ids[:-1] and "token_type_ids" not in loaded("x")
    assert loaded.decode(ids, skip_special_tokens=True) == "the cat sat"
    again = build_t5_tokenizer(texts, tmp_path / "tok2", 300)
    assert again.get_vocab() == tokenizer.get_vocab()


def test_rows_take_flan_t5s_padded_layout_and_a_too_long_row_is_refused(built, tmp_path):
    root, raw, _, tokenizer = built
    variant = get_variant("micro")
    tokenize_split(raw["nli"]["train"], tmp_path / "nli", "nli", tokenizer, variant)
    row = load_from_disk(str(tmp_path / "nli"))[0]
    assert len(row["input_ids"]) == len(row["attention_mask"]) == variant.max_length
    assert len(row["labels"]) == variant.max_target_length
    real = sum(row["attention_mask"])
    assert row["input_ids"][real - 1] == 1 and set(row["input_ids"][real:]) <= {0}
    target = [t for t in row["labels"] if t != -100]
    assert tokenizer.decode(target, skip_special_tokens=True) == row["target_text"] and target[-1] == 1
    assert {"premise", "hypothesis", "label"} <= set(row)  # the GLUE columns stay
    short = dataclasses.replace(variant, max_length=5)
    with pytest.raises(ValueError, match="max_length=5"):
        tokenize_split(raw["nli"]["train"], tmp_path / "refused", "nli", tokenizer, short)
    assert not (tmp_path / "refused").exists()
