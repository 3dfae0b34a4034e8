"""Peak resident memory of the score stage vs the README's formula, for 1, 2 and 4 layer partitions.

Run: ``python -m eval.scale.memory`` (writes ``eval/scale/memory.json``). Each configuration runs in a fresh
process; the score stage's cost is the growth of peak RSS (``ru_maxrss``) from after `fit` to after `score`.
The formula counts float64 query matrices, ``n_q · Σ_layers O·I · 8`` bytes, held for one partition at a time
(the preconditioning holds ~3 such copies transiently: gradients, rotated, preconditioned).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

N_QUERIES = 100
PARTITIONS = (1, 2, 4)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(partitions: int) -> None:
    from eval.scale.common import attributor, demo

    bundle = demo()
    queries = (bundle.corpus.queries * 10)[:N_QUERIES]
    ours = attributor(bundle, layer_partitions=partitions).fit(bundle.train_records)
    factors = sum(v.numel() * v.element_size() for v in ours.curvature.state.values())
    groups = [sum(layer.n_params for layer in part) for part in ours.partitions()]
    before = peak_mib()
    ours.score(queries, bundle.train_records)
    print(json.dumps({"layer_partitions": partitions, "factors_mib": factors / 2**20,
                      "query_matrices_mib_formula": N_QUERIES * max(groups) * 8 / 2**20,
                      "score_peak_growth_mib": peak_mib() - before}))


def main() -> None:
    rows = []
    for partitions in PARTITIONS:
        result = subprocess.run([sys.executable, "-m", "eval.scale.memory", str(partitions)], capture_output=True,
                                text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    Path(__file__).with_name("memory.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    child(int(sys.argv[1])) if len(sys.argv) > 1 else main()
