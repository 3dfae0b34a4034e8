"""The MAGIC benchmark: exact metagradients of a replayable fine-tune against EK-FAC and grad-dot on eval's LDS.

A 2-layer GPT-2 is trained (`train_causal_lm`) on ``n_pretrain`` role-play records, then fine-tuned replayably
(`llm_attrib.training`) on ``n_train`` others, in two settings: *smooth* (warm-up, cosine decay, lr ``lr``) and
*rough* (constant ``rough_lr``, no warm-up). Measured per setting:

* same-seed leave-k-out LDS: the fine-tune replayed with the same seed, order and batches and a random ``leave_out``
  of the records at loss weight 0 (their batches' token counts unchanged: the weighting MAGIC differentiates),
  Spearman per query between each subset's summed kept scores and the replayed ``log Pr(completion | prompt)``;
* the same with α = ``alpha`` kept (same seed), and (smooth setting) the usual α-LDS with every subset retrained
  from a fresh seed (its own record order) on the kept records only;
* metasmoothness (`llm_attrib.training.smoothness`) along ``smoothness_directions`` leave-``leave_out``-out
  directions;
* cost: MAGIC seconds per query (all queries in one reverse pass, and one query alone) as a multiple of the
  recorded fine-tune's wall time; peak resident memory of a process that only fine-tunes vs one that scores.
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from eval.grid.data import Budget, fit_lengths, texts
from eval.magic.config import BenchConfig
from llm_attrib.adapters.causal_lm import CausalLMAdapter
from llm_attrib.attributors.influence import InfluenceAttributor
from llm_attrib.attributors.magic import MagicAttributor
from llm_attrib.data import EncodingConfig
from llm_attrib.demo.model import tiny_gpt2
from llm_attrib.demo.tokenizer import train_tokenizer
from llm_attrib.demo.training import train_causal_lm
from llm_attrib.evaluation.benchmarks import roleplay_records
from llm_attrib.evaluation.metrics import linear_datamodeling_score
from llm_attrib.store import data_fingerprint, load_tensors, save_tensors, write_json
from llm_attrib.training import ReplayableRun, TrainConfig, train_replayable
from llm_attrib.training.smoothness import metasmoothness, outcome, random_subsets

BUDGET = Budget(prompt=24, completion=38, document=62)
EOS = EncodingConfig(eos=True)
HERE = Path(__file__).resolve().parent


def _log(message: str) -> None:
    print(f"[magic {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build(config: BenchConfig) -> tuple[Any, Any, list[dict], list[dict]]:
    """The tokenizer, the pre-trained base model, the fine-tuning and the query records."""
    raw = roleplay_records(config.data_dir / "gpteacher_roleplay.json", config.n_pretrain + config.n_train + config.n_query,
                   config.seed)
    tokenizer = train_tokenizer(texts(raw[: config.n_pretrain + config.n_train]), config.vocab_size,
                                model_max_length=BUDGET.context)
    records = fit_lengths(tokenizer, raw, BUDGET)
    pretrain = records[: config.n_pretrain]
    train = records[config.n_pretrain: config.n_pretrain + config.n_train]
    queries = records[config.n_pretrain + config.n_train:]
    base_dir = config.cache_dir / f"base-{data_fingerprint([config.to_dict()[k] for k in ('n_pretrain', 'n_embd', 'vocab_size', 'seed')])[:10]}"
    model = tiny_gpt2(len(tokenizer), n_positions=BUDGET.context, n_embd=config.n_embd, n_layer=2, n_head=4,
                      seed=config.seed, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    weights = base_dir / "model.safetensors"
    if weights.is_file():
        tensors, _ = load_tensors(weights, expect={"kind": "magic-bench-base"})
        model.load_state_dict(tensors, strict=False)
    else:
        _log(f"pre-training the base model on {len(pretrain)} records")
        train_causal_lm(model, tokenizer, pretrain, epochs=4, lr=1e-3, batch_size=8, seed=config.seed, num_threads=1)
        save_tensors(weights, dict(model.named_parameters()), {"kind": "magic-bench-base"})
    return tokenizer, model.eval(), train, queries


def settings(config: BenchConfig) -> dict[str, TrainConfig]:
    common = dict(epochs=config.epochs, batch_size=config.batch_size, seed=config.seed)
    return {"smooth": TrainConfig(lr=config.lr, schedule="cosine", warmup_steps=config.warmup_steps, **common),
            "rough": TrainConfig(lr=config.rough_lr, **common)}


def _cached_rows(path: Path, count: int, compute) -> torch.Tensor:
    """``[count, Q]`` outcomes, row by row, cached in ``path`` (JSON) so that a killed run resumes."""
    rows = json.loads(path.read_text()) if path.is_file() else []
    while len(rows) < count:
        rows.append(compute(len(rows)).tolist())
        write_json(path, rows)
        if len(rows) % 8 == 0:
            _log(f"{path.name}: {len(rows)}/{count}")
    return torch.tensor(rows[:count], dtype=torch.float64)


def _lds(scores: torch.Tensor, kept: torch.Tensor, outcomes: torch.Tensor) -> dict[str, float]:
    summary = linear_datamodeling_score(scores.double(), kept.bool(), outcomes)
    return {"mean": summary.mean, "stderr": summary.stderr}


def magic_scores(run: ReplayableRun, train: list[dict], queries: list[dict], path: Path) -> tuple[torch.Tensor, dict]:
    if path.is_file():
        tensors, metadata = load_tensors(path, expect={"kind": "magic-bench-scores", "run_id": run.run_id})
        return tensors["scores"], metadata["cost"]
    magic = MagicAttributor(run, query_batch=len(queries)).fit(train)
    scores = magic.score(queries)
    alone = MagicAttributor(run, query_batch=1, check_replay=False).fit(train).score(queries[:1])
    cost = {"all_in_one_pass": scores.metadata, "one_query": alone.metadata, "train_seconds": run.train_seconds}
    save_tensors(path, {"scores": scores.values}, {"kind": "magic-bench-scores", "run_id": run.run_id, "cost": cost})
    return scores.values, cost


def influence_scores(run: ReplayableRun, tokenizer: Any, train: list[dict], queries: list[dict],
                     path: Path) -> dict[str, torch.Tensor]:
    if path.is_file():
        tensors, _ = load_tensors(path, expect={"kind": "magic-bench-influence", "run_id": run.run_id})
        return tensors
    final = run.model_at(run.state(run.total_steps))
    out = {}
    for name, curvature in (("grad-dot", "identity"), ("ekfac", "ekfac")):
        adapter = CausalLMAdapter(final, tokenizer, encoding=EOS)
        out[name] = InfluenceAttributor(adapter, curvature).fit(train).score(queries, train).values.double()
    save_tensors(path, out, {"kind": "magic-bench-influence", "run_id": run.run_id})
    return out


def _resident_bytes() -> int:
    import os

    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_child(task: str, run_dir: str, n_queries: int, config_dict: dict) -> dict[str, int]:
    """A fresh process that fine-tunes once (``train``) or scores queries (``magic``): its resident memory before the
    task and the peak above that during it (sampled every 5 ms), in bytes."""
    import threading

    torch.set_num_threads(1)
    config = BenchConfig.from_dict(config_dict)
    tokenizer, base, train, queries = build(config)
    before, peak, done = _resident_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _resident_bytes())
            done.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if task == "train":
        train_replayable(base, tokenizer, train, Path(run_dir), settings(config)["smooth"], encoding=EOS)
    else:
        run = ReplayableRun(run_dir, base, tokenizer)
        MagicAttributor(run, query_batch=n_queries, check_replay=False).fit(train).score(queries[:n_queries])
    done.set()
    sampler.join()
    return {"before": before, "peak_above_before": max(peak[0], _resident_bytes()) - before}


def cpu_cost(config: BenchConfig, run: ReplayableRun, train: list[dict], queries: list[dict]) -> dict[str, float]:
    """Process CPU seconds (robust to other jobs on the machine, unlike wall time) of one replay of the fine-tune and
    of MAGIC for 1 and for 4 queries in one reverse pass, measured back to back; and for 1 query on the same run
    recorded with every state kept (``checkpoint_every=1``: nothing recomputed)."""
    path = config.cache_dir / "cpu-cost.json"
    if path.is_file():
        return json.loads(path.read_text())
    began = time.process_time()
    run.replay(check=False)
    result = {"replay": time.process_time() - began}
    for n in (1, 4):
        magic = MagicAttributor(run, query_batch=n, check_replay=False).fit(train)
        began = time.process_time()
        magic.score(queries[:n])
        result[f"magic_{n}_queries"] = time.process_time() - began
    scratch = config.cache_dir / "scratch-every-step"  # every state kept: no recomputation, T states on disk
    every = train_replayable(run.initial_model, run.tokenizer, train, scratch, run.config.replace(checkpoint_every=1),
                             encoding=EOS)
    magic = MagicAttributor(every, query_batch=1, check_replay=False).fit(train)
    began = time.process_time()
    magic.score(queries[:1])
    result["magic_1_query_every_state_kept"] = time.process_time() - began
    shutil.rmtree(scratch, ignore_errors=True)
    write_json(path, result)
    return result


def peak_memory(config: BenchConfig, run_dir: Path) -> dict[str, dict[str, int]]:
    path = config.cache_dir / "peak-memory.json"
    if path.is_file():
        return json.loads(path.read_text())
    context = multiprocessing.get_context("spawn")
    result = {}
    scratch = config.cache_dir / "scratch-train"
    for label, task, n in (("fine-tune once", "train", 0), ("magic, 1 query", "magic", 1),
                           (f"magic, {config.n_query} queries in one pass", "magic", config.n_query)):
        shutil.rmtree(scratch, ignore_errors=True)
        with context.Pool(1) as pool:
            result[label] = pool.apply(_peak_rss_child, (task, str(scratch if task == "train" else run_dir), n,
                                                         {k: str(v) if isinstance(v, Path) else v
                                                          for k, v in config.to_dict().items()}))
    shutil.rmtree(scratch, ignore_errors=True)
    write_json(path, result)
    return result


def evaluate_setting(config: BenchConfig, name: str, train_config: TrainConfig, tokenizer: Any, base: Any,
                     train: list[dict], queries: list[dict]) -> tuple[dict[str, Any], ReplayableRun]:
    folder = config.cache_dir / name
    _log(f"{name}: fine-tuning {train_config.epochs} epochs on {len(train)} records")
    run = train_replayable(base, tokenizer, train, folder / "run", train_config, encoding=EOS)
    _log(f"{name}: {run.total_steps} steps in {run.train_seconds or float('nan'):.1f} s; MAGIC")
    scores, cost = magic_scores(run, train, queries, folder / "magic.safetensors")
    baselines = influence_scores(run, tokenizer, train, queries, folder / "influence.safetensors")
    methods = {"magic": scores, **baselines}
    batch = run.adapter.collate(run.adapter.encode(queries, name="query"))
    n = len(train)

    k = max(1, round(config.leave_out * n))
    removed = random_subsets(n, config.loo_subsets, config.leave_out, seed=config.seed + 1)
    loo = _cached_rows(folder / "same-seed-leave-out.json", config.loo_subsets,
                       lambda m: outcome(run, batch, run.weights.double() * (1 - removed[m])))
    kept_half = random_subsets(n, config.lds_subsets, config.alpha, seed=config.seed + 2)
    half = _cached_rows(folder / "same-seed-alpha.json", config.lds_subsets,
                        lambda m: outcome(run, batch, run.weights.double() * kept_half[m]))
    result: dict[str, Any] = {
        "steps": run.total_steps, "train_config": train_config.to_dict(), "train_seconds": run.train_seconds,
        "cost": cost, "leave_out_k": k,
        "same_seed_leave_k_out_lds": {m: _lds(v, 1 - removed, loo) for m, v in methods.items()},
        "same_seed_alpha_lds": {m: _lds(v, kept_half, half) for m, v in methods.items()},
    }
    _log(f"{name}: metasmoothness")
    smooth = metasmoothness(run, batch, scores, directions=config.smoothness_directions, fraction=config.leave_out,
                            seed=config.seed + 3)
    result["smoothness"] = smooth.to_dict()
    result["smoothness_summary"] = smooth.summary()
    if name == "smooth":
        fresh = _cached_rows(folder / "fresh-seed-alpha.json", config.lds_subsets,
                             lambda m: _fresh_outcome(config, train_config, tokenizer, base, train, batch, run,
                                                      kept_half[m], m))
        result["fresh_seed_alpha_lds"] = {m: _lds(v, kept_half, fresh) for m, v in methods.items()}
    return result, run


def _fresh_outcome(config: BenchConfig, train_config: TrainConfig, tokenizer: Any, base: Any, train: list[dict],
                   batch: Any, run: ReplayableRun, kept: torch.Tensor, m: int) -> torch.Tensor:
    """The queries' outcomes after fine-tuning on the kept records only, from the fresh seed ``1000 + m``."""
    scratch = config.cache_dir / "scratch-fresh"
    shutil.rmtree(scratch, ignore_errors=True)
    subset = [r for r, keep in zip(train, kept.tolist()) if keep]
    other = train_replayable(base, tokenizer, subset, scratch, train_config.replace(seed=1000 + m,
                             checkpoint_every=10**6), encoding=EOS)
    values = outcome(other, batch)
    shutil.rmtree(scratch, ignore_errors=True)
    return values


def run_benchmark(config: BenchConfig) -> dict[str, Any]:
    torch.set_num_threads(1)
    tokenizer, base, train, queries = build(config)
    results: dict[str, Any] = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in config.to_dict().items()},
                               "settings": {}}
    runs = {}
    for name, train_config in settings(config).items():
        results["settings"][name], runs[name] = evaluate_setting(config, name, train_config, tokenizer, base, train,
                                                                 queries)
        write_json(HERE / "results.json", results)
    _log("CPU time")
    results["cpu_seconds"] = cpu_cost(config, runs["smooth"], train, queries)
    write_json(HERE / "results.json", results)
    _log("peak memory")
    results["peak_rss_bytes"] = peak_memory(config, runs["smooth"].directory)
    write_json(HERE / "results.json", results)
    from eval.magic.report import write_report

    write_report(HERE / "README.md", results)
    return results
