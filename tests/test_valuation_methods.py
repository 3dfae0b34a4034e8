"""Data-OOB by hand, noisy-label detection (DVRL, Data-OOB), reproducibility, parallelism, result export."""

import json

import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.tree import DecisionTreeClassifier

from llm_attrib.errors import UserInputError
from llm_attrib.valuation import (
    DVRL,
    BetaShapley,
    DataBanzhaf,
    DataOOB,
    KNNShapley,
    TMCShapley,
    TorchEstimator,
    ValuationResult,
    make_method,
    out_of_bag_values,
)


def noisy_blobs(n_train: int = 200, n_val: int = 100, noise: float = 0.1, seed: int = 0):
    """Two separated Gaussian classes; a fraction ``noise`` of training labels flipped (``flipped`` bool [n])."""
    rng = np.random.default_rng(seed)

    def blobs(n):
        y = rng.integers(0, 2, n)
        return rng.normal(size=(n, 2)) + 2.5 * y[:, None], y

    X, y = blobs(n_train)
    X_val, y_val = blobs(n_val)
    flipped = np.zeros(n_train, dtype=bool)
    flipped[rng.choice(n_train, int(noise * n_train), replace=False)] = True
    return X, np.where(flipped, 1 - y, y), X_val, y_val, flipped


def test_out_of_bag_values_by_hand_regression():
    X, y = np.zeros((4, 1)), np.array([0.0, 1.0, 2.0, 4.0])
    bags = np.array([[2, 1, 0, 1], [0, 1, 1, 2], [1, 0, 2, 1], [0, 2, 0, 2]])
    # bag means 1.25, 2.75, 2, 2.5; out of bag: point 2 | point 0 | point 1 | points 0, 2
    values, stderr, counts = out_of_bag_values(DummyRegressor(), X, y, bags)
    np.testing.assert_array_equal(counts, [2, 1, 2, 0])
    np.testing.assert_allclose(values[:3], [-(2.75**2 + 2.5**2) / 2, -1.0, -(0.75**2 + 0.5**2) / 2])
    assert np.isnan(values[3]) and np.isnan(stderr[3])


def test_out_of_bag_values_by_hand_classification():
    X, y = np.zeros((5, 1)), np.array([0, 0, 1, 1, 1])
    bags = np.array([[3, 0, 1, 1, 0], [0, 1, 0, 2, 2]])  # most frequent label: 0, then 1
    values, _, counts = out_of_bag_values(DummyClassifier(strategy="most_frequent"), X, y, bags)
    np.testing.assert_array_equal(counts, [1, 1, 1, 0, 1])
    np.testing.assert_array_equal(values[[0, 1, 2, 4]], [0.0, 1.0, 1.0, 0.0])


def test_data_oob_with_a_constant_learner_scores_label_agreement():
    X, y, *_ = noisy_blobs(60)
    result = DataOOB(DummyClassifier(strategy="constant", constant=1), n_estimators=30, random_state=0).fit(X, y).result_
    np.testing.assert_array_equal(result.values, (y == 1).astype(float))
    assert np.all(result.counts > 0)


class SeedRecorder(DummyClassifier):
    """A constant classifier that records the ``random_state`` it was fitted with (class-level: clones share it)."""

    seen: list = []

    def __init__(self, strategy="most_frequent", random_state=None, constant=None):
        super().__init__(strategy=strategy, random_state=random_state, constant=constant)

    def fit(self, X, y, sample_weight=None):
        SeedRecorder.seen.append(self.random_state)
        return super().fit(X, y, sample_weight)


def test_data_oob_seeds_each_bag_reproducibly_and_differently():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import ExtraTreeClassifier

    from llm_attrib.valuation.data_oob import seeded_clone

    X, y, *_ = noisy_blobs(60)
    SeedRecorder.seen = []
    DataOOB(SeedRecorder(random_state=7), n_estimators=12, random_state=0).fit(X, y)
    first, SeedRecorder.seen = SeedRecorder.seen, []
    DataOOB(SeedRecorder(random_state=7), n_estimators=12, random_state=0).fit(X, y)
    assert first == SeedRecorder.seen and len(set(first)) == 12 and 7 not in first  # one seed per bag, reproducible
    # a randomised tree: the same values from the same random_state, and bags that differ from one shared seed
    tree = ExtraTreeClassifier(max_features=1, random_state=0)
    a = DataOOB(tree, n_estimators=40, random_state=3).fit(X, y).values_
    assert np.array_equal(a, DataOOB(tree, n_estimators=40, random_state=3).fit(X, y).values_)
    bags = np.ones((2, len(y)), dtype=int)
    bags[:, :20] = 0
    same, _, _ = out_of_bag_values(tree, X, y, np.concatenate([bags, bags]), seeds=np.array([5, 5, 6, 6]))
    per_bag = [out_of_bag_values(tree, X, y, bags[:1], seeds=np.array([s]))[0][:20] for s in (5, 6)]
    np.testing.assert_array_equal(same[:20], (per_bag[0] + per_bag[1]) / 2)  # bag b used seeds[b]
    assert seeded_clone(make_pipeline(StandardScaler(), tree), 11).get_params()["extratreeclassifier__random_state"] == 11


