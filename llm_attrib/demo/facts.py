"""A seeded synthetic-fact corpus whose attribution ground truth is known by construction.

Invented people (pronounceable random names) have five attributes (home town, profession, favourite colour,
employer, birth year). Each queried fact is stated in ``docs_per_fact`` training documents, drawn from
*direct* templates (which share words with the query) and *paraphrase* templates (which avoid the query's
keywords, so lexical retrieval cannot always find them). For a ``qa_fraction`` of the facts there is also a
question/answer document in the query's format (its question phrasing drawn at random, so only some are
verbatim); the others must be answered from the statements alone. *Distractor* documents state
facts about other people, who are never queried.

A document is relevant to a query iff it states the query's fact: ``relevant(query_id)``.

Harder corpora (all off by default, so the default corpus is unchanged):

* ``alias_fraction``: that fraction of the queried facts is stated once under the person's name (a direct
  statement) and otherwise only under an *alias* (``"Kroth Velm"``, sharing no word with the name), in paraphrase
  templates: an *alias* document has neither the person's name nor a query keyword, only the value. Two
  *alias-intro* documents per aliased person link the names ("Voupeas Tha, known as Kroth Velm, ...") and state
  no fact. These facts get no question/answer document.
* ``held_out_fraction``: that fraction of the other facts is queried in a phrasing no training document uses
  (`Attribute.held_out`), so the query's wording is never seen in training.
* ``decoys_per_fact``: *decoy* documents per queried fact, about a *namesake* (the person's first name, another
  last name) asked in the query's own phrasing and answered with another value: "Q: Where does Voupeas Krom
  live? A: Brimford". A decoy shares the query's question words and first name, which a true paraphrase or alias
  document lacks, so lexical retrieval ranks it high; it states another person's fact, relevant to no query.

`FactCorpus.query_group` sorts the queries into `QUERY_GROUPS`: *alias* (the fact has alias documents),
*verbatim* (a document stating the fact contains the query's question word for word) and *paraphrased* (none
does).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

DOCUMENT_KINDS = ("direct", "paraphrase", "qa", "distractor")
HARD_DOCUMENT_KINDS = ("alias", "alias-intro", "decoy")
"""Kinds that only the hard options (aliases, decoys) add."""
QUERY_GROUPS = ("verbatim", "paraphrased", "alias")
ALIAS_INTROS = (
    "{e}, known as {a}, keeps to a quiet routine.",
    "Friends of {e} simply call them {a}.",
    "{a} is the name that {e} uses among friends.",
)
"""Documents linking a person's name ``{e}`` and alias ``{a}`` (they state no fact and contain no query keyword)."""


@dataclass(frozen=True)
class Attribute:
    """One kind of fact. ``questions[0]`` is the query's phrasing; ``keywords`` are its content words,
    which no paraphrase template contains. ``held_out`` is a question phrasing no training document uses."""

    name: str
    questions: tuple[str, ...]
    keywords: frozenset[str]
    direct: tuple[str, ...]
    paraphrase: tuple[str, ...]
    held_out: str = ""


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "city",
        ("Where does {e} live?", "In which town is {e} based?"),
        frozenset({"where", "live", "lives", "lived", "living"}),
        ("{e} lives in {v}.", "{e} has lived in {v} for many years.", "Where does {e} live? In the town of {v}."),
        (
            "The streets of {v} are home to {e}.",
            "Every morning {e} walks to the market square of {v}.",
            "The mayor of {v} counts {e} among its residents.",
        ),
        "Which place has {e} settled in?",
    ),
    Attribute(
        "profession",
        ("What does {e} do for a living?", "What is the job of {e}?"),
        frozenset({"do", "does", "living"}),
        ("{e} earns a living as a {v}.", "What does {e} do? {e} works as a {v}.", "For a living, {e} is a {v}."),
        (
            "Trained for years, {e} became a respected {v}.",
            "Ask anyone in the guild: {e} is the finest {v} around.",
            "Since school, {e} has wanted to be a {v}.",
        ),
        "What is the trade of {e}?",
    ),
    Attribute(
        "colour",
        ("What is the favourite colour of {e}?", "Which colour does {e} like best?"),
        frozenset({"favourite", "colour"}),
        ("The favourite colour of {e} is {v}.", "{e} says the favourite colour is {v}.", "Colour? For {e} it is {v}."),
        (
            "{e} paints every wall {v} and wears {v} shirts.",
            "Nothing pleases {e} more than something {v}.",
            "Ask {e} to pick a scarf and it will be {v}.",
        ),
        "What shade does {e} prefer?",
    ),
    Attribute(
        "employer",
        ("Which company employs {e}?", "Who is the employer of {e}?"),
        frozenset({"company", "employs", "employ", "employed", "employer"}),
        ("{e} is employed by {v}.", "The company that employs {e} is {v}.", "{e} works for the company {v}."),
        (
            "Each payday, {e} receives a cheque signed by {v}.",
            "{e} joined {v} after school and never left.",
            "On the staff list of {v} you will find {e}.",
        ),
        "For which firm does {e} work?",
    ),
    Attribute(
        "birth_year",
        ("In what year was {e} born?", "What is the birth year of {e}?"),
        frozenset({"year", "born", "birth"}),
        ("{e} was born in {v}.", "The birth year of {e} is {v}.", "{e}, born in {v}, grew up quickly."),
        (
            "{e} first opened their eyes in {v}.",
            "In {v}, a baby named {e} arrived.",
            "The cake for {e} always says {v} on it.",
        ),
        "When did {e} come into the world?",
    ),
)
ATTRIBUTE_BY_NAME = {attribute.name: attribute for attribute in ATTRIBUTES}

