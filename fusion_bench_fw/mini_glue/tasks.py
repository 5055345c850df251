"""The eight classification tasks of the mini-glue pool: deterministic (texts, label) generators.

Each task copies one GLUE task's layout (its text columns, its label order) so FusionBench-style GLUE
loaders see the real layout. The texts are drawn from the closed lexicon of `lexicon` (about 200
lowercase words) with its small grammar. The labels are local rules (a lexicon word, a "not" before an
adjective, number agreement), and the four sentence-pair tasks other than `nli` are monotone rules over
word classes of their two sentences (see "the word-class pair tasks" below). A tiny GPT-2 pretrained on
`pretraining_corpus` learns each task from about a thousand examples. An example (all its texts) has at
most `MAX_WORDS` tokens, punctuation counted.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Set, Tuple

from .lexicon import (
    ADVERBS, ALL_ADJS, ALL_NOUNS, INTRANS, NOUNS_OF, NP, RANK, TRANS, Clause, Question, add_adj, as_sentence, aux,
    be, determiner, make_clause, make_np, objects_for, pick_tail, place_phrase, random_question, reword, verb_phrase,
    with_adj,
)
from .lexicon import (  # noqa: F401  (re-exported: the word lists are this module's interface too)
    ANTONYMS, CATEGORIES, COLOURS, DESCRIPTIVE, INTRANSITIVE, MANNER_ADVERBS, NEGATIVE, NOUNS, PLURAL_DETS, POSITIVE,
    PREPOSITIONS, QUESTION_WORDS, SINGULAR_DETS, SYNONYMS, TIME_ADVERBS, TRANSITIVE, antonyms, synonyms, vocabulary,
)

MAX_WORDS = 20
# No split of a tiny model's data needs more; the cap makes a bad request fail at once instead of
# drawing for minutes before the distinct examples run out.
MAX_SPLIT = 50_000
# task_split gives up after this many draws in a row that yield no new usable example.
_PATIENCE = 20_000


# --- the single-sentence tasks and nli -------------------------------------------------------------


def _sentiment(rng: random.Random, label: int) -> Tuple[str, ...]:
    """One sentiment adjective; a "not" right before it flips its polarity (never "not a good cake",
    which word pairs alone could not tell from "a good cake")."""
    negated = rng.random() < 0.5
    word = rng.choice(POSITIVE if (label == 1) != negated else NEGATIVE)
    degree = ("not",) if negated else (("very",) if rng.random() < 0.3 else ())
    form = rng.randrange(3)
    if form == 0:  # the red car is not good .
        subj = make_np(rng)
        words = subj.words() + (be(subj.plural),) + degree + (word,)
    elif form == 1:  # this is a good cake . / these are not awful red cakes .
        plural = negated or rng.random() < 0.5
        pronoun = rng.choice(("these", "those") if plural else ("this", "that"))
        adjs = (word,) + ((rng.choice(COLOURS),) if rng.random() < 0.3 else ())
        obj = NP("" if plural else "a", adjs, rng.choice(ALL_NOUNS), plural)
        words = (pronoun, be(plural)) + (("not",) if negated else ()) + obj.words()
    else:  # the dog runs and is very happy .
        subj = make_np(rng)
        verb = verb_phrase(rng.choice(INTRANS), subj.plural)
        words = subj.words() + verb + ("and", be(subj.plural)) + degree + (word,)
    return (as_sentence(words),)


def _acceptability(rng: random.Random, label: int) -> Tuple[str, ...]:
    """A grammatical sentence, or one with exactly one number clash: verb vs subject, or determiner vs noun."""
    subj = make_np(rng)
    form = rng.randrange(3)  # 0 plain verb, 1 "does not" + verb, 2 copula + adjective
    verb = rng.choice(INTRANS + TRANS)
    obj = make_np(rng, objects_for(verb)) if form < 2 and verb in TRANS else None
    errors = ("verb", "subject") + (("object",) if obj else ())
    error = rng.choice(errors) if label == 0 else None
    if error == "subject":
        subj = replace(subj, det=rng.choice(SINGULAR_DETS if subj.plural else PLURAL_DETS))
    if error == "object":
        obj = replace(obj, det=rng.choice(SINGULAR_DETS if obj.plural else PLURAL_DETS))
    verb_plural = subj.plural != (error == "verb")
    if form == 2:
        negation = ("not",) if rng.random() < 0.3 else ()
        words = subj.words() + (be(verb_plural),) + negation + (rng.choice(ALL_ADJS),)
    else:
        tail = pick_tail(rng, ("none", "adverb", "place"))
        words = subj.words() + verb_phrase(verb, verb_plural, form == 1) + (obj.words() if obj else ()) + tail
    return (as_sentence(words),)


def _topic(rng: random.Random, label: int) -> Tuple[str, ...]:
    """The sentence's only noun, its subject, is from category `label`."""
    subj = make_np(rng, NOUNS_OF[CATEGORIES[label]], (0, 2), ALL_ADJS)
    form = rng.randrange(3)
    if form == 2:
        negation = ("not",) if rng.random() < 0.3 else ()
        words = subj.words() + (be(subj.plural),) + negation + (rng.choice(ALL_ADJS),)
    else:
        verb = verb_phrase(rng.choice(INTRANS), subj.plural, form == 1)
        words = subj.words() + verb + pick_tail(rng, ("none", "adverb"))
    return (as_sentence(words),)


