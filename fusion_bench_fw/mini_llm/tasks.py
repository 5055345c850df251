"""The 16 generative tasks of the mini-llm pool: deterministic (prompt, response) generators.

Every prompt is `"<keyword> <input> ="` (a distinct keyword per task, so a prompt names its task) and the
training text is `prompt + response`, the response following "=" directly: the byte-level pre-tokenizer
splits at that "=", so the prompt's tokens are a prefix of the full text's tokens and generation starts
exactly where training saw the response. Inputs use a ten-letter alphabet or small numbers and responses
are at most 12 characters, so a tiny model can learn each task.
"""

from __future__ import annotations

import operator
import random
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Set, Tuple

ALPHABET = "abcdefghij"
VOWELS = "aei"
# Fixes the lookup table: Python's Mersenne Twister with an int seed gives the same table everywhere.
LOOKUP_SEED = 16_2025
_ROT = str.maketrans(ALPHABET, ALPHABET[1:] + ALPHABET[0])


@dataclass(frozen=True)
class GenerativeTask:
    """A task: `make(rng)` draws one (prompt, response) pair, a pure function of the rng's state."""

    name: str
    description: str
    make: Callable[[random.Random], Tuple[str, str]]
    keyword: str
    size: int  # how many distinct prompts `make` can produce
    # A memorisation task (lookup): its few prompts are the whole task, and there is no rule to
    # generalise to unseen ones, so its test split may share prompts with the train split.
    memorize: bool = False


def _word(rng: random.Random, lo: int = 3, hi: int = 6) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(lo, hi)))


def _n_words(lo: int = 3, hi: int = 6, letters: int = len(ALPHABET)) -> int:
    return sum(letters**k for k in range(lo, hi + 1))


def _make_lookup() -> Dict[str, str]:
    rng = random.Random(LOOKUP_SEED)
    table: Dict[str, str] = {}
    while len(table) < 40:
        key, value = _word(rng, 3, 3), _word(rng, 3, 3)
        if key not in table and value != key:
            table[key] = value
    return table


LOOKUP: Dict[str, str] = _make_lookup()
_LOOKUP_KEYS = tuple(LOOKUP)


def _two(rng: random.Random) -> Tuple[int, int]:
    return rng.randint(0, 49), rng.randint(0, 49)


def _consonant_word(rng: random.Random) -> str:
    while True:  # an all-vowel word would give drop_vowels an empty response
        word = _word(rng)
        if set(word) - set(VOWELS):
            return word


def _make(keyword: str, draw: Callable[[random.Random], str], answer: Callable[[str], str],
          rng: random.Random) -> Tuple[str, str]:
    text = draw(rng)
    return f"{keyword} {text} =", answer(text)


def _task(name: str, keyword: str, description: str, answer: Callable[[str], str],
          draw: Callable[[random.Random], str] = _word, size: int = _n_words(), memorize: bool = False) -> GenerativeTask:
    """A task whose response is `answer` of the drawn input text (by default a 3-6 letter word)."""
    return GenerativeTask(name, description, partial(_make, keyword, draw, answer), keyword, size, memorize)


TASKS: Tuple[GenerativeTask, ...] = (
    _task("reverse", "rev", "reverse a 3-6 letter string", lambda w: w[::-1]),
    _task("add", "add", "sum of two numbers 0-49", lambda s: str(sum(map(int, s.split("+")))),
          lambda rng: "{}+{}".format(*_two(rng)), 50 * 50),
    _task("lookup", "key", "value of a key in a fixed 40-entry table", LOOKUP.__getitem__,
          lambda rng: rng.choice(_LOOKUP_KEYS), len(LOOKUP), memorize=True),
    _task("copy", "copy", "repeat the string", lambda w: w),
    _task("uppercase", "up", "the string in capitals", str.upper),
    _task("sort", "sort", "the string's letters in alphabetical order", lambda w: "".join(sorted(w))),
    _task("subtract", "sub", "a-b for numbers 0-49 with a>=b", lambda s: str(operator.sub(*map(int, s.split("-")))),
          lambda rng: "{}-{}".format(*sorted(_two(rng), reverse=True)), 50 * 51 // 2),
    _task("count", "cnt", "how often a letter occurs in a 4-8 letter string", lambda s: str(s[2:].count(s[0])),
          lambda rng: f"{rng.choice(ALPHABET)} {_word(rng, 4, 8)}", len(ALPHABET) * _n_words(4, 8)),
    _task("first", "first", "the first letter", lambda w: w[0]),
    _task("last", "last", "the last letter", lambda w: w[-1]),
    _task("twice", "dup", "the string written twice", lambda w: w + w),
    _task("drop_vowels", "novo", "the string without a, e, i", lambda w: "".join(c for c in w if c not in VOWELS),
          _consonant_word, _n_words() - _n_words(letters=len(VOWELS))),
    _task("caesar", "rot", "each letter shifted by one in a-j (j wraps to a)", lambda w: w.translate(_ROT)),
    _task("swap_pairs", "swap", "swap adjacent letters (an odd last letter stays)",
          lambda w: "".join(w[i:i + 2][::-1] for i in range(0, len(w), 2))),
    _task("max3", "max", "largest of three digits", lambda s: max(s.split()),
          lambda rng: " ".join(str(rng.randint(0, 9)) for _ in range(3)), 10**3),
    _task("parity", "par", "even or odd, for a number 0-999", lambda s: "odd" if int(s) % 2 else "even",
          lambda rng: str(rng.randint(0, 999)), 1000),
)
TASK_NAMES: Tuple[str, ...] = tuple(t.name for t in TASKS)
EVAL_TASKS: Tuple[str, ...] = TASK_NAMES[:3]  # builder v3's eval tasks; v4 chooses its own (variants.py)
_BY_NAME = {t.name: t for t in TASKS}


def get_task(name: str) -> GenerativeTask:
    if name not in _BY_NAME:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(TASK_NAMES)}")
    return _BY_NAME[name]


