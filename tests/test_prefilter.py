"""TF-IDF/BM25 prefilter: exact scores on candidates, -inf elsewhere, persisted index refused on other data."""

from __future__ import annotations

import pytest
import torch

from llm_attrib.adapters import CausalLMAdapter
from llm_attrib.attributors.influence import InfluenceAttributor
from llm_attrib.errors import CacheMismatchError, UserInputError
from llm_attrib.attributors.prefilter import NOT_A_CANDIDATE, Prefilter

torch.set_num_threads(1)


@pytest.mark.parametrize("kind", ["tfidf", "bm25"])
def test_candidates_get_the_full_scores_and_the_rest_minus_infinity(gpt2, tokenizer, train_records,
                                                                    query_records, kind):
    attributor = InfluenceAttributor(CausalLMAdapter(gpt2, tokenizer), "ekfac", fisher="empirical",
                                     batch_size=4).fit(train_records)
    full = attributor.score(query_records, train_records)
    prefilter = Prefilter(index=kind, candidates=3).fit(train_records)
    got = prefilter.around(attributor).score(query_records, train_records, per_token=True)
    chosen = prefilter.select(query_records)
    assert got.values.shape == full.values.shape and got.train_ids == full.train_ids
    for q in range(len(query_records)):
        candidates = set(chosen[q].tolist())
        for n in range(len(train_records)):
            if n in candidates:
                torch.testing.assert_close(got.values[q, n], full.values[q, n], rtol=1e-7, atol=1e-12)
                torch.testing.assert_close(got.per_token[q][n].sum(), got.values[q, n])
            else:
                assert got.values[q, n] == NOT_A_CANDIDATE and got.per_token[q][n].numel() == 0
    assert {tid for tid, _ in got.top_k(0, 3)} == {full.train_ids[n] for n in chosen[0].tolist()}


def test_the_cat_query_keeps_the_cat_sentence(train_records, query_records):
    assert 0 in Prefilter(index="tfidf", candidates=2).fit(train_records).select(query_records[:1])[0].tolist()


def test_a_saved_index_is_reused_and_refused_for_other_data(train_records, query_records, tmp_path):
    path = tmp_path / "prefilter.safetensors"
    first = Prefilter(index="bm25", candidates=4).fit_or_load(path, train_records)
    again = Prefilter(index="bm25", candidates=4).fit_or_load(path, train_records)
    assert torch.equal(first.select(query_records), again.select(query_records))
    with pytest.raises(CacheMismatchError, match="data"):
        Prefilter(index="bm25").load(path, train_records[:-1])
    with pytest.raises(CacheMismatchError, match="kind"):
        Prefilter(index="tfidf").load(path, train_records)


@pytest.mark.parametrize("options, message", [(dict(index="grep"), "index must be one of"),
                                              (dict(candidates=0), "candidates")])
def test_bad_prefilter_options_get_one_line_errors(options, message):
    with pytest.raises(UserInputError, match=message):
        Prefilter(**options)


def test_trace_cli_scores_only_the_candidates_and_saves_the_index(tmp_path, gpt2, tokenizer, train_records, capsys):
    import json

    from llm_attrib.cli import main

    model_dir, train_file, factors = tmp_path / "model", tmp_path / "train.jsonl", tmp_path / "factors"
    gpt2.float().save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    train_file.write_text("".join(json.dumps(r) + "\n" for r in train_records))
    status = main(["trace", "--model", str(model_dir), "--train", str(train_file), "--prompt", "the cat sat on",
                   "--completion", " the mat", "--top-k", "5", "--json", "--prefilter", "bm25", "--candidates", "2",
                   "--factors", str(factors)])
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["top"]) == 2 and 0 in {record["train_id"] for record in report["top"]}
    assert (factors / "prefilter-bm25.safetensors").exists()


@pytest.mark.parametrize("chunk", [1, 2])
def test_per_query_groups_score_only_their_own_candidates_exactly(gpt2, tokenizer, train_records, query_records,
                                                                   chunk):
    from llm_attrib.attributors.prefilter import group_queries

    attributor = InfluenceAttributor(CausalLMAdapter(gpt2, tokenizer), "kfac", batch_size=4).fit(train_records)
    full = attributor.score(query_records, train_records, per_module=True)
    prefilter = Prefilter(attributor, index="bm25", candidates=3, query_chunk=chunk).fit(train_records)
    got = prefilter.score(query_records, train_records, per_module=True)
    chosen = prefilter.select(query_records)
    mask = torch.zeros_like(full.values, dtype=torch.bool).scatter_(1, chosen, True)
    torch.testing.assert_close(got.values[mask], full.values[mask], rtol=1e-7, atol=1e-12)
    assert (got.values[~mask] == NOT_A_CANDIDATE).all()
    for name, part in got.per_module.items():
        torch.testing.assert_close(part[mask], full.per_module[name][mask], rtol=1e-7, atol=1e-12)
    groups = group_queries(chosen, chunk)
    assert sorted(q for g in groups for q in g) == list(range(len(query_records)))
    assert got.metadata["n_scored"] == sum(len(set(chosen[g].flatten().tolist())) for g in groups)


def test_queries_sharing_candidates_are_grouped_together():
    from llm_attrib.attributors.prefilter import group_queries

    chosen = torch.tensor([[0, 1], [5, 6], [1, 0], [6, 7]])
    assert group_queries(chosen, 2) == [[0, 2], [1, 3]]
    assert group_queries(chosen, 4) == [[0, 1, 2, 3]]
