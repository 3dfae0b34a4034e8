"""Audit copyright provenance: did protected works in the training data shape a model's output?

``audit(attributor, train, works, outputs)`` scores every training record against each output's measurement
``log Pr(completion | prompt)`` (trace's machinery: the completion is generated when none is given; EK-FAC by
default; optionally only a TF-IDF/BM25 prefilter's candidates). **Positive score = the record raises the output's
log-probability.** Per protected work (``works[i]``: the work of training record ``i``, ``None`` = unprotected):

* the group score, the sum of its records' scores (`llm_attrib.evaluation.provenance.group_scores`);
* a one-sided permutation p-value: how often a random group of as many *unprotected* records scores at least as
  much (seeded draws, add-one correction; `llm_attrib.significance`), adjusted for multiple testing over every
  (output, work) pair of the audit (Holm by default); the work is flagged for the output when it is below alpha;
* evidence: its top records (id, score, excerpt, their tokens carrying the score), the positions of the output
  whose activations carry the work's summed influence (flagged works), and the longest run of words the output's
  completion shares verbatim with one of its records (`llm_attrib.overlap`).

The JSON and Markdown reports state the method, damping, fingerprints, library version, sign, test, alpha and
correction, so a third party can check and re-run the audit.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from llm_attrib import __version__
from llm_attrib.apps import options
from llm_attrib.apps.run import quoted, write_text
from llm_attrib.apps.trace import TracedRecord, TraceReport, top_records, trace_queries
from llm_attrib.attributors.influence import InfluenceAttributor
from llm_attrib.data import IGNORE_INDEX, load_records, record_text
from llm_attrib.distributed import is_main_process
from llm_attrib.errors import UserInputError
from llm_attrib.evaluation.provenance import group_p_values
from llm_attrib.overlap import Overlap, longest_common_span
from llm_attrib.prefilter import Prefilter
from llm_attrib.significance import CORRECTIONS, require_reachable
from llm_attrib.store import data_fingerprint, write_json

SIGN = "positive = the training records raise the output's log Pr(completion | prompt); removing them would lower it"
EXCERPT_CHARS = 300
DEFAULT_ALPHA = 0.01
DEFAULT_CORRECTION = "holm"
DEFAULT_DRAWS = 9999


@dataclass
class OutputToken:
    """One position of the output (prompt + completion tokens) and the work's summed influence through it."""

    position: int
    token: str
    in_completion: bool
    score: float


@dataclass
class WorkFinding:
    """One (output, work) test: the work's group score, p-values, verdict and evidence.

    score: sum of the work's records' scores (positive = they raise the output's log-probability); p_value: share of
    random unprotected groups of ``n_records`` records scoring at least as much (add-one); adjusted_p: after the
    correction over the audit's tests. ``overlap``: the longest run of completion words found verbatim in the
    work's record ``overlap_record`` (its id; ``None`` when no word is shared). ``output_tokens`` (flagged works):
    the output positions carrying most of the score; ``token_parts_sum``: the sum over all positions, equal to
    ``score`` up to float error (a check).
    """

    work: str
    output: int
    n_records: int
    score: float
    p_value: float
    adjusted_p: float
    flagged: bool
    overlap: Overlap
    overlap_record: Any
    top_records: list[TracedRecord]
    output_tokens: list[OutputToken] = field(default_factory=list)
    token_parts_sum: float | None = None


@dataclass
class AuditReport:
    """The audit: each output (with its overall top records) and one `WorkFinding` per (output, work)."""

    outputs: list[TraceReport]
    findings: list[WorkFinding]
    metadata: dict[str, Any]

    def flagged_works(self) -> list[str]:
        return list(dict.fromkeys(f.work for f in self.findings if f.flagged))

    def to_dict(self) -> dict[str, Any]:
        return {"metadata": self.metadata, "flagged_works": self.flagged_works(),
                "outputs": [report.to_dict() for report in self.outputs],
                "findings": [asdict(finding) for finding in self.findings]}


def work_labels(train: Sequence[dict[str, Any]], column: str) -> list[str | None]:
    """Each record's protected work from ``column``: the value as a string, ``None`` where null or blank."""
    if train and column not in train[0]:
        raise UserInputError(f"no work column '{column}' in the training data (columns: {sorted(train[0])}); "
                             "pass --work-column")
    labels = []
    for record in train:
        value = record.get(column)
        text = "" if value is None or value != value else str(value).strip()  # value != value: NaN
        labels.append(text or None)
    return labels


