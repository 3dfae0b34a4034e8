"""AirRep: the pooling and the loss against hand computation, recovery of known effects, invariances, determinism,
caching and errors."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import spearmanr

from llm_attrib.attributors import ATTRIBUTORS
from llm_attrib.attributors.airrep import (
    AirRepAttributor,
    attention_pool,
    hidden_state_features,
    pairwise_ranking_loss,
    split_queries,
    standardised_targets,
    train_encoder,
)
from llm_attrib.demo.training import train_causal_lm
from llm_attrib.errors import CacheMismatchError, UserInputError
from llm_attrib.retraining.lds import sample_subsets

torch.set_num_threads(1)


def test_attention_pool_by_hand():
    s = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], dtype=torch.float64)
    masks = torch.tensor([[True, True, False], [False, False, True], [True, True, True]])
    pooled = attention_pool(s, masks, temperature=2.0)

    def by_hand(values: list[float]) -> float:
        weights = [math.exp(abs(v) / 2.0) for v in values]
        return sum(w * v for w, v in zip(weights, values)) / sum(weights)

    expected = [[by_hand([1.0, -2.0]), by_hand([0.5]), by_hand([1.0, -2.0, 0.5])],
                [by_hand([0.0, 3.0]), by_hand([-1.0]), by_hand([0.0, 3.0, -1.0])]]
    torch.testing.assert_close(pooled, torch.tensor(expected, dtype=torch.float64))
    # (1·e^0.5 − 2·e^1) / (e^0.5 + e^1): the larger |s| gets the larger weight, sign kept
    assert pooled[0, 0].item() == pytest.approx((math.exp(0.5) - 2 * math.e) / (math.exp(0.5) + math.e))


def test_pairwise_ranking_loss_by_hand():
    predicted = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    targets = torch.tensor([[1.0, 0.0, 13.0]], dtype=torch.float64)
    # ordered pairs (i above j): (0,1) gap 1, (2,0) gap 12 → clipped to 10, (2,1) gap 13 → 10
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expected = (1 * softplus(-(0.5 + 1.0)) + 10 * softplus(-(2.0 - 0.5)) + 10 * softplus(-(2.0 + 1.0))) / 3
    assert pairwise_ranking_loss(predicted, targets, max_weight=10.0).item() == pytest.approx(expected)
    # ties make no pair; a perfectly ordered, well separated prediction costs almost nothing
    assert pairwise_ranking_loss(torch.tensor([[0.0, 40.0]]), torch.tensor([[1.0, 2.0]])).item() < 1e-12
    with pytest.raises(UserInputError, match="do not vary"):
        pairwise_ranking_loss(torch.zeros(2, 3), torch.ones(2, 3))


def test_targets_are_per_query_z_scores_over_subsets():
    outcomes = torch.tensor([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]], dtype=torch.float64)  # [M=3, Q=2]
    torch.testing.assert_close(standardised_targets(outcomes),
                               torch.tensor([[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64))


def test_training_recovers_known_per_example_effects():
    """Outcomes are a known additive function of the features, ``y[m, q] = Σ_{z∈S_m} x_qᵀ A x_z`` with ``A = BᵀB``
    of rank 2 (+ noise); the encoder, trained on 16 queries, ranks the effects of 8 *other* queries. τ = 100 makes
    the pooling near a mean, the additive form of this ground truth (at τ = 1 the |s|-softmax weights the largest
    similarities more, and over 4 data seeds the worst query's Spearman falls to 0.2–0.97)."""
    generator = torch.Generator().manual_seed(0)
    d, n_pool, n_train_q, n_test_q, m = 6, 16, 16, 8, 64
    features = torch.randn(n_pool + n_train_q + n_test_q, d, generator=generator, dtype=torch.float64)
    basis = torch.randn(2, d, generator=generator, dtype=torch.float64)
    pool, queries = features[:n_pool], features[n_pool:]
    effects = (queries @ basis.T) @ (pool @ basis.T).T  # [Q, P] true per-example effects
    masks = sample_subsets(n_pool, m, alpha=0.5, seed=1)
    outcomes = masks.double() @ effects.T + 0.1 * torch.randn(m, len(queries), generator=generator, dtype=torch.float64)
    head, losses = train_encoder(queries[:n_train_q], pool, masks, outcomes[:, :n_train_q], dim=4, epochs=150, lr=3e-2,
                                 weight_decay=0.0, temperature=100.0)
    assert losses[-1] < 0.2 * losses[0]
    with torch.no_grad():
        predicted = head(queries[n_train_q:]) @ head(pool).T
    rho = [spearmanr(predicted[q], effects[n_train_q + q]).statistic for q in range(n_test_q)]
    assert min(rho) > 0.9, rho


@pytest.fixture()
def small_airrep(gpt2, tokenizer):
    """A factory of AirRep on the tiny GPT-2 whose retraining is 1 epoch on the subset (seeded)."""

    def retrain(records, seed):
        from llm_attrib.demo.model import tiny_gpt2

        model = tiny_gpt2(len(tokenizer), n_positions=64, n_embd=16, n_layer=2, n_head=2, seed=seed,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)
        return train_causal_lm(model, tokenizer, records, epochs=1, lr=1e-2, batch_size=4, seed=seed)

    def make(**options):
        return AirRepAttributor(gpt2, tokenizer, retrain, retrain_settings={"epochs": 1}, n_subsets=6, epochs=20,
                                dim=4, **options)

    return make


def test_hidden_state_features_do_not_depend_on_batch_size_or_padding_side(gpt2, tokenizer, train_records,
                                                                          query_records):
    reference = hidden_state_features(gpt2, tokenizer, query_records + train_records, batch_size=32)
    for batch_size, side in [(1, "right"), (3, "left"), (5, "right")]:
        torch.testing.assert_close(hidden_state_features(gpt2, tokenizer, query_records + train_records,
                                                         batch_size=batch_size, padding_side=side), reference)


def test_scores_do_not_depend_on_batch_size_or_padding_side(small_airrep, train_records, query_records, tmp_path):
    """The same encoder (trained once, then loaded from the cache: these options are not part of its key) scores
    the same whatever the batch size and padding side of the feature passes over queries and training records."""
    reference = small_airrep(cache_dir=tmp_path).fit(train_records).score(query_records, train_records).values
    for batch_size, side in [(1, "right"), (3, "left"), (5, "right")]:
        attributor = small_airrep(cache_dir=tmp_path, batch_size=batch_size, padding_side=side).fit(train_records)
        assert attributor.retrain_seconds == 0.0
        torch.testing.assert_close(attributor.score(query_records, train_records).values, reference,
                                   rtol=1e-10, atol=1e-12)
    assert reference.abs().max() > 0


def test_fit_is_deterministic_sign_and_units(small_airrep, train_records, query_records):
    before = torch.random.get_rng_state()
    first = small_airrep(seed=3).fit(train_records)
    assert torch.equal(torch.random.get_rng_state(), before)  # fit leaves the global RNG alone
    scores = first.score(query_records, train_records)
    again = small_airrep(seed=3).fit(train_records).score(query_records, train_records)
    other = small_airrep(seed=4).fit(train_records).score(query_records, train_records)
    assert torch.equal(scores.values, again.values)
    assert not torch.equal(scores.values, other.values)
    assert scores.shape == (len(query_records), len(train_records)) and scores.method == "airrep"
    assert "positive = raises" in scores.units and "arbitrary scale" in scores.units
    embeddings = first.embed(query_records), first.embed(train_records)
    torch.testing.assert_close(scores.values, embeddings[0] @ embeddings[1].T)  # score = e(q)ᵀe(z)


def test_split_holds_out_training_queries():
    queries, pool = split_queries(8, 0.25, seed=0)
    assert len(queries) == 2 and sorted(queries + pool) == list(range(8)) and not set(queries) & set(pool)
    assert split_queries(8, 0.25, seed=0) == (queries, pool)
    with pytest.raises(UserInputError, match="no pool"):
        split_queries(3, 0.5, seed=0)


def test_cache_is_reused_and_refused_when_made_for_other_arguments(small_airrep, train_records, query_records,
                                                                   tmp_path):
    fitted = small_airrep(cache_dir=tmp_path).fit(train_records)
    assert (tmp_path / "airrep-encoder.safetensors").exists() and (tmp_path / "airrep-trials").is_dir()
    reloaded = small_airrep(cache_dir=tmp_path).fit(train_records)
    assert reloaded.retrain_seconds == 0.0  # nothing retrained: the encoder came from the cache
    torch.testing.assert_close(reloaded.score(query_records, train_records).values,
                               fitted.score(query_records, train_records).values)
    with pytest.raises(CacheMismatchError, match="dim"):
        AirRepAttributor(fitted.model, fitted.tokenizer, fitted.retrain, retrain_settings={"epochs": 1}, n_subsets=6,
                         epochs=20, dim=5, cache_dir=tmp_path).fit(train_records)


def test_bad_input_errors(small_airrep, gpt2, tokenizer, train_records, query_records):
    with pytest.raises(UserInputError, match="retrained on subsets"):
        ATTRIBUTORS["airrep"](gpt2, tokenizer)
    with pytest.raises(UserInputError, match="n_subsets"):
        AirRepAttributor(gpt2, tokenizer, lambda records, seed: gpt2, n_subsets=1)
    attributor = small_airrep()
    with pytest.raises(UserInputError, match="fit"):
        attributor.score(query_records, train_records)
    with pytest.raises(UserInputError, match="empty"):
        attributor.fit([])
    attributor.fit(train_records)
    with pytest.raises(UserInputError, match="no queries"):
        attributor.score([], train_records)
    with pytest.raises(UserInputError, match="differ"):
        attributor.score(query_records, train_records[:-1])
    with pytest.raises(UserInputError, match="at least one"):
        attention_pool(torch.zeros(1, 2), torch.tensor([[True, False], [False, False]]))


def test_registry_airrep_learns_from_the_benchmark_retraining(tmp_path):
    from llm_attrib.evaluation.suite import run_method
    from test_evaluation import _tiny_benchmark

    benchmark = _tiny_benchmark()
    benchmark.runs.cache_dir = tmp_path
    before = torch.random.get_rng_state()
    run = run_method(ATTRIBUTORS["airrep"], benchmark)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert run.training_seconds > 0 and run.scores.shape == (2, 6) and torch.isfinite(run.scores.values).all()
    assert (tmp_path / "airrep" / "airrep-encoder.safetensors").exists()
    again = run_method(ATTRIBUTORS["airrep"], benchmark)
    assert again.training_seconds == 0  # outcomes and encoder came from the cache
    torch.testing.assert_close(again.scores.values, run.scores.values)