def _removals(c: Clause) -> List[Tuple[str, int]]:
    """What can be dropped from `c` and leave a sentence it entails: an adjective, or its tail."""
    ops = [("subj", i) for i in range(len(c.subj.adjs))]
    ops += [("obj", i) for i in range(len(c.obj.adjs))] if c.obj else []
    return ops + ([("tail", 0)] if c.tail else [])


def _remove(c: Clause, op: Tuple[str, int]) -> Clause:
    part, i = op
    if part == "tail":
        return replace(c, tail=())
    np = getattr(c, part)
    return replace(c, **{part: replace(np, adjs=np.adjs[:i] + np.adjs[i + 1:])})


def _nli(rng: random.Random, label: int) -> Tuple[str, ...]:
    """0: the hypothesis drops an adjective or the adverb; 1: it adds an adjective or adverb the premise
    lacks; 2: it negates the verb or swaps an adjective for its opposite. 1 and 2 may also drop something,
    so the hypothesis's length alone does not give the label."""
    premise = make_clause(rng, subj_adjs=(1, 2), obj_adjs=(0, 1), pool=ALL_ADJS, tails=("none", "none", "adverb"))
    hyp = premise
    if label == 0 or rng.random() < 0.35:
        hyp = _remove(hyp, rng.choice(_removals(hyp)))
        if rng.random() < 0.3 and _removals(hyp):
            hyp = _remove(hyp, rng.choice(_removals(hyp)))
    premise_adjs = premise.subj.adjs + (premise.obj.adjs if premise.obj else ())
    if label == 1:
        ops = ["subj"] + (["obj"] if hyp.obj and len(hyp.obj.adjs) < 2 else []) + ([] if premise.tail else ["tail"])
        op = rng.choice(ops)
        if op == "tail":
            hyp = replace(hyp, tail=(rng.choice(ADVERBS),))
        else:  # an adjective that no premise adjective implies or rules out
            np = getattr(hyp, op)
            adjs = add_adj(rng, np.adjs, ALL_ADJS, avoid=premise_adjs)
            hyp = replace(hyp, **{op: replace(np, adjs=adjs)})
    elif label == 2:
        # an opposite new to the premise: "the cold goat likes the hot plane" -> "... likes the cold plane"
        # would contradict through word positions alone, with no new word to show it
        fresh = {a: [o for o in antonyms(a) if o not in premise_adjs] for a in premise_adjs}
        swaps = [(part, i) for part in ("subj", "obj") if getattr(hyp, part)
                 for i, a in enumerate(getattr(hyp, part).adjs) if fresh[a]]
        if swaps and rng.random() < 0.5:
            part, i = rng.choice(swaps)
            np = getattr(hyp, part)
            adjs = list(np.adjs)
            adjs[i] = rng.choice(fresh[adjs[i]])
            hyp = replace(hyp, **{part: replace(np, adjs=tuple(sorted(adjs, key=RANK.__getitem__)))})
        else:
            hyp = replace(hyp, negated=True)
    return as_sentence(premise.words()), as_sentence(hyp.words())


