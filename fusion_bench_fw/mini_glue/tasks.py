"""The eight classification tasks of the mini-glue pool: deterministic (texts, label) generators.

Each task copies one GLUE task's layout (its text columns, its label order) so FusionBench-style GLUE
loaders see the real layout, but the texts are drawn from a closed lexicon of about 200 lowercase
words with a small grammar (determiner, adjectives, noun, verb, object, adverb or place). The rules are
local (a lexicon word, a "not", a word shared by both sentences, number agreement), so a tiny GPT-2
pretrained on `pretraining_corpus` learns each task from about a thousand examples. Words are separated
by single spaces and every sentence ends with " ." or " ?"; an example (all its texts) has at most
`MAX_WORDS` tokens, punctuation counted.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

MAX_WORDS = 20
# No split of a tiny model's data needs more; the cap makes a bad request fail at once instead of
# drawing for minutes before the distinct examples run out.
MAX_SPLIT = 50_000
# task_split gives up after this many draws in a row that yield no new usable example.
_PATIENCE = 20_000

# --- the lexicon ---------------------------------------------------------------------------------

CATEGORIES: Tuple[str, ...] = ("animal", "food", "vehicle", "place")  # also the topic task's labels
NOUNS: Dict[str, Tuple[Tuple[str, str], ...]] = {  # category -> (singular, plural)
    "animal": (("cat", "cats"), ("dog", "dogs"), ("bird", "birds"), ("horse", "horses"), ("fox", "foxes"),
               ("cow", "cows"), ("duck", "ducks"), ("mouse", "mice"), ("rabbit", "rabbits"), ("goat", "goats")),
    "food": (("apple", "apples"), ("cake", "cakes"), ("pie", "pies"), ("egg", "eggs"), ("pear", "pears"),
             ("plum", "plums"), ("cookie", "cookies"), ("banana", "bananas"), ("sandwich", "sandwiches"),
             ("carrot", "carrots")),
    "vehicle": (("car", "cars"), ("bus", "buses"), ("truck", "trucks"), ("train", "trains"), ("boat", "boats"),
                ("ship", "ships"), ("bike", "bikes"), ("bicycle", "bicycles"), ("plane", "planes"), ("van", "vans")),
    "place": (("city", "cities"), ("town", "towns"), ("village", "villages"), ("park", "parks"), ("farm", "farms"),
              ("school", "schools"), ("market", "markets"), ("beach", "beaches"), ("shop", "shops"),
              ("store", "stores")),
}
# (base form, third person singular); the base form is the plural and the form after "does"/"do".
INTRANSITIVE: Tuple[Tuple[str, str], ...] = (
    ("run", "runs"), ("race", "races"), ("sleep", "sleeps"), ("rest", "rests"), ("jump", "jumps"),
    ("leap", "leaps"), ("walk", "walks"), ("stroll", "strolls"), ("wait", "waits"), ("stay", "stays"),
    ("shout", "shouts"), ("yell", "yells"),
)
TRANSITIVE: Tuple[Tuple[str, str], ...] = (
    ("see", "sees"), ("watch", "watches"), ("like", "likes"), ("enjoy", "enjoys"), ("eat", "eats"),
    ("munch", "munches"), ("find", "finds"), ("spot", "spots"), ("carry", "carries"), ("hold", "holds"),
    ("follow", "follows"), ("chase", "chases"),
)
COLOURS = ("red", "blue", "green", "black", "white", "brown", "yellow", "grey")
DESCRIPTIVE = ("big", "large", "small", "little", "old", "young", "fast", "quick", "slow", "tall", "short",
               "hot", "cold")
POSITIVE = ("good", "happy", "glad", "nice", "kind", "clean", "pretty", "lovely", "great")
NEGATIVE = ("bad", "sad", "gloomy", "nasty", "rude", "dirty", "ugly", "awful", "terrible")
SINGULAR_DETS = ("a", "this", "that", "every")  # "a" is written "an" before a vowel
PLURAL_DETS = ("some", "these", "those", "two", "many")  # "the" takes either number
TIME_ADVERBS = ("today", "tonight", "now", "early", "late")
MANNER_ADVERBS = ("again", "often", "slowly", "quickly", "quietly")
PREPOSITIONS = ("in", "at", "near")
QUESTION_WORDS = ("what", "who", "where", "when")
_FUNCTION_WORDS = ("the", "an", "is", "are", "does", "do", "not", "and", "very", ".", "?")
# Synonym groups of lemmas (singular nouns, verb base forms, adjectives): paraphrases swap within a group.
SYNONYMS: Tuple[Tuple[str, ...], ...] = (
    ("boat", "ship"), ("bike", "bicycle"), ("shop", "store"), ("town", "village"),
    ("run", "race"), ("sleep", "rest"), ("jump", "leap"), ("walk", "stroll"), ("wait", "stay"), ("shout", "yell"),
    ("see", "watch"), ("like", "enjoy"), ("eat", "munch"), ("find", "spot"), ("carry", "hold"),
    ("follow", "chase"),
    ("big", "large"), ("small", "little"), ("fast", "quick"), ("happy", "glad"), ("sad", "gloomy"),
    ("pretty", "lovely"), ("awful", "terrible"),
)
# Opposite adjectives; each side's synonyms are opposites too (large/little, glad/gloomy, ...).
ANTONYMS: Tuple[Tuple[str, str], ...] = (
    ("big", "small"), ("fast", "slow"), ("old", "young"), ("tall", "short"), ("hot", "cold"), ("good", "bad"),
    ("happy", "sad"), ("nice", "nasty"), ("kind", "rude"), ("clean", "dirty"), ("pretty", "ugly"),
    ("great", "awful"),
)

_PLURAL = {s: p for cat in CATEGORIES for s, p in NOUNS[cat]}
_CATEGORY = {s: cat for cat in CATEGORIES for s, _ in NOUNS[cat]}
_NOUNS_OF = {cat: tuple(s for s, _ in NOUNS[cat]) for cat in CATEGORIES}
_ALL_NOUNS = tuple(_PLURAL)
_FOODS = _NOUNS_OF["food"]
_THIRD = dict(INTRANSITIVE + TRANSITIVE)
_INTRANS = tuple(b for b, _ in INTRANSITIVE)
_TRANS = tuple(b for b, _ in TRANSITIVE)
_NEUTRAL_ADJS = COLOURS + DESCRIPTIVE
_ALL_ADJS = POSITIVE + NEGATIVE + _NEUTRAL_ADJS
# Adjectives are written opinion, then size/age/speed, then colour ("the nice big red dog").
_RANK = {**{a: 0 for a in POSITIVE + NEGATIVE}, **{a: 1 for a in DESCRIPTIVE}, **{a: 2 for a in COLOURS}}
_ADVERBS = TIME_ADVERBS + MANNER_ADVERBS
_GROUP = {w: g for g in SYNONYMS for w in g}


def _build_opposites() -> Dict[str, Tuple[str, ...]]:
    opposite: Dict[str, Tuple[str, ...]] = {}
    for a, b in ANTONYMS:
        for x, y in ((a, b), (b, a)):
            for word in _GROUP.get(x, (x,)):
                opposite[word] = opposite.get(word, ()) + _GROUP.get(y, (y,))
    return opposite


_OPPOSITE = _build_opposites()


def synonyms(word: str) -> Tuple[str, ...]:
    """The other lemmas of `word`'s synonym group (empty when it has none)."""
    return tuple(w for w in _GROUP.get(word, (word,)) if w != word)


