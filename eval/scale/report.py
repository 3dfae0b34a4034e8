"""Render ``eval/scale/results.md`` from the JSON files written by quality.py, throughput.py and memory.py.

Run: ``python -m eval.scale.report``.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent


def table(rows: list[dict], columns: list[str]) -> list[str]:
    def cell(value: object) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + [
        "| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]


def main() -> None:
    lines = ["# Scale results (CPU only; no GPU in this session)", ""]
    quality = HERE / "quality.json"
    if quality.exists():
        q = json.loads(quality.read_text())
        lines += [f"## Prefilter recall of full EK-FAC's top-10 (demo corpus, {q['n_train']} docs, "
                  f"{q['n_queries']} queries; full scoring {q['full_seconds']:.3g} s)", ""]
        lines += table(q["prefilter"], ["kind", "K", "recall@10", "scored", "seconds", "speedup"]) + [""]
        lines += ["## Low-rank query batching vs full rank (same corpus and queries)", ""]
        lines += table(q["query_rank"], ["rank", "spearman_mean", "spearman_min", "top10_overlap", "seconds"]) + [""]
    throughput = HERE / "throughput.json"
    if throughput.exists():
        rows = json.loads(throughput.read_text())
        lines += ["## Throughput: training documents scored per second (8 queries, empirical Fisher in both "
                  "libraries, TF-IDF prefilter K=100; times in seconds)", ""]
        lines += table(rows, ["n_train", "ours_fit", "ours_score", "ours_docs_per_s", "prefilter_scored",
                              "prefilter_score", "prefilter_docs_per_s", "kronfluence_fit", "kronfluence_score",
                              "kronfluence_docs_per_s", "spearman_vs_kronfluence",
                              "top10_overlap_vs_kronfluence"]) + [""]
    realistic = HERE / "realistic.json"
    if realistic.exists():
        row = json.loads(realistic.read_text())
        lines += [f"## A ~100M-parameter Llama (random init, {row['tracked_layers']} tracked MLP layers, "
                  f"{row['tracked_parameters'] / 1e6:.0f}M tracked parameters; seconds)", ""]
        lines += table([row], ["parameters", "n_train", "n_queries", "tokens_per_doc", "ours_fit",
                               "kronfluence_fit", "fit_speedup", "ours_score", "kronfluence_score", "score_speedup",
                               "spearman_vs_kronfluence", "top10_overlap_vs_kronfluence"]) + [""]
    memory = HERE / "memory.json"
    if memory.exists():
        lines += ["## Score-stage peak RSS growth vs layer partitions (100 queries, demo corpus; MiB)", ""]
        lines += table(json.loads(memory.read_text()), ["layer_partitions", "query_matrices_mib_formula",
                                                        "score_peak_growth_mib"]) + [""]
    fit_memory = HERE / "fit_memory.json"
    if fit_memory.exists():
        lines += ["## Fit-stage peak RSS growth vs layer partitions (random 97.5M Llama, 16 passages, EK-FAC with a "
                  "cache_dir; MiB)", ""]
        lines += table(json.loads(fit_memory.read_text()), [
            "malloc_mmap_threshold", "layer_partitions", "fit_seconds", "all_factors_mib", "factors_held_after_fit_mib",
            "fit_formula_mib", "fit_peak_growth_mib"]) + [""]
    (HERE / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
