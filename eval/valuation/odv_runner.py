"""Run OpenDataVal 1.3's Data-OOB and KNN-Shapley on arrays from ``noisy_labels.py`` (runs in OpenDataVal's
own venv).

Usage: ``python odv_runner.py CASE_DIR`` where CASE_DIR holds X_train.npy, y_train.npy, X_val.npy, y_val.npy
and budgets.json ({method: {parameter: value}}, methods ``data-oob`` and ``knn-shapley``); writes
<method>.npy (higher = more valuable) and times.json. OpenDataVal is a benchmark peer only, never a
dependency of llm_attrib.
"""

import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch


def main(case_dir: Path) -> None:
    # OpenDataVal 1.3 pins torch 2.1 but imports transformers (through torchvision and its BERT model), and
    # the transformers installed beside it needs a newer torch; neither method here uses it, so both imports
    # are stubbed: ``import transformers`` raises ImportError (which torch catches), BertClassifier is None
    sys.modules["transformers"] = None  # type: ignore[assignment]
    sys.modules["opendataval.model.bert"] = types.SimpleNamespace(BertClassifier=None)  # type: ignore[assignment]
    from opendataval.dataval import DataOob, KNNShapley
    from opendataval.metrics import accuracy
    from opendataval.model.api import ClassifierSkLearnWrapper
    from sklearn.linear_model import LogisticRegression

    arrays = {name: np.load(case_dir / f"{name}.npy") for name in ("X_train", "y_train", "X_val", "y_val")}
    budgets = json.loads((case_dir / "budgets.json").read_text())
    classes = np.unique(np.concatenate([arrays["y_train"], arrays["y_val"]]))

    def one_hot(y: np.ndarray) -> torch.Tensor:  # OpenDataVal's classifiers take one-hot labels [n, classes]
        return torch.nn.functional.one_hot(torch.as_tensor(np.searchsorted(classes, y)), len(classes)).float()

    data = (torch.as_tensor(arrays["X_train"], dtype=torch.float32), one_hot(arrays["y_train"]),
            torch.as_tensor(arrays["X_val"], dtype=torch.float32), one_hot(arrays["y_val"]))
    runners = {
        "data-oob": lambda b: DataOob(num_models=b["n_estimators"], random_state=b["seed"]).input_model_metric(
            ClassifierSkLearnWrapper(LogisticRegression, len(classes), max_iter=1000), accuracy),
        "knn-shapley": lambda b: KNNShapley(k_neighbors=b["n_neighbors"]),
    }
    times = {}
    for method, budget in budgets.items():
        start = time.perf_counter()
        evaluator = runners[method](budget).input_data(*data).train_data_values()
        values = evaluator.evaluate_data_values()
        times[method] = time.perf_counter() - start
        np.save(case_dir / f"{method}.npy", np.asarray(values, dtype=float))
    (case_dir / "times.json").write_text(json.dumps(times))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