def antonyms(word: str) -> Tuple[str, ...]:
    return _OPPOSITE.get(word, ())


def _same_sense(a: str, b: str) -> bool:
    return a == b or b in synonyms(a)


def vocabulary() -> Tuple[str, ...]:
    """Every token any generator here can emit (words and the two punctuation marks), sorted."""
    words = set(_FUNCTION_WORDS + SINGULAR_DETS + PLURAL_DETS + TIME_ADVERBS + MANNER_ADVERBS + PREPOSITIONS
                + QUESTION_WORDS + _ALL_ADJS)
    words.update(w for cat in CATEGORIES for pair in NOUNS[cat] for w in pair)
    words.update(w for pair in INTRANSITIVE + TRANSITIVE for w in pair)
    return tuple(sorted(words))


# --- the grammar -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _NP:
    """A noun phrase: determiner ("" for none), adjectives, singular noun lemma, number."""

    det: str
    adjs: Tuple[str, ...]
    noun: str
    plural: bool

    def words(self) -> Tuple[str, ...]:
        head = (*self.adjs, _PLURAL[self.noun] if self.plural else self.noun)
        det = "an" if self.det == "a" and head[0][0] in "aeiou" else self.det
        return ((det,) if det else ()) + head


def _vp(verb: str, plural: bool, negated: bool = False) -> Tuple[str, ...]:
    if negated:
        return ("do" if plural else "does", "not", verb)
    return (verb if plural else _THIRD[verb],)


