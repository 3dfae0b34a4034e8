"""The audit's evidence for a work: its top records, the output positions carrying its influence, verbatim overlap.

Scores are influence scores: **positive = the records raise the output's log Pr(completion | prompt).**
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from llm_attrib.apps.trace import TracedRecord, TraceReport, output_parts, top_records
from llm_attrib.attributors.influence import InfluenceAttributor
from llm_attrib.data import IGNORE_INDEX, record_text
from llm_attrib.overlap import Overlap, longest_common_span
from llm_attrib.scores import Scores

EXCERPT_CHARS = 300


@dataclass
class OutputToken:
    """One token of the output (prompt + completion) and the work's summed influence on it: through the position
    before it, whose activations predict it (`position` is the token's own)."""

    position: int
    token: str
    in_completion: bool
    score: float


def verbatim_overlap(attributor: InfluenceAttributor, train: Sequence[Any], rows: Sequence[int], scores: Scores,
                     completion: str) -> tuple[Overlap, Any, str, int]:
    """The longest run of ``completion`` words found verbatim in a record ``train[rows]``, that record's id
    (``None`` when no word is shared), and an excerpt of its text around the run (`EXCERPT_CHARS` either side)
    with the excerpt's character offset in the record."""
    texts = [_text(attributor, train[i]) for i in rows]
    overlap = longest_common_span(completion, texts)
    if overlap.source is None:
        return overlap, None, "", 0
    start = max(0, overlap.source_start - EXCERPT_CHARS)
    excerpt = texts[overlap.source][start : overlap.source_end + EXCERPT_CHARS]
    return overlap, scores.train_ids[rows[overlap.source]], excerpt, start


def work_top_records(attributor: InfluenceAttributor, train: Sequence[Any], rows: Sequence[int], scores: Scores,
                     output: int, top_k: int, tokens_per_record: int) -> list[TracedRecord]:
    """The ``top_k`` records ``train[rows]`` with the highest scores for ``output``, texts cut to `EXCERPT_CHARS`
    (the id finds the whole record)."""
    records = top_records(attributor.adapter, [train[i] for i in rows], scores.select_train(rows), output, top_k,
                          tokens_per_record)
    for record in records:
        if len(record.text) > EXCERPT_CHARS:
            record.text = record.text[: EXCERPT_CHARS - 3] + "..."
    return records


def output_positions(attributor: InfluenceAttributor, records: Sequence[Any], report: TraceReport, top: int,
                     block: int = 32) -> tuple[float, list[OutputToken]]:
    """The work's summed influence through each position of the output, and the ``top`` positions.

    The parts are `output_parts` summed over the work's records (they sum over positions and records to the work's
    group score), each reported against the token its position predicts: a completion token's share is the part
    through the position before it; a prompt token's share (``in_completion`` False) is influence that reaches the
    completion only through attention. Returns ``(sum of all parts, top positions)``.
    """
    encoded, parts = output_parts(attributor, records, report.prompt, report.completion, block)
    parts = parts.sum(0)
    best = (torch.argsort(parts[1:], descending=True)[:top] + 1).tolist()  # the first token: predicted by none
    return float(parts.sum()), [
        OutputToken(position=t, token=attributor.adapter.tokenizer.decode([encoded.input_ids[t]]),
                    in_completion=encoded.labels[t] != IGNORE_INDEX, score=float(parts[t])) for t in best]


def _text(attributor: InfluenceAttributor, record: Any) -> str:
    return record_text(record, attributor.adapter.columns, separator="") if isinstance(record, dict) else str(record)
