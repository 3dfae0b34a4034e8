"""The audit: `audit` tests each protected work against each output and gathers the evidence of flagged ones.

**Positive score = the record raises the output's log Pr(completion | prompt).** `WorkFinding` is one (output,
work) test, `AuditReport` the whole audit with the metadata a third party needs to check and re-run it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch

from llm_attrib import __version__
from llm_attrib.apps.audit.evidence import OutputToken, output_positions, verbatim_overlap, work_top_records
from llm_attrib.apps.audit.permutation_test import (DEFAULT_ALPHA, DEFAULT_CORRECTION, DEFAULT_DRAWS, chosen_works,
                                                    describe_test, permutation_test)
from llm_attrib.apps.trace import TracedRecord, TraceReport, trace_queries
from llm_attrib.attributors.influence import InfluenceAttributor
from llm_attrib.errors import UserInputError
from llm_attrib.overlap import Overlap
from llm_attrib.attributors.prefilter import Prefilter
from llm_attrib.significance import require_reachable
from llm_attrib.store import data_fingerprint

SIGN = "positive = the training records raise the output's log Pr(completion | prompt); removing them would lower it"


@dataclass
class WorkFinding:
    """One (output, work) test: the work's group score, p-values, verdict and evidence.

    score: sum of the work's records' scores (positive = they raise the output's log-probability); p_value: share of
    random unprotected groups of ``n_records`` records scoring at least as much (add-one); adjusted_p: after the
    correction over the audit's tests. ``overlap``: the longest run of completion words found verbatim in the
    work's record ``overlap_record`` (its id; ``None`` when no word is shared); ``overlap_excerpt``: that record's
    text around the run, starting at its character ``overlap_excerpt_start``. ``output_tokens`` (flagged works):
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
    overlap_excerpt: str = ""
    overlap_excerpt_start: int = 0


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
    chosen = chosen_works(works, len(train), only)
    require_reachable(correction, len(chosen) * len(outputs), draws, alpha)

    scores, reports = trace_queries(attributor, train, outputs, top_k=top_k, tokens_per_record=tokens_per_record,
                                    max_new_tokens=max_new_tokens, prefilter=prefilter)
    test, adjusted = permutation_test(scores.values, works, chosen, correction=correction, draws=draws, seed=seed)
    members: dict[str, list[int]] = {label: [] for label in chosen}
    for i, work in enumerate(works):
        if work in members:
            members[work].append(i)
    findings = []
    for q, report in enumerate(reports):
        for g, label in enumerate(test.labels):
            rows = members[label]
            flagged = bool(adjusted[q, g] < alpha)
            overlap, source, excerpt, excerpt_start = verbatim_overlap(attributor, train, rows, scores,
                                                                       report.completion)
            finding = WorkFinding(
                work=str(label), output=q, n_records=len(rows), score=float(test.scores[q, g]),
                p_value=float(test.p_values[q, g]), adjusted_p=float(adjusted[q, g]), flagged=flagged,
                overlap=overlap, overlap_record=source,
                top_records=work_top_records(attributor, train, rows, scores, q, top_k, tokens_per_record),
                overlap_excerpt=excerpt, overlap_excerpt_start=excerpt_start,
            )
            if flagged:
                scored = [train[i] for i in rows if torch.isfinite(scores.values[q, i])]
                finding.token_parts_sum, finding.output_tokens = output_positions(attributor, scored, report,
                                                                                  output_tokens)
            findings.append(finding)
    metadata = {
        "kind": "copyright-provenance-audit",
        "library_version": __version__,
        "sign": SIGN,
        "method": scores.method,
        "units": scores.units,
        "damping": scores.metadata.get("damping"),
        "fisher": attributor.config.fisher,
        "curvature_sample": attributor.config.max_examples or "all records",
        "prefilter": None if prefilter is None else f"{prefilter.config.index}, {prefilter.config.candidates} candidates per output "
                                                     "(records outside them are not scored and count 0)",
        "model_fingerprint": attributor.adapter.fingerprint(),
        "data_fingerprint": data_fingerprint(list(train)),
        "n_train": len(train),
        "n_protected_records": sum(work is not None for work in works),
        "n_unprotected_records": test.n_pool,
        "works_tested": [str(label) for label in test.labels],
        "test": describe_test(correction=correction, alpha=alpha, draws=draws, seed=seed, n_tests=adjusted.numel()),
    }
    return AuditReport(outputs=reports, findings=findings, metadata=metadata)