def _be(plural: bool) -> str:
    return "are" if plural else "is"


def _aux(plural: bool) -> str:
    return "do" if plural else "does"


@dataclass(frozen=True)
class _Clause:
    subj: _NP
    verb: str  # base form
    obj: Optional[_NP] = None
    tail: Tuple[str, ...] = ()  # an adverb or a place phrase
    negated: bool = False

    def words(self) -> Tuple[str, ...]:
        obj = self.obj.words() if self.obj else ()
        return self.subj.words() + _vp(self.verb, self.subj.plural, self.negated) + obj + self.tail


def _sentence(words: Sequence[str], end: str = ".") -> str:
    return " ".join((*words, end))


def _det(rng: random.Random, plural: bool) -> str:
    return "the" if rng.random() < 0.5 else rng.choice(PLURAL_DETS if plural else SINGULAR_DETS)


def _polarity(adj: str) -> int:
    return 1 if adj in POSITIVE else -1 if adj in NEGATIVE else 0


def _compatible(adj: str, others: Sequence[str]) -> bool:
    """Not the same sense as, not opposite to, not of the other sentiment than ("good" vs "nasty"), and
    (for a colour) not a second colour beside any of `others`: so adding it never contradicts them."""
    return all(not _same_sense(adj, o) and o not in antonyms(adj) and _polarity(adj) * _polarity(o) >= 0
               and not (adj in COLOURS and o in COLOURS) for o in others)


def _add_adj(rng: random.Random, adjs: Tuple[str, ...], pool: Sequence[str],
             avoid: Sequence[str] = ()) -> Optional[Tuple[str, ...]]:
    """`adjs` with one more adjective from `pool` that fits them and `avoid`, in written order; None if none fits."""
    candidates = [a for a in pool if _compatible(a, tuple(adjs) + tuple(avoid))]
    if not candidates:
        return None
    return tuple(sorted(adjs + (rng.choice(candidates),), key=_RANK.__getitem__))


def _np(rng: random.Random, nouns: Sequence[str] = _ALL_NOUNS, adjs: Tuple[int, int] = (0, 1),
        pool: Sequence[str] = _NEUTRAL_ADJS, plural: Optional[bool] = None) -> _NP:
    if plural is None:
        plural = rng.random() < 0.5
    noun = rng.choice(nouns)
    chosen: Tuple[str, ...] = ()
    for _ in range(rng.randint(*adjs)):
        chosen = _add_adj(rng, chosen, pool) or chosen
    return _NP(_det(rng, plural), chosen, noun, plural)


def _objects_for(verb: str) -> Tuple[str, ...]:
    return _FOODS if verb in ("eat", "munch") else _ALL_NOUNS


def _place(rng: random.Random) -> Tuple[str, ...]:
    return (rng.choice(PREPOSITIONS), "the", rng.choice(_NOUNS_OF["place"]))


def _tail(rng: random.Random, kinds: Sequence[str]) -> Tuple[str, ...]:
    kind = rng.choice(kinds)
    if kind == "adverb":
        return (rng.choice(_ADVERBS),)
    return _place(rng) if kind == "place" else ()


def _clause(rng: random.Random, transitive: Optional[bool] = None, subj_adjs: Tuple[int, int] = (0, 1),
            obj_adjs: Tuple[int, int] = (0, 1), pool: Sequence[str] = _NEUTRAL_ADJS,
            tails: Sequence[str] = ("none", "adverb", "place"), verbs: Optional[Sequence[str]] = None) -> _Clause:
    subj = _np(rng, adjs=subj_adjs, pool=pool)
    if transitive is None:
        transitive = rng.random() < 0.5
    verb = rng.choice(verbs or (_TRANS if transitive else _INTRANS))
    obj = _np(rng, _objects_for(verb), obj_adjs, pool) if verb in _TRANS else None
    return _Clause(subj, verb, obj, _tail(rng, tails))


def _other_noun(rng: random.Random, nouns: Sequence[str], avoid: Sequence[str]) -> str:
    """A noun from `nouns` meaning none of `avoid`."""
    return rng.choice([n for n in nouns if not any(_same_sense(n, a) for a in avoid)])


