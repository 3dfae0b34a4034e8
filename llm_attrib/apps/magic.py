"""``llm-attrib trace --method magic``: one query traced by `MagicAttributor` through the run ``--run``."""

from __future__ import annotations

import argparse
import json

import torch

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


def records(scores: Scores, train: list, columns: object, top_k: int, largest: bool) -> list[TracedRecord]:
    order = torch.argsort(scores.values[0], descending=largest).tolist()[:top_k]
    return [TracedRecord(train_id=scores.train_ids[i], score=float(scores.values[0, i]),
                         text=record_text(train[i], columns, separator="")) for i in order]


def trace_magic(args: argparse.Namespace) -> int:
    if args.run is None:
        raise UserInputError("--method magic needs --run: the replayable run folder (llm-attrib train) of --model")
    if args.prefilter is not None:
        raise UserInputError("--prefilter narrows --method influence; --method magic scores every record of its run")
    run = ReplayableRun(args.run)
    adapter = options.make_adapter(args)
    check_final_model(run, adapter.model)
    train = options.load_train(args, adapter)
    magic = MagicAttributor(run, config=MagicConfig.from_arguments(args), progress=options.show_progress()).fit(train)
    completion = args.completion or generate_completion(adapter, args.prompt, args.max_new_tokens)
    query = {adapter.columns.prompt: args.prompt, adapter.columns.completion: completion}
    scores = magic.score([query])
    report = TraceReport(prompt=args.prompt, completion=completion, method=scores.method, units=scores.units,
                         top=records(scores, train, adapter.columns, args.top_k, True),
                         bottom=[r for r in records(scores, train, adapter.columns, args.top_k, False) if r.score < 0],
                         generated=args.completion is None)
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
