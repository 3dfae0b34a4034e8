"""HybridAttributor: fusion by hand, the per-query recall stage, answer-only measurement, save/load bitwise."""

from __future__ import annotations

import pytest
import torch

from llm_attrib.adapters import CausalLMAdapter
from llm_attrib.attributors import ATTRIBUTORS, load_attributor
from llm_attrib.attributors.hybrid import HybridAttributor, HybridConfig, answer_record, ranks, \
    reciprocal_rank_fusion, z_fusion
from llm_attrib.attributors.influence import InfluenceAttributor
from llm_attrib.attributors.text import BM25Attributor
from llm_attrib.errors import UserInputError
from llm_attrib.attributors.prefilter import NOT_A_CANDIDATE

torch.set_num_threads(1)


def test_ranks_count_from_one_and_break_ties_by_column():
    assert ranks(torch.tensor([[0.5, 2.0, 0.5, -1.0]])).tolist() == [[2, 1, 3, 4]]


def test_reciprocal_rank_fusion_by_hand():
    lexical = torch.tensor([[3.0, 2.0, 1.0]])  # ranks 1, 2, 3
    gradient = torch.tensor([[0.1, 0.9, -0.5]])  # ranks 2, 1, 3
    got = reciprocal_rank_fusion(lexical, gradient, 60.0)
    want = torch.tensor([[1 / 61 + 1 / 62, 1 / 62 + 1 / 61, 1 / 63 + 1 / 63]], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-15)


def test_z_fusion_by_hand():
    lexical, gradient = torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([[0.0, 4.0, 4.0]])
    s = (2 / 3) ** 0.5  # population s.d. of (3, 2, 1)
    z_lex = [1 / s, 0.0, -1 / s]
    mean, sd = 8 / 3, (((8 / 3) ** 2 + 2 * (4 / 3) ** 2) / 3) ** 0.5
    z_grad = [(0 - mean) / sd, (4 - mean) / sd, (4 - mean) / sd]
    torch.testing.assert_close(z_fusion(lexical, gradient, 60.0),
                               torch.tensor([[a + b for a, b in zip(z_lex, z_grad)]], dtype=torch.float64))
    torch.testing.assert_close(z_fusion(torch.ones(1, 3), gradient, 0.0)[0], torch.tensor(z_grad, dtype=torch.float64))


def test_answer_record_strips_trailing_punctuation_only():
    assert answer_record({"prompt": "Q:", "completion": " Paris."})["completion"] == " Paris"
    assert answer_record({"prompt": "Q:", "completion": " St. Ives!\n"})["completion"] == " St. Ives"
    assert answer_record({"prompt": "Q:", "completion": " ?"})["completion"] == " ?"
    assert answer_record({"text": "a document."}) == {"text": "a document."}


@pytest.fixture()
def ekfac(gpt2, tokenizer, train_records):
    return InfluenceAttributor(CausalLMAdapter(gpt2, tokenizer), "ekfac", fisher="empirical",
                               batch_size=4).fit(train_records)


@pytest.mark.parametrize("fusion", ["rrf", "zscore"])
def test_hybrid_fuses_bm25_and_answer_only_gradient_ranks_of_each_querys_candidates(ekfac, train_records,
                                                                                    query_records, fusion):
    queries = [{**q, "completion": q["completion"] + "."} for q in query_records]  # "." must not be measured
    hybrid = HybridAttributor(ekfac, candidates=3, fusion=fusion, query_chunk=2).fit(train_records)
    got = hybrid.score(queries, train_records)
    lexical = BM25Attributor().fit(train_records).score(queries).values.double()
    gradient = ekfac.score(query_records, train_records).values  # the answers without the "."
    for q in range(len(queries)):
        chosen = torch.topk(lexical[q], 3).indices
        fused = (reciprocal_rank_fusion if fusion == "rrf" else z_fusion)(lexical[q, chosen][None],
                                                                         gradient[q, chosen][None], 60.0)[0]
        torch.testing.assert_close(got.values[q, chosen], fused)
        outside = torch.ones(len(train_records), dtype=torch.bool)
        outside[chosen] = False
        assert (got.values[q, outside] == NOT_A_CANDIDATE).all()
    assert got.metadata["n_scored"] <= len(queries) * 3 and got.metadata["fusion"] == fusion


def test_save_and_load_score_bitwise(ekfac, gpt2, tokenizer, train_records, query_records, tmp_path):
    hybrid = HybridAttributor(ekfac, config=HybridConfig(candidates=4, index="tfidf", fusion="zscore")).fit(train_records)
    hybrid.save_pretrained(tmp_path / "hybrid")
    again = load_attributor(tmp_path / "hybrid", CausalLMAdapter(gpt2, tokenizer))
    assert isinstance(again, HybridAttributor) and again.config == hybrid.config
    assert torch.equal(again.score(query_records, train_records).values,
                       hybrid.score(query_records, train_records).values)


def test_registry_builds_a_fitted_hybrid(gpt2, tokenizer, train_records, query_records):
    scores = ATTRIBUTORS["hybrid"](gpt2, tokenizer).fit(train_records).score(query_records, train_records)
    assert scores.method.startswith("hybrid-influence-ekfac") and torch.isfinite(scores.values).all()


@pytest.mark.parametrize("options, message", [(dict(fusion="max"), "fusion must be one of"),
                                              (dict(candidates=0), "candidates"), (dict(rrf_constant=-1), "rrf")])
def test_bad_hybrid_options_get_one_line_errors(options, message):
    with pytest.raises(UserInputError, match=message):
        HybridAttributor(**options)


def test_trace_cli_method_hybrid_reports_fused_candidates(tmp_path, gpt2, tokenizer, train_records, capsys):
    import json

    from llm_attrib.cli import main

    model_dir, train_file, factors = tmp_path / "model", tmp_path / "train.jsonl", tmp_path / "factors"
    gpt2.float().save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    train_file.write_text("".join(json.dumps(r) + "\n" for r in train_records))
    arguments = ["trace", "--model", str(model_dir), "--train", str(train_file), "--prompt", "the cat sat on",
                 "--completion", " the mat.", "--top-k", "5", "--json", "--factors", str(factors)]
    assert main(arguments + ["--method", "hybrid", "--hybrid-candidates", "3", "--hybrid-fusion", "rrf"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"].startswith("hybrid-influence-ekfac+bm25-rrf") and len(report["top"]) == 3
    assert all(0 < record["score"] <= 2 / 61 for record in report["top"])
    assert (factors / "prefilter-bm25.safetensors").exists()
    assert main(arguments + ["--method", "hybrid", "--prefilter", "bm25"]) != 0
    assert "--method hybrid has its own recall stage" in capsys.readouterr().err