def _other_verb(rng: random.Random, verb: str, obj: Optional[_NP]) -> str:
    """A verb of the same kind not meaning `verb` (and taking `obj`, if any)."""
    pool = _TRANS if verb in _TRANS else _INTRANS
    return rng.choice([v for v in pool if not _same_sense(v, verb) and (obj is None or obj.noun in _objects_for(v))])


def _np_synonym(rng: random.Random, np: _NP, i: int) -> _NP:
    """`np` with its noun (i < 0) or its i-th adjective swapped for a synonym."""
    if i < 0:
        return replace(np, noun=rng.choice(synonyms(np.noun)))
    adjs = list(np.adjs)
    adjs[i] = rng.choice(synonyms(adjs[i]))
    return replace(np, adjs=tuple(adjs))


def _np_slots(part: str, np: Optional[_NP]) -> List[Tuple[str, int]]:
    """The positions of `np` that have a synonym: (part, -1) the noun, (part, i) its i-th adjective."""
    if np is None:
        return []
    slots = [(part, -1)] if synonyms(np.noun) else []
    return slots + [(part, i) for i, a in enumerate(np.adjs) if synonyms(a)]


# --- the tasks -------------------------------------------------------------------------------------


def _sentiment(rng: random.Random, label: int) -> Tuple[str, ...]:
    """One sentiment adjective; a "not" right before it flips its polarity (never "not a good cake",
    which word pairs alone could not tell from "a good cake")."""
    negated = rng.random() < 0.5
    word = rng.choice(POSITIVE if (label == 1) != negated else NEGATIVE)
    degree = ("not",) if negated else (("very",) if rng.random() < 0.3 else ())
    form = rng.randrange(3)
    if form == 0:  # the red car is not good .
        subj = _np(rng)
        words = subj.words() + (_be(subj.plural),) + degree + (word,)
    elif form == 1:  # this is a good cake . / these are not awful red cakes .
        plural = negated or rng.random() < 0.5
        pronoun = rng.choice(("these", "those") if plural else ("this", "that"))
        adjs = (word,) + ((rng.choice(COLOURS),) if rng.random() < 0.3 else ())
        obj = _NP("" if plural else "a", adjs, rng.choice(_ALL_NOUNS), plural)
        words = (pronoun, _be(plural)) + (("not",) if negated else ()) + obj.words()
    else:  # the dog runs and is very happy .
        subj = _np(rng)
        words = subj.words() + _vp(rng.choice(_INTRANS), subj.plural) + ("and", _be(subj.plural)) + degree + (word,)
    return (_sentence(words),)


def _acceptability(rng: random.Random, label: int) -> Tuple[str, ...]:
    """A grammatical sentence, or one with exactly one number clash: verb vs subject, or determiner vs noun."""
    subj = _np(rng)
    form = rng.randrange(3)  # 0 plain verb, 1 "does not" + verb, 2 copula + adjective
    verb = rng.choice(_INTRANS + _TRANS)
    obj = _np(rng, _objects_for(verb)) if form < 2 and verb in _TRANS else None
    errors = ("verb", "subject") + (("object",) if obj else ())
    error = rng.choice(errors) if label == 0 else None
    if error == "subject":
        subj = replace(subj, det=rng.choice(SINGULAR_DETS if subj.plural else PLURAL_DETS))
    if error == "object":
        obj = replace(obj, det=rng.choice(SINGULAR_DETS if obj.plural else PLURAL_DETS))
    verb_plural = subj.plural != (error == "verb")
    if form == 2:
        negation = ("not",) if rng.random() < 0.3 else ()
        words = subj.words() + (_be(verb_plural),) + negation + (rng.choice(_ALL_ADJS),)
    else:
        tail = _tail(rng, ("none", "adverb", "place"))
        words = subj.words() + _vp(verb, verb_plural, form == 1) + (obj.words() if obj else ()) + tail
    return (_sentence(words),)


def _topic(rng: random.Random, label: int) -> Tuple[str, ...]:
    """The sentence's only noun, its subject, is from category `label`."""
    subj = _np(rng, _NOUNS_OF[CATEGORIES[label]], (0, 2), _ALL_ADJS)
    form = rng.randrange(3)
    if form == 2:
        negation = ("not",) if rng.random() < 0.3 else ()
        words = subj.words() + (_be(subj.plural),) + negation + (rng.choice(_ALL_ADJS),)
    else:
        words = subj.words() + _vp(rng.choice(_INTRANS), subj.plural, form == 1) + _tail(rng, ("none", "adverb"))
    return (_sentence(words),)


