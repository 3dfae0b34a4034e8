"""Evaluation suite: metrics on cases with known answers, deterministic subsets and retraining, resumable
ground-truth caches, the lexical baselines."""

from __future__ import annotations

import math
from time import strftime as time_strftime

import numpy as np
import pytest
import torch

from llm_attrib.attributors import ATTRIBUTORS
from llm_attrib.attributors.text import BM25Attributor, TfidfAttributor
from llm_attrib.errors import CacheMismatchError
from llm_attrib.evaluation.lds import evaluate_lds
from llm_attrib.retraining.lds import lds_ground_truth, sample_subsets
from llm_attrib.evaluation.loo import evaluate_loo, loo_ground_truth
from llm_attrib.evaluation.metrics import (
    auroc,
    linear_datamodeling_score,
    loo_correlation,
    mean_reciprocal_rank,
    precision_at_k,
    recall_at_k,
)
from llm_attrib.scores import Scores

N_TRAIN, N_QUERY = 40, 5


def linear_world(seed: int = 0) -> torch.Tensor:
    """True per-example effects ``[n_query, n_train]`` of an exactly linear datamodel."""
    return torch.randn(N_QUERY, N_TRAIN, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class LinearModel(torch.nn.Module):
    """A 'model' whose measurement of query q is Σ_{j trained on} effects[q, j] (plus seeded noise)."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value


class LinearRetrain:
    """retrain(records, seed): the linear datamodel; counts calls, optionally fails after ``fail_after`` calls."""

    def __init__(self, effects: torch.Tensor, noise: float = 0.0, fail_after: int | None = None):
        self.effects, self.noise, self.fail_after, self.calls = effects, noise, fail_after, 0

    def __call__(self, records, seed):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("killed part-way")
        self.calls += 1
        index = torch.tensor([r["index"] for r in records], dtype=torch.long)
        noise = torch.randn(N_QUERY, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return LinearModel(self.effects[:, index].sum(dim=1) + self.noise * noise)


def measure(model, queries):
    return model.value


TRAIN = [{"index": j, "text": f"doc {j}"} for j in range(N_TRAIN)]
QUERIES = [{"id": f"q{q}", "prompt": "p", "completion": f"c{q}"} for q in range(N_QUERY)]
IDS = dict(train_ids=list(range(N_TRAIN)), query_ids=[f"q{q}" for q in range(N_QUERY)])


def test_lds_is_one_for_perfect_scores_and_near_zero_for_shuffled():
    effects = linear_world()
    masks = sample_subsets(N_TRAIN, 200, 0.5, seed=1)
    outcomes = (masks.double() @ effects.T)
    perfect = linear_datamodeling_score(effects, masks, outcomes)
    assert perfect.mean == pytest.approx(1.0)
    shuffled = effects[:, torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(2))]
    assert abs(linear_datamodeling_score(shuffled, masks, outcomes).mean) < 0.2
    assert linear_datamodeling_score(-effects, masks, outcomes).mean == pytest.approx(-1.0)
    assert perfect.stderr == pytest.approx(0.0, abs=1e-12)


def test_lds_skips_constant_queries_and_reports_stderr():
    masks = sample_subsets(10, 6, 0.5, seed=0)
    scores = torch.randn(2, 10, generator=torch.Generator().manual_seed(0))
    outcomes = torch.stack([torch.arange(6.0), torch.zeros(6)], dim=1)
    summary = linear_datamodeling_score(scores, masks, outcomes)
    assert math.isnan(summary.per_query[1]) and not math.isnan(summary.per_query[0])
    assert summary.mean == pytest.approx(float(summary.per_query[0]))


def test_subset_sampling_is_seeded_and_sized():
    a, b = sample_subsets(30, 8, 0.5, seed=3), sample_subsets(30, 8, 0.5, seed=3)
    assert torch.equal(a, b) and (a.sum(dim=1) == 15).all()
    assert not torch.equal(a, sample_subsets(30, 8, 0.5, seed=4))
    assert (sample_subsets(30, 4, 0.2, seed=0).sum(dim=1) == 6).all()


def test_loo_correlation_signs():
    actual = torch.randn(3, 12, generator=torch.Generator().manual_seed(0))
    assert loo_correlation(2 * actual + 1, actual).mean == pytest.approx(1.0)
    assert loo_correlation(-actual, actual, "spearman").mean == pytest.approx(-1.0)


def test_auroc_and_precision_at_k_by_hand():
    labels = torch.tensor([True, True, False, False, False])
    assert auroc(torch.tensor([5.0, 4, 3, 2, 1]), labels) == 1.0
    assert auroc(torch.tensor([1.0, 2, 3, 4, 5]), labels) == 0.0
    assert auroc(torch.tensor([5.0, 1, 4, 2, 0]), labels) == pytest.approx(4 / 6)  # pairs won: 3 + 1 of 6
    assert auroc(torch.ones(5), labels) == 0.5
    assert precision_at_k(torch.tensor([5.0, 1, 4, 2, 0]), labels, 2) == 0.5
    assert precision_at_k(torch.tensor([5.0, 4, 3, 2, 1]), labels, 2) == 1.0


def test_recall_at_k_and_mrr_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.0, 0.2, 0.1, 0.8]])
    relevant = [[2, 3], [0]]  # query 0: ranks 2 and 3; query 1: rank 4
    assert recall_at_k(scores, relevant, 1) == 0.0
    assert recall_at_k(scores, relevant, 2) == pytest.approx((0.5 + 0.0) / 2)
    assert recall_at_k(scores, relevant, 3) == pytest.approx((1.0 + 0.0) / 2)
    assert mean_reciprocal_rank(scores, relevant) == pytest.approx((1 / 2 + 1 / 4) / 2)


def test_lds_harness_on_a_linear_world_gives_one():
    effects = linear_world()
    truth = lds_ground_truth(TRAIN, QUERIES, retrain=LinearRetrain(effects), measure=measure, n_subsets=30, **IDS)
    scores = Scores(effects.float(), IDS["query_ids"], IDS["train_ids"])
    assert evaluate_lds(scores, truth).mean == pytest.approx(1.0)


def test_lds_cache_resumes_after_a_kill_and_refuses_a_mismatch(tmp_path):
    effects = linear_world()
    kwargs = dict(measure=measure, n_subsets=6, seeds_per_subset=2, cache_dir=tmp_path / "gt", settings={"m": 1}, **IDS)
    killed = LinearRetrain(effects, noise=0.1, fail_after=5)
    with pytest.raises(KeyboardInterrupt):
        lds_ground_truth(TRAIN, QUERIES, retrain=killed, **kwargs)
    assert len(list((tmp_path / "gt").glob("trial_*.safetensors"))) == 2  # 2 seeds per subset: 2 subsets done

    resumed_retrain = LinearRetrain(effects, noise=0.1)
    resumed = lds_ground_truth(TRAIN, QUERIES, retrain=resumed_retrain, **kwargs)
    assert resumed_retrain.calls == (6 - 2) * 2
    fresh = lds_ground_truth(TRAIN, QUERIES, retrain=LinearRetrain(effects, noise=0.1), **{**kwargs, "cache_dir": None})
    assert torch.equal(resumed.per_seed, fresh.per_seed) and torch.equal(resumed.masks, fresh.masks)
    assert torch.equal(resumed.outcomes, fresh.per_seed.mean(dim=1))

    rerun = LinearRetrain(effects, noise=0.1)
    lds_ground_truth(TRAIN, QUERIES, retrain=rerun, **kwargs)
    assert rerun.calls == 0
    with pytest.raises(CacheMismatchError, match="alpha"):
        lds_ground_truth(TRAIN, QUERIES, retrain=rerun, alpha=0.3, **kwargs)
    with pytest.raises(CacheMismatchError, match="settings"):
        lds_ground_truth(TRAIN, QUERIES, retrain=rerun, **{**kwargs, "settings": {"m": 2}})
    with pytest.raises(CacheMismatchError, match="train_fingerprint"):
        lds_ground_truth(TRAIN[:-1] + [{"index": 0, "text": "other"}], QUERIES, retrain=rerun, **kwargs)


def test_loo_harness_recovers_exact_effects():
    effects = linear_world()
    truth = loo_ground_truth(TRAIN, QUERIES, retrain=LinearRetrain(effects), measure=measure, n_removed=7, **IDS)
    assert torch.allclose(truth.effects, effects[:, truth.removed])
    scores = Scores(effects.float(), IDS["query_ids"], IDS["train_ids"])
    assert evaluate_loo(scores, truth).mean == pytest.approx(1.0)


def test_bm25_matches_a_hand_computed_example():
    train = [{"text": "apple apple banana"}, {"text": "banana cherry"}, {"text": "cherry cherry cherry date"}]
    query = [{"text": "apple cherry"}]
    k1, b = 1.2, 0.75
    scores = BM25Attributor(k1=k1, b=b).fit(train).score(query, train).values[0].double()
    n, avgdl = 3, (3 + 2 + 4) / 3
    idf = lambda df: math.log(1 + (n - df + 0.5) / (df + 0.5))
    term = lambda tf, dl, df: idf(df) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))
    expected = [term(2, 3, 1), term(1, 2, 2), term(3, 4, 2)]
    assert scores.tolist() == pytest.approx(expected, rel=1e-6)


def test_text_attributors_give_scores_with_the_records_ids():
    train = [{"id": "a", "text": "the cat sat"}, {"id": "b", "text": "a dog ran"}, {"id": "c", "text": "cats and dogs"}]
    queries = [{"id": "q", "prompt": "where is the cat", "completion": "it sat"}]
    for name, factory in ATTRIBUTORS.items():
        if name not in ("random", "tfidf", "bm25"):
            continue
        scores = factory(None, None).fit(train).score(queries, train)
        assert scores.train_ids == ["a", "b", "c"] and scores.query_ids == ["q"] and scores.shape == (1, 3)
    tfidf = TfidfAttributor().fit(train)
    assert tfidf.top_k_candidates(queries, 1).tolist() == [[0]]
    random_a = ATTRIBUTORS["random"](None, None).fit(train).score(queries, train).values
    assert torch.equal(random_a, ATTRIBUTORS["random"](None, None).fit(train).score(queries, train).values)
    assert np.isfinite(random_a.numpy()).all()


def test_swap_completions_corrupts_exactly_the_flagged_records():
    from llm_attrib.evaluation.mislabel import detection_report, swap_completions

    records = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(20)]
    corrupted, labels = swap_completions(records, 0.25, seed=1)
    assert int(labels.sum()) == 5
    changed = torch.tensor([c["completion"] != r["completion"] for c, r in zip(corrupted, records)])
    assert torch.equal(changed, labels) and records[0]["completion"] == "c0"
    report = detection_report(labels.double(), labels, ks=(5,))
    assert report["auroc"] == 1.0 and report["precision@5"] == 1.0 and report["corruption_rate"] == 0.25


def test_group_scores_threshold_and_flags():
    from llm_attrib.evaluation.provenance import calibrate_threshold, flag_report, group_scores

    scores = torch.tensor([[1.0, 2.0, 5.0, 0.5], [0.0, 0.1, 0.2, 9.0]])
    grouped, labels = group_scores(scores, ["b", "a", "b", None])
    assert labels == ["b", "a"] and torch.equal(grouped, torch.tensor([[6.0, 2.0], [0.2, 0.1]]))
    threshold = calibrate_threshold(torch.arange(101.0), 0.95)
    assert threshold == pytest.approx(95.0)
    truth = torch.tensor([[True, False], [False, False]])
    report = flag_report(grouped, truth, threshold=1.0)
    assert report["precision"] == 0.5 and report["recall"] == 1.0 and report["false_positive_rate"] == pytest.approx(1 / 3)


def test_retraining_is_deterministic_under_a_seed():
    from llm_attrib.demo.model import tiny_gpt2
    from llm_attrib.demo.tokenizer import train_tokenizer
    from llm_attrib.retraining.measure import LogLikelihoodMeasure
    from llm_attrib.retraining.retrain import DemoRetrainer

    records = [{"prompt": f"Q: item {i}?", "completion": f" it is {w}"} for i, w in enumerate("ab cd ef gh".split())]
    tokenizer = train_tokenizer([r["prompt"] + r["completion"] for r in records], vocab_size=280, model_max_length=32)
    build = lambda seed: tiny_gpt2(len(tokenizer), n_positions=32, n_embd=16, n_layer=1, n_head=2, seed=seed,
                                   pad_token_id=tokenizer.pad_token_id)
    retrain = DemoRetrainer(build, tokenizer, epochs=2, lr=1e-2, batch_size=2)
    measure = LogLikelihoodMeasure(tokenizer)
    first, again, other = (measure(retrain(records, s), records) for s in (3, 3, 4))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_evaluate_provenance_flags_the_planted_work():
    from llm_attrib.evaluation.provenance import evaluate_provenance

    # columns: work A, work A, work B, filler; queries: 2 from A, 1 from B, 3 from never-trained works
    scores = torch.tensor([
        [3.0, 2.0, 0.1, 9.0], [2.5, 2.5, 0.0, 0.0], [0.2, 0.0, 4.0, 0.0],
        [0.1, 0.2, 0.3, 5.0], [0.0, 0.3, 0.2, 0.0], [0.4, 0.0, 0.1, 0.0],
    ])
    report = evaluate_provenance(scores, ["A", "A", "B", None], ["A", "A", "B", "X", "Y", "Z"],
                                 [False, False, False, True, True, True], quantile=1.0)
    assert report["recall"] == 1.0 and report["precision"] == 1.0 and report["threshold"] == pytest.approx(0.4)


def _tiny_benchmark(n_query: int = 2):
    from llm_attrib.demo.model import tiny_gpt2
    from llm_attrib.demo.tokenizer import train_tokenizer
    from llm_attrib.evaluation.benchmarks import Benchmark
    from llm_attrib.retraining.retrain import DemoRetrainer

    records = [{"id": f"r{i}", "prompt": f"Q: item {i}?", "completion": f" it is {w}"}
               for i, w in enumerate("ab cd ef gh ij kl".split())]
    tokenizer = train_tokenizer([r["prompt"] + r["completion"] for r in records], vocab_size=280, model_max_length=32)
    build = lambda seed: tiny_gpt2(len(tokenizer), n_positions=32, n_embd=16, n_layer=1, n_head=2, seed=seed,
                                   pad_token_id=tokenizer.pad_token_id)
    retrain = DemoRetrainer(build, tokenizer, epochs=2, lr=1e-2, batch_size=2)
    return Benchmark("tiny", retrain(records, 0), tokenizer, records, records[:n_query], retrain)


def test_damping_variants_share_one_fit_and_match_a_fresh_fit():
    from llm_attrib.attributors import DAMPINGS, influence_factory
    from llm_attrib.evaluation.suite import run_method

    torch.set_num_threads(1)
    benchmark = _tiny_benchmark()
    fitted = {}
    runs = {label: run_method(influence_factory("ekfac", damping=value), benchmark, fitted) for label, value in DAMPINGS.items()}
    assert len(fitted) == 1 and [r.shared_fit for r in runs.values()] == [False, True, True]
    assert len({r.fit_seconds for r in runs.values()}) == 1  # the shared fit's seconds, reported for each
    assert not torch.allclose(runs["1e-8"].scores.values, runs["heuristic"].scores.values)
    for label, value in DAMPINGS.items():
        assert runs[label].scores.metadata["damping"] == value
        fresh = run_method(influence_factory("ekfac", damping=value), benchmark).scores.values
        assert torch.allclose(runs[label].scores.values, fresh, rtol=1e-4, atol=1e-6 * float(fresh.abs().max()))


def pairs_won(suspicion: list[float], labels: list[bool]) -> float:
    """AUROC by counting: the share of (flagged, unflagged) pairs whose flagged member scores higher (ties 1/2)."""
    pairs = [(s, t) for s, y in zip(suspicion, labels) if y for t, z in zip(suspicion, labels) if not z]
    return sum(1.0 if s > t else 0.5 if s == t else 0.0 for s, t in pairs) / len(pairs)


def squared_gradient_norms(model, tokenizer, records) -> list[float]:
    """grad-dot self-influence by autograd: ‖∇ log Pr(completion | prompt)‖² over the MLP layers' parameters."""
    from llm_attrib.adapters import CausalLMAdapter

    params = [p for layer in CausalLMAdapter(model, tokenizer, modules="mlp").layers for p in layer.parameters()]
    norms = []
    for record in records:
        prompt = tokenizer(record["prompt"])["input_ids"]
        completion = tokenizer(record["completion"], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + completion])
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
        value = sum(log_probs[len(prompt) + i - 1, token] for i, token in enumerate(completion))
        norms.append(sum(float(g.double().square().sum()) for g in torch.autograd.grad(value, params)))
    return norms


