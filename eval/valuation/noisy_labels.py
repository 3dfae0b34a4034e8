"""Noisy-label detection benchmark: flip 10% / 20% of training labels, value every point, and see how well
low values find the flipped ones. Compares llm_attrib.valuation with pyDVL 0.10 and OpenDataVal 1.3 (each run
in its own venv through ``pydvl_runner.py`` / ``odv_runner.py``) at the same budget, and a random baseline.

Metrics: AUROC of ranking flipped points low; OpenDataVal's 2-means F1 (KMeans with 2 clusters on the
values, the low cluster flagged); wall time; utility queries (ours); Spearman correlation of a peer's values with
ours for the same method. Beta(16, 1) Shapley runs three ways: by permutations (our default sampler), by MSR
subsets and by permutations truncated as in TMC, the last two at the first's number of queries. Peers get seed ``seed + peer_seed_offset``: pyDVL draws the very same permutations as ours from the
same seed (both seed task ``t`` with ``SeedSequence(seed, spawn_key=(t,))``), so with offset 0 TMC values
are identical and Spearman measures nothing but implementation equality. Writes ``results.md`` (the table
pasted into README.md) and ``results.json``.

    python eval/valuation/noisy_labels.py            # full run
    python eval/valuation/noisy_labels.py --quick    # one data set, one seed, small budgets
    python eval/valuation/noisy_labels.py --methods beta-shapley --out DIR   # some methods (and peers') only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy.stats import spearmanr
from sklearn.cluster import KMeans
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from llm_attrib.valuation import (
    DVRL,
    BetaShapley,
    DataBanzhaf,
    DataOOB,
    KNNShapley,
    LeaveOneOut,
    MaxUtilityEvaluations,
    TMCShapley,
)

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Peer:
    """Another library, run by ``runner`` (a script beside this one) under its own ``python``."""

    label: str
    python: Path
    runner: str


PEERS: dict[str, Peer] = {
    "pydvl": Peer("pyDVL 0.10", Path(os.environ.get("PYDVL_PYTHON", "../venv-pydvl/bin/python")),
                  "pydvl_runner.py"),
    "odv": Peer("OpenDataVal 1.3", Path(os.environ.get("ODV_PYTHON", "../venv-odv/bin/python")),
                "odv_runner.py"),
}


def digits_binary() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    return X, (y >= 5).astype(int)  # 0-4 vs 5-9


DATASETS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "breast_cancer": lambda: load_breast_cancer(return_X_y=True),
    "digits (0-4 vs 5-9)": digits_binary,
    "wine (3 classes)": lambda: load_wine(return_X_y=True),
}


def make_case(dataset: str, n_train: int, noise: float, seed: int):
    """Standardised train/validation split with ``noise · n_train`` training labels changed to another class."""
    X, y = DATASETS[dataset]()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_train = min(n_train, int(0.7 * len(y)))
    n_val = min(len(y) - n_train, n_train // 2)
    train, val = order[:n_train], order[n_train:n_train + n_val]
    scaler = StandardScaler().fit(X[train])
    y_train = y[train].copy()
    flipped = np.zeros(n_train, dtype=bool)
    flipped[rng.choice(n_train, int(round(noise * n_train)), replace=False)] = True
    classes = np.unique(y)
    for i in np.flatnonzero(flipped):
        y_train[i] = rng.choice(classes[classes != y_train[i]])
    return scaler.transform(X[train]), y_train, scaler.transform(X[val]), y[val], flipped


def two_means_f1(values: np.ndarray, flipped: np.ndarray) -> float:
    """OpenDataVal's detection F1: KMeans(2) on the values, the cluster with the lower mean is flagged."""
    values = np.nan_to_num(values, nan=np.nanmin(values)).reshape(-1, 1)
    labels = KMeans(n_clusters=2, n_init=10, random_state=0).fit_predict(values)
    low = int(np.argmin([values[labels == k].mean() for k in (0, 1)]))
    return float(f1_score(flipped, labels == low))


