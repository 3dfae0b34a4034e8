"""``llm-attrib audit``: its options, the outputs to audit, and the run that writes audit.json and audit.md (and
``--html``'s report)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from llm_attrib.apps import options
from llm_attrib.apps.audit.findings import audit, work_labels
from llm_attrib.apps.audit.permutation_test import DEFAULT_ALPHA, DEFAULT_CORRECTION, DEFAULT_DRAWS
from llm_attrib.apps.audit.rendering import audit_markdown, format_verdicts
from llm_attrib.apps.html_report import audit_html
from llm_attrib.apps.trace import at_least_one
from llm_attrib.apps.run import write_text
from llm_attrib.data import load_records
from llm_attrib.distributed import is_main_process
from llm_attrib.errors import UserInputError
from llm_attrib.significance import CORRECTIONS
from llm_attrib.store import write_json

HELP = "did protected works in the training data shape a model's output?"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("audit", help=HELP, description=f"Audit copyright provenance: {HELP}")
    options.add_model_and_data_options(parser)
    options.add_attributor_options(parser)
    options.add_prefilter_options(parser)
    group = parser.add_argument_group("audit")
    group.add_argument("--work-column", required=True,
                       help="training-data column naming each record's protected work (empty/null = unprotected)")
    group.add_argument("--work", action="append", default=None, metavar="NAME",
                       help="audit only this work (repeatable; default: every work in the column)")
    group.add_argument("--prompt", default=None, help="the output's prompt (or --outputs for several)")
    group.add_argument("--completion", default=None, help="the output's completion (default: the model's greedy one)")
    group.add_argument("--outputs", default=None,
                       help="file of outputs to audit: columns prompt and (optional, else generated) completion")
    group.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                       help=f"significance level (default {DEFAULT_ALPHA})")
    group.add_argument("--correction", default=DEFAULT_CORRECTION, choices=list(CORRECTIONS),
                       help="multiple-testing correction over all (output, work) pairs (default: holm)")
    group.add_argument("--draws", type=int, default=DEFAULT_DRAWS,
                       help=f"random groups per work size in the permutation test (default {DEFAULT_DRAWS}); "
                            "seeded by --seed")
    group.add_argument("--top-k", type=at_least_one, default=5, help="top records listed per work (at least 1)")
    group.add_argument("--max-new-tokens", type=at_least_one, default=32,
                       help="generated tokens at most, when an output has no completion (at least 1)")
    group.add_argument("--output-dir", default="audit", help="where audit.json and audit.md go (default: ./audit)")
    group.add_argument("--html", default=None, metavar="FILE",
                       help="also write a self-contained HTML report (verdicts, evidence, overlap highlighted)")
    parser.set_defaults(func=run)


def output_pairs(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """``(prompt, completion or None)`` per output: ``--prompt``/``--completion`` or the ``--outputs`` file."""
    if (args.prompt is None) == (args.outputs is None):
        raise UserInputError("give the output to audit: --prompt (with or without --completion) or --outputs FILE")
    if args.outputs is None:
        return [(args.prompt, args.completion)]
    if args.completion is not None:
        raise UserInputError("--completion goes with --prompt; put completions in the --outputs file")
    rows = load_records(args.outputs, required=["prompt"])
    return [(row["prompt"], row.get("completion") or None) for row in rows]


def run(args: argparse.Namespace) -> int:
    """Audit; rank 0 writes audit.json and audit.md and prints the verdict table."""
    adapter = options.make_adapter(args)
    train = options.load_train(args, adapter)
    works = work_labels(train, args.work_column)
    outputs = output_pairs(args)
    attributor = options.make_attributor(args, adapter)
    report = audit(attributor, train, works, outputs, only=args.work, alpha=args.alpha, correction=args.correction,
                   draws=args.draws, seed=args.seed, top_k=args.top_k, max_new_tokens=args.max_new_tokens,
                   prefilter=options.make_prefilter(args, train))
    if not is_main_process():
        return 0
    report.metadata["arguments"] = {k: v for k, v in vars(args).items() if k != "func"}
    out = Path(args.output_dir)
    write_json(out / "audit.json", report.to_dict())
    write_text(out / "audit.md", audit_markdown(report))
    written = [out / "audit.json", out / "audit.md"]
    if args.html is not None:
        written.append(Path(args.html))
        write_text(written[-1], audit_html(report))
    print(format_verdicts(report))
    print(f"flagged: {', '.join(report.flagged_works()) or 'none'}; wrote {', '.join(map(str, written))}")
    return 0
