"""Pieces of the mini GLUE builder that need no training: its tokenizer and its tokenized rows."""

from __future__ import annotations

import pytest

from fusion_bench_fw.mini_glue.build import load_tokenizer, tokenize_split
from fusion_bench_fw.mini_glue.tasks import pretraining_corpus, write_datasets
from fusion_bench_fw.mini_glue.tokenizer import END_OF_TEXT, build_gpt2_tokenizer


@pytest.fixture(scope="module")
def corpus():
    return pretraining_corpus(300, seed=3)


def test_the_tokenizer_is_deterministic_and_loads_as_fusionbench_loads_gpt2(corpus, tmp_path):
    for name in ("a", "b"):
        build_gpt2_tokenizer(corpus, tmp_path / name, vocab_size=400)
    for file in ("vocab.json", "merges.txt"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    tokenizer = load_tokenizer(tmp_path / "a")  # FusionBench's load_gpt2_tokenizer: the slow GPT2Tokenizer
    assert type(tokenizer).__name__ == "GPT2Tokenizer"
    assert tokenizer.pad_token == tokenizer.eos_token == END_OF_TEXT
    line = corpus[0]
    assert tokenizer.decode(tokenizer(line)["input_ids"]) == line
    assert tokenizer.pad_token_id not in tokenizer(line)["input_ids"]  # padding never looks like text to the head
    # a pair is the two texts' tokens back to back, as FusionBench's GLUE tokenizing gives for GPT-2
    first, second = "the dog runs .", "the cat sleeps ."
    assert tokenizer(first, second)["input_ids"] == tokenizer(first)["input_ids"] + tokenizer(second)["input_ids"]


def test_rows_are_padded_to_max_length_and_too_long_rows_are_refused(corpus, tmp_path):
    build_gpt2_tokenizer(corpus, tmp_path / "tok", vocab_size=400)
    tokenizer = load_tokenizer(tmp_path / "tok")
    raw = write_datasets(tmp_path / "raw", ["entailment"], 20, 10, seed=0)
    tokenize_split(raw["entailment"]["train"], tmp_path / "rows", "entailment", tokenizer, max_length=64)
    from datasets import load_from_disk

    rows = load_from_disk(str(tmp_path / "rows"))
    assert {"sentence1", "sentence2", "label", "idx", "input_ids", "attention_mask"} <= set(rows.column_names)
    assert all(len(ids) == 64 for ids in rows["input_ids"])
    row = rows[0]
    kept = [i for i, m in zip(row["input_ids"], row["attention_mask"]) if m]
    assert kept == tokenizer(row["sentence1"], row["sentence2"])["input_ids"]
    with pytest.raises(ValueError, match="entailment.*max_length=4"):
        tokenize_split(raw["entailment"]["train"], tmp_path / "short", "entailment", tokenizer, max_length=4)
    assert not (tmp_path / "short").exists()