def _apply_synonym(rng: random.Random, c: _Clause, slot: Tuple[str, int]) -> _Clause:
    part, i = slot
    if part == "verb":
        return replace(c, verb=rng.choice(synonyms(c.verb)))
    return replace(c, **{part: _np_synonym(rng, getattr(c, part), i)})


def _synonym_slots(c: _Clause) -> List[Tuple[str, int]]:
    return [("verb", -1)] + _np_slots("subj", c.subj) + _np_slots("obj", c.obj)


def _paraphrase(rng: random.Random, label: int) -> Tuple[str, ...]:
    """1: one or two words swapped for synonyms. 0: another subject noun or verb (plus maybe a synonym)."""
    c = _clause(rng, tails=("none", "adverb"))
    if label == 1:
        slots = _synonym_slots(c)  # the verb always has a synonym
        changed = c
        for slot in rng.sample(slots, min(len(slots), rng.choice((1, 1, 2)))):
            changed = _apply_synonym(rng, changed, slot)
    else:
        if rng.random() < 0.5:
            slot = ("subj", -1)
            changed = replace(c, subj=replace(c.subj, noun=_other_noun(rng, _ALL_NOUNS, (c.subj.noun,))))
        else:
            slot = ("verb", -1)
            changed = replace(c, verb=_other_verb(rng, c.verb, c.obj))
        others = [s for s in _synonym_slots(changed) if s != slot]
        if others and rng.random() < 0.5:
            changed = _apply_synonym(rng, changed, rng.choice(others))
    return _sentence(c.words()), _sentence(changed.words())


def _removals(c: _Clause) -> List[Tuple[str, int]]:
    """What can be dropped from `c` and leave a sentence it entails: an adjective, or its adverb."""
    ops = [("subj", i) for i in range(len(c.subj.adjs))]
    ops += [("obj", i) for i in range(len(c.obj.adjs))] if c.obj else []
    return ops + ([("tail", 0)] if c.tail else [])


def _remove(c: _Clause, op: Tuple[str, int]) -> _Clause:
    part, i = op
    if part == "tail":
        return replace(c, tail=())
    np = getattr(c, part)
    return replace(c, **{part: replace(np, adjs=np.adjs[:i] + np.adjs[i + 1:])})


def _nli(rng: random.Random, label: int) -> Tuple[str, ...]:
    """0: the hypothesis drops an adjective or the adverb; 1: it adds an adjective or adverb the premise
    lacks; 2: it negates the verb or swaps an adjective for its opposite. 1 and 2 may also drop something,
    so the hypothesis's length alone does not give the label."""
    premise = _clause(rng, subj_adjs=(1, 2), obj_adjs=(0, 1), pool=_ALL_ADJS, tails=("none", "none", "adverb"))
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
            hyp = replace(hyp, tail=(rng.choice(_ADVERBS),))
        else:  # an adjective that no premise adjective implies or rules out
            np = getattr(hyp, op)
            adjs = _add_adj(rng, np.adjs, _ALL_ADJS, avoid=premise_adjs)
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
            hyp = replace(hyp, **{part: replace(np, adjs=tuple(sorted(adjs, key=_RANK.__getitem__)))})
        else:
            hyp = replace(hyp, negated=True)
    return _sentence(premise.words()), _sentence(hyp.words())


def _qa_match(rng: random.Random, label: int) -> Tuple[str, ...]:
    """0: the sentence has the question's subject (or, for "who", object) and verb, and for "where" /
    "when" a place / time; 1: one of these differs."""
    kind = rng.choice(QUESTION_WORDS)
    subj = _np(rng)
    if kind in ("what", "who"):
        verb = rng.choice(_TRANS)
        c = _Clause(subj, verb, _np(rng, _objects_for(verb)), _tail(rng, ("none", "adverb")))
        if kind == "what":
            question = ("what", _aux(subj.plural), *subj.words(), verb, "?")
        else:
            question = ("who", _THIRD[verb], *c.obj.words(), "?")
    else:
        verb = rng.choice(_INTRANS)
        c = _Clause(subj, verb, tail=_place(rng) if kind == "where" else (rng.choice(TIME_ADVERBS),))
        question = (kind, _aux(subj.plural), *subj.words(), verb, "?")
    if label == 1:
        ops = ["verb", "object" if kind == "who" else "subject"] + (["tail"] if kind in ("where", "when") else [])
        op = rng.choice(ops)
        if op == "verb":
            c = replace(c, verb=_other_verb(rng, c.verb, c.obj))
        elif op == "subject":
            c = replace(c, subj=replace(c.subj, noun=_other_noun(rng, _ALL_NOUNS, (c.subj.noun,))))
        elif op == "object":
            c = replace(c, obj=replace(c.obj, noun=_other_noun(rng, _objects_for(c.verb), (c.obj.noun,))))
        else:  # a time where a place was asked for, and the other way round
            c = replace(c, tail=(rng.choice(TIME_ADVERBS),) if kind == "where" else _place(rng))
    return " ".join(question), _sentence(c.words())