def audit(
    attributor: InfluenceAttributor,
    train: Sequence[dict[str, Any]],
    works: Sequence[str | None],
    outputs: Sequence[tuple[str, str | None]],
    *,
    only: Sequence[str] | None = None,
    alpha: float = DEFAULT_ALPHA,
    correction: str = DEFAULT_CORRECTION,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    top_k: int = 5,
    tokens_per_record: int = 5,
    output_tokens: int = 8,
    max_new_tokens: int = 32,
    prefilter: Prefilter | None = None,
) -> AuditReport:
    """Test each protected work (``only``: these; default all) against each ``(prompt, completion or None)`` output.

    works: one label per training record, ``None`` = unprotected (the comparison pool). The settings are checked
    before any gradient work. With a ``prefilter``, records outside an output's candidates are not scored and count 0.
    """
    chosen = _chosen_works(works, len(train), only)
    require_reachable(correction, len(chosen) * len(outputs), draws, alpha)

    scores, reports = trace_queries(attributor, train, outputs, top_k=top_k, tokens_per_record=tokens_per_record,
                                    max_new_tokens=max_new_tokens, prefilter=prefilter)
    values = torch.where(torch.isfinite(scores.values), scores.values, torch.zeros_like(scores.values))
    test = group_p_values(values, works, draws=draws, seed=seed, only=chosen)
    adjusted = CORRECTIONS[correction](test.p_values)
    members: dict[str, list[int]] = {label: [] for label in chosen}
    for i, work in enumerate(works):
        if work in members:
            members[work].append(i)
    findings = []
    for q, report in enumerate(reports):
        for g, label in enumerate(test.labels):
            rows = members[label]
            flagged = bool(adjusted[q, g] < alpha)
            overlap = longest_common_span(report.completion, [_text(attributor, train[i]) for i in rows])
            source = None if overlap.source is None else scores.train_ids[rows[overlap.source]]
            finding = WorkFinding(
                work=str(label), output=q, n_records=len(rows), score=float(test.scores[q, g]),
                p_value=float(test.p_values[q, g]), adjusted_p=float(adjusted[q, g]), flagged=flagged,
                overlap=overlap, overlap_record=source,
                top_records=_excerpts(top_records(attributor.adapter, [train[i] for i in rows],
                                                  scores.select_train(rows), q, top_k, tokens_per_record)),
            )
            if flagged:
                scored = [train[i] for i in rows if torch.isfinite(scores.values[q, i])]
                finding.token_parts_sum, finding.output_tokens = _output_tokens(
                    attributor, scored, report.prompt, report.completion, output_tokens)
            findings.append(finding)
    metadata = {
        "kind": "copyright-provenance-audit",
        "library_version": __version__,
        "sign": SIGN,
        "method": scores.method,
        "units": scores.units,
        "damping": scores.metadata.get("damping"),
        "fisher": attributor.fisher,
        "curvature_sample": attributor.max_examples or "all records",
        "prefilter": None if prefilter is None else f"{prefilter.kind}, {prefilter.candidates} candidates per output "
                                                     "(records outside them are not scored and count 0)",
        "model_fingerprint": attributor.adapter.fingerprint(),
        "data_fingerprint": data_fingerprint(list(train)),
        "n_train": len(train),
        "n_protected_records": sum(work is not None for work in works),
        "n_unprotected_records": test.n_pool,
        "works_tested": [str(label) for label in test.labels],
        "test": {
            "name": "one-sided permutation test of each work's group score against random groups of as many "
                    "unprotected records (drawn uniformly without replacement)",
            "p_value": "(1 + #{random group scores >= the work's}) / (1 + draws)",
            "draws": draws,
            "seed": seed,
            "draw_generator": "numpy default_rng([seed, group size]).choice(n_unprotected, size, replace=False)",
            "correction": correction,
            "family": f"all {adjusted.numel()} (output, work) pairs of this audit",
            "alpha": alpha,
            "flag": "adjusted p-value < alpha",
        },
    }
    return AuditReport(outputs=reports, findings=findings, metadata=metadata)


