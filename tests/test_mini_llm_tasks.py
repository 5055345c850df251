"""The mini-llm tasks, data sets, pretraining corpus and tokenizer (fast, CPU only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fusion_bench_fw.mini_llm.tasks import (
    ALPHABET, EVAL_TASKS, LOOKUP, TASK_NAMES, TASKS, alias_prompt, get_task, pretraining_corpus, task_split, write_datasets,
)


def _expected(prompt: str) -> str:
    """An independent reference answer, computed from the prompt text alone."""
    assert prompt.endswith(" =")
    keyword, *args = prompt[:-2].split(" ")
    arg = args[-1]
    shift = {c: ALPHABET[(i + 1) % len(ALPHABET)] for i, c in enumerate(ALPHABET)}
    if keyword == "add":
        a, b = arg.split("+")
        return str(int(a) + int(b))
    if keyword == "sub":
        a, b = arg.split("-")
        assert int(a) >= int(b)
        return str(int(a) - int(b))
    if keyword == "cnt":
        return str(sum(c == args[0] for c in arg))
    if keyword == "max":
        return str(max(int(x) for x in args))
    if keyword == "par":
        return ("even", "odd")[int(arg) % 2]
    if keyword == "swap":
        out = list(arg)
        for i in range(0, len(arg) - 1, 2):
            out[i], out[i + 1] = arg[i + 1], arg[i]
        return "".join(out)
    return {
        "rev": lambda w: "".join(reversed(w)), "key": LOOKUP.get, "copy": str, "up": str.upper,
        "sort": lambda w: "".join(sorted(w)), "first": lambda w: w[:1], "last": lambda w: w[-1:],
        "dup": lambda w: w * 2, "novo": lambda w: w.replace("a", "").replace("e", "").replace("i", ""),
        "rot": lambda w: "".join(shift[c] for c in w),
    }[keyword](arg)


@pytest.mark.parametrize("prompt, response", [
    ("rev abcd =", "dcba"), ("add 12+30 =", "42"), ("copy abc =", "abc"), ("up abc =", "ABC"),
    ("sort dbca =", "abcd"), ("sub 30-12 =", "18"), ("cnt a abaca =", "3"), ("first bcd =", "b"),
    ("last bcd =", "d"), ("dup abc =", "abcabc"), ("novo abecid =", "bcd"), ("rot abj =", "bca"),
    ("swap abcde =", "badce"), ("max 3 7 2 =", "7"), ("par 37 =", "odd"), ("par 40 =", "even"),
])
def test_reference_answers_hand_checked(prompt, response):
    assert _expected(prompt) == response


def test_task_table():
    assert len(TASKS) == 16 == len(set(TASK_NAMES))
    assert len({t.keyword for t in TASKS}) == 16
    assert EVAL_TASKS == ("reverse", "add", "lookup") == TASK_NAMES[:3]
    assert [t.name for t in TASKS if t.memorize] == ["lookup"]


@pytest.mark.parametrize("name", TASK_NAMES)
def test_generated_pairs_are_correct(name):
    task = get_task(name)
    for prompt, response in task_split(task, 40, seed=3):
        assert prompt.split(" ")[0] == task.keyword
        assert 0 < len(response) <= 12 and response == response.strip()
        assert response == _expected(prompt), prompt


@pytest.mark.parametrize("name", TASK_NAMES)
def test_splits_deterministic_distinct_and_disjoint(name):
    task = get_task(name)
    train = task_split(task, 30, seed=0)
    assert train == task_split(task, 30, seed=0)
    assert train != task_split(task, 30, seed=1)
    assert len({p for p, _ in train}) == 30
    test = task_split(task, 10, seed=1, exclude={p for p, _ in train})
    assert not {p for p, _ in train} & {p for p, _ in test}


def test_too_many_prompts_raises():
    with pytest.raises(ValueError, match=r"'lookup'.* 40 "):
        task_split(get_task("lookup"), 41, seed=0)
    max3 = get_task("max3")
    train = task_split(max3, 990, seed=0)
    assert len(task_split(max3, 10, seed=1, exclude={p for p, _ in train})) == 10
    with pytest.raises(ValueError, match=r"'max3'.* 10 "):
        task_split(max3, 11, seed=1, exclude={p for p, _ in train})


def test_lookup_table_is_fixed_across_processes():
    assert len(LOOKUP) == 40 and all(len(k) == len(v) == 3 and set(k + v) <= set(ALPHABET) for k, v in LOOKUP.items())
    code = "import json; from fusion_bench_fw.mini_llm.tasks import LOOKUP; print(json.dumps(LOOKUP))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == LOOKUP


def test_write_datasets_round_trip(tmp_path):
    from datasets import load_from_disk

    paths = write_datasets(tmp_path, ["reverse", "lookup", "parity"], n_train=50, n_test=20, seed=7)
    assert set(paths) == {"reverse", "lookup", "parity"}
    for name, splits in paths.items():
        train, test = load_from_disk(splits["train"]), load_from_disk(splits["test"])
        assert splits["train"] == str(tmp_path / name / "train")
        assert train.column_names == test.column_names == ["prompt", "response"]
        assert all(r == _expected(p) for p, r in zip(train["prompt"], train["response"]))
        if name != "lookup":
            assert (len(train), len(test)) == (50, 20)
            assert not set(train["prompt"]) & set(test["prompt"])
    assert len(load_from_disk(paths["lookup"]["train"])) == 40  # capped at the table
    again = write_datasets(tmp_path / "again", ["reverse"], n_train=50, n_test=20, seed=7)
    assert load_from_disk(again["reverse"]["test"])["prompt"] == load_from_disk(paths["reverse"]["test"])["prompt"]
    with pytest.raises(ValueError, match="max3"):
        write_datasets(tmp_path / "bad", ["max3"], n_train=990, n_test=20, seed=0)
    assert not (tmp_path / "bad").exists()


def test_pretraining_corpus_has_no_task_pairs():
    corpus = pretraining_corpus(3000, seed=0)
    assert corpus == pretraining_corpus(3000, seed=0) != pretraining_corpus(3000, seed=1)
    text = "\n".join(corpus)
    assert all(t.keyword in text.split() for t in TASKS) and " = " in text
    for task in TASKS:
        for prompt, response in task_split(task, 40, seed=11):
            assert prompt + response not in text


def test_alias_prompts_name_each_task_by_a_keyword_no_task_uses():
    keywords = {t.keyword for t in TASKS}
    for task in TASKS:
        prompt, _ = task_split(task, 1, seed=3)[0]
        alias = alias_prompt(task, prompt)
        assert alias == task.keyword.upper() + prompt[len(task.keyword):] and alias.split(" ")[0] not in keywords
        assert alias.split(" ", 1)[1] == prompt.split(" ", 1)[1]  # the input and " =" are kept
    with pytest.raises(ValueError, match="'add'"):
        alias_prompt(get_task("add"), "rev abc =")


@pytest.fixture(scope="module")
def tokenizer_texts():
    return pretraining_corpus(500, seed=0) + [p + r for t in TASKS for p, r in task_split(t, 20, seed=2)]


def test_tokenizer_round_trip_and_offline_load(tmp_path, tokenizer_texts):
    from transformers import AutoTokenizer

    from fusion_bench_fw.mini_llm.tokenizer import build_tokenizer

    tok = build_tokenizer(tokenizer_texts, tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert len(tok) == len(loaded) == 320
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id, loaded.unk_token_id) == (0, 1, 2, 3)
    assert loaded.padding_side == "right"
    for task in TASKS:
        for prompt, response in task_split(task, 5, seed=9):
            ids = loaded(prompt + response)["input_ids"]
            assert loaded.decode(ids) == prompt + response == tok.decode(tok(prompt + response)["input_ids"])
            # generation from the prompt continues the same token sequence training saw
            assert ids[: len(loaded(prompt)["input_ids"])] == loaded(prompt)["input_ids"]
    assert loaded.decode(loaded("é ∑ \t!")["input_ids"]) == "é ∑ \t!"  # unseen bytes still round-trip


def test_tokenizer_is_deterministic(tmp_path, tokenizer_texts):
    from fusion_bench_fw.mini_llm.tokenizer import build_tokenizer

    first = build_tokenizer(tokenizer_texts, tmp_path / "a")
    second = build_tokenizer(tokenizer_texts, tmp_path / "b")
    assert first.get_vocab() == second.get_vocab()
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()
    with pytest.raises(ValueError, match="260"):
        build_tokenizer(tokenizer_texts, tmp_path / "c", vocab_size=128)


def test_an_alias_pretraining_shows_the_base_every_task_under_its_alias_only(tmp_path, monkeypatch):
    """Builder v4's recipe on a toy size: pretraining sees the pool tasks' train pairs under their alias
    keywords and never under the keywords the fine-tunes and test splits use."""
    from dataclasses import replace

    from fusion_bench_fw.mini_llm import training
    from fusion_bench_fw.mini_llm.build import build_llm_pool
    from fusion_bench_fw.mini_llm.variants import get_variant

    seen = {}
    real_pretrain = training.pretrain

    def recording_pretrain(model, tokenizer, lines, variant, seed):
        seen["lines"] = list(lines)
        real_pretrain(model, tokenizer, lines[:64], replace(variant, pretrain_steps=2), seed)

    monkeypatch.setattr(training, "pretrain", recording_pretrain)
    variant = replace(get_variant("ta16"), tasks=("reverse", "parity"), eval_tasks=("reverse",), lora_tasks=("parity",),
                      n_train=30, n_test=4, pretrain_lines=50, pretrain_task_pairs=20, finetune_steps=2, ta_grid=(1.0,))
    assert variant.pretrain_alias
    build_llm_pool(variant, 0, tmp_path / "pool")
    from datasets import load_from_disk

    lines = set(seen["lines"])
    for task in ("reverse", "parity"):
        train = load_from_disk(str(tmp_path / "pool" / "data" / task / "train"))
        pairs = list(zip(train["prompt"], train["response"]))
        assert len(pairs) == 30
        assert all(alias_prompt(get_task(task), p) + r in lines for p, r in pairs[:20])
        assert not any(alias_prompt(get_task(task), p) + r in lines for p, r in pairs[20:])
        assert not any(p + r in lines for p, r in pairs)  # the fine-tunes' prompts stay unseen
    assert (tmp_path / "pool" / "card.json").is_file()