def our_methods(budget: int, seed: int) -> dict[str, Any]:
    """Our methods by row name. Beta(16, 1) Shapley by permutations (the default sampler) runs whole
    permutations until it has made ``budget`` utility queries; its variants get as many (`SAME_QUERIES_AS`)."""
    model = LogisticRegression(max_iter=1000)
    return {
        "loo": LeaveOneOut(model),
        "tmc-shapley": TMCShapley(model, stopping=MaxUtilityEvaluations(budget), truncation_tolerance=0.01,
                                  random_state=seed),
        "beta-shapley": BetaShapley(model, alpha=16, beta=1, stopping=MaxUtilityEvaluations(budget),
                                    samples_per_round=1, random_state=seed),
        "beta-shapley (msr)": BetaShapley(model, alpha=16, beta=1, sampler="msr", random_state=seed),
        "beta-shapley (truncated 1%)": BetaShapley(model, alpha=16, beta=1, truncation_tolerance=0.01,
                                                   samples_per_round=1, random_state=seed),
        "banzhaf": DataBanzhaf(model, stopping=budget, random_state=seed),
        "knn-shapley": KNNShapley(n_neighbors=10),
        "dvrl": DVRL(model, n_iterations=min(budget, 300), random_state=seed),
        "data-oob": DataOOB(model, n_estimators=100, random_state=seed),
    }


SAME_QUERIES_AS: dict[str, tuple[str, Callable[[int], Any]]] = {
    "beta-shapley (msr)": ("beta-shapley", int),  # as many subsets (one query each)
    "beta-shapley (truncated 1%)": ("beta-shapley", MaxUtilityEvaluations),
}
"""Methods stopped at as many utility queries as another one made (listed after it in `our_methods`): name ->
(that method, queries -> stopping)."""


