"""`python -m eval.estimators.convergence`: how far CG moves EK-FAC's solve on one grid cell, step by step.

For k = 0, 1, 2, 4, 8 CG steps (`InfluenceConfig.refine_steps`) at each grid damping: the relative residual
``‖b − A x_k‖ / ‖b‖`` of the exact damped Fisher system ``A x = b`` (b: the query gradients; one extra pass per
point) and the mean per-query Spearman correlation of the scores with EK-FAC's (k = 0). Printed as a table; reads
the cell's model only (no ground truth needed). Positive score = the training example raises the query's
log-probability.
"""

from __future__ import annotations

import argparse

import torch
from scipy.stats import spearmanr

from eval.grid.cells import build_cell
from eval.grid.config import GridConfig
from eval.grid.variants import DAMPINGS
from llm_attrib.adapters.causal_lm import CausalLMAdapter
from llm_attrib.attributors.influence import InfluenceAttributor
from llm_attrib.attributors.influence.refine import FisherOperator, refine

STEPS = (0, 1, 2, 4, 8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eval.estimators.convergence", description=__doc__)
    parser.add_argument("--dataset", default="roleplay")
    parser.add_argument("--depth", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    b = build_cell(GridConfig(), args.dataset, args.depth).benchmark
    attributor = InfluenceAttributor(CausalLMAdapter(b.model, b.tokenizer), "ekfac").fit(b.train_records)
    layers = list(attributor.adapter.layers)
    queries = attributor.gradients(b.query_records, measure=True)
    train = attributor.gradients(b.train_records, measure=False)
    print("| damping | steps | relative residual | Spearman with EK-FAC |\n|---|---|---|---|")
    for label, damping in DAMPINGS.items():
        attributor.curvature.damping = damping
        operator = FisherOperator(attributor.adapter, attributor.curvature, attributor.factors.examples,
                                  layers=layers, batch_size=8, seed=0, fisher="sampled")
        norm = sum(float(g.double().square().sum()) for g in queries.values()) ** 0.5
        base = None
        for k in STEPS:
            x = refine(attributor.curvature, operator, queries, k)
            product = operator(x)
            residual = sum(float((queries[n].double() - product[n].double()).square().sum()) for n in x) ** 0.5
            scores = sum(torch.einsum("qoi,noi->qn", x[n].double(), train[n].double()) for n in x)
            base = scores if base is None else base
            rho = sum(spearmanr(scores[q], base[q]).statistic for q in range(len(scores))) / len(scores)
            print(f"| {label} | {k} | {residual / norm:.3g} | {rho:.3f} |", flush=True)


if __name__ == "__main__":
    main()