# --- the word-class pair tasks ---------------------------------------------------------------------
#
# qa_match, question_dup, entailment and paraphrase label a pair by a monotone rule, an AND of one
# feature of each sentence, over word classes of the lexicon (each task over its own classes). Why not
# GLUE's real relations (does the sentence hold the question's subject, is one question a rewording of
# the other)? Those compare the two sentences' words for identity, and the tiny GPT-2 learns no such
# comparison from a thousand examples: it memorised the train set and stayed at chance on test (47-58 %),
# and probes on the same model put "sentence2 has a noun sentence1 lacks" at 51 % (58 % with 3000
# examples) and "both sentences have the same polarity" (an equality, i.e. an XOR) at 51 % even with
# 3000 examples and 1500 steps, while "both sentences are positive" (an AND of word-class features)
# reached 99.8 % and "sentence2's subject is an animal or a food" 91 %.
#
# Each feature is the class of the word filling a fixed slot (a colour or a size adjective, "very" or
# "not", ...), so no feature changes a sentence's length and the lengths say nothing about the label.
# Sentence2 restates sentence1 (synonyms, a dropped or changed word), so the pairs read like GLUE's;
# the restated words never decide the label. The classes (sentence1's; sentence2's): qa_match "where" vs
# "when"; a place phrase vs "and is <adjective>". question_dup: a positive vs a negative adjective;
# "what" vs "who". entailment: a manner vs a time adverb; "very" vs "not". paraphrase: a size vs a colour
# adjective; singular vs plural.


def _sides(rng: random.Random, both: bool) -> Tuple[bool, bool]:
    """(sentence1's feature, sentence2's feature) for a rule "label iff both": both true when `both`,
    else sentence1's alone false (45 %), sentence2's alone false (45 %) or both false (10 %). So each
    feature holds in most rows of the other label, and each sentence alone gives at most 77.5 % accuracy."""
    if both:
        return True, True
    r = rng.random()
    return 0.45 <= r < 0.9, r < 0.45


def _qa_match(rng: random.Random, label: int) -> Tuple[str, ...]:
    """qnli-like (does the sentence answer the question?): the sentence restates the question's clause
    and ends in a place phrase or in "and is <adjective>"; it never holds a time word, so a "when"
    question is never answered. Monotone word-class rule: entailment iff the question asks "where" AND
    the sentence has a place phrase ("in/at/near the <place>"). 0: "where does the cat sleep ?" / "the
    cat rests in the park ."; 1: "when does the cat sleep ?" / "the cat sleeps in the park .", "where
    does the cat sleep ?" / "the cat sleeps and is happy ."."""
    where, place = _sides(rng, label == 0)
    c = make_clause(rng, obj_adjs=(0, 0), tails=("none",))
    obj = c.obj.words() if c.obj else ()
    question = ("where" if where else "when", aux(c.subj.plural), *c.subj.words(), c.verb, *obj, "?")
    tail = place_phrase(rng) if place else ("and", be(c.subj.plural), rng.choice(ALL_ADJS))
    return " ".join(question), as_sentence(replace(reword(rng, c, rng.randrange(2)), tail=tail).words())


