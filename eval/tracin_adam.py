"""`python -m eval.tracin_adam`: Adam-aware TracIn against plain TracIn, per checkpoint and summed (issue 10, item 1).

On the suite's roleplay (LDS) and loo (leave-one-out Pearson) benchmarks, with their cached ground truth and training
runs (`eval/_runs`, built by `python -m eval.run` if absent): TracIn over the run's 4 checkpoints with the gradient
(``sgd``) or Adam's step ``∇log p(z) / (√v̂ + ε)`` (``adam``, the moments AdamW held at each checkpoint) as the
training-side feature, raw and cosine-normalised, and each checkpoint alone. Writes `eval/results/tracin_adam.json`
and prints a Markdown table.
"""

from __future__ import annotations

import torch

from llm_attrib.attributors.checkpoints import AdamCheckpoints
from llm_attrib.attributors.tracin import TracInAttributor
from llm_attrib.evaluation.lds import evaluate_lds
from llm_attrib.evaluation.loo import evaluate_loo
from llm_attrib.evaluation.suite import BENCHMARK_BUILDERS, SuiteConfig, _truth_dir, lds_truth, loo_truth
from llm_attrib.retraining.runs import N_CHECKPOINTS
from llm_attrib.store import write_json


def variants(benchmark) -> dict[str, TracInAttributor]:
    checkpoints, rates = benchmark.runs.checkpoints()
    moments = benchmark.runs.adam_moments()

    def tracin(k: slice, optimizer: str, normalize: str | None = None) -> TracInAttributor:
        return TracInAttributor(AdamCheckpoints(checkpoints[k], benchmark.tokenizer, moments[k]), rates[k],
                                optimizer=optimizer, normalize=normalize)

    table = {f"{optimizer}{'-cosine' if normalize else ''}": tracin(slice(None), optimizer, normalize)
             for optimizer in ("sgd", "adam") for normalize in (None, "cosine")}
    table.update({f"adam, checkpoint {k + 1} only": tracin(slice(k, k + 1), "adam") for k in range(len(checkpoints))})
    return table


def main() -> None:
    torch.set_num_threads(1)
    config = SuiteConfig(peers=())
    results: dict[str, dict[str, list[float]]] = {}
    for name, metric in (("roleplay", "LDS"), ("loo", "LOO Pearson")):
        benchmark = BENCHMARK_BUILDERS[name](config)
        benchmark.runs.cache_dir = _truth_dir(config, f"runs-{name}", benchmark, N_CHECKPOINTS)
        truth = lds_truth(benchmark, config, config.n_subsets) if name == "roleplay" else loo_truth(benchmark, config)
        for label, attributor in variants(benchmark).items():
            scores = attributor.fit(benchmark.train_records).score(benchmark.query_records, benchmark.train_records)
            summary = evaluate_lds(scores, truth) if name == "roleplay" else evaluate_loo(scores, truth, "pearson")
            results.setdefault(label, {})[metric] = [summary.mean, summary.stderr]
    write_json(config.out_dir / "results" / "tracin_adam.json", results)
    print("| TracIn variant | roleplay LDS | LOO Pearson |\n|---|---|---|")
    for label, row in results.items():
        print(f"| {label} | " + " | ".join(f"{row[m][0]:.3f} ± {row[m][1]:.3f}" for m in ("LDS", "LOO Pearson")) + " |")


if __name__ == "__main__":
    main()
