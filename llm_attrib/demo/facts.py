"""A seeded synthetic-fact corpus whose attribution ground truth is known by construction.

Invented people (pronounceable random names) have five attributes (home town, profession, favourite colour,
employer, birth year). Each queried fact is stated in ``docs_per_fact`` training documents, drawn from
*direct* templates (which share words with the query) and *paraphrase* templates (which avoid the query's
keywords, so lexical retrieval cannot always find them). For a ``qa_fraction`` of the facts there is also a
question/answer document in the query's format (its question phrasing drawn at random, so only some are
verbatim); the others must be answered from the statements alone. *Distractor* documents state
facts about other people, who are never queried.

A document is relevant to a query iff it states the query's fact: ``relevant(query_id)``.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

DOCUMENT_KINDS = ("direct", "paraphrase", "qa", "distractor")


@dataclass(frozen=True)
class Attribute:
    """One kind of fact. ``questions[0]`` is the query's phrasing; ``keywords`` are its content words,
    which no paraphrase template contains."""

    name: str
    questions: tuple[str, ...]
    keywords: frozenset[str]
    direct: tuple[str, ...]
    paraphrase: tuple[str, ...]


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

    documents: ``{"id", "text", "fact_ids", "kind"}``; ``kind`` is one of `DOCUMENT_KINDS`.
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
) -> FactCorpus:
    """Build a `FactCorpus`: ``n_entities × 5`` queried facts, each stated in ``docs_per_fact`` documents
    (a ``paraphrase_fraction`` of them paraphrases, at least one direct statement per fact), a question/answer
    document for a ``qa_fraction`` of the facts, and ``n_distractors`` documents about other people.
    Same arguments → same corpus.
    """
    for name, fraction in (("paraphrase_fraction", paraphrase_fraction), ("qa_fraction", qa_fraction)):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], not {fraction}")
    config = dict(n_entities=n_entities, docs_per_fact=docs_per_fact, paraphrase_fraction=paraphrase_fraction,
                  n_distractors=n_distractors, seed=seed, qa_fraction=qa_fraction)
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

    drafts: list[tuple[str, str, str]] = []  # (text, fact_id, kind)
    queries: list[dict[str, Any]] = []
    n_paraphrases = round(docs_per_fact * paraphrase_fraction)
    for fact_id in [f"p{i}:{a.name}" for i in range(n_entities) for a in ATTRIBUTES]:
        fact = facts[fact_id]
        attribute = ATTRIBUTE_BY_NAME[fact["attribute"]]
        kinds = ["paraphrase"] * min(n_paraphrases, docs_per_fact - 1) + ["direct"] * docs_per_fact
        for kind in kinds[:docs_per_fact]:
            template = rng.choice(attribute.paraphrase if kind == "paraphrase" else attribute.direct)
            drafts.append((template.format(e=fact["entity"], v=fact["value"]), fact_id, kind))
        question = rng.choice(attribute.questions).format(e=fact["entity"])
        if rng.random() < qa_fraction:
            drafts.append((f"Q: {question} A: {fact['value']}", fact_id, "qa"))
        queries.append({
            "id": f"q{len(queries):04d}",
            "prompt": f"Q: {attribute.questions[0].format(e=fact['entity'])} A:",
            "completion": f" {fact['value']}",
            "fact_id": fact_id,
        })
    distractor_facts = [fact_id for fact_id in facts if int(fact_id[1:].split(":")[0]) >= n_entities]
    for _ in range(n_distractors):
        fact_id = rng.choice(distractor_facts)
        fact = facts[fact_id]
        attribute = ATTRIBUTE_BY_NAME[fact["attribute"]]
        template = rng.choice(attribute.direct + attribute.paraphrase)
        drafts.append((template.format(e=fact["entity"], v=fact["value"]), fact_id, "distractor"))

    rng.shuffle(drafts)
    documents = [
        {"id": f"d{index:05d}", "text": text, "fact_ids": [fact_id], "kind": kind}
        for index, (text, fact_id, kind) in enumerate(drafts)
    ]
    return FactCorpus(documents=documents, queries=queries, facts=facts, config=config)
