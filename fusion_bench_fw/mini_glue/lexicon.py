"""The mini-glue lexicon (about 200 lowercase words in word classes) and the small grammar over it.

`tasks` builds every text from these pieces: noun phrases (determiner, adjectives, noun, number),
clauses (subject, verb, object, a tail: adverbs or a place phrase), questions, and their words. Words
are separated by single spaces and every sentence ends with " ." or " ?".
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

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
FUNCTION_WORDS = ("the", "an", "is", "are", "does", "do", "not", "and", "very", ".", "?")
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

PLURAL = {s: p for cat in CATEGORIES for s, p in NOUNS[cat]}
NOUNS_OF = {cat: tuple(s for s, _ in NOUNS[cat]) for cat in CATEGORIES}
ALL_NOUNS = tuple(PLURAL)
FOODS = NOUNS_OF["food"]
THIRD = dict(INTRANSITIVE + TRANSITIVE)
INTRANS = tuple(b for b, _ in INTRANSITIVE)
TRANS = tuple(b for b, _ in TRANSITIVE)
OPINION_ADJS = POSITIVE + NEGATIVE
NEUTRAL_ADJS = COLOURS + DESCRIPTIVE
ALL_ADJS = OPINION_ADJS + NEUTRAL_ADJS
# Adjectives are written opinion, then size/age/speed, then colour ("the nice big red dog").
RANK = {**{a: 0 for a in OPINION_ADJS}, **{a: 1 for a in DESCRIPTIVE}, **{a: 2 for a in COLOURS}}
ADVERBS = TIME_ADVERBS + MANNER_ADVERBS
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


def same_sense(a: str, b: str) -> bool:
    return a == b or b in synonyms(a)


def vocabulary() -> Tuple[str, ...]:
    """Every token any generator here can emit (words and the two punctuation marks), sorted."""
    words = set(FUNCTION_WORDS + SINGULAR_DETS + PLURAL_DETS + ADVERBS + PREPOSITIONS + QUESTION_WORDS + ALL_ADJS)
    words.update(w for cat in CATEGORIES for pair in NOUNS[cat] for w in pair)
    words.update(w for pair in INTRANSITIVE + TRANSITIVE for w in pair)
    return tuple(sorted(words))


# --- the grammar -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NP:
    """A noun phrase: determiner ("" for none), adjectives, singular noun lemma, number."""

    det: str
    adjs: Tuple[str, ...]
    noun: str
    plural: bool

    def words(self) -> Tuple[str, ...]:
        head = (*self.adjs, PLURAL[self.noun] if self.plural else self.noun)
        det = "an" if self.det == "a" and head[0][0] in "aeiou" else self.det
        return ((det,) if det else ()) + head


def verb_phrase(verb: str, plural: bool, negated: bool = False) -> Tuple[str, ...]:
    if negated:
        return ("do" if plural else "does", "not", verb)
    return (verb if plural else THIRD[verb],)


def be(plural: bool) -> str:
    return "are" if plural else "is"


def aux(plural: bool) -> str:
    return "do" if plural else "does"


@dataclass(frozen=True)
class Clause:
    subj: NP
    verb: str  # base form
    obj: Optional[NP] = None
    tail: Tuple[str, ...] = ()  # adverbs and/or a place phrase
    negated: bool = False

    def words(self) -> Tuple[str, ...]:
        obj = self.obj.words() if self.obj else ()
        return self.subj.words() + verb_phrase(self.verb, self.subj.plural, self.negated) + obj + self.tail


def as_sentence(words: Sequence[str], end: str = ".") -> str:
    return " ".join((*words, end))


def determiner(rng: random.Random, plural: bool) -> str:
    return "the" if rng.random() < 0.5 else rng.choice(PLURAL_DETS if plural else SINGULAR_DETS)


def polarity(adj: str) -> int:
    return 1 if adj in POSITIVE else -1 if adj in NEGATIVE else 0


def compatible(adj: str, others: Sequence[str]) -> bool:
    """Not the same sense as, not opposite to, not of the other sentiment than ("good" vs "nasty"), and
    (for a colour) not a second colour beside any of `others`: so adding it never contradicts them."""
    return all(not same_sense(adj, o) and o not in antonyms(adj) and polarity(adj) * polarity(o) >= 0
               and not (adj in COLOURS and o in COLOURS) for o in others)


def add_adj(rng: random.Random, adjs: Tuple[str, ...], pool: Sequence[str],
            avoid: Sequence[str] = ()) -> Optional[Tuple[str, ...]]:
    """`adjs` with one more adjective from `pool` that fits them and `avoid`, in written order; None if none fits."""
    candidates = [a for a in pool if compatible(a, tuple(adjs) + tuple(avoid))]
    if not candidates:
        return None
    return tuple(sorted(adjs + (rng.choice(candidates),), key=RANK.__getitem__))


def with_adj(rng: random.Random, np: NP, pool: Sequence[str]) -> NP:
    """`np` with one more adjective from `pool` (it is left as it is when none fits)."""
    return replace(np, adjs=add_adj(rng, np.adjs, pool) or np.adjs)


def make_np(rng: random.Random, nouns: Sequence[str] = ALL_NOUNS, adjs: Tuple[int, int] = (0, 1),
            pool: Sequence[str] = NEUTRAL_ADJS, plural: Optional[bool] = None) -> NP:
    if plural is None:
        plural = rng.random() < 0.5
    noun = rng.choice(nouns)
    chosen: Tuple[str, ...] = ()
    for _ in range(rng.randint(*adjs)):
        chosen = add_adj(rng, chosen, pool) or chosen
    return NP(determiner(rng, plural), chosen, noun, plural)


def objects_for(verb: str) -> Tuple[str, ...]:
    return FOODS if verb in ("eat", "munch") else ALL_NOUNS


def place_phrase(rng: random.Random) -> Tuple[str, ...]:
    return (rng.choice(PREPOSITIONS), "the", rng.choice(NOUNS_OF["place"]))


def pick_tail(rng: random.Random, kinds: Sequence[str]) -> Tuple[str, ...]:
    """A tail of a kind drawn from `kinds`: "none", "adverb" (time or manner), "time", "manner" or "place"."""
    kind = rng.choice(kinds)
    words = {"adverb": ADVERBS, "time": TIME_ADVERBS, "manner": MANNER_ADVERBS}.get(kind)
    if words:
        return (rng.choice(words),)
    return place_phrase(rng) if kind == "place" else ()


def make_clause(rng: random.Random, transitive: Optional[bool] = None, subj_adjs: Tuple[int, int] = (0, 1),
                obj_adjs: Tuple[int, int] = (0, 1), pool: Sequence[str] = NEUTRAL_ADJS,
                tails: Sequence[str] = ("none", "adverb", "place"), verbs: Optional[Sequence[str]] = None) -> Clause:
    subj = make_np(rng, adjs=subj_adjs, pool=pool)
    if transitive is None:
        transitive = rng.random() < 0.5
    verb = rng.choice(verbs or (TRANS if transitive else INTRANS))
    obj = make_np(rng, objects_for(verb), obj_adjs, pool) if verb in TRANS else None
    return Clause(subj, verb, obj, pick_tail(rng, tails))


def other_noun(rng: random.Random, nouns: Sequence[str], avoid: Sequence[str]) -> str:
    """A noun from `nouns` meaning none of `avoid`."""
    return rng.choice([n for n in nouns if not any(same_sense(n, a) for a in avoid)])


def np_synonym(rng: random.Random, np: NP, i: int) -> NP:
    """`np` with its noun (i < 0) or its i-th adjective swapped for a synonym."""
    if i < 0:
        return replace(np, noun=rng.choice(synonyms(np.noun)))
    adjs = list(np.adjs)
    adjs[i] = rng.choice(synonyms(adjs[i]))
    return replace(np, adjs=tuple(adjs))


def np_slots(part: str, np: Optional[NP]) -> List[Tuple[str, int]]:
    """The positions of `np` that have a synonym: (part, -1) the noun, (part, i) its i-th adjective."""
    if np is None:
        return []
    slots = [(part, -1)] if synonyms(np.noun) else []
    return slots + [(part, i) for i, a in enumerate(np.adjs) if synonyms(a)]


def reword(rng: random.Random, thing, n: int = 1):
    """`thing` (a Clause or a question with verb/subj/obj/subj2 fields) with `n` (or as many as it has)
    words swapped for synonyms; the verb always has one, so at least one word changes."""
    slots = [("verb", -1)]
    slots += [s for part in ("subj", "obj", "subj2") for s in np_slots(part, getattr(thing, part, None))]
    for part, i in rng.sample(slots, min(n, len(slots))):
        if part == "verb":
            thing = replace(thing, verb=rng.choice(synonyms(thing.verb)))
        else:
            thing = replace(thing, **{part: np_synonym(rng, getattr(thing, part), i)})
    return thing


@dataclass(frozen=True)
class Question:
    """kind: what / where / when / who ("<kind> does S V ?"; "who" with an object: "who Vs O ?"), does
    ("does S V O ?"), is ("is S A1 and A2 ?") or do ("do S and S2 V ?")."""

    kind: str
    subj: Optional[NP]
    verb: str = ""
    obj: Optional[NP] = None
    adjs: Tuple[str, ...] = ()
    subj2: Optional[NP] = None

    def words(self) -> Tuple[str, ...]:
        if self.kind == "who" and self.obj:
            return ("who", THIRD[self.verb], *self.obj.words(), "?")
        if self.kind == "does":
            return (aux(self.subj.plural), *self.subj.words(), self.verb, *self.obj.words(), "?")
        if self.kind == "is":
            return (be(self.subj.plural), *self.subj.words(), self.adjs[0], "and", self.adjs[1], "?")
        if self.kind == "do":
            return ("do", *self.subj.words(), "and", *self.subj2.words(), self.verb, "?")
        return (self.kind, aux(self.subj.plural), *self.subj.words(), self.verb, "?")


def random_question(rng: random.Random) -> Question:
    """A question of any kind, as the pretraining text has them."""
    kind = rng.choice(("what", "where", "when", "who", "does", "is", "do"))
    subj = make_np(rng)
    if kind == "is":
        first = rng.choice(ALL_ADJS)
        second = rng.choice([a for a in ALL_ADJS if compatible(a, (first,))])
        return Question(kind, replace(subj, adjs=()), adjs=(first, second))
    if kind == "do":
        other = replace(make_np(rng), noun=other_noun(rng, ALL_NOUNS, (subj.noun,)))
        return Question(kind, subj, rng.choice(INTRANS), subj2=other)
    verb = rng.choice(INTRANS if kind in ("where", "when") else TRANS)
    obj = make_np(rng, objects_for(verb)) if verb in TRANS and kind != "what" else None
    return Question(kind, None if obj and kind == "who" else subj, verb, obj)
