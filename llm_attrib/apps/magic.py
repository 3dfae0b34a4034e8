"""``llm-attrib trace --method magic``: one query traced by `MagicAttributor` through the run ``--run``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from llm_attrib.adapters.causal_lm import CausalLMAdapter
from llm_attrib.apps import options
from llm_attrib.apps.trace import TracedRecord, TraceReport, format_report, generate_completion
from llm_attrib.attributors.magic import MagicAttributor, MagicConfig
from llm_attrib.data import record_text
from llm_attrib.errors import UserInputError
from llm_attrib.scores import Scores
from llm_attrib.training import ReplayableRun


def check_final_model(run: ReplayableRun, model: torch.nn.Module) -> None:
    """Refuse a ``--model`` whose trained parameters are not the run's final ones."""
    final = run.state(run.total_steps).params
    loaded = dict(model.named_parameters())
    for name, value in final.items():
        if name not in loaded or not torch.equal(loaded[name].detach().cpu().to(value.dtype), value):
            raise UserInputError(f"--model is not the final model of --run {run.directory} (parameter {name} "
                                 "differs); pass the model folder that llm-attrib train wrote (RUN/model)")


def records(scores: Scores, train: list, columns: object, top_k: int, largest: bool, query: int = 0) -> list[TracedRecord]:
    """Query ``query``'s ``top_k`` records of highest (``largest``) or lowest score."""
    order = torch.argsort(scores.values[query], descending=largest).tolist()[:top_k]
    return [TracedRecord(train_id=scores.train_ids[i], score=float(scores.values[query, i]),
                         text=record_text(train[i], columns, separator="")) for i in order]


def reports_of(scores: Scores, train: list, columns: object, pairs: list[tuple[str, str]], generated: list[bool],
               top_k: int) -> list[TraceReport]:
    """One `TraceReport` per query: proponents, and opponents (records with negative scores)."""
    return [TraceReport(prompt=prompt, completion=completion, method=scores.method, units=scores.units,
                        top=records(scores, train, columns, top_k, True, q),
                        bottom=[r for r in records(scores, train, columns, top_k, False, q) if r.score < 0],
                        generated=generated[q]) for q, (prompt, completion) in enumerate(pairs)]


def trace_magic(args: argparse.Namespace) -> int:
    if args.run is None:
        raise UserInputError("--method magic needs --run: the replayable run folder (llm-attrib train) of --model")
    if args.prefilter is not None:
        raise UserInputError("--prefilter narrows --method influence; --method magic scores every record of its run")
    run = ReplayableRun(args.run)
    adapter = options.make_adapter(args)
    check_final_model(run, adapter.model)
    train = options.load_train(args, adapter)
    magic = MagicAttributor(run, config=MagicConfig.from_arguments(args), progress=options.show_progress(),
                            cache_dir=args.factors).fit(train)
    completion = args.completion or generate_completion(adapter, args.prompt, args.max_new_tokens)
    query = {adapter.columns.prompt: args.prompt, adapter.columns.completion: completion}
    scores = magic.score([query])
    report, = reports_of(scores, train, adapter.columns, [(args.prompt, completion)], [args.completion is None],
                         args.top_k)
    smoothness = magic.last_smoothness
    if args.json:
        print(json.dumps({**report.to_dict(), "cost": {k: v for k, v in scores.metadata.items() if k != "smoothness"},
                          "smoothness": None if smoothness is None else smoothness.to_dict()}, indent=2, default=str))
        return 0
    print(format_report(report, opponents=True))
    cost = scores.metadata
    print(f"\ncost: {cost['seconds_per_query']:.1f} s"
          + (f" ({cost['cost_per_query_in_runs']:.1f} x the recorded training)" if "cost_per_query_in_runs" in cost
             else "") + f", {cost['peak_state_memory_bytes'] / 2**20:.1f} MiB of optimizer states held")
    print(smoothness.summary() if smoothness is not None else
          "metasmoothness not checked (--magic-smoothness-directions N): the scores are exact derivatives, but "
          "whether they predict leaving records out is not measured")
    return 0


def run_trace_magic(recipe: Any, name: str) -> list[Path]:
    """A trace recipe with ``method: {name: magic, run: RUN}``: every query against the run's records, by the run's
    final model; writes scores.json (with the cost and, with ``method.options.smoothness_directions``, the
    metasmoothness) and report.md."""
    from llm_attrib.apps.run import (SIGN, GenerateSpec, metadata, query_pairs, require, train_records,
                                     trace_markdown, write_text)
    from llm_attrib.store import write_json

    require(recipe, "trace", needs=("method.run", "queries"),
            refuses=("model", "base_model", "encoding", "validation", "method.estimator", "method.prefilter",
                     "method.factors", "train.label", "train.features"))
    config = MagicConfig.from_dict(recipe.method.options, where="method.options")
    run = ReplayableRun(recipe.method.run)
    model = run.model_at(run.state(run.total_steps))
    adapter = CausalLMAdapter(model, run.tokenizer, columns=run.adapter.columns, max_length=run.adapter.max_length,
                              chat_template=run.adapter.chat_template, encoding=run.adapter.encoding)
    train = train_records(recipe)
    magic = MagicAttributor(run, config=config, progress=options.show_progress()).fit(train)
    generate = recipe.generate or GenerateSpec()
    asked = query_pairs(recipe)
    pairs = [(prompt, completion if completion is not None else
              generate_completion(adapter, prompt, generate.max_new_tokens, generate.stop, f"query {q}"))
             for q, (prompt, completion) in enumerate(asked, start=1)]
    columns = run.adapter.columns
    scores = magic.score([{columns.prompt: prompt, columns.completion: completion} for prompt, completion in pairs])
    reports = reports_of(scores, train, columns, pairs, [completion is None for _, completion in asked],
                         recipe.output.top_k)
    meta = {**metadata(recipe, "trace-scores", model, train), "method": scores.method, "units": scores.units,
            "sign": SIGN, "run": str(run.directory), "run_id": run.run_id}
    out = Path(recipe.output.dir)
    write_json(out / "scores.json", {
        "metadata": meta, "train_ids": scores.train_ids, "cost": {k: v for k, v in scores.metadata.items()
                                                                  if k != "smoothness"},
        "smoothness": scores.metadata.get("smoothness"),
        "queries": [{**report.to_dict(), "scores": row} for report, row in zip(reports, scores.values.tolist())],
    })
    write_text(out / "report.md", trace_markdown(name, recipe, reports, meta, train))
    return [out / "scores.json", out / "report.md"]