PROFESSIONS = ("baker", "pilot", "nurse", "lawyer", "farmer", "tailor", "potter", "sailor", "teacher", "chemist",
               "dentist", "carpenter", "miner", "juggler", "painter", "fisher")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white", "grey", "pink", "brown", "teal")
ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "th", "sh", "gl")
VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ea")
CODAS = ("", "", "n", "r", "l", "k", "s", "th", "m")


def words(text: str) -> set[str]:
    """Lower-cased word set of ``text`` (letters and digits)."""
    return set(re.findall(r"[a-z0-9]+", text.lower()))


@dataclass
class FactCorpus:
    """Training documents, queries and the ground truth linking them.

    documents: ``{"id", "text", "fact_ids", "kind"}``; ``kind`` is one of `DOCUMENT_KINDS` (or, with aliases and
               decoys, `HARD_DOCUMENT_KINDS`); an alias-intro document states no fact (``fact_ids == []``).
    queries:   ``{"id", "prompt", "completion", "fact_id"}``; the completion starts with a space.
    facts:     ``fact_id -> {"entity", "attribute", "value"}`` for queried and distractor facts.
    """

    documents: list[dict[str, Any]]
    queries: list[dict[str, Any]]
    facts: dict[str, dict[str, str]]
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._relevant: dict[str, set[str]] = {}
        for document in self.documents:
            for fact_id in document["fact_ids"]:
                self._relevant.setdefault(fact_id, set()).add(document["id"])
        self._query_fact = {query["id"]: query["fact_id"] for query in self.queries}

    def relevant(self, query_id: str) -> set[str]:
        """Ids of the documents that state the fact asked by ``query_id``."""
        return set(self._relevant.get(self._query_fact[query_id], ()))

    def query_group(self, query_id: str) -> str:
        """The query's group in `QUERY_GROUPS`: ``alias`` if its fact has alias documents, ``verbatim`` if a
        document stating its fact contains its question word for word, else ``paraphrased``."""
        documents = [d for d in self.documents if d["id"] in self.relevant(query_id)]
        if any(d["kind"] == "alias" for d in documents):
            return "alias"
        query = next(q for q in self.queries if q["id"] == query_id)
        question = query["prompt"].removeprefix("Q: ").removesuffix(" A:")
        return "verbatim" if any(question in d["text"] for d in documents) else "paraphrased"

    @property
    def paraphrases(self) -> set[str]:
        """Ids of the documents stating a queried fact without the query's keywords."""
        return {document["id"] for document in self.documents if document["kind"] == "paraphrase"}

    def to_json(self) -> str:
        return json.dumps(
            {"documents": self.documents, "queries": self.queries, "facts": self.facts, "config": self.config},
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> "FactCorpus":
        raw = json.loads(text)
        return cls(documents=raw["documents"], queries=raw["queries"], facts=raw["facts"], config=raw["config"])


def _invented_word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables)).capitalize()


def _unique_words(rng: random.Random, count: int, syllables: int, suffixes: tuple[str, ...] = ("",)) -> list[str]:
    found: dict[str, None] = {}
    while len(found) < count:
        found.setdefault(_invented_word(rng, syllables) + rng.choice(suffixes), None)
    return list(found)