@dataclass(frozen=True)
class _Question:
    """kind: what / where / when ("<kind> does S V ?"), who ("who Vs O ?"), does ("does S V O ?"),
    is ("is S A1 and A2 ?") or do ("do S and S2 V ?")."""

    kind: str
    subj: _NP
    verb: str = ""
    obj: Optional[_NP] = None
    adjs: Tuple[str, ...] = ()
    subj2: Optional[_NP] = None

    def words(self) -> Tuple[str, ...]:
        if self.kind == "who":
            return ("who", _THIRD[self.verb], *self.obj.words(), "?")
        if self.kind == "does":
            return (_aux(self.subj.plural), *self.subj.words(), self.verb, *self.obj.words(), "?")
        if self.kind == "is":
            return (_be(self.subj.plural), *self.subj.words(), self.adjs[0], "and", self.adjs[1], "?")
        if self.kind == "do":
            return ("do", *self.subj.words(), "and", *self.subj2.words(), self.verb, "?")
        return (self.kind, _aux(self.subj.plural), *self.subj.words(), self.verb, "?")


def _random_question(rng: random.Random) -> _Question:
    kind = rng.choice(("what", "where", "when", "who", "does", "is", "do"))
    subj = _np(rng)
    if kind == "is":
        first = rng.choice(_ALL_ADJS)
        second = rng.choice([a for a in _ALL_ADJS if _compatible(a, (first,))])
        return _Question(kind, replace(subj, adjs=()), adjs=(first, second))
    if kind == "do":
        other = replace(_np(rng), noun=_other_noun(rng, _ALL_NOUNS, (subj.noun,)))
        return _Question(kind, subj, rng.choice(_INTRANS), subj2=other)
    verb = rng.choice(_INTRANS if kind in ("where", "when") else _TRANS)
    obj = _np(rng, _objects_for(verb)) if verb in _TRANS else None
    return _Question(kind, subj, verb, obj)


def _question_parts(q: _Question) -> List[str]:
    """The parts of `q` that its sentence depends on."""
    return {"who": ["verb", "obj"], "does": ["subj", "verb", "obj"], "is": ["subj", "adjs"],
            "do": ["subj", "subj2", "verb"]}.get(q.kind, ["subj", "verb"])


def _reword(rng: random.Random, q: _Question, skip: Tuple[str, int] = ("", 0)) -> Tuple[_Question, Tuple[str, int]]:
    """`q` said differently: a synonym, or the two sides of its "and" swapped; and where it changed.

    Only when `skip` rules out the one rewordable place (the verb or the swap) is `q` returned as it is.
    """
    slots: List[Tuple[str, int]] = []
    for part in _question_parts(q):
        if part == "verb":
            slots.append(("verb", -1))
        elif part == "adjs":
            slots += [("adjs", i) for i, a in enumerate(q.adjs) if synonyms(a)] + [("swap", 0)]
        else:
            slots += _np_slots(part, getattr(q, part))
    if q.kind == "do":
        slots.append(("swap", 0))
    slots = [s for s in slots if s != skip]
    if not slots:
        return q, skip
    slot = rng.choice(slots)
    part, i = slot
    if part == "verb":
        return replace(q, verb=rng.choice(synonyms(q.verb))), slot
    if part == "swap":
        if q.kind == "is":
            return replace(q, adjs=q.adjs[::-1]), slot
        return replace(q, subj=q.subj2, subj2=q.subj), slot
    if part == "adjs":
        adjs = list(q.adjs)
        adjs[i] = rng.choice(synonyms(adjs[i]))
        return replace(q, adjs=tuple(adjs)), slot
    return replace(q, **{part: _np_synonym(rng, getattr(q, part), i)}), slot


