"""Write the data of ``recipes/noisy-labels-value.yaml`` into ``noisy-cancer/`` beside this file.

scikit-learn's copy of the Wisconsin breast-cancer data (569 tumours, 30 numeric features; label 1 = benign,
0 = malignant; UCI, CC BY 4.0) is split at random (seed 0) into 200 training and 100 validation rows, and 10% of
the training labels are flipped. ``flipped.json`` lists the ids of the flipped rows: the ground truth against
which to read the value report (low values should find them).

    python recipes/data/noisy_cancer.py
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

FOLDER = Path(__file__).resolve().parent / "noisy-cancer"
N_TRAIN, N_VALIDATION, NOISE, SEED = 200, 100, 0.1, 0


def write_table(path: Path, ids: list[str], X: np.ndarray, y: np.ndarray, names: list[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", *names, "label"])
        writer.writerows([id_, *(f"{value:.6g}" for value in row), int(label)] for id_, row, label in zip(ids, X, y))


def main() -> None:
    data = load_breast_cancer()
    names = [name.replace(" ", "_") for name in data.feature_names]
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(data.target))
    train, validation = order[:N_TRAIN], order[N_TRAIN:N_TRAIN + N_VALIDATION]
    y_train = data.target[train].copy()
    flipped = np.sort(rng.choice(N_TRAIN, int(NOISE * N_TRAIN), replace=False))
    y_train[flipped] = 1 - y_train[flipped]
    train_ids = [f"t{i:03d}" for i in range(N_TRAIN)]
    FOLDER.mkdir(exist_ok=True)
    write_table(FOLDER / "train.csv", train_ids, data.data[train], y_train, names)
    write_table(FOLDER / "validation.csv", [f"v{i:03d}" for i in range(N_VALIDATION)], data.data[validation],
                data.target[validation], names)
    (FOLDER / "flipped.json").write_text(json.dumps([train_ids[i] for i in flipped]) + "\n")


if __name__ == "__main__":
    main()