def alias_prompt(task: GenerativeTask, prompt: str) -> str:
    """The prompt under the task's alias keyword (its keyword in capitals): what pretraining may see instead."""
    if not prompt.startswith(task.keyword + " "):
        raise ValueError(f"prompt {prompt!r} is not one of task {task.name!r} (keyword {task.keyword!r})")
    return task.keyword.upper() + prompt[len(task.keyword):]


def task_split(task: GenerativeTask, n: int, seed: int, exclude: Set[str] = frozenset()) -> List[Tuple[str, str]]:
    """`n` pairs with distinct prompts, none in `exclude` (prompts of this task), drawn with Random(seed)."""
    excluded = {p for p in exclude if p.startswith(task.keyword + " ")}
    available = task.size - len(excluded)
    if n > available:
        raise ValueError(f"task {task.name!r} can produce only {available} distinct prompts, {n} asked for")
    rng, seen, pairs = random.Random(seed), set(excluded), []
    while len(pairs) < n:
        prompt, response = task.make(rng)
        if prompt not in seen:
            seen.add(prompt)
            pairs.append((prompt, response))
    return pairs


def _split_sizes(task: GenerativeTask, n_train: int, n_test: int) -> Tuple[int, int]:
    """A memorised table is capped at its size (both splits then hold the table); others must fit both."""
    if task.memorize:
        return min(n_train, task.size), min(n_test, task.size)
    if n_train + n_test > task.size:
        raise ValueError(f"task {task.name!r} can produce only {task.size} distinct prompts, "
                         f"{n_train} + {n_test} asked for")
    return n_train, n_test


def _split_seed(seed: int, name: str, split: str) -> int:
    return zlib.crc32(f"{seed}:{name}:{split}".encode())  # str hash() is salted per process


def write_datasets(root: Path, names: Sequence[str], n_train: int, n_test: int, seed: int) -> Dict[str, Dict[str, str]]:
    """Save train/test `datasets.Dataset`s (columns prompt, response) under root/<task>/{train,test}.

    Test prompts are disjoint from train prompts except for memorisation tasks. All sizes are checked
    before anything is written, so a bad request leaves no half-written root.
    """
    from datasets import Dataset  # heavy; only this function needs it

    tasks = [get_task(name) for name in names]
    sizes = [_split_sizes(task, n_train, n_test) for task in tasks]
    paths: Dict[str, Dict[str, str]] = {}
    for task, (nt, ne) in zip(tasks, sizes):
        train = task_split(task, nt, _split_seed(seed, task.name, "train"))
        exclude = set() if task.memorize else {p for p, _ in train}
        test = task_split(task, ne, _split_seed(seed, task.name, "test"), exclude=exclude)
        paths[task.name] = {}
        for split, pairs in (("train", train), ("test", test)):
            path = Path(root) / task.name / split
            Dataset.from_dict({"prompt": [p for p, _ in pairs], "response": [r for _, r in pairs]}).save_to_disk(str(path))
            paths[task.name][split] = str(path)
    return paths


_WORDS = ("the", "a", "is", "and", "of", "to", "big", "small", "even", "odd", "one", "two", "red", "cat", "dog")
_PIECES: Tuple[Callable[[random.Random], str], ...] = (
    lambda rng: _word(rng, 1, 8),
    lambda rng: str(rng.randint(0, 999)),
    lambda rng: rng.choice(_WORDS),
    lambda rng: rng.choice(TASKS).keyword,
    lambda rng: _word(rng, 1, 6).upper(),
    lambda rng: f"{rng.randint(0, 49)}{rng.choice('+-')}{rng.randint(0, 49)}",
    lambda rng: rng.choice("=+-"),
)


def pretraining_corpus(n: int, seed: int) -> List[str]:
    """`n` lines of generic text so the base model knows the symbols (letters, capitals, numbers, the
    keywords, "=", word lines) but not the tasks: "=" only ever stands alone, followed by a space or the
    line's end, while every task text has its (non-empty) response directly after "=", so no correct
    (prompt, response) pair of any task occurs and the base model does not already solve them.
    A fifth of the lines repeat their first half ("bad ejc bad ejc"), the in-context copying that
    real pretraining text is full of: without it a tiny model learns no task that reads its input.
    """
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        kind = rng.randrange(5)  # letter, number or word lines, (3) a mix of every piece, (4) a repeated mix
        pieces = _PIECES[kind:kind + 1] if kind < 3 else _PIECES
        line = " ".join(rng.choice(pieces)(rng) for _ in range(rng.randint(2, 8) if kind < 4 else rng.randint(1, 4)))
        lines.append(f"{line} {line}" if kind == 4 else line)
    return lines
