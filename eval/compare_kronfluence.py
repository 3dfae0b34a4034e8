"""`python -m eval.compare_kronfluence`: our EK-FAC against kronfluence's on the embedded demo model, matched.

Matched settings (issue 2): the demo model (`llm_attrib.demo.default.load_default()`), the same tracked layers
(the MLP Linear/Conv1D layers ``…mlp.c_fc`` and ``…mlp.c_proj``), damping 1e-8 (absolute), every training
document in the fitted sample (both fit on all N documents, so the sample is identical), true Fisher
(targets sampled from the model), the same batch size, the same measurement (Σ log Pr(completion token)) and
training loss (summed token NLL), the same number of torch threads. kronfluence's scores are negated to our
sign (positive = the document raises the query's log-probability).

Reported: Spearman correlation of the two ``[n_query, n_train]`` score matrices (all entries, and the mean of
per-query correlations), Pearson of all entries, and wall-clock seconds of fit (kronfluence: covariance,
eigendecomposition, lambda) and score, each the median of ``--repeats`` runs (the two libraries alternate).
Results go to ``eval/results/kronfluence_match.json`` and, with ``--readme``, the section between the
``kronfluence-match`` markers of ``eval/README.md``.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

START, END = "<!-- kronfluence-match:start -->", "<!-- kronfluence-match:end -->"
COMMAND = "python -m eval.compare_kronfluence --readme"


def _ours(bundle: Any, queries: list[dict], damping: float, batch_size: int, fisher: str = "sampled",
          seed: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
    from llm_attrib.adapters.causal_lm import CausalLMAdapter
    from llm_attrib.attributors.influence import InfluenceAttributor

    start = time.perf_counter()
    attributor = InfluenceAttributor(CausalLMAdapter(bundle.model, bundle.tokenizer, modules="mlp"), "ekfac",
                                     damping=damping, batch_size=batch_size, max_examples=None, seed=seed,
                                     fisher=fisher)
    attributor.fit(bundle.train_records)
    fit = time.perf_counter() - start
    start = time.perf_counter()
    scores = attributor.score(queries, bundle.train_records)
    score = time.perf_counter() - start
    layers = [layer.name for layer in attributor.adapter.layers]
    return scores.values.double(), {"fit": fit, "score": score, "layers": layers}


def _theirs(bundle: Any, queries: list[dict], damping: float, batch_size: int, fisher: str = "sampled",
            seed: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
    from eval.peers.kronfluence_peer import KronfluencePeer

    start = time.perf_counter()
    peer = KronfluencePeer(bundle.model, bundle.tokenizer, strategy="ekfac", damping=damping, batch_size=batch_size,
                           seed=seed, fisher=fisher)
    peer.fit(bundle.train_records)
    fit = time.perf_counter() - start
    start = time.perf_counter()
    scores = peer.score(queries, bundle.train_records)
    score = time.perf_counter() - start
    return scores.values.double(), {"fit": fit, "score": score, "layers": peer.tracked,
                                    **{f"fit/{k}": v for k, v in peer.timings.items()}}


def compare(scores_ours: torch.Tensor, scores_theirs: torch.Tensor, scale: float = 1.0) -> dict[str, float]:
    """Spearman (all entries; mean ± s.e. per query) and Pearson (all entries) of two score matrices, and the
    relative L2 difference of ``scale × ours`` from theirs."""
    a, b = scale * scores_ours.numpy(), scores_theirs.numpy()
    per_query = np.array([stats.spearmanr(x, y).statistic for x, y in zip(a, b)])
    return {
        "spearman_all": float(stats.spearmanr(a.ravel(), b.ravel()).statistic),
        "pearson_all": float(np.corrcoef(a.ravel(), b.ravel())[0, 1]),
        "spearman_per_query_mean": float(per_query.mean()),
        "spearman_per_query_min": float(per_query.min()),
        "spearman_per_query_stderr": float(per_query.std(ddof=1) / np.sqrt(len(per_query))),
        "relative_l2": float(np.linalg.norm(a - b) / np.linalg.norm(b)),
    }


def run(repeats: int = 3, damping: float = 1e-8, batch_size: int = 16, threads: int = 1) -> dict[str, Any]:
    from llm_attrib.demo.default import load_default

    torch.set_num_threads(threads)
    bundle = load_default()
    queries = [{k: q[k] for k in ("id", "prompt", "completion")} for q in bundle.corpus.queries]
    timings: dict[str, dict[str, list[float]]] = {"ours": {}, "kronfluence": {}}
    runners = {"ours": _ours, "kronfluence": _theirs}
    values: dict[str, torch.Tensor] = {}
    layers: dict[str, list[str]] = {}
    for repeat in range(repeats):
        order = ["ours", "kronfluence"] if repeat % 2 == 0 else ["kronfluence", "ours"]
        for name in order:
            scores, timing = runners[name](bundle, queries, damping, batch_size)
            values[name], layers[name] = scores, timing.pop("layers")
            for key, seconds in timing.items():
                timings[name].setdefault(key, []).append(seconds)
            print(f"[compare] repeat {repeat + 1}/{repeats} {name}: "
                  + ", ".join(f"{k} {v:.2f} s" for k, v in timing.items()), flush=True)
    median = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in timings.items()}
    for t in median.values():
        t["total"] = t["fit"] + t["score"]
    n_train = len(bundle.train_records)
    # Agreement. Ours preconditions with (N·(F̄ + λI))⁻¹, kronfluence with (F̄ + λI)⁻¹: ours × N should equal theirs.
    # The sampled (true) Fisher draws random targets, so two seeds of the SAME library disagree too: that
    # seed-to-seed agreement is the ceiling for ours-vs-kronfluence; the empirical Fisher is deterministic.
    print("[compare] agreement runs (empirical Fisher; second seeds)", flush=True)
    empirical = {name: runners[name](bundle, queries, damping, batch_size, "empirical")[0] for name in runners}
    second = {name: runners[name](bundle, queries, damping, batch_size, "sampled", 1)[0] for name in runners}
    agreement = {
        "empirical Fisher: ours vs kronfluence": compare(empirical["ours"], empirical["kronfluence"], n_train),
        "true Fisher (sampled), seed 0: ours vs kronfluence": compare(values["ours"], values["kronfluence"], n_train),
        "true Fisher: ours seed 0 vs ours seed 1": compare(values["ours"], second["ours"]),
        "true Fisher: kronfluence seed 0 vs seed 1": compare(values["kronfluence"], second["kronfluence"]),
        "true Fisher, 2-seed mean: ours vs kronfluence": compare(values["ours"] + second["ours"],
                                                                 values["kronfluence"] + second["kronfluence"], n_train),
    }
    return {
        "settings": {"model": "llm_attrib.demo.default.load_default()", "n_train": n_train,
                     "n_query": len(queries), "damping": damping, "batch_size": batch_size, "threads": threads,
                     "fitted_sample": "all training documents (both)",
                     "fisher": "timed runs: true Fisher (sampled targets), seed 0, both", "repeats": repeats,
                     "machine": platform.machine(), "layers_ours": layers["ours"],
                     "layers_kronfluence": layers["kronfluence"]},
        "agreement": agreement,
        "seconds_median": median,
        "seconds_all": timings,
        "ratio_ours_over_kronfluence": {k: median["ours"][k] / median["kronfluence"][k] for k in ("fit", "score", "total")},
        "sign": "positive score = the training document raises the query's log-probability (kronfluence negated)",
        "scale": "ours × n_train = kronfluence (ours preconditions with the summed-loss Hessian N·(F̄ + λI))",
    }


def markdown(result: dict[str, Any]) -> str:
    s, agree, sec, ratio = result["settings"], result["agreement"], result["seconds_median"], result["ratio_ours_over_kronfluence"]
    kf = sec["kronfluence"]
    stages = ", ".join(f"{k.split('/')[1]} {v:.2f}" for k, v in kf.items() if k.startswith("fit/"))
    lines = [
        f"Measured by `{COMMAND}` on {s['machine']} ({s['threads']} torch thread, median of {s['repeats']} alternating runs): "
        f"demo model, {s['n_train']} training documents, {s['n_query']} queries, damping {s['damping']:g}, batch size "
        f"{s['batch_size']}, {len(s['layers_ours'])} MLP layers, fitted sample = all documents, true Fisher.",
        "",
        "| | ours (llm_attrib EK-FAC) | kronfluence EK-FAC | ours / kronfluence |",
        "|---|---|---|---|",
        f"| fit s | {sec['ours']['fit']:.2f} | {kf['fit']:.2f} ({stages}) | {ratio['fit']:.2f} |",
        f"| score s | {sec['ours']['score']:.2f} | {kf['score']:.2f} | {ratio['score']:.2f} |",
        f"| total s | {sec['ours']['total']:.2f} | {kf['total']:.2f} | {ratio['total']:.2f} |",
        "",
        "| score matrices compared | Spearman (all entries) | Spearman per query: mean ± s.e. (min) | Pearson (all) "
        "| relative L2 |",
        "|---|---|---|---|---|",
    ]
    for label, a in agree.items():
        lines.append(f"| {label} | {a['spearman_all']:.4f} | {a['spearman_per_query_mean']:.4f} ± "
                     f"{a['spearman_per_query_stderr']:.4f} ({a['spearman_per_query_min']:.4f}) | {a['pearson_all']:.4f} "
                     f"| {a['relative_l2']:.4f} |")
    return "\n".join(lines)


def write_readme(readme: Path, text: str) -> None:
    content = readme.read_text()
    block = f"{START}\n{text}\n{END}"
    if START in content and END in content:
        content = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, content, flags=re.S)
    else:
        content = content.rstrip() + "\n\n" + block + "\n"
    readme.write_text(content)


def main(argv: list[str] | None = None) -> int:
    from llm_attrib.store import write_json

    parser = argparse.ArgumentParser(prog="python -m eval.compare_kronfluence", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--damping", type=float, default=1e-8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("eval/results/kronfluence_match.json"))
    parser.add_argument("--readme", action="store_true", help="rewrite the kronfluence-match section of eval/README.md")
    args = parser.parse_args(argv)
    result = run(args.repeats, args.damping, args.batch_size, args.threads)
    write_json(args.out, result)
    text = markdown(result)
    print(text)
    if args.readme:
        write_readme(Path("eval/README.md"), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