def _chosen_works(works: Sequence[str | None], n_train: int, only: Sequence[str] | None) -> list[str]:
    """The works to test (``only``, else every work), refused when unknown or too large for the unprotected pool."""
    if len(works) != n_train:
        raise UserInputError(f"{len(works)} work labels for {n_train} training records")
    sizes = Counter(w for w in works if w is not None)
    if not sizes:
        raise UserInputError("no protected records: the work column is empty for every training record")
    chosen = list(dict.fromkeys(only)) if only else list(sizes)
    unknown = [name for name in chosen if name not in sizes]
    if unknown:
        known = ", ".join(list(sizes)[:10]) + (", ..." if len(sizes) > 10 else "")
        raise UserInputError(f"unknown work {unknown[0]!r}; the work column names: {known}")
    n_pool = len(works) - sum(sizes.values())
    largest = max(chosen, key=sizes.__getitem__)
    if sizes[largest] > n_pool:
        raise UserInputError(f"work {largest!r} has {sizes[largest]} records but there are only {n_pool} unprotected "
                             "records to draw comparison groups of that size from; audit smaller works (--work)")
    return chosen


def _text(attributor: InfluenceAttributor, record: Any) -> str:
    return record_text(record, attributor.adapter.columns, separator="") if isinstance(record, dict) else str(record)


def _excerpts(records: list[TracedRecord]) -> list[TracedRecord]:
    """``records`` with texts cut to `EXCERPT_CHARS` (the id finds the whole record)."""
    for record in records:
        if len(record.text) > EXCERPT_CHARS:
            record.text = record.text[: EXCERPT_CHARS - 3] + "..."
    return records


def _output_tokens(attributor: InfluenceAttributor, records: Sequence[Any], prompt: str, completion: str,
                   top: int, block: int = 32) -> tuple[float, list[OutputToken]]:
    """The work's summed influence through each position of the output, and the ``top`` positions.

    Influence is symmetric in its two gradients, so the work's records are scored as queries against the output
    as the one "training" record: its per-token parts are ``g_tᵀ Q a_t`` at each output position ``t`` (over prompt
    and completion tokens; ``a_t``, ``g_t`` from the gradient of log Pr(completion | prompt)), and they sum over
    positions and records to the work's group score. Returns ``(sum of all parts, top positions)``.
    """
    adapter = attributor.adapter
    output = {adapter.columns.prompt: prompt, adapter.columns.completion: completion}
    encoded = adapter.encode([output])[0]
    parts = torch.zeros(len(encoded.input_ids), dtype=torch.float64)
    for start in range(0, len(records), block):
        scores = attributor.score(list(records[start : start + block]), [output], per_token=True)
        parts += sum(row[0].double() for row in scores.per_token)
    best = torch.argsort(parts, descending=True)[:top].tolist()
    return float(parts.sum()), [
        OutputToken(position=t, token=adapter.tokenizer.decode([encoded.input_ids[t]]),
                    in_completion=encoded.labels[t] != IGNORE_INDEX, score=float(parts[t])) for t in best]


# ------------------------------------------------------------------------------------------------------ reports
def format_verdicts(report: AuditReport) -> str:
    """The console's verdict table: one row per (output, work)."""
    test = report.metadata["test"]
    lines = [f"{report.metadata['method']}; {test['correction']}-adjusted permutation p-values, alpha {test['alpha']}; "
             f"{SIGN}",
             f"{'output':>6}  {'work':<24} {'records':>7} {'score':>11} {'p':>8} {'adj. p':>8} {'overlap':>7}  verdict"]
    for f in report.findings:
        lines.append(f"{f.output + 1:>6}  {f.work[:24]:<24} {f.n_records:>7} {f.score:>11.4g} {f.p_value:>8.2g} "
                     f"{f.adjusted_p:>8.2g} {f.overlap.words:>7}  {'FLAGGED' if f.flagged else 'not flagged'}")
    return "\n".join(lines)


