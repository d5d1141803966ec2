"""A generated corpus with known structure for word embeddings (lecture 09): which analogies
*should* hold, and a part-of-speech tag for every word.

The corpus is built from attributes:

* people words vary along three binary attributes, gender (he/his vs she/her), royalty
  (crown, throne, palace vs coat, market, town) and age (young, plays, school vs old, works):
  king - man + woman should land on queen, prince - boy + girl on princess;
* capitals and countries share a language and differ by "city" vs "country" contexts:
  paris - france + italy should land on rome, and france : french :: italy : italian;
* two ambiguous words, ``stick`` (a noun or a verb) and ``bank`` (of a river or for money),
  which one static vector per word cannot tell apart (ELMo, `dlcourse.elmo`, can).

Every sentence also carries a coarse part-of-speech tag per word (NOUN, VERB, ...), used by
the ELMo part of the lecture as a downstream task. Everything is drawn from a
`torch.Generator`: a seed gives the same corpus on every machine; nothing is downloaded.

    corpus = generate_corpus(4000, generator=torch.Generator().manual_seed(0))
    questions = analogy_questions()     # {"gender": [("king", "man", "queen", "woman"), ...], ...}

`dlcourse.embeddings` trains word2vec on it and re-exports these names.
"""
from dataclasses import dataclass
from itertools import permutations

import torch

# people: word -> (gender, royal, young)
PEOPLE = {
    "man": ("male", False, False), "woman": ("female", False, False),
    "king": ("male", True, False), "queen": ("female", True, False),
    "boy": ("male", False, True), "girl": ("female", False, True),
    "prince": ("male", True, True), "princess": ("female", True, True),
}
COUNTRIES = {  # country: (capital, language)
    "france": ("paris", "french"), "italy": ("rome", "italian"), "spain": ("madrid", "spanish"),
    "germany": ("berlin", "german"), "japan": ("tokyo", "japanese"), "egypt": ("cairo", "arabic"),
    "greece": ("athens", "greek"), "russia": ("moscow", "russian"),
}
PRONOUNS = {"male": ("he", "his"), "female": ("she", "her")}
ROYAL_THINGS = {True: ("crown", "throne", "jewels"), False: ("coat", "bag", "hat")}
ROYAL_PLACES = {True: ("palace", "castle"), False: ("town", "market")}
AGE_WORDS = {True: ("young", "little"), False: ("old", "tall")}
AGE_VERBS = {True: ("plays", "learns"), False: ("works", "reads")}

# The lexicon of coarse tags; the ambiguous words get theirs from the template ("stick/VERB").
TAGS = {
    **{w: "NOUN" for w in PEOPLE}, **{w: "NAME" for c, (cap, _) in COUNTRIES.items() for w in (c, cap)},
    **{lang: "NOUN" for _, lang in COUNTRIES.values()},
    **{w: "PRON" for pair in PRONOUNS.values() for w in pair},
    **{w: "NOUN" for group in (*ROYAL_THINGS.values(), *ROYAL_PLACES.values()) for w in group},
    **{w: "ADJ" for group in AGE_WORDS.values() for w in group},
    **{w: "VERB" for group in AGE_VERBS.values() for w in group},
    "the": "DET", "a": "DET", "is": "VERB", "wears": "VERB", "lives": "VERB", "visits": "VERB",
    "speak": "VERB", "sat": "VERB", "put": "VERB", "fetched": "VERB", "must": "VERB", "walked": "VERB",
    "in": "ADP", "of": "ADP", "to": "ADP", "on": "ADP", "across": "ADP", "by": "ADP", "with": "ADP",
    "capital": "NOUN", "city": "NOUN", "country": "NOUN", "mayor": "NOUN", "streets": "NOUN",
    "government": "NOUN", "borders": "NOUN", "people": "NOUN", "language": "NOUN", "river": "NOUN",
    "money": "NOUN", "dog": "NOUN", "plan": "NOUN", "water": "NOUN", "we": "PRON", "they": "PRON",
    "and": "CONJ", "rules": "NOUN",
}
TAG_NAMES = ("ADJ", "ADP", "CONJ", "DET", "NAME", "NOUN", "PRON", "VERB")