def _question_dup(rng: random.Random, label: int) -> Tuple[str, ...]:
    """qqp-like (is question2 a rewording of question1?): question1 "what does <S> <V> ?" with an opinion
    adjective on S; question2 rewords it with synonyms, drops the opinion and asks "what" or "who".
    Monotone word-class rule: duplicate iff question1's opinion adjective is positive (not negative)
    AND question2 asks "what" (not "who"). 1: "what does the nice red cat see ?" / "what does the red
    cat watch ?"; 0: "what does the rude cat see ?" / "what does the cat watch ?", "what does the nice
    cat see ?" / "who does the cat watch ?"."""
    positive, what = _sides(rng, label == 1)
    q = Question("what", make_np(rng, pool=COLOURS), rng.choice(TRANS))
    other = replace(reword(rng, q, rng.choice((1, 1, 2))), kind="what" if what else "who")
    q = replace(q, subj=with_adj(rng, q.subj, POSITIVE if positive else NEGATIVE))
    return " ".join(q.words()), " ".join(other.words())


def _entailment(rng: random.Random, label: int) -> Tuple[str, ...]:
    """rte-like (does sentence1 entail sentence2?): sentence1 "<det> <size adjective> <noun> <verb
    phrase> <adverb> ."; sentence2 states the adjective, "<det> <noun> is very/not <adjective> ." (maybe
    with synonyms). Monotone word-class rule: entailment iff sentence1's adverb is a manner adverb (not a
    time adverb, which ties it to one moment) AND sentence2 says "very" (not "not"). 0: "the big dog
    runs quietly ." / "the dog is very large ."; 1: "the big dog runs today ." / "the dog is very big .",
    "the big dog runs quietly ." / "the dog is not big ."."""
    manner, affirmed = _sides(rng, label == 0)
    c = make_clause(rng, subj_adjs=(0, 0), tails=("none", "place"))
    adj = rng.choice(DESCRIPTIVE)
    subj = replace(c.subj, adjs=(adj,))
    premise = replace(c, subj=subj, tail=c.tail + (rng.choice(MANNER_ADVERBS if manner else TIME_ADVERBS),))
    stated = replace(subj, adjs=())
    if synonyms(stated.noun) and rng.random() < 0.5:
        stated = replace(stated, noun=rng.choice(synonyms(stated.noun)))
    if synonyms(adj) and rng.random() < 0.5:
        adj = rng.choice(synonyms(adj))
    hyp = (*stated.words(), be(subj.plural), "very" if affirmed else "not", adj)
    return as_sentence(premise.words()), as_sentence(hyp)


def _paraphrase(rng: random.Random, label: int) -> Tuple[str, ...]:
    """mrpc-like (are the two sentences equivalent?): sentence1 is about one thing with one adjective;
    sentence2 rewords it with synonyms, without the adjective, in the singular or the plural. Monotone
    word-class rule: equivalent iff sentence1's adjective is a size/age/speed/temperature adjective (not
    a colour) AND sentence2 stays singular. 1: "the big dog runs ." / "the dog races ."; 0: "the red dog
    runs ." / "the dog races .", "the big dog runs ." / "the dogs race ."."""
    sized, singular = _sides(rng, label == 1)
    c = make_clause(rng, subj_adjs=(0, 0), obj_adjs=(0, 0), tails=("none", "none", "place"))
    c = replace(c, subj=replace(c.subj, det=determiner(rng, False), plural=False))
    other = reword(rng, c, rng.choice((1, 1, 2)))
    if not singular:
        det = "the" if other.subj.det == "the" else rng.choice(PLURAL_DETS)
        other = replace(other, subj=replace(other.subj, det=det, plural=True))
    c = replace(c, subj=replace(c.subj, adjs=(rng.choice(DESCRIPTIVE if sized else COLOURS),)))
    return as_sentence(c.words()), as_sentence(other.words())


# --- the task table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextClassificationTask:
    """A task: `make(rng)` draws one (texts in `columns` order, label), a pure function of the rng's state."""

    name: str
    glue_analog: str
    description: str
    columns: Tuple[str, ...]
    label_names: Tuple[str, ...]
    make: Callable[[random.Random], Tuple[Tuple[str, ...], int]]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def _draw(build: Callable[[random.Random, int], Tuple[str, ...]], num_labels: int,
          rng: random.Random) -> Tuple[Tuple[str, ...], int]:
    """A uniformly drawn label and texts for it; texts over MAX_WORDS are drawn again (rarely needed)."""
    label = rng.randrange(num_labels)
    while True:
        texts = build(rng, label)
        if sum(len(t.split(" ")) for t in texts) <= MAX_WORDS:
            return texts, label