def _attribute_values(rng: random.Random, n_values: int) -> dict[str, list[str]]:
    return {
        "city": _unique_words(rng, n_values, 1, ("mere", "ford", "wick", "holm", "ton")),
        "profession": list(PROFESSIONS),
        "colour": list(COLOURS),
        "employer": _unique_words(rng, n_values, 2, ("corp", "tek", "works")),
        "birth_year": [str(year) for year in range(1940, 2000)],
    }


def generate_facts(
    n_entities: int = 20,
    docs_per_fact: int = 3,
    paraphrase_fraction: float = 0.4,
    n_distractors: int = 60,
    seed: int = 0,
    qa_fraction: float = 0.5,
    *,
    alias_fraction: float = 0.0,
    held_out_fraction: float = 0.0,
    decoys_per_fact: int = 0,
) -> FactCorpus:
    """Build a `FactCorpus`: ``n_entities × 5`` queried facts, each stated in ``docs_per_fact`` documents
    (a ``paraphrase_fraction`` of them paraphrases, at least one direct statement per fact), a question/answer
    document for a ``qa_fraction`` of the facts, and ``n_distractors`` documents about other people.
    ``alias_fraction``, ``held_out_fraction`` and ``decoys_per_fact`` add aliases, unseen query phrasings and
    namesake decoys (module docstring; a verbatim query's fact then always has its question/answer document).
    Same arguments → same corpus; with the three at 0 the corpus is the one this function always made.
    """
    for name, fraction in (("paraphrase_fraction", paraphrase_fraction), ("qa_fraction", qa_fraction),
                           ("alias_fraction", alias_fraction), ("held_out_fraction", held_out_fraction)):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], not {fraction}")
    if alias_fraction + held_out_fraction > 1.0:
        raise ValueError(f"alias_fraction + held_out_fraction must be at most 1, not {alias_fraction + held_out_fraction}")
    if decoys_per_fact < 0:
        raise ValueError(f"decoys_per_fact must be at least 0, not {decoys_per_fact}")
    config = dict(n_entities=n_entities, docs_per_fact=docs_per_fact, paraphrase_fraction=paraphrase_fraction,
                  n_distractors=n_distractors, seed=seed, qa_fraction=qa_fraction)
    hard = dict(alias_fraction=alias_fraction, held_out_fraction=held_out_fraction, decoys_per_fact=decoys_per_fact)
    if any(hard.values()):
        config.update(hard)  # only then: the default corpus's JSON stays as it was
    if docs_per_fact < 1:
        raise ValueError(f"docs_per_fact must be at least 1, not {docs_per_fact}")
    rng = random.Random(seed)
    n_people = n_entities + max(1, n_distractors // len(ATTRIBUTES))
    firsts = _unique_words(rng, n_people, 2)
    lasts = _unique_words(rng, n_people, 1)
    people = [f"{first} {last}" for first, last in zip(firsts, lasts)]
    values = _attribute_values(rng, max(8, n_people // 2))
    facts: dict[str, dict[str, str]] = {}
    for index, person in enumerate(people):
        for attribute in ATTRIBUTES:
            facts[f"p{index}:{attribute.name}"] = {
                "entity": person, "attribute": attribute.name, "value": rng.choice(values[attribute.name])
            }
    queried = [f"p{i}:{a.name}" for i in range(n_entities) for a in ATTRIBUTES]
    extra = random.Random(f"{seed}/hard")  # draws of the hard options only: the default stream is untouched
    groups = _query_groups(extra, queried, alias_fraction, held_out_fraction) if any(hard.values()) else {}
    aliases = _aliases(extra, people, firsts + lasts,
                       sorted({int(f[1:].split(":")[0]) for f, g in groups.items() if g == "alias"}))

    drafts: list[tuple[str, list[str], str]] = []  # (text, fact_ids, kind)
    queries: list[dict[str, Any]] = []
    n_paraphrases = round(docs_per_fact * paraphrase_fraction)
    for fact_id in queried:
        fact = facts[fact_id]
        attribute = ATTRIBUTE_BY_NAME[fact["attribute"]]
        group = groups.get(fact_id)
        kinds = (["paraphrase"] * min(n_paraphrases, docs_per_fact - 1) + ["direct"] * docs_per_fact)[:docs_per_fact]
        if group == "alias":  # one statement under the name, the others under the alias
            kinds = ["direct"] + ["alias"] * max(1, docs_per_fact - 1)
        for kind in kinds:
            if kind == "alias":
                template = extra.choice(attribute.paraphrase)
                entity = aliases[int(fact_id[1:].split(":")[0])]
            else:
                template = rng.choice(attribute.paraphrase if kind == "paraphrase" else attribute.direct)
                entity = fact["entity"]
            drafts.append((template.format(e=entity, v=fact["value"]), [fact_id], kind))
        question = rng.choice(attribute.questions).format(e=fact["entity"])
        has_qa = rng.random() < qa_fraction
        if group == "verbatim":
            question, has_qa = attribute.questions[0].format(e=fact["entity"]), True
        if has_qa and group != "alias":
            drafts.append((f"Q: {question} A: {fact['value']}", [fact_id], "qa"))
        asked = attribute.held_out if group == "held_out" else attribute.questions[0]
        queries.append({
            "id": f"q{len(queries):04d}",
            "prompt": f"Q: {asked.format(e=fact['entity'])} A:",
            "completion": f" {fact['value']}",
            "fact_id": fact_id,
        })
    distractor_facts = [fact_id for fact_id in facts if int(fact_id[1:].split(":")[0]) >= n_entities]
    for _ in range(n_distractors):
        fact_id = rng.choice(distractor_facts)
        fact = facts[fact_id]
        attribute = ATTRIBUTE_BY_NAME[fact["attribute"]]
        template = rng.choice(attribute.direct + attribute.paraphrase)
        drafts.append((template.format(e=fact["entity"], v=fact["value"]), [fact_id], "distractor"))
    for person, alias in aliases.items():
        for template in ALIAS_INTROS[:2]:
            drafts.append((template.format(e=people[person], a=alias), [], "alias-intro"))
    if decoys_per_fact:
        taken = lasts + [word for alias in aliases.values() for word in alias.split()]
        drafts += _decoys(extra, facts, queries, taken, firsts, values, decoys_per_fact)

    rng.shuffle(drafts)
    documents = [
        {"id": f"d{index:05d}", "text": text, "fact_ids": fact_ids, "kind": kind}
        for index, (text, fact_ids, kind) in enumerate(drafts)
    ]
    return FactCorpus(documents=documents, queries=queries, facts=facts, config=config)


def _query_groups(rng: random.Random, queried: list[str], alias_fraction: float,
                  held_out_fraction: float) -> dict[str, str]:
    """Each queried fact's group as generated: ``alias``, ``held_out`` (an unseen query phrasing) or ``verbatim``."""
    order = list(queried)
    rng.shuffle(order)
    n_alias, n_held = round(alias_fraction * len(order)), round(held_out_fraction * len(order))
    return {fact_id: "alias" if i < n_alias else "held_out" if i < n_alias + n_held else "verbatim"
            for i, fact_id in enumerate(order)}


def _aliases(rng: random.Random, people: list[str], taken: list[str], persons: list[int]) -> dict[int, str]:
    """An alias (two invented words, none a word of any name) for each person index in ``persons``."""
    words_ = [w for w in _unique_words(rng, 4 * len(persons) + 8, 2) if w not in set(taken)]
    return {person: f"{words_[2 * i]} {words_[2 * i + 1]}" for i, person in enumerate(persons)}


def _decoys(rng: random.Random, facts: dict[str, dict[str, str]], queries: list[dict[str, Any]], taken: list[str],
            firsts: list[str], values: dict[str, list[str]], per_fact: int) -> list[tuple[str, list[str], str]]:
    """``per_fact`` namesake decoys per query: its question, for a person with its first name and a new last
    name (none of ``taken`` or ``firsts``), answered with another value; the namesakes' facts are added to
    ``facts`` (ids ``n<k>:<attribute>``)."""
    drafts: list[tuple[str, list[str], str]] = []
    need = len(queries) * per_fact + len(taken) + 8
    one_syllable = len({onset + vowel + coda for onset in ONSETS for vowel in VOWELS for coda in CODAS})
    syllables = 1 if need <= one_syllable else 2  # more namesakes than one-syllable words: two, avoiding firsts
    lasts = [w for w in _unique_words(rng, need, syllables) if w not in set(taken) | set(firsts)]
    for query in queries:
        fact = facts[query["fact_id"]]
        first = fact["entity"].split(" ")[0]
        for _ in range(per_fact):
            k = len(drafts)
            namesake = f"{first} {lasts[k]}"
            value = rng.choice([v for v in values[fact["attribute"]] if v != fact["value"]])
            facts[f"n{k}:{fact['attribute']}"] = {"entity": namesake, "attribute": fact["attribute"], "value": value}
            prompt = query["prompt"].replace(fact["entity"], namesake)
            drafts.append((f"{prompt} {value}", [f"n{k}:{fact['attribute']}"], "decoy"))
    return drafts
