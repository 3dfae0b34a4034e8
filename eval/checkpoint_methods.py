"""`python -m eval.checkpoint_methods`: the methods that use a run's checkpoints, TracIn and TRAK (issue 10, items 1-2).

On the suite's benchmarks, with their cached ground truth and training runs (`eval/_runs`, built on first use):

* TracIn over the run's 4 checkpoints with the gradient (``sgd``) or Adam's step ``∇log p(z) / (√v̂ + ε)`` (``adam``,
  the moments AdamW held at each checkpoint) as the training-side feature, raw and cosine-normalised, and each
  checkpoint alone: roleplay LDS and leave-one-out Pearson;
* TRAK on the final model at 8, 16, 32 and 64 projected dimensions per side, and averaged over the 4 checkpoints,
  beside grad-dot and EK-FAC (library defaults): roleplay LDS and fact-retrieval MRR.

Writes `eval/results/checkpoint_methods.json` and prints both Markdown tables.
"""

from __future__ import annotations

import torch

from llm_attrib.adapters.causal_lm import CausalLMAdapter
from llm_attrib.attributors import ATTRIBUTORS
from llm_attrib.attributors.checkpoints import AdamCheckpoints
from llm_attrib.attributors.tracin import TracInAttributor
from llm_attrib.attributors.trak import TrakAttributor
from llm_attrib.demo.default import load_default
from llm_attrib.evaluation.benchmarks import FACTS_RECIPE
from llm_attrib.evaluation.fact_tracing import retrieval_report
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


def trak_variants(benchmark) -> dict[str, object]:
    checkpoints = benchmark.runs.checkpoints()[0]
    final = [CausalLMAdapter(benchmark.model, benchmark.tokenizer)]
    table = {f"trak, {dim} per side": TrakAttributor(final, projection_dim=dim) for dim in (8, 16, 32, 64)}
    table["trak over the 4 checkpoints"] = ATTRIBUTORS["trak-checkpoints"](benchmark.model, benchmark.tokenizer,
                                                                           training=benchmark.runs)
    for name in ("grad-dot", "influence-ekfac"):
        table[name] = ATTRIBUTORS[name](benchmark.model, benchmark.tokenizer, training=benchmark.runs)
    return table


def benchmark_of(config: SuiteConfig, name: str):
    benchmark = BENCHMARK_BUILDERS[name](config)
    benchmark.runs.cache_dir = _truth_dir(config, f"runs-{name}", benchmark, N_CHECKPOINTS)
    return benchmark


def scores_of(attributor, benchmark):
    return attributor.fit(benchmark.train_records).score(benchmark.query_records, benchmark.train_records)


def table(title: str, results: dict[str, dict[str, list[float]]], metrics: tuple[str, ...]) -> str:
    lines = [f"| {title} | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for label, row in results.items():
        cells = [f"{row[m][0]:.3f}" + (f" ± {row[m][1]:.3f}" if row[m][1] is not None else "") for m in metrics]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    torch.set_num_threads(1)
    config = SuiteConfig(peers=())
    tracin: dict[str, dict[str, list[float]]] = {}
    roleplay, loo = benchmark_of(config, "roleplay"), benchmark_of(config, "loo")
    truths = {"LDS": (roleplay, lds_truth(roleplay, config, config.n_subsets), evaluate_lds),
              "LOO Pearson": (loo, loo_truth(loo, config), lambda s, t: evaluate_loo(s, t, "pearson"))}
    for metric, (benchmark, truth, evaluate) in truths.items():
        for label, attributor in variants(benchmark).items():
            summary = evaluate(scores_of(attributor, benchmark), truth)
            tracin.setdefault(label, {})[metric] = [summary.mean, summary.stderr]
    trak: dict[str, dict[str, list[float]]] = {}
    for label, attributor in trak_variants(roleplay).items():
        summary = evaluate_lds(scores_of(attributor, roleplay), truths["LDS"][1])
        trak.setdefault(label, {})["roleplay LDS"] = [summary.mean, summary.stderr]
    facts = benchmark_of(config, "facts")
    corpus = load_default(config.cache_dir / "demo", recipe=FACTS_RECIPE).corpus
    for label, attributor in trak_variants(facts).items():
        report = retrieval_report(scores_of(attributor, facts), corpus)
        trak[label].update({"facts MRR": [report["all/mrr"], None],
                            "facts paraphrase MRR": [report["paraphrase/mrr"], None]})
    write_json(config.out_dir / "results" / "checkpoint_methods.json", {"tracin": tracin, "trak": trak})
    print(table("TracIn variant", tracin, ("LDS", "LOO Pearson")))
    print()
    print(table("method", trak, ("roleplay LDS", "facts MRR", "facts paraphrase MRR")))


if __name__ == "__main__":
    main()
