"""``llm-attrib value``: value each row of a tabular data file (csv, json, jsonl, parquet) and write one value
per row (higher = more valuable) to CSV or JSON. Rows are numeric feature columns, or a text column embedded
by a local Hugging Face model (``--text-column COL --embed-model PATH``: mean-pooled last hidden states)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from llm_attrib.data import load_records
from llm_attrib.distributed import require_one_process
from llm_attrib.errors import UserInputError
from llm_attrib.valuation.estimators import ESTIMATORS, make_estimator
from llm_attrib.valuation.knn_shapley import resolve_task
from llm_attrib.valuation.registry import VALUATION_METHODS, make_method
from llm_attrib.valuation.result import ValuationResult
from llm_attrib.valuation.text import POOLINGS, embed_texts, load_embedding_model, text_columns

def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("value", help="data valuation: one value per training row (higher = more valuable)",
                                   description=__doc__)
    parser.add_argument("--method", required=True, help=f"one of: {', '.join(VALUATION_METHODS)}")
    parser.add_argument("--data", required=True, help="training data file (.csv, .json, .jsonl, .parquet)")
    parser.add_argument("--label-column", required=True)
    features = parser.add_mutually_exclusive_group()
    features.add_argument("--feature-columns", nargs="+", help="numeric feature columns (default: all others)")
    features.add_argument("--text-column", help="a text column to embed with --embed-model instead of features")
    parser.add_argument("--embed-model", help="local Hugging Face model folder that embeds --text-column")
    parser.add_argument("--pooling", default="mean", choices=list(POOLINGS),
                        help="how --embed-model's last hidden states are pooled over a text's tokens")
    parser.add_argument("--val-data", help="validation data file (needed by all methods but data-oob)")
    parser.add_argument("--estimator", default="logistic", help=f"base model: one of {', '.join(ESTIMATORS)}")
    parser.add_argument("--task", default="auto", choices=["auto", "classification", "regression"])
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="method parameter, e.g. --param n_estimators=200 (VALUE parsed as JSON if it can be)")
    parser.add_argument("--out", default="values.csv", help="output file, .csv or .json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require_one_process("valuation does not shard its work; --n-jobs runs its model fits in parallel")
    if Path(args.out).suffix.lower() not in (".csv", ".json"):
        raise UserInputError(f"cannot write values to {args.out}: use a .csv or .json file name")
    if args.text_column and not args.embed_model:
        raise UserInputError("--text-column needs --embed-model, a local Hugging Face model folder")
    to_arrays = (text_embedder(args.embed_model, args.text_column, args.label_column, args.pooling) if args.text_column
                 else numeric_features(args.feature_columns, args.label_column))
    X_train, y_train = to_arrays(load_records(args.data), args.data)
    X_val = y_val = None
    if args.val_data:
        X_val, y_val = to_arrays(load_records(args.val_data), args.val_data)
    start = time.perf_counter()
    result = value_arrays(args.method, X_train, y_train, X_val, y_val, estimator=args.estimator, task=args.task,
                          seed=args.seed, n_jobs=args.n_jobs, params=dict(parse_param(text) for text in args.param))
    result.save(args.out)
    print(f"wrote {len(result)} {args.method} values to {args.out} in {time.perf_counter() - start:.1f}s; "
          f"lowest rows: {', '.join(map(str, result.ranking(ascending=True)[:5]))}")
    return 0


def value_arrays(method: str, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray | None = None,
                 y_val: np.ndarray | None = None, *, estimator: str = "logistic", task: str = "auto", seed: int = 0,
                 n_jobs: int = 1, params: dict[str, Any] | None = None, progress: bool = True) -> ValuationResult:
    """Value each row of ``X_train`` ``[rows, features]`` for predicting ``y_train`` with ``method`` (a name in
    `VALUATION_METHODS`, built with ``params``) on the base model ``estimator``; higher = more valuable.
    Classification needs at least two classes in ``y_train``."""
    task = resolve_task(task, y_train)
    classes = np.unique(y_train)
    if task == "classification" and len(classes) < 2:
        raise UserInputError(f"the training labels have a single class ({classes.tolist()}): classification needs at "
                             "least two; check the label column, or pass task='regression' (--task regression)")
    shared = {"estimator": make_estimator(estimator, task, seed), "random_state": seed, "n_jobs": n_jobs,
              "task": task, "progress": progress}
    return make_method(method, shared, **(params or {})).fit(X_train, y_train, X_val, y_val).result_


TableArrays = Callable[[Any, str], tuple[np.ndarray, np.ndarray]]


def numeric_features(feature_columns: list[str] | None, label_column: str) -> TableArrays:
    """``(table, path) -> (X, y)`` from ``feature_columns`` (default: every column but the label)."""

    def to_arrays(table: Any, path: str) -> tuple[np.ndarray, np.ndarray]:
        features = feature_columns or [name for name in table.column_names if name != label_column]
        return table_arrays(table, features, label_column, path)

    return to_arrays


def text_embedder(model_path: str, text_column: str, label_column: str, pooling: str = "mean") -> TableArrays:
    """``(table, path) -> (X [rows, hidden], y)``: ``text_column`` embedded by the model at ``model_path``."""
    model, tokenizer = load_embedding_model(model_path)

    def to_arrays(table: Any, path: str) -> tuple[np.ndarray, np.ndarray]:
        texts, labels = text_columns(table, text_column, label_column, path)
        return embed_texts(model, tokenizer, texts, pooling=pooling), labels

    return to_arrays


def table_arrays(table: Any, features: list[str], label_column: str, path: str) -> tuple[np.ndarray, np.ndarray]:
    """``X`` float ``[rows, len(features)]`` and ``y`` ``[rows]`` from a table; one-line errors for bad columns."""
    for column in [label_column, *features]:
        if column not in table.column_names:
            raise UserInputError(f"{path} has no column {column!r}; its columns are {', '.join(table.column_names)}")
    if not features:
        raise UserInputError(f"{path} has no feature columns besides the label {label_column!r}")
    try:
        X = np.column_stack([np.asarray(table[column], dtype=float) for column in features])
    except (TypeError, ValueError) as error:
        raise UserInputError(f"{path}: feature columns must be numeric ({error})") from error
    return X, np.asarray(table[label_column])


def parse_param(text: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, json.loads(value))``, or the raw string when it is not JSON."""
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise UserInputError(f"--param {text!r}: write KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value
