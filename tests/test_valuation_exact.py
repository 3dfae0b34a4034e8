"""Valuation methods against exact semivalues computed by enumerating every subset (n ≤ 8)."""

from itertools import permutations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from llm_attrib.valuation import (
    BetaShapley,
    DataBanzhaf,
    KNNShapley,
    LeaveOneOut,
    MaxIterations,
    MaxUtilityEvaluations,
    TMCShapley,
    Utility,
    beta_log_weight,
    exact_banzhaf,
    exact_semivalue,
    exact_shapley,
    knn_utility,
)
from llm_attrib.valuation.msr import SIZE_DISTRIBUTIONS, draw_subset
from llm_attrib.valuation.permutation import position_weights
from llm_attrib.valuation.semivalue_weights import log_binomial, shapley_log_weight


def small_problem(n: int = 6, seed: int = 0):
    """Two overlapping Gaussian classes; the training labels include one flipped point."""
    rng = np.random.default_rng(seed)
    y = np.array([0, 1] * (n // 2) + [0] * (n % 2))
    X = rng.normal(size=(n, 2)) + 1.5 * y[:, None]
    y[0] = 1 - y[0]
    y_val = rng.integers(0, 2, 40)
    X_val = rng.normal(size=(40, 2)) + 1.5 * y_val[:, None]
    return X, y, X_val, y_val


@pytest.fixture(scope="module")
def problem():
    X, y, X_val, y_val = small_problem()
    utility = Utility(LogisticRegression(), X, y, X_val, y_val, default_score=0.5)
    return X, y, X_val, y_val, utility, exact_shapley(utility, len(y))


def test_exact_shapley_is_efficient(problem):
    *_, utility, shapley = problem
    assert shapley.sum() == pytest.approx(utility(range(len(shapley))) - utility([]), abs=1e-12)


def test_beta_one_one_is_shapley(problem):
    *_, utility, shapley = problem
    np.testing.assert_allclose(exact_semivalue(utility, len(shapley), beta_log_weight(1.0, 1.0)), shapley, atol=1e-12)


def test_tmc_without_truncation_matches_exact_shapley(problem):
    X, y, X_val, y_val, utility, shapley = problem
    tmc = TMCShapley(LogisticRegression(), stopping=800, truncation_tolerance=None, default_score=0.5,
                     random_state=0).fit(X, y, X_val, y_val)
    result = tmc.result_
    # every permutation telescopes to U(D) − U(∅): efficiency holds exactly, not only in expectation
    assert result.values.sum() == pytest.approx(utility(range(len(y))) - utility([]), abs=1e-10)
    assert np.all(np.abs(result.values - shapley) <= 4 * result.stderr + 1e-3)
    assert np.max(np.abs(result.values - shapley)) < 0.02


def test_tmc_truncation_saves_evaluations_and_stays_close(problem):
    X, y, X_val, y_val, _, shapley = problem
    full = TMCShapley(LogisticRegression(), stopping=200, truncation_tolerance=None, default_score=0.5,
                      random_state=1).fit(X, y, X_val, y_val).result_
    truncated = TMCShapley(LogisticRegression(), stopping=200, truncation_tolerance=0.05, default_score=0.5,
                           random_state=1).fit(X, y, X_val, y_val).result_
    assert truncated.n_utility_evaluations < full.n_utility_evaluations
    assert np.corrcoef(truncated.values, shapley)[0, 1] > 0.9


def test_utility_budget_stops_tmc(problem):
    X, y, X_val, y_val, *_ = problem
    result = TMCShapley(LogisticRegression(), stopping=MaxUtilityEvaluations(70) | MaxIterations(1000),
                        truncation_tolerance=None, permutations_per_round=2, random_state=0).fit(X, y, X_val, y_val).result_
    # 7 queries per permutation of 6 points (the empty prefix included), stopped at the first round past 70
    assert 70 <= result.n_utility_evaluations - 1 < 70 + 2 * 7
    assert result.counts[0] == (result.n_utility_evaluations - 1) // 7


def test_banzhaf_msr_converges_to_exact_banzhaf(problem):
    X, y, X_val, y_val, utility, _ = problem
    banzhaf = DataBanzhaf(LogisticRegression(), stopping=6000, default_score=0.5, random_state=0)
    result = banzhaf.fit(X, y, X_val, y_val).result_
    np.testing.assert_allclose(result.values, exact_banzhaf(utility, len(y)), atol=0.012)
    assert np.all(result.stderr < 0.01)


def test_one_sample_serves_beta_shapley_and_banzhaf(problem):
    X, y, X_val, y_val, utility, shapley = problem
    beta = BetaShapley(LogisticRegression(), alpha=1.0, beta=1.0, stopping=6000, sampler="msr", default_score=0.5,
                       random_state=0)
    np.testing.assert_allclose(beta.fit(X, y, X_val, y_val).values_, shapley, atol=0.015)
    beta_16_1 = exact_semivalue(utility, len(y), beta_log_weight(16.0, 1.0))
    np.testing.assert_allclose(BetaShapley(LogisticRegression(), 16.0, 1.0).value_samples(beta.samples_).values,
                               beta_16_1, atol=0.015)
    np.testing.assert_allclose(DataBanzhaf(LogisticRegression()).value_samples(beta.samples_).values,
                               exact_banzhaf(utility, len(y)), atol=0.015)


def test_tmc_permutations_re_weighted_give_beta_shapley_without_training_again(problem):
    """One marginal matrix serves every semivalue: TMC's untruncated permutations, re-weighted by Beta(16, 1)'s position
    weights, equal a Beta Shapley permutation run with the same seed, and converge to the exact values."""
    from llm_attrib.valuation import TMCShapley

    X, y, X_val, y_val, utility, shapley = problem
    tmc = TMCShapley(LogisticRegression(), stopping=300, truncation_tolerance=None, default_score=0.5,
                     random_state=0).fit(X, y, X_val, y_val)
    np.testing.assert_allclose(tmc.values_, shapley, atol=0.02)
    beta = BetaShapley(LogisticRegression(), 16.0, 1.0, stopping=300, sampler="permutation", default_score=0.5,
                       random_state=0)
    direct = beta.fit(X, y, X_val, y_val).result_
    reused = beta.value_samples(tmc.samples_)
    np.testing.assert_allclose(reused.values, direct.values, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(reused.stderr, direct.stderr, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(reused.values, exact_semivalue(utility, len(y), beta_log_weight(16.0, 1.0)), atol=0.03)
    assert reused.n_utility_evaluations == tmc.result_.n_utility_evaluations  # what the shared samples cost


def test_matched_sizes_converge_to_exact_beta_16_1(problem):
    X, y, X_val, y_val, utility, _ = problem
    values = BetaShapley(LogisticRegression(), 16.0, 1.0, stopping=1500, sampler="msr", subset_distribution="matched",
                         default_score=0.5, random_state=0).fit(X, y, X_val, y_val).values_
    np.testing.assert_allclose(values, exact_semivalue(utility, len(y), beta_log_weight(16.0, 1.0)), atol=0.015)


def test_matched_sizes_give_beta_16_1_more_effective_samples_at_large_n():
    n, m, log_weight = 200, 1000, beta_log_weight(16.0, 1.0)
    median_ess = {}
    for name in ("matched", "uniform-size"):
        log_sizes = SIZE_DISTRIBUTIONS[name](n, log_weight)
        rng = np.random.default_rng(0)
        masks = np.array([draw_subset(rng, log_sizes) for _ in range(m)])
        sizes = masks.sum(axis=1)
        log_q = log_sizes[sizes] - log_binomial(n, sizes.astype(float))
        weights = np.exp(log_weight(n, np.minimum(sizes, n - 1)) - log_q)  # subsets without point i
        out = (~masks).T.astype(float)
        median_ess[name] = np.median((out @ weights) ** 2 / (out @ weights**2))
    assert median_ess["matched"] > 4 * median_ess["uniform-size"]


BETA_PARAMETERS = [(1.0, 1.0), (16.0, 1.0), (4.0, 1.0)]


@pytest.mark.parametrize("alpha, beta", BETA_PARAMETERS)
def test_position_weights_average_over_all_permutations_to_the_exact_semivalue(problem, alpha, beta):
    """The permutation estimator's expectation, by enumerating all 720 orders: c(j) = n w(j) C(n−1, j) is unbiased."""
    *_, utility, _ = problem
    n = 6
    weights = position_weights(n, beta_log_weight(alpha, beta))
    total = np.zeros(n)
    for order in permutations(range(n)):
        for position, point in enumerate(order):
            total[point] += weights[position] * (utility(order[: position + 1]) - utility(order[:position]))
    np.testing.assert_allclose(total / len(list(permutations(range(n)))),
                               exact_semivalue(utility, n, beta_log_weight(alpha, beta)), atol=1e-12)


def test_shapley_position_weights_are_one():
    np.testing.assert_allclose(position_weights(50, shapley_log_weight), 1.0, rtol=1e-10)
    assert position_weights(50, beta_log_weight(16.0, 1.0)).mean() == pytest.approx(1.0)


@pytest.mark.parametrize("alpha, beta", BETA_PARAMETERS)
def test_permutation_sampler_converges_to_exact_beta_shapley(problem, alpha, beta):
    X, y, X_val, y_val, utility, _ = problem
    result = BetaShapley(LogisticRegression(), alpha, beta, stopping=2000, samples_per_round=500, default_score=0.5,
                         random_state=0).fit(X, y, X_val, y_val).result_
    exact = exact_semivalue(utility, len(y), beta_log_weight(alpha, beta))
    # within 4 standard errors (2000 independent permutations: about 1 in 16 000 per value by the CLT), and
    # those are small next to the gaps between values (0.01-0.07) and between the three weightings
    assert np.all(np.abs(result.values - exact) <= 4 * result.stderr)
    assert np.all(result.stderr < 0.004) and np.all(result.counts == 2000)


def test_truncated_permutations_save_evaluations(problem):
    X, y, X_val, y_val, *_ = problem
    truncated = BetaShapley(LogisticRegression(), stopping=100, truncation_tolerance=0.05, default_score=0.5,
                            random_state=0).fit(X, y, X_val, y_val).result_
    assert truncated.n_utility_evaluations < 100 * (len(y) + 1) + 1  # untruncated: n + 1 per permutation, and U(D)


def test_leave_one_out_is_the_drop_in_utility(problem):
    X, y, X_val, y_val, utility, _ = problem
    values = LeaveOneOut(LogisticRegression(), default_score=0.5).fit(X, y, X_val, y_val).values_
    everyone = np.arange(len(y))
    np.testing.assert_allclose(values, [utility(everyone) - utility(np.delete(everyone, i)) for i in everyone])


@pytest.mark.parametrize("task, k, n", [("classification", 3, 8), ("classification", 9, 6), ("regression", 2, 7)])
def test_knn_shapley_matches_exact_shapley(task, k, n):
    rng = np.random.default_rng(k)
    X, X_val = rng.normal(size=(n, 2)), rng.normal(size=(5, 2))
    if task == "classification":
        y, y_val = rng.integers(0, 3, n), rng.integers(0, 3, 5)
    else:
        y, y_val = rng.normal(size=n), rng.normal(size=5)
    values = KNNShapley(n_neighbors=k, task=task).fit(X, y, X_val, y_val).values_
    utility = knn_utility(X, y, X_val, y_val, k, task)
    np.testing.assert_allclose(values, exact_shapley(utility, n), atol=1e-12)
    assert values.sum() == pytest.approx(utility(range(n)) - utility([]), abs=1e-12)
