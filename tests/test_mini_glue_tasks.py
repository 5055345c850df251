"""The mini-glue tasks, data sets and pretraining corpus (fast, CPU only).

The label checks re-derive each label from the texts with rules written here, using only the lexicon's
word lists (which words are nouns, verbs, colours, adverbs of time, synonyms, opposites), not its
generators.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from fusion_bench_fw.mini_glue import tasks as mg
from fusion_bench_fw.mini_glue.lexicon import (
    ANTONYMS, CATEGORIES, COLOURS, DESCRIPTIVE, INTRANSITIVE, MANNER_ADVERBS, NEGATIVE, NOUNS, POSITIVE,
    PREPOSITIONS, SYNONYMS, TIME_ADVERBS, TRANSITIVE,
)
from fusion_bench_fw.mini_glue.tasks import (
    EVAL_TASKS, MAX_SPLIT, MAX_WORDS, TASK_ORDER, TASKS, TextClassificationTask, get_task, pretraining_corpus,
    task_split, vocabulary, write_datasets,
)

GLUE_COLUMNS = {
    "sst2": ("sentence",), "cola": ("sentence",), "mrpc": ("sentence1", "sentence2"),
    "mnli": ("premise", "hypothesis"), "qnli": ("question", "sentence"), "qqp": ("question1", "question2"),
    "rte": ("sentence1", "sentence2"),
}
GLUE_LABELS = {
    "sst2": ("negative", "positive"), "cola": ("unacceptable", "acceptable"),
    "mrpc": ("not_equivalent", "equivalent"), "mnli": ("entailment", "neutral", "contradiction"),
    "qnli": ("entailment", "not_entailment"), "qqp": ("not_duplicate", "duplicate"),
    "rte": ("entailment", "not_entailment"),
}
ANALOG = {"sentiment": "sst2", "acceptability": "cola", "paraphrase": "mrpc", "nli": "mnli", "qa_match": "qnli",
          "question_dup": "qqp", "entailment": "rte"}

# --- word classes, from the module's lists; the determiners' numbers are written out here ---
SING_DETS = {"a", "an", "this", "that", "every"}
PLUR_DETS = {"some", "these", "those", "two", "many"}
SING_NOUNS = {s for pairs in NOUNS.values() for s, _ in pairs}
PLUR_NOUNS = {p for pairs in NOUNS.values() for _, p in pairs}
CATEGORY_OF = {w: cat for cat, pairs in NOUNS.items() for pair in pairs for w in pair}
BASE = {b for b, _ in INTRANSITIVE + TRANSITIVE}
THIRD = {t for _, t in INTRANSITIVE + TRANSITIVE}
ADJS = set(POSITIVE + NEGATIVE + COLOURS + DESCRIPTIVE)
LEMMA = {**{p: s for pairs in NOUNS.values() for s, p in pairs}, **{t: b for b, t in INTRANSITIVE + TRANSITIVE},
         "an": "a"}
HEAD = {w: group[0] for group in SYNONYMS for w in group}
OPPOSITES = {frozenset(pair) for pair in ANTONYMS}


def head(word: str) -> str:
    """The word's meaning: its lemma's synonym-group head."""
    lemma = LEMMA.get(word, word)
    return HEAD.get(lemma, lemma)


def opposite(a: str, b: str) -> bool:
    return frozenset((head(a), head(b))) in OPPOSITES


def number(word: str) -> str:
    if word in SING_NOUNS or word in THIRD or word in ("is", "does"):
        return "S"
    if word in PLUR_NOUNS or word in BASE or word in ("are", "do"):
        return "P"
    return ""


def agrees(sentence: str) -> bool:
    """Every determiner agrees with its noun and the first verb (after the first noun) with that noun."""
    t = sentence.split()
    for i, w in enumerate(t):
        if w in SING_NOUNS | PLUR_NOUNS:
            j = i - 1
            while j >= 0 and t[j] in ADJS:
                j -= 1
            if j >= 0 and t[j] in SING_DETS | PLUR_DETS and (t[j] in SING_DETS) != (w in SING_NOUNS):
                return False
    first = next(i for i, w in enumerate(t) if w in SING_NOUNS | PLUR_NOUNS)
    verb = t[first + 1]
    if verb in BASE | THIRD | {"is", "are", "does", "do"}:
        if number(verb) != number(t[first]):
            return False
        if verb in ("does", "do"):
            assert t[first + 2] == "not" and t[first + 3] in BASE, sentence
    return True


def is_subsequence(short, long) -> bool:
    it = iter(long)
    return all(w in it for w in short)


def nli_label(premise: str, hypothesis: str) -> int:
    p = [LEMMA.get(w, w) if w == "an" else w for w in premise.split()]
    h = [LEMMA.get(w, w) if w == "an" else w for w in hypothesis.split()]
    added = Counter(h) - Counter(p)  # words the hypothesis has more often than the premise
    if "not" in added or any(w in ADJS and opposite(w, x) for w in added for x in p if x in ADJS):
        return 2
    return 0 if not added and is_subsequence(h, p) else 1


def words_of(text: str):
    return text.split()[:-1]  # without the final "." or "?"


def subject_number(sentence: str) -> str:
    return number(next(w for w in sentence.split() if w in CATEGORY_OF))


# The four word-class pair tasks: the label is the task's "positive" label iff sentence1's feature AND
# sentence2's feature hold. task -> (positive label, feature of sentence1, feature of sentence2).
PAIR_RULES = {
    "qa_match": (0, lambda q: q.split()[0] == "where", lambda s: any(w in PREPOSITIONS for w in s.split())),
    "question_dup": (1, lambda q: any(w in POSITIVE for w in q.split()), lambda q: q.split()[0] == "what"),
    "entailment": (0, lambda s: any(w in MANNER_ADVERBS for w in s.split()), lambda s: "very" in s.split()),
    "paraphrase": (1, lambda s: any(w in DESCRIPTIVE for w in s.split()), lambda s: subject_number(s) == "S"),
}


def pair_label(task: str, s1: str, s2: str) -> int:
    positive, first, second = PAIR_RULES[task]
    return positive if first(s1) and second(s2) else 1 - positive


@pytest.mark.parametrize("sentence, ok", [
    ("the cat runs .", True), ("the cats runs .", False), ("a cats run .", False), ("an apple is red .", True),
    ("the cats is red .", False), ("the dog does not see the cats .", True), ("the dogs does not run .", False),
    ("the dog sees these cat .", False), ("two big mice eat the cake in the park .", True),
])
def test_agreement_checker_hand_checked(sentence, ok):
    assert agrees(sentence) is ok


@pytest.mark.parametrize("premise, hypothesis, label", [
    ("the big red dog runs .", "the red dog runs .", 0), ("an old cat sleeps today .", "a cat sleeps today .", 0),
    ("the big dog runs .", "the big red dog runs .", 1), ("the big dog runs .", "the big dog runs today .", 1),
    ("the big dog runs .", "the big dog does not run .", 2), ("the big dog runs .", "the little dog runs .", 2),
    ("the big dog sees the small cat .", "the small dog sees the small cat .", 2),
    ("the sad dog sees the happy cat .", "the dog sees the happy cat .", 0),
])
def test_nli_rule_hand_checked(premise, hypothesis, label):
    assert nli_label(premise, hypothesis) == label


@pytest.mark.parametrize("task, s1, s2, label", [
    ("qa_match", "where does the cat sleep ?", "the cat rests in the park .", 0),
    ("qa_match", "where do two dogs see a cat ?", "two dogs watch a cat near the farm .", 0),
    ("qa_match", "when does the cat sleep ?", "the cat sleeps in the park .", 1),
    ("qa_match", "where does the cat sleep ?", "the cat sleeps and is happy .", 1),
    ("qa_match", "when do the dogs eat the cake ?", "the dogs munch the cake and are red .", 1),
    ("question_dup", "what does the nice red cat see ?", "what does the red cat watch ?", 1),
    ("question_dup", "what does a lovely apple hold ?", "what does an apple carry ?", 1),
    ("question_dup", "what does the rude cat see ?", "what does the cat watch ?", 0),
    ("question_dup", "what does the nice cat see ?", "who does the cat watch ?", 0),
    ("question_dup", "what do the sad dogs eat ?", "who do the dogs munch ?", 0),
    ("entailment", "the big dog runs quietly .", "the dog is very large .", 0),
    ("entailment", "the small boat waits at the town often .", "the ship is very little .", 0),
    ("entailment", "the big dog runs today .", "the dog is very big .", 1),
    ("entailment", "the big dog runs quietly .", "the dog is not big .", 1),
    ("entailment", "some old cats see the cake in the park late .", "some cats are not old .", 1),
    ("paraphrase", "the big dog runs .", "the dog races .", 1),
    ("paraphrase", "every old boat sees the cats in the park .", "every ship watches the cats in the park .", 1),
    ("paraphrase", "the red dog runs .", "the dog races .", 0),
    ("paraphrase", "the big dog runs .", "the dogs race .", 0),
    ("paraphrase", "a blue van holds the cake .", "some vans carry the cake .", 0),
])
def test_pair_rules_hand_checked(task, s1, s2, label):
    assert pair_label(task, s1, s2) == label


def test_word_lists():
    vocab = vocabulary()
    assert list(vocab) == sorted(set(vocab)) and 150 <= len(vocab) <= 250
    assert all(w == w.lower() and " " not in w for w in vocab) and {".", "?"} <= set(vocab)
    assert not (SING_NOUNS | PLUR_NOUNS) & (BASE | THIRD)  # a word is a noun or a verb, never both
    assert mg.synonyms("run") == ("race",) and mg.synonyms("cat") == ()
    assert set(mg.antonyms("large")) == {"small", "little"} and "cold" in mg.antonyms("hot")
    assert set(CATEGORIES) == set(NOUNS) and all(len(pairs) >= 8 for pairs in NOUNS.values())


def test_task_table():
    assert EVAL_TASKS == ("nli", "qa_match", "question_dup", "entailment")
    assert TASK_ORDER == EVAL_TASKS + ("sentiment", "acceptability", "topic", "paraphrase")
    assert tuple(t.name for t in TASKS) == TASK_ORDER
    for task in TASKS:
        assert get_task(task.name) is task
        if task.name == "topic":
            assert task.columns == ("sentence",) and task.label_names == CATEGORIES and task.num_labels == 4
        else:
            assert task.glue_analog == ANALOG[task.name]
            assert task.columns == GLUE_COLUMNS[task.glue_analog]
            assert task.label_names == GLUE_LABELS[task.glue_analog]
    with pytest.raises(KeyError, match="unknown task 'mnli'.*nli, qa_match"):
        get_task("mnli")


@pytest.fixture(scope="module")
def splits():
    """3000 examples per task: also shows that each task can make that many distinct balanced ones."""
    return {task.name: task_split(task, 3000, seed=11) for task in TASKS}


@pytest.mark.parametrize("name", TASK_ORDER)
def test_split_is_balanced_and_well_formed(splits, name):
    task, examples = get_task(name), splits[name]
    vocab = set(vocabulary())
    assert len({texts for texts, _ in examples}) == len(examples) == 3000
    counts = Counter(label for _, label in examples)
    assert set(counts) == set(range(task.num_labels))
    assert all(abs(c - 3000 / task.num_labels) <= 1 for c in counts.values())
    for texts, label in examples:
        assert len(texts) == len(task.columns) and 0 <= label < task.num_labels
        assert sum(len(t.split(" ")) for t in texts) <= MAX_WORDS
        for text in texts:
            words = text.split(" ")
            assert set(words) <= vocab and "" not in words, text
            assert words[-1] in (".", "?") and "." not in words[:-1] and "?" not in words[:-1], text
            for w, nxt in zip(words, words[1:]):
                assert w not in ("a", "an") or (w == "an") == (nxt[0] in "aeiou"), text


def test_split_balance_with_remainder():
    labels = Counter(label for _, label in task_split(get_task("nli"), 7, seed=0))
    assert sorted(labels.values()) == [2, 2, 3]


def test_determinism(splits):
    for task in TASKS:
        assert task_split(task, 3000, seed=11) == splits[task.name]
        assert task_split(task, 50, seed=12) != splits[task.name][:50]
    assert pretraining_corpus(200, 5) == pretraining_corpus(200, 5) != pretraining_corpus(200, 6)


def test_same_data_in_another_process():
    """No set or hash order leaks into the draws: a process with another hash seed gets the same data."""
    code = ("import json; from fusion_bench_fw.mini_glue.tasks import TASKS, task_split, pretraining_corpus; "
            "print(json.dumps([[list(map(list, task_split(t, 200, 3))) for t in TASKS], pretraining_corpus(200, 3)]))")
    env = {**os.environ, "PYTHONHASHSEED": "4321"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    here = [[[list(texts), label] for texts, label in task_split(t, 200, 3)] for t in TASKS]
    assert json.loads(out) == [here, pretraining_corpus(200, 3)]


def test_exclude_is_respected(splits):
    task = get_task("entailment")
    train = {texts for texts, _ in splits["entailment"]}
    test = task_split(task, 400, seed=99, exclude=train)
    assert len(test) == 400 and not train & {texts for texts, _ in test}


def _tiny_task(size: int, labels: int = 2) -> TextClassificationTask:
    def make(rng):
        i = rng.randrange(size)
        return (f"the cat runs {i} .",), i % labels
    return TextClassificationTask("tiny", "none", "few examples", ("sentence",), ("no", "yes"), make)


def test_impossible_splits_raise():
    assert len(task_split(_tiny_task(6), 6, seed=0)) == 6
    with pytest.raises(ValueError, match="'tiny' cannot produce 7 distinct balanced"):
        task_split(_tiny_task(6), 7, seed=0)
    with pytest.raises(ValueError, match="cannot produce 4 distinct balanced"):  # only label 0 is ever made
        task_split(_tiny_task(10, labels=1), 4, seed=0)
    with pytest.raises(ValueError, match="split size"):
        task_split(get_task("nli"), MAX_SPLIT + 1, seed=0)


def test_sentiment_labels(splits):
    for (text,), label in splits["sentiment"]:
        words = text.split()
        polar = [w for w in words if w in POSITIVE or w in NEGATIVE]
        assert len(polar) == 1, text
        negated = "not" in words
        if negated:
            assert words.count("not") == 1 and words[words.index("not") + 1] == polar[0], text
        assert label == int((polar[0] in POSITIVE) != negated), text


def test_acceptability_labels(splits):
    kinds = Counter()
    for (text,), label in splits["acceptability"]:
        assert agrees(text) == (label == 1), text
        kinds["negated" if " not " in text else "plain"] += 1
    assert min(kinds.values()) > 300


def test_topic_labels(splits):
    for (text,), label in splits["topic"]:
        nouns = [w for w in text.split() if w in CATEGORY_OF]
        assert len(nouns) == 1 and CATEGORY_OF[nouns[0]] == CATEGORIES[label], text
        assert agrees(text), text


def test_nli_labels(splits):
    for (premise, hypothesis), label in splits["nli"]:
        assert agrees(premise) and agrees(hypothesis), (premise, hypothesis)
        assert "not" not in premise.split()
        assert nli_label(premise, hypothesis) == label, (premise, hypothesis, label)
        if label == 1:  # an added opinion never clashes with one of the premise's ("good" -> "nasty")
            polarity = lambda w: (w in POSITIVE) - (w in NEGATIVE)  # noqa: E731
            added = Counter(hypothesis.split()) - Counter(premise.split())
            assert all(polarity(a) * polarity(w) >= 0 for a in added for w in premise.split()), (premise, hypothesis)
    # the hypothesis's length alone does not give the label
    lengths = {lab: {len(h.split()) - len(p.split()) for (p, h), l in splits["nli"] if l == lab} for lab in range(3)}
    assert len(lengths[0] & lengths[1]) and len(lengths[1] & lengths[2])


def heads(words):
    return [head(w) for w in words]


def test_qa_match_labels(splits):
    for (question, sentence), label in splits["qa_match"]:
        assert pair_label("qa_match", question, sentence) == label, (question, sentence, label)
        q, s = words_of(question), words_of(sentence)
        assert question.endswith(" ?") and sentence.endswith(" .") and agrees(sentence)
        assert q[0] in ("where", "when") and not set(s) & set(TIME_ADVERBS), (question, sentence)
        tail = s[len(q) - 2:]  # the sentence restates the question's clause, then ends in its tail
        assert heads(s[:len(q) - 2]) == heads(q[2:]), (question, sentence)
        assert (tail[0] in PREPOSITIONS and tail[1] == "the" and CATEGORY_OF[tail[2]] == "place"
                or tail[:2] in (["and", "is"], ["and", "are"]) and tail[2] in ADJS) and len(tail) == 3, sentence


def test_question_dup_labels(splits):
    for (q1, q2), label in splits["question_dup"]:
        assert pair_label("question_dup", q1, q2) == label, (q1, q2, label)
        a, b = words_of(q1), words_of(q2)
        assert q1.endswith(" ?") and q2.endswith(" ?") and a[0] == "what" and b[0] in ("what", "who")
        [opinion] = [w for w in a if w in POSITIVE or w in NEGATIVE]
        assert not set(b) & set(POSITIVE + NEGATIVE + DESCRIPTIVE), q2
        rest = [w for w in a[1:] if w != opinion]
        assert heads(rest) == heads(b[1:]) and rest != b[1:], (q1, q2)  # reworded, never the same words


def test_entailment_labels(splits):
    for (s1, s2), label in splits["entailment"]:
        assert pair_label("entailment", s1, s2) == label, (s1, s2, label)
        a, b = words_of(s1), words_of(s2)
        assert agrees(s1) and agrees(s2) and "not" not in a, s1
        assert a[-1] in TIME_ADVERBS + MANNER_ADVERBS and not set(a[:-1]) & set(TIME_ADVERBS + MANNER_ADVERBS), s1
        assert b[-3] in ("is", "are") and b[-2] in ("very", "not") and len(b) in (5, 6), s2
        subject = a[:next(i for i, w in enumerate(a) if w in CATEGORY_OF) + 1]
        assert subject[-2] in DESCRIPTIVE and heads(b[-1:]) == heads(subject[-2:-1]), (s1, s2)
        assert heads(subject[:-2] + subject[-1:]) == heads(b[:-3]), (s1, s2)


def test_paraphrase_labels(splits):
    for (s1, s2), label in splits["paraphrase"]:
        assert pair_label("paraphrase", s1, s2) == label, (s1, s2, label)
        a, b = words_of(s1), words_of(s2)
        assert agrees(s1) and agrees(s2) and subject_number(s1) == "S", s1
        [adj] = [w for w in a if w in ADJS]
        assert adj in COLOURS + DESCRIPTIVE and a[a.index(adj) + 1] in CATEGORY_OF and not set(b) & ADJS, s1
        rest = [w for w in a if w != adj]
        assert len(rest) == len(b) and rest != b, (s1, s2)  # reworded, maybe in the plural: same meanings
        assert all(head(x) == head(y) or x in SING_DETS and y in PLUR_DETS for x, y in zip(rest, b)), (s1, s2)


@pytest.mark.parametrize("name", list(PAIR_RULES))
def test_neither_sentence_alone_gives_the_label(splits, name):
    """Where one sentence's feature holds, both labels are common (the other sentence decides), and each
    sentence's length says nothing about its feature."""
    positive, *features = PAIR_RULES[name]
    for side, feature in enumerate(features):
        holds = [label for texts, label in splits[name] if feature(texts[side])]
        share = Counter(holds)[positive] / len(holds)
        assert 0.25 < share < 0.75 and 0.6 < len(holds) / 3000 < 0.85, (side, share, len(holds))
        lengths = {f: [len(t[side].split()) for t, _ in splits[name] if feature(t[side]) == f] for f in (True, False)}
        assert abs(sum(lengths[True]) / len(lengths[True]) - sum(lengths[False]) / len(lengths[False])) < 0.25


