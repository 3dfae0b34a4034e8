"""Run pyDVL 0.10's valuation methods on arrays from ``noisy_labels.py`` (runs in pyDVL's own venv).

Usage: ``python pydvl_runner.py CASE_DIR`` where CASE_DIR holds X_train.npy, y_train.npy, X_val.npy,
y_val.npy and budgets.json ({method: {parameter: value}}); writes <method>.npy and times.json.
pyDVL is a benchmark peer only, never a dependency of llm_attrib.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier


def main(case_dir: Path) -> None:
    from pydvl.utils import Dataset, Utility
    from pydvl.value import MaxChecks, compute_loo
    from pydvl.value.oob import compute_data_oob
    from pydvl.value.semivalues import compute_beta_shapley_semivalues, compute_msr_banzhaf_semivalues
    from pydvl.value.shapley import ShapleyMode, compute_shapley_values
    from pydvl.value.shapley.knn import knn_shapley
    from pydvl.value.shapley.truncated import RelativeTruncation

    arrays = {name: np.load(case_dir / f"{name}.npy") for name in ("X_train", "y_train", "X_val", "y_val")}
    budgets = json.loads((case_dir / "budgets.json").read_text())
    data = Dataset(arrays["X_train"], arrays["y_train"], arrays["X_val"], arrays["y_val"])

    def utility(model=None):
        return Utility(model or LogisticRegression(max_iter=1000), data, "accuracy", default_score=0.0,
                       catch_errors=True)

    runners = {
        "loo": lambda b: compute_loo(utility(), n_jobs=1, progress=False),
        "tmc-shapley": lambda b: compute_shapley_values(
            utility(), mode=ShapleyMode.TruncatedMontecarlo, done=MaxChecks(b["permutations"]),
            truncation=RelativeTruncation(utility(), rtol=b["truncation"]), n_jobs=1, seed=b["seed"]),
        "beta-shapley": lambda b: compute_beta_shapley_semivalues(
            utility(), alpha=b["alpha"], beta=b["beta"], done=MaxChecks(b["samples"]), seed=b["seed"]),
        "banzhaf": lambda b: compute_msr_banzhaf_semivalues(utility(), done=MaxChecks(b["samples"]), seed=b["seed"]),
        "knn-shapley": lambda b: knn_shapley(utility(KNeighborsClassifier(n_neighbors=b["n_neighbors"])),
                                             progress=False),
        "data-oob": lambda b: compute_data_oob(utility(), n_est=b["n_estimators"], max_samples=1.0, seed=b["seed"]),
    }
    times = {}
    for method, budget in budgets.items():
        start = time.perf_counter()
        result = runners[method](budget)
        times[method] = time.perf_counter() - start
        np.save(case_dir / f"{method}.npy", np.asarray(result.values, dtype=float))
    (case_dir / "times.json").write_text(json.dumps(times))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