@pytest.mark.parametrize("method", [
    DataOOB(DecisionTreeClassifier(max_depth=3, random_state=0), n_estimators=100, random_state=0),
    DVRL(LogisticRegression(), n_iterations=150, random_state=0),
    KNNShapley(n_neighbors=10),
])
def test_planted_noisy_labels_rank_low(method):
    X, y, X_val, y_val, flipped = noisy_blobs()
    values = clone(method).fit(X, y, X_val, y_val).values_
    assert roc_auc_score(flipped, -values) >= 0.8


@pytest.mark.parametrize("method", [
    TMCShapley(LogisticRegression(), stopping=6, permutations_per_round=3),
    DataBanzhaf(LogisticRegression(), stopping=40, samples_per_round=20),
    BetaShapley(LogisticRegression(), stopping=2, samples_per_round=1),
    DataOOB(LogisticRegression(), n_estimators=12),
    DVRL(LogisticRegression(), n_iterations=10, batch_size=32),
])
def test_seed_reproduces_and_n_jobs_does_not_change_values(method):
    X, y, X_val, y_val, _ = noisy_blobs(40, 40)
    first = clone(method).set_params(random_state=3).fit(X, y, X_val, y_val).values_
    again = clone(method).set_params(random_state=3).fit(X, y, X_val, y_val).values_
    other_seed = clone(method).set_params(random_state=4).fit(X, y, X_val, y_val).values_
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other_seed)
    if "n_jobs" in method.get_params():
        parallel = clone(method).set_params(random_state=3, n_jobs=2).fit(X, y, X_val, y_val).values_
        np.testing.assert_array_equal(first, parallel)


def test_torch_estimator_is_a_classifier_that_learns_and_clones():
    X, y, X_val, y_val, flipped = noisy_blobs(noise=0.0)
    model = TorchEstimator(epochs=60, random_state=0)
    assert is_classifier(model)
    fitted = clone(model).fit(X, y)
    assert fitted.score(X_val, y_val) > 0.9
    np.testing.assert_allclose(fitted.predict_proba(X_val).sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(clone(model).fit(X, y).predict(X_val), fitted.predict(X_val))
    values = DataOOB(TorchEstimator(epochs=30), n_estimators=5, random_state=0).fit(X, y).values_
    assert np.nanmean(values) > 0.9


def test_result_ranking_and_exports(tmp_path):
    result = ValuationResult(np.array([0.2, np.nan, -1.0, 0.5]), np.zeros(4), np.array([3, 0, 3, 3]), "demo",
                             ids=np.array(["a", "b", "c", "d"]))
    np.testing.assert_array_equal(result.ranking(), [3, 0, 2, 1])
    np.testing.assert_array_equal(result.ranking(ascending=True), [2, 0, 3, 1])
    result.save(tmp_path / "values.csv")
    lines = (tmp_path / "values.csv").read_text().splitlines()
    assert lines[0] == "index,id,value,stderr,count,rank" and len(lines) == 5 and lines[4].startswith("3,d,0.5,")
    result.save(tmp_path / "values.json")
    saved = json.loads((tmp_path / "values.json").read_text())
    assert saved["method"] == "demo" and [p["rank"] for p in saved["points"]] == [1, 3, 2, 0]
    assert result.to_frame().loc[2, "value"] == -1.0
    with pytest.raises(UserInputError, match="csv or .json"):
        result.save(tmp_path / "values.txt")


def test_bad_input_is_a_one_line_user_error():
    X, y, *_ = noisy_blobs(20)
    with pytest.raises(UserInputError, match="needs validation data"):
        TMCShapley(LogisticRegression()).fit(X, y)
    with pytest.raises(UserInputError, match="unknown sampler 'gibbs': choose one of permutation, msr"):
        BetaShapley(LogisticRegression(), sampler="gibbs").fit(X, y, X, y)
    with pytest.raises(UserInputError, match="unknown valuation method 'shapely'"):
        make_method("shapely")
    with pytest.raises(UserInputError, match="no parameter 'n_trees'"):
        make_method("data-oob", n_trees=3)


def test_dvrl_warns_when_its_reward_counts_correct_predictions():
    import warnings

    from sklearn.svm import LinearSVC

    X, y, X_val, y_val, _ = noisy_blobs(40, 20)
    with pytest.warns(UserWarning, match="accuracy, which counts correct"):
        DVRL(LogisticRegression(), n_iterations=2, scorer="accuracy", random_state=0).fit(X, y, X_val, y_val)
    with pytest.warns(UserWarning, match="predict_proba"):  # no probabilities: the default reward is accuracy
        DVRL(LinearSVC(), n_iterations=2, random_state=0).fit(X, y, X_val, y_val)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the log-likelihood default: no warning
        DVRL(LogisticRegression(), n_iterations=2, random_state=0).fit(X, y, X_val, y_val)
