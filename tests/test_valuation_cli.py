"""`llm-attrib value` and valuing text records through a tiny local GPT-2."""

import argparse
import csv
import json

import numpy as np
import pytest

from conftest import SENTENCES
from llm_attrib.demo.model import tiny_gpt2
from llm_attrib.errors import UserInputError
from llm_attrib.output_schema import validate
from llm_attrib.valuation import KNNShapley, embed_texts, value_dataset
from llm_attrib.valuation.cli import add_parser, value_arrays


def run_value(argv):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["value", *argv])
    return args.func(args)


N_ROWS, N_FLIPPED = 40, 8


def noisy_rows(seed: int = 0) -> tuple[np.ndarray, np.ndarray, set[int]]:
    """x1 separates the classes (shift 3), x2 is noise; 8 of the 40 labels are flipped."""
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, 2, N_ROWS)
    X = np.column_stack([rng.normal(size=N_ROWS) + 3 * clean, rng.normal(size=N_ROWS)])
    flipped = rng.choice(N_ROWS, N_FLIPPED, replace=False)
    y = clean.copy()
    y[flipped] = 1 - y[flipped]
    return X, y, set(flipped.tolist())


@pytest.fixture
def table(tmp_path):
    X, y, _ = noisy_rows()
    path = tmp_path / "train.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x1", "x2", "y"])
        writer.writerows([repr(float(a)), repr(float(b)), int(label)] for (a, b), label in zip(X, y))
    return path


def test_cli_writes_the_python_apis_values_and_the_flipped_labels_come_lowest(table, tmp_path):
    """One value per row, in row order, equal to `value_arrays` on the same arrays (same seed), and 5 or more of
    the 8 flipped rows among the 8 lowest values (chance: 1.6 of 8; 7 with this table)."""
    out = tmp_path / "values.csv"
    status = run_value(["--method", "data-oob", "--data", str(table), "--label-column", "y",
                        "--estimator", "tree", "--param", "n_estimators=20", "--out", str(out)])
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    assert status == 0 and [int(row["index"]) for row in rows] == list(range(N_ROWS))
    X, y, flipped = noisy_rows()
    expected = value_arrays("data-oob", X, y, estimator="tree", params={"n_estimators": 20}, seed=0, progress=False)
    assert [float(row["value"]) for row in rows] == expected.values.tolist()
    assert [int(row["count"]) for row in rows] == expected.counts.tolist()
    lowest = sorted(range(N_ROWS), key=lambda i: float(rows[i]["value"]))[:N_FLIPPED]
    assert len(flipped & set(lowest)) >= 5
    assert [int(row["rank"]) for row in sorted(rows, key=lambda row: -float(row["value"]))] == list(range(N_ROWS))


def test_cli_with_validation_file_and_json(table, tmp_path):
    """JSON output: the method, and per row the exact KNN-Shapley values of the chosen feature column."""
    out = tmp_path / "values.json"
    assert run_value(["--method", "knn-shapley", "--data", str(table), "--val-data", str(table),
                      "--label-column", "y", "--feature-columns", "x1", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    validate(written, "values")
    X, y, flipped = noisy_rows()
    expected = KNNShapley().fit(X[:, :1], y, X[:, :1], y).values_
    assert written["method"] == "knn-shapley"
    assert [point["index"] for point in written["points"]] == list(range(N_ROWS))
    np.testing.assert_allclose([point["value"] for point in written["points"]], expected, rtol=1e-12, atol=1e-15)
    lowest = sorted(written["points"], key=lambda point: point["value"])[:N_FLIPPED]
    assert len(flipped & {point["index"] for point in lowest}) >= 5  # chance: 1.6


@pytest.mark.parametrize("argv, message", [
    (["--label-column", "label"], "has no column 'label'"),
    (["--label-column", "y", "--method", "shapely"], "unknown valuation method 'shapely'"),
    (["--label-column", "y", "--method", "tmc-shapley"], "needs validation data"),
    (["--label-column", "y", "--estimator", "svm"], "unknown estimator 'svm'"),
])
def test_cli_bad_input_is_a_user_error(table, argv, message):
    argv = ["--method", "data-oob", "--data", str(table), *argv]
    with pytest.raises(UserInputError, match=message):
        run_value(argv)


@pytest.fixture(scope="module")
def tiny_lm(tokenizer, tmp_path_factory):
    """A tiny random GPT-2 and the locally trained tokenizer, also saved as a model folder."""
    model = tiny_gpt2(len(tokenizer), n_positions=64, n_embd=16, n_layer=2, n_head=2, seed=0,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer, SENTENCES[:4], folder


def test_mean_pooling_ignores_padding(tiny_lm):
    model, tokenizer, corpus, _ = tiny_lm
    batched = embed_texts(model, tokenizer, corpus, batch_size=4)
    alone = np.concatenate([embed_texts(model, tokenizer, [text]) for text in corpus])
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    last = embed_texts(model, tokenizer, corpus, batch_size=4, pooling="last")
    assert last.shape == batched.shape == (4, 16) and not np.allclose(last, batched)


def test_value_dataset_values_text_records(tiny_lm):
    from datasets import Dataset

    model, tokenizer, corpus, _ = tiny_lm
    train = Dataset.from_dict({"text": corpus * 3, "label": [0, 1, 0, 1] * 3})
    result = value_dataset(train, "text", "label", model, tokenizer, method="knn-shapley",
                           val_dataset=train, n_neighbors=3)
    X = embed_texts(model, tokenizer, corpus * 3)
    expected = KNNShapley(n_neighbors=3).fit(X, np.array(train["label"]), X, np.array(train["label"])).values_
    np.testing.assert_allclose(result.values, expected)
    with pytest.raises(UserInputError, match="no column 'labels'"):
        value_dataset(train, "text", "labels", model, tokenizer)


def test_cli_values_a_text_column_through_a_local_model(tiny_lm, tmp_path):
    from datasets import Dataset

    model, tokenizer, corpus, folder = tiny_lm
    records = Dataset.from_dict({"text": corpus * 3, "label": [0, 1, 0, 1] * 3})
    records.to_csv(tmp_path / "train.csv", index=False)
    out = tmp_path / "values.csv"
    assert run_value(["--method", "knn-shapley", "--data", str(tmp_path / "train.csv"), "--val-data",
                      str(tmp_path / "train.csv"), "--label-column", "label", "--text-column", "text",
                      "--embed-model", str(folder), "--param", "n_neighbors=3", "--out", str(out)]) == 0
    with open(out) as handle:
        values = [float(row["value"]) for row in csv.DictReader(handle)]
    expected = value_dataset(records, "text", "label", model, tokenizer, method="knn-shapley",
                             val_dataset=records, n_neighbors=3)
    np.testing.assert_allclose(values, expected.values, atol=1e-6)


@pytest.mark.parametrize("argv, message", [
    (["--text-column", "text"], "--text-column needs --embed-model"),
    (["--text-column", "text", "--embed-model", "no/such/folder"], "no Hugging Face model folder"),
])
def test_cli_text_input_errors_are_user_errors(table, argv, message):
    with pytest.raises(UserInputError, match=message):
        run_value(["--method", "data-oob", "--data", str(table), "--label-column", "y", *argv])