def peer_budgets(peer: str, results: dict[str, Any], budget: int, seed: int) -> dict[str, dict[str, Any]]:
    """The same budgets for a peer, for the methods we ran (``results``). pyDVL: TMC gets as many permutations as
    ours used; MSR Banzhaf as many subsets; Beta Shapley half as many marginals as our permutation sampler made
    utility queries (pyDVL makes 2 per marginal, uncached). OpenDataVal: Data-OOB and KNN-Shapley (its other
    methods have no budget in utility evaluations)."""
    budgets: dict[str, Callable[[], dict[str, Any]]] = {
        "loo": dict,
        "tmc-shapley": lambda: {"permutations": int(results["tmc-shapley"].counts[0]), "truncation": 0.01,
                                "seed": seed},
        "beta-shapley": lambda: {"alpha": 16, "beta": 1, "seed": seed,
                                 "samples": results["beta-shapley"].n_utility_evaluations // 2},
        "banzhaf": lambda: {"samples": budget, "seed": seed},
        "knn-shapley": lambda: {"n_neighbors": 10},
        "data-oob": lambda: {"n_estimators": 100, "seed": seed},
    }
    methods = ["knn-shapley", "data-oob"] if peer == "odv" else list(budgets)
    return {method: budgets[method]() for method in methods if method in results}


def run_peer(peer: Peer, arrays: dict[str, np.ndarray],
             budgets: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """``({method: values [n]}, {method: seconds})`` from the peer's runner; empty if it is not installed or fails.

    The runner gets one BLAS/OpenMP thread, as our subset fits do."""
    if not peer.python.exists() or not budgets:
        return {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        case = Path(tmp)
        for name, array in arrays.items():
            np.save(case / f"{name}.npy", array)
        (case / "budgets.json").write_text(json.dumps(budgets))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        done = subprocess.run([str(peer.python), str(HERE / peer.runner), str(case)], capture_output=True,
                              text=True, env=env)
        if done.returncode != 0:
            print(f"{peer.label} failed:", done.stderr.strip().splitlines()[-1])
            return {}, {}
        times = json.loads((case / "times.json").read_text())
        return {method: np.load(case / f"{method}.npy") for method in times}, times


def run_case(dataset: str, n_train: int, noise: float, seed: int, budget: int, methods: list[str], peers: list[str],
             peer_seed_offset: int) -> list[dict]:
    X_train, y_train, X_val, y_val, flipped = make_case(dataset, n_train, noise, seed)
    rows, results = [], {}
    for name, method in our_methods(budget, seed).items():
        if name not in methods:
            continue
        if name in SAME_QUERIES_AS:
            reference, stopping = SAME_QUERIES_AS[name]
            method.set_params(stopping=stopping(results[reference].n_utility_evaluations))
        start = time.perf_counter()
        results[name] = method.fit(X_train, y_train, X_val, y_val).result_
        rows.append(dict(method=name, implementation="llm_attrib", values=results[name].values,
                         seconds=time.perf_counter() - start, evaluations=results[name].n_utility_evaluations))
    rows.append(dict(method="random", implementation="baseline", seconds=0.0,
                     values=np.random.default_rng(seed).random(len(y_train))))
    arrays = dict(X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val)
    for peer in peers:
        peer_values, peer_times = run_peer(PEERS[peer], arrays,
                                           peer_budgets(peer, results, budget, seed + peer_seed_offset))
        for name, values in peer_values.items():
            rows.append(dict(method=name, implementation=PEERS[peer].label, values=values,
                             seconds=peer_times[name],
                             spearman=float(spearmanr(results[name].values, values, nan_policy="omit")[0])))
    for row in rows:
        values = np.nan_to_num(row.pop("values"), nan=-np.inf)
        row.update(dataset=dataset, noise=noise, seed=seed, n_train=len(y_train),
                   auroc=float(roc_auc_score(flipped, -values)), f1=two_means_f1(values, flipped))
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: one line per data set, noise, method and implementation; means ± standard deviations over
    seeds (AUROC), means otherwise (utility queries: ours only, those the result counts)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["dataset"], row["noise"], row["method"], row["implementation"])].append(row)
    lines = ["| data set (n train) | noise | method | implementation | AUROC | 2-means F1 | time (s) "
             "| utility queries | Spearman vs llm_attrib |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (dataset, noise, method, implementation), group in sorted(groups.items(), key=_row_order):
        spearman = [r["spearman"] for r in group if "spearman" in r]
        queries = [r["evaluations"] for r in group if r.get("evaluations")]
        lines.append(
            f"| {dataset} ({group[0]['n_train']}) | {noise:.0%} | {method} | {implementation} "
            f"| {np.mean([r['auroc'] for r in group]):.3f} ± {np.std([r['auroc'] for r in group]):.3f} "
            f"| {np.mean([r['f1'] for r in group]):.3f} | {np.mean([r['seconds'] for r in group]):.2f} "
            f"| {f'{np.mean(queries):.0f}' if queries else ''} | {f'{np.mean(spearman):.3f}' if spearman else ''} |")
    return "\n".join(lines)


def _row_order(item: tuple[tuple, list[dict]]) -> tuple:
    """Data set and noise as run, then methods in `our_methods` order, each implementation beside ours."""
    (dataset, noise, method, implementation), _ = item
    methods = [*our_methods(1, 0), "random"]
    return (list(DATASETS).index(dataset), noise, methods.index(method), implementation != "llm_attrib",
            implementation)


def main() -> None:
    names = list(our_methods(1, 0))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one data set, one seed, small budget")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=1000, help="utility evaluations for TMC / Beta / Banzhaf")
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--peers", nargs="*", default=list(PEERS), choices=list(PEERS),
                        help="peer libraries to run beside ours (none: --peers)")
    parser.add_argument("--peer-seed-offset", type=int, default=1000,
                        help="peers use seed + this (0 reproduces our random streams in pyDVL: see the docstring)")
    parser.add_argument("--methods", nargs="+", default=names, choices=names,
                        metavar="METHOD", help="our methods to run, and the peers' of the same name (default: all; "
                        "a variant in SAME_QUERIES_AS runs with the method it is matched to)")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    references = {SAME_QUERIES_AS[m][0] for m in args.methods if m in SAME_QUERIES_AS}
    methods = sorted({*args.methods, *references}, key=names.index)
    datasets = ["breast_cancer"] if args.quick else list(DATASETS)
    seeds = range(1 if args.quick else args.seeds)
    budget, n_train = (300, 200) if args.quick else (args.budget, args.n_train)
    rows = [row for dataset in datasets for noise in (0.1, 0.2) for seed in seeds
            for row in run_case(dataset, n_train, noise, seed, budget, methods, args.peers, args.peer_seed_offset)]
    command = "python eval/valuation/noisy_labels.py" + (" --quick" if args.quick else
                                                        f" --seeds {args.seeds} --budget {budget} --n-train {n_train}")
    if methods != names:
        command += " --methods " + " ".join(f"'{m}'" if " " in m else m for m in methods)
    if args.out != HERE:
        command += f" --out {args.out}"
    header = (f"Noisy-label detection, base model logistic regression, {len(list(seeds))} seed(s), budget {budget} "
              f"utility evaluations for TMC / Beta / Banzhaf (Beta by permutations: whole permutations up to the "
              f"first past it; its variants and pyDVL's Beta get as many), 100 bags for Data-OOB, K=10 for "
              f"KNN-Shapley.\n"
              f"Regenerate: `{command}`\n\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(header + table(rows) + "\n")
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    print(header + table(rows))


if __name__ == "__main__":
    main()