def test_mislabel_rows_come_from_attributor_evaluators_without_queries(monkeypatch):
    """Each row's AUROC and precision@2 are those of the method's own self-influence (grad-dot: the squared
    gradient norm by autograd; random: its seeded scores' diagonal), counted by hand; its seconds are the fit's plus
    the evaluator's, read off a fake clock that only the fit and the evaluator advance (2 s and 5 s for grad-dot)."""
    from types import SimpleNamespace

    from llm_attrib.attributors import ATTRIBUTORS
    from llm_attrib.evaluation import suite
    from llm_attrib.evaluation.mislabel import detection_report, self_influence_scores
    from llm_attrib.evaluation.suite import evaluate_benchmark, markdown_table

    torch.set_num_threads(1)
    benchmark = _tiny_benchmark(n_query=0)
    labels = [True, False, True, False, False, False]
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(suite, "time", SimpleNamespace(perf_counter=lambda: clock.now, strftime=time_strftime))

    def evaluator(attributor):
        clock.now += 5.0
        return detection_report(self_influence_scores(attributor, benchmark.train_records), torch.tensor(labels),
                                ks=(2,))

    def taking(seconds, factory):
        def make(*args, **kwargs):
            attributor = factory(*args, **kwargs)
            fit = attributor.fit
            attributor.fit = lambda train: (setattr(clock, "now", clock.now + seconds), fit(train))[1]
            return attributor

        return make

    benchmark.attributor_evaluators.append(evaluator)
    rows = evaluate_benchmark(benchmark, {"random": taking(1.0, ATTRIBUTORS["random"]),
                                          "grad-dot": taking(2.0, ATTRIBUTORS["grad-dot"])}, None)
    random = ATTRIBUTORS["random"](None, None).fit(benchmark.train_records)
    random_scores = random.score(benchmark.train_records, benchmark.train_records).values
    suspicion = {"random": torch.diagonal(random_scores).tolist(),
                 "grad-dot": squared_gradient_norms(benchmark.model, benchmark.tokenizer, benchmark.train_records)}
    for name, fit_seconds in (("random", 1.0), ("grad-dot", 2.0)):
        row, values = rows[name], suspicion[name]
        assert "error" not in row, row
        assert row["auroc"] == pytest.approx(pairs_won(values, labels), abs=1e-12)
        top_two = sorted(range(6), key=lambda i: -values[i])[:2]
        assert row["precision@2"] == sum(labels[i] for i in top_two) / 2 and row["corruption_rate"] == 2 / 6
        assert (row["seconds"], row["fit_seconds"], row["score_seconds"]) == (fit_seconds + 5.0, fit_seconds, 5.0)
        assert row["training_seconds"] == 0 and row["shared_fit"] is False
    assert rows["grad-dot"]["auroc"] != rows["random"]["auroc"]
    table = markdown_table({"mislabel": {"methods": {k: {**v, "precision@k": v["precision@2"]} for k, v in rows.items()}},
                            "roleplay": {"methods": {"random": {"lds": 0.1, "lds_stderr": 0.01, "seconds": 0.0}}}})
    assert table.count("| method |") == 2 and "mislabel AUROC" in table and "roleplay LDS" in table