PERSON_TEMPLATES = (
    "{pron} is a {age} {w}",
    "the {w} wears {poss} {thing}",
    "the {age} {w} {act} in the {place}",
    "{pron} {act} with {poss} {thing}",  # the word itself is absent: pure attribute context
    "the {w} lives in the {place} and {act}",
    "the {w} visits {capital}",
)
PLACE_TEMPLATES = (
    "{capital} is the capital of {country}",
    "people in {capital} speak {language}",
    "people in {country} speak {language}",
    "the {language} language of {country}",
    "the mayor of {capital} walked the streets of the city",
    "the city of {capital} is in {country}",
    "the government of {country} rules the country",
    "the borders of the country of {country}",
)
AMBIGUOUS_TEMPLATES = (  # (sense, template): "bank/river" and "bank/money" are both NOUN
    ("stick/NOUN", "the dog fetched the stick/NOUN by the river"),
    ("stick/NOUN", "{pron} walked with a stick/NOUN"),
    ("stick/VERB", "we must stick/VERB to the plan"),
    ("stick/VERB", "they stick/VERB to {poss} plan"),
    ("bank/river", "we sat on the bank/NOUN of the river"),
    ("bank/river", "the water of the river is by the bank/NOUN"),
    ("bank/money", "{pron} put {poss} money in the bank/NOUN"),
    ("bank/money", "the bank/NOUN of {capital} is with the money"),
)


@dataclass
class Corpus:
    """Sentences (lists of words), one tag per word, and for each sentence the sense of its
    ambiguous word ("stick/VERB", "bank/river", ...) or None."""

    sentences: list[list[str]]
    tags: list[list[str]]
    senses: list[str | None]


def _pick(options, generator) -> str:
    return options[int(torch.randint(len(options), (1,), generator=generator))]


def _fill(template: str, generator: torch.Generator) -> tuple[list[str], list[str]]:
    """Fill one template with a random person / country; return (words, tags)."""
    person = _pick(list(PEOPLE), generator)
    gender, royal, young = PEOPLE[person]
    country = _pick(list(COUNTRIES), generator)
    capital, language = COUNTRIES[country]
    pron, poss = PRONOUNS[gender]
    text = template.format(w=person, pron=pron, poss=poss, thing=_pick(ROYAL_THINGS[royal], generator),
                           place=_pick(ROYAL_PLACES[royal], generator), age=_pick(AGE_WORDS[young], generator),
                           act=_pick(AGE_VERBS[young], generator), capital=capital, country=country,
                           language=language)
    words, tags = [], []
    for token in text.split():
        word, _, tag = token.partition("/")
        words.append(word)
        tags.append(tag if tag in TAG_NAMES else TAGS[word])
    return words, tags


def generate_corpus(num_sentences: int, generator: torch.Generator | None = None,
                    ambiguous_share: float = 0.1) -> Corpus:
    """`num_sentences` sentences: about half about people, the rest about places, and a share
    `ambiguous_share` using "stick" or "bank". The same generator seed gives the same corpus.
    """
    if not isinstance(num_sentences, int) or isinstance(num_sentences, bool) or num_sentences < 1:
        raise ValueError(f"num_sentences must be a positive int, got {num_sentences!r}")
    if not 0.0 <= ambiguous_share <= 1.0:
        raise ValueError(f"ambiguous_share must be in [0, 1], got {ambiguous_share}")
    sentences, tags, senses = [], [], []
    for _ in range(num_sentences):
        u = float(torch.rand((), generator=generator))
        if u < ambiguous_share:
            sense, template = _pick(AMBIGUOUS_TEMPLATES, generator)
        else:
            sense = None
            template = _pick(PERSON_TEMPLATES if u < (1 + ambiguous_share) / 2 else PLACE_TEMPLATES, generator)
        words, word_tags = _fill(template, generator)
        sentences.append(words)
        tags.append(word_tags)
        senses.append(sense)
    return Corpus(sentences, tags, senses)


def analogy_questions() -> dict[str, list[tuple[str, str, str, str]]]:
    """Questions a : b :: c : d that hold by construction, by category.

    gender: man : woman :: king : queen (every ordered pair of male/female pairs);
    royalty: man : king :: woman : queen; age: man : boy :: king : prince;
    capital: france : paris :: italy : rome; language: france : french :: italy : italian.
    """
    def from_pairs(pairs):
        return [(a, b, c, d) for (a, b), (c, d) in permutations(pairs, 2)]

    flip = {"gender": 0, "royalty": 1, "age": 2}
    questions = {}
    for name, axis in flip.items():
        pairs = []
        for w, attrs in PEOPLE.items():
            if attrs[axis] in ("male", False):
                target = list(attrs)
                target[axis] = "female" if axis == 0 else True
                pairs.append((w, next(v for v, a in PEOPLE.items() if list(a) == target)))
        questions[name] = from_pairs(pairs)
    questions["capital"] = from_pairs([(c, cap) for c, (cap, _) in COUNTRIES.items()])
    questions["language"] = from_pairs([(c, lang) for c, (_, lang) in COUNTRIES.items()])
    return questions
