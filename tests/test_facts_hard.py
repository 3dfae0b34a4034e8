"""The fact corpus's aliases, unseen phrasings and namesake decoys; per-group fact-tracing metrics by hand."""

from __future__ import annotations

import hashlib

import pytest
import torch

from llm_attrib.demo.facts import ATTRIBUTE_BY_NAME, FactCorpus, generate_facts, words
from llm_attrib.evaluation.fact_tracing import group_report, paired_difference
from llm_attrib.scores import Scores

HARD = dict(n_entities=6, n_distractors=10, alias_fraction=1 / 3, held_out_fraction=1 / 3, decoys_per_fact=1)


@pytest.mark.parametrize("arguments, digest", [
    ({}, "8d3869465c1cae19ff0a3577e05eb77a072d38100feb2b78f2f39839b3ed3dcc"),
    (dict(n_entities=8, docs_per_fact=3, n_distractors=24), "f7d6d1a2d57252143b9c3b3dd50686f33fa2579b1dfbe91b43fcf3c7fa15ae7e"),
    (dict(docs_per_fact=5), "bc7f2b07b74cf7c98000abeef106f5e823541c73042ca91ed36808246fd72057"),
])
def test_the_options_leave_the_default_corpora_byte_for_byte(arguments, digest):
    """Digests of the JSON before aliases and decoys existed (the demo's and the facts benchmark's corpora)."""
    assert hashlib.sha256(generate_facts(**arguments).to_json().encode()).hexdigest() == digest


def test_alias_documents_have_neither_the_name_nor_a_query_keyword():
    corpus = generate_facts(**HARD)
    aliased = [q for q in corpus.queries if corpus.query_group(q["id"]) == "alias"]
    assert len(aliased) == 10
    by_id = {d["id"]: d for d in corpus.documents}
    for query in aliased:
        fact = corpus.facts[query["fact_id"]]
        stating = [by_id[d] for d in corpus.relevant(query["id"])]
        assert sorted(d["kind"] for d in stating) == ["alias", "alias", "direct"]
        for document in stating:
            if document["kind"] == "alias":
                text = words(document["text"])
                assert not text & words(fact["entity"]) and not text & ATTRIBUTE_BY_NAME[fact["attribute"]].keywords
                assert fact["value"].lower() in text
        alias = stating[[d["kind"] for d in stating].index("alias")]["text"]
        intros = [d["text"] for d in corpus.documents if d["kind"] == "alias-intro" and fact["entity"] in d["text"]]
        assert len(intros) == 2 and all(any(w in intro for w in alias.split() if w.istitle()) for intro in intros)
        assert all(not d["fact_ids"] for d in corpus.documents if d["kind"] == "alias-intro")


def test_decoys_share_the_question_and_first_name_but_state_another_persons_value():
    corpus = generate_facts(**HARD)
    decoys = [d for d in corpus.documents if d["kind"] == "decoy"]
    assert len(decoys) == len(corpus.queries)
    relevant = set().union(*(corpus.relevant(q["id"]) for q in corpus.queries))
    for query in corpus.queries:
        fact = corpus.facts[query["fact_id"]]
        first, last = fact["entity"].split(" ")
        question = query["prompt"].replace(fact["entity"], first)
        mine = [d for d in decoys if d["text"].replace(" " + corpus.facts[d["fact_ids"][0]]["entity"].split(" ")[1], "")
                .startswith(question)]
        assert mine and all(d["id"] not in relevant for d in mine)
        for decoy in mine:
            stated = corpus.facts[decoy["fact_ids"][0]]
            assert stated["entity"] != fact["entity"] and stated["value"] != fact["value"]
            assert last not in decoy["text"].split() and first in decoy["text"]


def test_groups_verbatim_paraphrased_alias():
    corpus = generate_facts(**HARD)
    by_id = {d["id"]: d for d in corpus.documents}
    groups = {q["id"]: corpus.query_group(q["id"]) for q in corpus.queries}
    assert sorted(groups.values()).count("paraphrased") == 10 and sorted(groups.values()).count("verbatim") == 10
    for query in corpus.queries:
        question = query["prompt"][3:-3]
        seen = any(question in by_id[d]["text"] for d in corpus.relevant(query["id"]))
        assert seen == (groups[query["id"]] == "verbatim") or groups[query["id"]] == "alias"
    everywhere = " ".join(d["text"] for d in corpus.documents if d["kind"] != "decoy")
    assert all(query["prompt"][3:-3] not in everywhere for query in corpus.queries if groups[query["id"]] == "paraphrased")
    assert FactCorpus.from_json(corpus.to_json()).documents == corpus.documents


def test_group_report_and_paired_differences_by_hand():
    documents = [
        {"id": "a", "text": "Ann Lee lives in Tallmere.", "fact_ids": ["p0:city"], "kind": "direct"},
        {"id": "b", "text": "Q: Where does Ann Lee live? A: Tallmere", "fact_ids": ["p0:city"], "kind": "qa"},
        {"id": "c", "text": "Every morning Kro Vel walks to Tallmere.", "fact_ids": ["p1:city"], "kind": "alias"},
        {"id": "d", "text": "Bob Ray lives in Ford.", "fact_ids": ["p1:city"], "kind": "direct"},
        {"id": "e", "text": "Q: Where does Ann Moe live? A: Ford", "fact_ids": [], "kind": "decoy"},
    ]
    queries = [{"id": "q0", "prompt": "Q: Where does Ann Lee live? A:", "completion": " Tallmere", "fact_id": "p0:city"},
               {"id": "q1", "prompt": "Q: Where does Bob Ray live? A:", "completion": " Ford", "fact_id": "p1:city"}]
    corpus = FactCorpus(documents, queries, facts={})
    scores = Scores(values=torch.tensor([[0.1, 0.5, 0.0, 0.2, 0.9], [0.3, 0.0, 0.4, 0.1, 0.2]]),
                    query_ids=["q0", "q1"], train_ids=list("abcde"))
    report = group_report(scores, corpus, k=2)
    assert report["queries/verbatim/mrr"] == 1 / 2 and report["queries/verbatim/recall@2"] == 1 / 2  # b 2nd, a 4th
    assert report["queries/alias/mrr"] == 1.0 and report["queries/alias/recall@2"] == 1 / 2
    assert report["queries/alias/alias_recall@2"] == 1.0 and report["queries/alias/per_query"]["query_ids"] == ["q1"]
    assert "queries/paraphrased/mrr" not in report and "queries/verbatim/alias_recall@2" not in report
    assert paired_difference([1.0, 0.5, 0.0], [0.5, 0.5, 0.5]) == pytest.approx((0.0, (0.25 / 3) ** 0.5))  # d = 0.5, 0, -0.5


def test_the_hard_options_add_exactly_the_hard_kinds():
    from llm_attrib.demo.facts import DOCUMENT_KINDS, HARD_DOCUMENT_KINDS

    assert {d["kind"] for d in generate_facts(**HARD).documents} == set(DOCUMENT_KINDS + HARD_DOCUMENT_KINDS)


def test_a_corpus_with_more_namesakes_than_one_syllable_words_is_built():
    corpus = generate_facts(n_entities=240, n_distractors=60, decoys_per_fact=1)  # 1,200 namesakes
    namesakes = {corpus.facts[d["fact_ids"][0]]["entity"] for d in corpus.documents if d["kind"] == "decoy"}
    people = {fact["entity"] for fact_id, fact in corpus.facts.items() if fact_id.startswith("p")}
    assert len(namesakes) == 1200 and not namesakes & people
