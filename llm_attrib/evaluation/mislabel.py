"""Mislabel / noisy-data detection for causal LMs: corrupt some training records, rank all records by a
suspicion score, and report AUROC and precision@k against the known corruptions.

Corruption (`swap_completions`): a seeded fraction of prompt/completion records get another corrupted
record's completion (a cycle, so every chosen record ends up wrong).

Suspicion: self-influence ``score(z, z)`` — how much a record raises its own log-probability — is large for
records the model had to memorise against the grain (Koh & Liang 2017, §5.4), so higher = more suspicious.
An attributor provides it through ``self_influence(train_records) -> Tensor[n]`` (the `SelfInfluence`
protocol); one without it falls back to the diagonal of ``score(train_records, train_records)``. For a data
*value* (low = harmful), pass ``-value`` as the suspicion.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import torch

from llm_attrib.attributors.base import Attributor
from llm_attrib.data import Columns
from llm_attrib.errors import UserInputError
from llm_attrib.evaluation.metrics import auroc, precision_at_k

Record = Mapping[str, Any]


@runtime_checkable
class SelfInfluence(Protocol):
    def self_influence(self, train_records: Sequence[Record]) -> torch.Tensor:
        """``[n_train]`` score of each record on itself (positive = raises its own log-probability)."""


def swap_completions(
    records: Sequence[Record], fraction: float, seed: int = 0, columns: Columns = Columns()
) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """Copies of ``records`` where a ``fraction`` of them (at least 2) carry another chosen record's completion.

    Returns the corrupted records and ``[n]`` booleans, True = corrupted.
    """
    n = len(records)
    n_corrupt = max(2, round(fraction * n))
    if n_corrupt > n:
        raise UserInputError(f"cannot corrupt {n_corrupt} of {n} records")
    chosen = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_corrupt].tolist()
    corrupted = [dict(record) for record in records]
    for position, index in enumerate(chosen):
        donor = chosen[(position + 1) % n_corrupt]
        corrupted[index][columns.completion] = records[donor][columns.completion]
    labels = torch.zeros(n, dtype=torch.bool)
    labels[chosen] = True
    return corrupted, labels


def self_influence_scores(attributor: Any, train_records: Sequence[Record]) -> torch.Tensor:
    """``[n_train]`` self-influence: ``attributor.self_influence`` if it defines one (an `Attributor` subclass that
    overrides the base's refusal), else ``diag(score(train, train))``."""
    defined = (type(attributor).self_influence is not Attributor.self_influence if isinstance(attributor, Attributor)
               else isinstance(attributor, SelfInfluence))
    if defined:
        return attributor.self_influence(train_records).detach().double()
    return torch.diagonal(attributor.score(train_records, train_records).values).double()


def detection_report(suspicion: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (10,)) -> dict[str, float]:
    """AUROC and precision@k of ``suspicion`` (higher = more suspicious) against ``labels`` (True = corrupted),
    with the random baseline's expected precision (the corruption rate)."""
    report = {"auroc": auroc(suspicion, labels), "corruption_rate": float(labels.double().mean())}
    report.update({f"precision@{k}": precision_at_k(suspicion, labels, k) for k in ks if k <= len(labels)})
    return report