def _task(name: str, glue_analog: str, description: str, columns: Tuple[str, ...], label_names: Tuple[str, ...],
          build: Callable[[random.Random, int], Tuple[str, ...]]) -> TextClassificationTask:
    return TextClassificationTask(name, glue_analog, description, columns, label_names,
                                  partial(_draw, build, len(label_names)))


TASKS: Tuple[TextClassificationTask, ...] = (
    _task("nli", "mnli", "hypothesis drops (entailment), adds (neutral) or negates/opposes (contradiction) a detail",
          ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), _nli),
    _task("qa_match", "qnli", "question asks 'where' and the sentence has a place phrase",
          ("question", "sentence"), ("entailment", "not_entailment"), _qa_match),
    _task("question_dup", "qqp", "no opinion adjective in question1 and no size/age adjective added in question2",
          ("question1", "question2"), ("not_duplicate", "duplicate"), _question_dup),
    _task("entailment", "rte", "no time adverb in sentence1 and no 'not' in sentence2",
          ("sentence1", "sentence2"), ("entailment", "not_entailment"), _entailment),
    _task("sentiment", "sst2", "polarity of the sentiment adjective, flipped by a 'not' before it",
          ("sentence",), ("negative", "positive"), _sentiment),
    _task("acceptability", "cola", "number agreement of verb and subject, and of determiner and noun",
          ("sentence",), ("unacceptable", "acceptable"), _acceptability),
    _task("topic", "ag_news-like", "category of the subject noun", ("sentence",), CATEGORIES, _topic),
    _task("paraphrase", "mrpc", "no colour in sentence1 and no manner adverb added in sentence2",
          ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), _paraphrase),
)
TASK_ORDER: Tuple[str, ...] = tuple(t.name for t in TASKS)
EVAL_TASKS: Tuple[str, ...] = ("nli", "qa_match", "question_dup", "entailment")
_BY_NAME = {t.name: t for t in TASKS}


def get_task(name: str) -> TextClassificationTask:
    if name not in _BY_NAME:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(TASK_ORDER)}")
    return _BY_NAME[name]


