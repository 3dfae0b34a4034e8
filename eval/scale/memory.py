"""Peak resident memory of the fit and score stages vs the README's formulas, for several layer partitions.

Run: ``python -m eval.scale.memory [score|fit]`` (default both; writes ``memory.json``, ``fit_memory.json``). Each
configuration runs in a fresh process, and a stage's cost is the peak of the resident set size sampled every
5 ms while it runs, minus the resident size just before it.

* **score** — the demo model, 100 queries, 1/2/4 partitions. Formula: the preconditioned query matrices of one
  partition, ``n_q · Σ_{layers in it} O·I`` floats in the contraction dtype (float32 for a float32 model); the
  preconditioning holds ~3 such copies transiently (gradients, rotated, preconditioned).
* **fit** — the random 97.5M-parameter Llama of `eval.scale.realistic` (36 MLP layers of 768×2048), 16 passages,
  EK-FAC with a ``cache_dir``, 1/3/6/12 partitions. Formula: float64 factors ``Σ (I² + O² + O·I)`` of all layers
  (1 partition: all are held in memory) or of one group (several: each group is written to its file and released),
  plus that group's covariance sums ``Σ (I² + O²)`` while its statistics are gathered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from llm_attrib.store import write_json

SCORE_QUERIES = 100
SCORE_PARTITIONS = (1, 2, 4)
FIT_DOCS = 16
FIT_PARTITIONS = (1, 3, 6, 12)
MIB = 2**20


def resident_mib() -> float:
    """This process's resident set size now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def peak_growth_mib(stage: Callable[[], object]) -> float:
    """Peak resident size while ``stage`` runs (sampled every 5 ms) minus the resident size before it."""
    before = peak = resident_mib()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, resident_mib())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        stage()
    finally:
        done.set()
        sampler.join()
    return max(peak, resident_mib()) - before


def score_child(partitions: int) -> dict:
    from eval.scale.common import attributor, demo

    bundle = demo()
    queries = (bundle.corpus.queries * 10)[:SCORE_QUERIES]
    ours = attributor(bundle, layer_partitions=partitions).fit(bundle.train_records)
    groups = [sum(layer.n_params for layer in part) for part in ours.partitions()]
    growth = peak_growth_mib(lambda: ours.score(queries, bundle.train_records))
    return {"layer_partitions": partitions, "query_matrices_mib_formula": SCORE_QUERIES * max(groups) * 4 / MIB,
            "score_peak_growth_mib": growth}


def fit_child(partitions: int) -> dict:
    from eval.scale.realistic import setup
    from llm_attrib.adapters import CausalLMAdapter
    from llm_attrib.attributors.influence import InfluenceAttributor

    model, tokenizer, train, _ = setup(FIT_DOCS, 0)
    with tempfile.TemporaryDirectory() as cache:
        ours = InfluenceAttributor(CausalLMAdapter(model, tokenizer), "ekfac", batch_size=8, fisher="empirical",
                                   layer_partitions=partitions, cache_dir=cache)
        start = time.perf_counter()
        growth = peak_growth_mib(lambda: ours.fit(train))
        seconds = time.perf_counter() - start
        held = sum(v.numel() * v.element_size() for v in ours.curvature.state.values()) / MIB

    def factors(layers: list) -> float:
        return sum(i * i + o * o + o * i for o, i in (layer.shape for layer in layers)) * 8 / MIB

    def covariances(layers: list) -> float:
        return sum(i * i + o * o for o, i in (layer.shape for layer in layers)) * 8 / MIB

    groups = ours.partitions()
    largest = max(groups, key=factors)
    formula = (factors(ours.adapter.layers) if partitions == 1 else factors(largest)) + covariances(largest)
    return {"layer_partitions": partitions, "fit_seconds": seconds, "factors_held_after_fit_mib": held,
            "all_factors_mib": factors(ours.adapter.layers), "fit_formula_mib": formula,
            "fit_peak_growth_mib": growth}


EXPERIMENTS = {"score": (score_child, SCORE_PARTITIONS, "memory.json"),
               "fit": (fit_child, FIT_PARTITIONS, "fit_memory.json")}


def main(names: list[str]) -> None:
    """Run each experiment's configurations; rows replace those of the same partitions and allocator setting
    (``MALLOC_MMAP_THRESHOLD_``: glibc keeps freed heap blocks mapped, so by default the resident size overstates
    live tensors; a fixed threshold of 128 KiB returns every large block to the system when it is freed)."""
    allocator = os.environ.get("MALLOC_MMAP_THRESHOLD_", "default")
    for name in names:
        _, partitions, output = EXPERIMENTS[name]
        path = Path(__file__).with_name(output)
        rows = [row for row in (json.loads(path.read_text()) if path.exists() else [])
                if row.get("malloc_mmap_threshold", "default") != allocator]
        for k in partitions:
            result = subprocess.run([sys.executable, "-m", "eval.scale.memory", "--child", name, str(k)],
                                    capture_output=True, text=True, check=True)
            rows.append({**json.loads(result.stdout.strip().splitlines()[-1]), "malloc_mmap_threshold": allocator})
            print(json.dumps(rows[-1]), flush=True)
            write_json(path, rows)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(EXPERIMENTS[sys.argv[2]][0](int(sys.argv[3]))))
    else:
        main(sys.argv[1:] or list(EXPERIMENTS))