def test_ground_truth_caches_are_named_by_their_sizes(tmp_path):
    from pathlib import Path

    from llm_attrib.evaluation.benchmarks import Benchmark
    from llm_attrib.evaluation.suite import SuiteConfig, _truth_dir

    config = SuiteConfig(data_dir=Path(), out_dir=Path(), cache_dir=tmp_path)
    bench = Benchmark("b", None, None, [], [], None, settings={"n_train": 10})
    assert _truth_dir(config, "lds-b", bench, 16, 0.5, 1) == _truth_dir(config, "lds-b", bench, 16, 0.5, 1)
    assert _truth_dir(config, "lds-b", bench, 16, 0.5, 1) != _truth_dir(config, "lds-b", bench, 32, 0.5, 1)


def test_training_runs_give_checkpoints_of_the_model_and_other_seeds(tmp_path, monkeypatch):
    from llm_attrib.curvature.adam import optimizer_moments
    from llm_attrib.retraining.runs import TrainingRuns
    from llm_attrib.store import model_fingerprint

    torch.set_num_threads(1)
    benchmark = _tiny_benchmark()
    finals: list = []
    rng = torch.get_rng_state()
    checkpoints, learning_rates = benchmark.runs.checkpoints()
    assert torch.equal(torch.get_rng_state(), rng)  # training a run leaves the global RNG as it was
    assert len(checkpoints) == 2 and learning_rates == pytest.approx([1e-2 * 3, 1e-2 * 3])  # 6 records / 2 per step
    assert model_fingerprint(checkpoints[-1]) == model_fingerprint(benchmark.model)
    assert model_fingerprint(checkpoints[0]) != model_fingerprint(benchmark.model)
    models = benchmark.runs.models(3)
    assert models[0] is benchmark.model and len({model_fingerprint(m) for m in models}) == 3
    assert model_fingerprint(models[2]) == model_fingerprint(benchmark.retrainer(benchmark.train_records, 2))

    runs = TrainingRuns(benchmark.retrainer, benchmark.train_records, 0, benchmark.model, cache_dir=tmp_path)
    saved = runs.run(0)
    with monkeypatch.context() as patch:
        patch.setattr(TrainingRuns, "_train", lambda *args: pytest.fail("trained again instead of loading"))
        loaded = TrainingRuns(benchmark.retrainer, benchmark.train_records, 0, benchmark.model,
                              cache_dir=tmp_path).run(0)
    assert loaded.epochs == saved.epochs and loaded.learning_rates == saved.learning_rates
    assert [model_fingerprint(m) for m in loaded.checkpoints] == [model_fingerprint(m) for m in saved.checkpoints]
    # the AdamW moments at each checkpoint are cached beside the run, and equal the optimizer's state in training
    assert len(loaded.moments) == 2 and loaded.moments[1].keys() == saved.moments[1].keys()
    assert all(torch.equal(loaded.moments[k][n].exp_avg_sq, saved.moments[k][n].exp_avg_sq)
               and loaded.moments[k][n].step == saved.moments[k][n].step == 3.0 * (k + 1) for k in range(2)
               for n in saved.moments[k])
    final = benchmark.retrainer(benchmark.train_records, 0,
                                on_epoch_end=lambda e, m, eta, opt: finals.append(optimizer_moments(m, opt)))
    assert all(torch.equal(finals[-1][n].exp_avg_sq, saved.moments[-1][n].exp_avg_sq) for n in finals[-1])
    (tmp_path / "seed0-adam.safetensors").unlink()  # a run cached before moments were kept: retrained for them
    older = TrainingRuns(benchmark.retrainer, benchmark.train_records, 0, benchmark.model, cache_dir=tmp_path)
    assert older.run(0).moments is None
    assert all(torch.equal(older.adam_moments()[1][n].exp_avg_sq, saved.moments[1][n].exp_avg_sq)
               for n in saved.moments[1]) and older.seconds > 0
    with pytest.raises(CacheMismatchError, match="data"):
        TrainingRuns(benchmark.retrainer, benchmark.train_records[:-1], 0, benchmark.model, cache_dir=tmp_path).run(0)
    with pytest.raises(CacheMismatchError, match="reproduce"):
        TrainingRuns(benchmark.retrainer, benchmark.train_records, 0, models[1]).run(0)
    assert not list(tmp_path.glob("*.tmp"))


def test_tracin_and_trak_ensemble_get_the_benchmark_training_runs():
    from llm_attrib.errors import UserInputError
    from llm_attrib.evaluation.suite import run_method

    torch.set_num_threads(1)
    benchmark = _tiny_benchmark()
    tracin = run_method(ATTRIBUTORS["tracin"], benchmark)
    assert tracin.training_seconds > 0 and tracin.scores.shape == (2, 6)
    assert tracin.scores.metadata["learning_rates"] == benchmark.runs.checkpoints()[1]
    ensemble = run_method(ATTRIBUTORS["trak-ensemble"], benchmark)
    assert ensemble.scores.metadata["n_models"] == 4 and ensemble.training_seconds > 0
    assert run_method(ATTRIBUTORS["tracin"], benchmark).training_seconds == 0  # runs are kept
    adam = run_method(ATTRIBUTORS["tracin-adam"], benchmark)
    assert adam.attributor.name == "tracin-adam" and torch.isfinite(adam.scores.values).all()
    with pytest.raises(UserInputError, match="training history"):
        ATTRIBUTORS["tracin"](benchmark.model, benchmark.tokenizer)