def _check_size(task: TextClassificationTask, n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_SPLIT:
        raise ValueError(f"task {task.name!r}: split size must be an int in [0, {MAX_SPLIT}], got {n!r}")


def task_split(task: TextClassificationTask, n: int, seed: int,
               exclude: Set[Tuple[str, ...]] = frozenset()) -> List[Tuple[Tuple[str, ...], int]]:
    """`n` examples with distinct text tuples, none in `exclude`, drawn with Random(seed), labels balanced
    (label i gets n // k examples, one more for the first n % k labels).

    Raises ValueError when `_PATIENCE` draws in a row give nothing usable: the task then cannot make that
    many distinct balanced examples (or is close enough to its limit that drawing is hopeless).
    """
    _check_size(task, n)
    k = task.num_labels
    quota = [n // k + (i < n % k) for i in range(k)]
    rng, seen, out, misses = random.Random(seed), set(exclude), [], 0
    while len(out) < n:
        texts, label = task.make(rng)
        if not (isinstance(texts, tuple) and len(texts) == len(task.columns) and 0 <= label < k):
            raise ValueError(f"task {task.name!r} made a malformed example: {texts!r}, label {label!r}")
        if texts in seen or quota[label] == 0:
            misses += 1
            if misses >= _PATIENCE:
                raise ValueError(f"task {task.name!r} cannot produce {n} distinct balanced examples "
                                 f"(found {len(out)}, then {misses} draws in a row gave nothing new)")
            continue
        misses = 0
        seen.add(texts)
        quota[label] -= 1
        out.append((texts, label))
    return out


def _split_seed(seed: int, name: str, split: str) -> int:
    return zlib.crc32(f"{seed}:{name}:{split}".encode())  # str hash() is salted per process


def write_datasets(root: Path, names: Sequence[str], n_train: int, n_test: int, seed: int) -> Dict[str, Dict[str, str]]:
    """Save train/test `datasets.Dataset`s under root/<task>/{train,test} in the glue layout: the task's
    text columns, "label" (a ClassLabel with the task's label names), "idx" (int32 row index).

    Test texts are disjoint from train texts. Every split is drawn before anything is written, so a bad
    request (unknown task, too many examples) leaves no half-written root.
    """
    tasks = [get_task(name) for name in names]
    for task in tasks:
        _check_size(task, n_train)
        _check_size(task, n_test)
    splits = {}
    for task in tasks:
        train = task_split(task, n_train, _split_seed(seed, task.name, "train"))
        test = task_split(task, n_test, _split_seed(seed, task.name, "test"), exclude={t for t, _ in train})
        splits[task.name] = (task, {"train": train, "test": test})

    from datasets import ClassLabel, Dataset, Features, Value  # heavy; only this function needs it

    paths: Dict[str, Dict[str, str]] = {}
    for name, (task, by_split) in splits.items():
        features = Features({**{c: Value("string") for c in task.columns},
                             "label": ClassLabel(names=list(task.label_names)), "idx": Value("int32")})
        paths[name] = {}
        for split, examples in by_split.items():
            data = {c: [texts[j] for texts, _ in examples] for j, c in enumerate(task.columns)}
            data.update(label=[label for _, label in examples], idx=list(range(len(examples))))
            path = Path(root) / name / split
            Dataset.from_dict(data, features=features).save_to_disk(str(path))
            paths[name][split] = str(path)
    return paths


# --- pretraining text ------------------------------------------------------------------------------


def _statement(rng: random.Random) -> str:
    c = make_clause(rng, subj_adjs=(0, 2), pool=ALL_ADJS)
    return as_sentence(replace(c, negated=rng.random() < 0.25).words())


def _grammatical(rng: random.Random) -> str:
    return _acceptability(rng, 1)[0]


def _single_line(rng: random.Random) -> str:
    kind = rng.randrange(7)
    if kind == 0:
        return _statement(rng)
    if kind == 1:
        return _sentiment(rng, rng.randrange(2))[0]
    if kind == 2:
        return _topic(rng, rng.randrange(len(CATEGORIES)))[0]
    if kind == 3:
        return _grammatical(rng)
    if kind == 4:
        return " ".join(random_question(rng).words())
    if kind == 5:
        first, second = (make_clause(rng, obj_adjs=(0, 0), tails=("none", "none", "adverb")) for _ in range(2))
        return as_sentence(first.words() + ("and",) + second.words())
    return f"{_statement(rng)} {_statement(rng)}"  # two sentences running on, as in ordinary text


_PAIR_BUILDERS = (_paraphrase, _nli, _qa_match, _question_dup, _entailment)
_PAIR_LABELS = (2, 3, 2, 2, 2)


def pretraining_corpus(n: int, seed: int) -> List[str]:
    """`n` lines of generic text in the tasks' grammar and lexicon, so the base model knows the words and
    syntax: statements, negations, questions, two-clause sentences, sentiment and copula sentences. About a
    third of the lines are sentence pairs "s1 | s2" whose second sentence rephrases, shares words with, or
    contradicts the first (drawn by the pair tasks' generators, every relation alike), so pair relations
    are seen; no label, label name or task name occurs anywhere.
    """
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        if rng.random() < 1 / 3:
            j = rng.randrange(len(_PAIR_BUILDERS))
            lines.append(" | ".join(_PAIR_BUILDERS[j](rng, rng.randrange(_PAIR_LABELS[j]))))
        else:
            lines.append(_single_line(rng))
    return lines
