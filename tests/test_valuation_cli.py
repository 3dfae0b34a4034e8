"""`llm-attrib value` and valuing text records through a tiny local GPT-2."""

import argparse
import csv

import numpy as np
import pytest

from conftest import SENTENCES
from llm_attrib.demo.model import tiny_gpt2
from llm_attrib.errors import UserInputError
from llm_attrib.valuation import KNNShapley, embed_texts, value_dataset
from llm_attrib.valuation.cli import add_parser


def run_value(argv):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["value", *argv])
    return args.func(args)


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "train.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x1", "x2", "y"])
        for _ in range(30):
            label = int(rng.integers(0, 2))
            writer.writerow([rng.normal() + 2 * label, rng.normal(), label])
    return path


def test_cli_writes_one_value_per_row(table, tmp_path):
    out = tmp_path / "values.csv"
    status = run_value(["--method", "data-oob", "--data", str(table), "--label-column", "y",
                        "--estimator", "tree", "--param", "n_estimators=20", "--out", str(out)])
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    assert status == 0 and len(rows) == 30
    assert [int(row["index"]) for row in rows] == list(range(30))
    assert all(np.isfinite(float(row["value"])) for row in rows)


def test_cli_with_validation_file_and_json(table, tmp_path):
    out = tmp_path / "values.json"
    assert run_value(["--method", "knn-shapley", "--data", str(table), "--val-data", str(table),
                      "--label-column", "y", "--feature-columns", "x1", "--out", str(out)]) == 0
    assert out.exists()


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