def _question_dup(rng: random.Random, label: int) -> Tuple[str, ...]:
    """1: one or two rewordings (synonyms, swapped "and"); 0: one part (subject, verb, object, an
    adjective, where/when) means something else, maybe with a rewording on top."""
    q = _random_question(rng)
    if label == 1:
        other, slot = _reword(rng, q)
        if rng.random() < 0.3:
            other, _ = _reword(rng, other, skip=slot)
        return " ".join(q.words()), " ".join(other.words())
    parts = _question_parts(q) + (["kind"] if q.kind in ("where", "when") else [])
    part = rng.choice(parts)
    if part == "kind":
        other = replace(q, kind="when" if q.kind == "where" else "where")
    elif part == "verb":
        other = replace(q, verb=_other_verb(rng, q.verb, q.obj))
    elif part == "adjs":
        i = rng.randrange(2)
        new = rng.choice([a for a in _ALL_ADJS if _compatible(a, (q.adjs[1 - i],)) and not _same_sense(a, q.adjs[i])])
        other = replace(q, adjs=(new, q.adjs[1]) if i == 0 else (q.adjs[0], new))
    else:
        np = getattr(q, part)
        nouns = _objects_for(q.verb) if part == "obj" else _ALL_NOUNS
        avoid = (q.subj.noun, q.subj2.noun) if q.kind == "do" else (np.noun,)
        other = replace(q, **{part: replace(np, noun=_other_noun(rng, nouns, avoid))})
    if rng.random() < 0.5:
        other, _ = _reword(rng, other, skip=(part, -1))
    return " ".join(q.words()), " ".join(other.words())


def _two_clauses(rng: random.Random) -> Tuple[_Clause, _Clause]:
    """Two clauses with different subjects and different verbs (by meaning, not just by word)."""
    first = _clause(rng, obj_adjs=(0, 0), tails=("none", "none", "adverb"))
    verbs = [v for v in _INTRANS + _TRANS if not _same_sense(v, first.verb)]
    second = _clause(rng, obj_adjs=(0, 0), tails=("none", "none", "adverb"), verbs=verbs)
    second = replace(second, subj=replace(second.subj, noun=_other_noun(rng, _ALL_NOUNS, (first.subj.noun,))))
    return first, second


def _entailment(rng: random.Random, label: int) -> Tuple[str, ...]:
    """sentence1 "C1 and C2 ."; 0: sentence2 is C1 or C2; 1: one clause's subject with the other's verb phrase."""
    clauses = _two_clauses(rng)
    i = rng.randrange(2)
    if label == 0:
        stated = clauses[i]
    else:
        stated = replace(clauses[1 - i], subj=clauses[i].subj)
    return _sentence(clauses[0].words() + ("and",) + clauses[1].words()), _sentence(stated.words())


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
    _task("qa_match", "qnli", "does the sentence have the question's subject/object, verb and place/time",
          ("question", "sentence"), ("entailment", "not_entailment"), _qa_match),
    _task("question_dup", "qqp", "same question reworded (synonyms, swapped 'and') vs one part changed",
          ("question1", "question2"), ("not_duplicate", "duplicate"), _question_dup),
    _task("entailment", "rte", "sentence2 is one clause of sentence1 vs a clause mixing both",
          ("sentence1", "sentence2"), ("entailment", "not_entailment"), _entailment),
    _task("sentiment", "sst2", "polarity of the sentiment adjective, flipped by a 'not' before it",
          ("sentence",), ("negative", "positive"), _sentiment),
    _task("acceptability", "cola", "number agreement of verb and subject, and of determiner and noun",
          ("sentence",), ("unacceptable", "acceptable"), _acceptability),
    _task("topic", "ag_news-like", "category of the subject noun", ("sentence",), CATEGORIES, _topic),
    _task("paraphrase", "mrpc", "sentence2 swaps words for synonyms vs changes the subject or verb",
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
    c = _clause(rng, subj_adjs=(0, 2), pool=_ALL_ADJS)
    return _sentence(replace(c, negated=rng.random() < 0.25).words())


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
        return " ".join(_random_question(rng).words())
    first, second = _two_clauses(rng)
    if kind == 5:
        return _sentence(first.words() + ("and",) + second.words())
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