def audit_markdown(report: AuditReport) -> str:
    """The Markdown report: how to check and re-run it, the verdict table, and the evidence per flagged work."""
    meta, test = report.metadata, report.metadata["test"]
    lines = [
        "# Copyright-provenance audit", "",
        "Did the protected works in the training data shape these outputs? Every training record is scored by "
        f"**{meta['method']}** ({meta['units']}). **Sign: {SIGN}.** A work's group score is the sum of its records' "
        "scores.", "",
        "## Method (to check and re-run)", "",
        f"- model fingerprint `{meta['model_fingerprint']}`; training data: {meta['n_train']} records, fingerprint "
        f"`{meta['data_fingerprint']}`; {meta['n_protected_records']} protected records, "
        f"{meta['n_unprotected_records']} unprotected",
        f"- attribution: {meta['method']}, damping {meta['damping']}, {meta['fisher']} Fisher, curvature fitted on "
        f"{meta['curvature_sample']}" + (f"; prefilter: {meta['prefilter']}" if meta["prefilter"] else ""),
        f"- test: {test['name']}; p = {test['p_value']}; {test['draws']} draws, seed {test['seed']} "
        f"(`{test['draw_generator']}`)",
        f"- multiple testing: {test['correction']} over {test['family']}; a work is flagged when its adjusted p-value "
        f"< alpha = {test['alpha']}",
        f"- llm_attrib {meta['library_version']}" + (f"; arguments: `{json.dumps(meta['arguments'], default=str)}`"
                                                     if "arguments" in meta else ""),
        "", "## Verdicts", "",
        "| output | work | records | group score | p | adjusted p | longest verbatim overlap (words) | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in report.findings:
        lines.append(f"| {f.output + 1} | {_cell(f.work)} | {f.n_records} | {f.score:+.4g} | {f.p_value:.3g} | "
                     f"{f.adjusted_p:.3g} | {f.overlap.words} | {'**FLAGGED**' if f.flagged else 'not flagged'} |")
    for q, output in enumerate(report.outputs):
        origin = "generated by the model" if output.generated else "given"
        lines += ["", f"## Output {q + 1}", "", "Prompt:", "", quoted(output.prompt), "",
                  f"Completion ({origin}):", "", quoted(output.completion)]
        for f in (f for f in report.findings if f.output == q and f.flagged):
            lines += _evidence_markdown(f)
    return "\n".join(lines).rstrip() + "\n"


def _evidence_markdown(f: WorkFinding) -> list[str]:
    """One flagged work's evidence: overlap, output positions, top records."""
    lines = ["", f"### {_cell(f.work)}: flagged (group score {f.score:+.4g}, p {f.p_value:.3g}, "
                 f"adjusted p {f.adjusted_p:.3g})", ""]
    if f.overlap.words:
        lines += [f"Longest verbatim overlap: **{f.overlap.words} words**, completion words "
                  f"{f.overlap.output_word + 1}-{f.overlap.output_word + f.overlap.words} (characters "
                  f"{f.overlap.output_start}-{f.overlap.output_end}), in record `{f.overlap_record}` at characters "
                  f"{f.overlap.source_start}-{f.overlap.source_end}:",
                  "", quoted(f.overlap.text), ""]
    else:
        lines += ["No word of the completion appears in the work's records.", ""]
    tokens = ", ".join(f"`{t.token.strip() or repr(t.token)}` (position {t.position}, "
                       f"{'completion' if t.in_completion else 'prompt'}) {t.score:+.3g}" for t in f.output_tokens)
    lines += [f"Output positions carrying the work's influence (the parts sum to {f.token_parts_sum:+.4g}): {tokens}",
              "", "Top records of the work:", ""]
    for rank, record in enumerate(f.top_records, start=1):
        top = ", ".join(f"`{token.strip() or repr(token)}` {value:+.3g}" for token, value in record.top_tokens)
        lines += [f"{rank}. **{record.score:+.4g}** — id `{record.train_id}`; top tokens: {top}", "",
                  quoted(record.text), ""]
    return lines


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


# ------------------------------------------------------------------------------------------------ command line
def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("audit", help="did protected works in the training data shape a model's output?",
                                   description=__doc__.splitlines()[0])
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
    group.add_argument("--top-k", type=int, default=5, help="top records listed per work")
    group.add_argument("--max-new-tokens", type=int, default=32)
    group.add_argument("--output-dir", default="audit", help="where audit.json and audit.md go (default: ./audit)")
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
    train = options.load_train(args)
    works = work_labels(train, args.work_column)
    outputs = output_pairs(args)
    attributor = options.make_attributor(args, options.make_adapter(args))
    report = audit(attributor, train, works, outputs, only=args.work, alpha=args.alpha, correction=args.correction,
                   draws=args.draws, seed=args.seed, top_k=args.top_k, max_new_tokens=args.max_new_tokens,
                   prefilter=options.make_prefilter(args, train))
    if not is_main_process():
        return 0
    report.metadata["arguments"] = {k: v for k, v in vars(args).items() if k != "func"}
    out = Path(args.output_dir)
    write_json(out / "audit.json", report.to_dict())
    write_text(out / "audit.md", audit_markdown(report))
    print(format_verdicts(report))
    print(f"flagged: {', '.join(report.flagged_works()) or 'none'}; wrote {out / 'audit.json'}, {out / 'audit.md'}")
    return 0