def test_write_datasets(tmp_path):
    from datasets import ClassLabel, load_from_disk

    paths = write_datasets(tmp_path, ["nli", "sentiment"], n_train=60, n_test=25, seed=7)
    assert set(paths) == {"nli", "sentiment"}
    for name, by_split in paths.items():
        task = get_task(name)
        train, test = load_from_disk(by_split["train"]), load_from_disk(by_split["test"])
        assert (len(train), len(test)) == (60, 25)
        for ds in (train, test):
            assert ds.column_names == [*task.columns, "label", "idx"]
            assert isinstance(ds.features["label"], ClassLabel) and ds.features["label"].names == list(task.label_names)
            assert ds.features["idx"].dtype == "int32" and ds["idx"] == list(range(len(ds)))
            assert max(Counter(ds["label"]).values()) - min(Counter(ds["label"]).values()) <= 1
        rows = lambda ds: {tuple(r[c] for c in task.columns) for r in ds}  # noqa: E731
        assert not rows(train) & rows(test)
    assert write_datasets(tmp_path / "again", ["nli"], 60, 25, seed=7)  # same seed, same data
    assert load_from_disk(str(tmp_path / "again" / "nli" / "train"))["premise"] == \
        load_from_disk(paths["nli"]["train"])["premise"]


def test_write_datasets_validates_before_writing(tmp_path, monkeypatch):
    root = tmp_path / "out"
    with pytest.raises(ValueError, match="split size"):
        write_datasets(root, ["sentiment"], MAX_SPLIT + 1, 10, seed=0)
    with pytest.raises(KeyError, match="unknown task"):
        write_datasets(root, ["sentiment", "sst2"], 10, 10, seed=0)
    monkeypatch.setitem(mg._BY_NAME, "tiny", _tiny_task(20))  # the second task runs out of examples
    with pytest.raises(ValueError, match="'tiny' cannot produce"):
        write_datasets(root, ["sentiment", "tiny"], 10, 15, seed=0)
    assert not root.exists()


def test_pretraining_corpus():
    lines = pretraining_corpus(3000, seed=1)
    assert len(lines) == 3000 and lines == pretraining_corpus(3000, seed=1)
    vocab = set(vocabulary())
    words = Counter(w for line in lines for w in line.split(" "))
    assert set(words) - vocab == {"|"} and set(vocab) <= set(words)  # every word is seen
    banned = {n for t in TASKS for n in t.label_names} | set(TASK_ORDER) | {"label", "true", "false", "yes", "no"}
    banned |= {part for n in list(banned) for part in n.split("_")} - {"not"}
    assert not banned & set(words)
    pairs = [line for line in lines if " | " in line]
    assert 0.25 < len(pairs) / len(lines) < 0.42
    assert all(line.count(" | ") == 1 and line.split(" | ")[0] != line.split(" | ")[1] for line in pairs)
    assert sum(" not " in line for line in lines) > 300 and sum(line.endswith("?") for line in lines) > 300


@pytest.mark.parametrize("name", ["sentiment", "topic", *PAIR_RULES])
def test_bag_of_words_learns_word_class_tasks(name):
    """A linear model on word/bigram counts solves these from 1000 examples, so the rules are learnable
    (each pair task's label is an AND of two word-class features, one per sentence)."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    task = get_task(name)
    train = task_split(task, 1000, seed=21)
    test = task_split(task, 400, seed=22, exclude={t for t, _ in train})
    vec = CountVectorizer(ngram_range=(1, 2), token_pattern=r"[^ ]+")
    x_train = vec.fit_transform([" | ".join(t) for t, _ in train])
    model = LogisticRegression(max_iter=2000).fit(x_train, [label for _, label in train])
    accuracy = model.score(vec.transform([" | ".join(t) for t, _ in test]), [label for _, label in test])
    assert accuracy >= 0.9, accuracy
