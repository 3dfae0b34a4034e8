"""`HybridAttributor`: lexical recall per query, gradient re-ranking on the answer tokens, and a fusion of the two.

1. *Recall*: a BM25 (or TF-IDF) index picks each query's top-``candidates`` training records from the query's
   whole text (prompt and completion); nothing else is scored (`Prefilter`, per-query groups: the work is about
   ``n_query × K`` records, not the corpus).
2. *Re-ranking*: the gradient attributor (default: EK-FAC influence) scores each query's candidates with the
   measurement restricted to the answer: ``log Pr(answer | prompt)``, where the answer is the completion with
   trailing whitespace and punctuation removed (`answer_only`; " Paris." is measured as " Paris"). An EOS is
   measured only where the adapter's encoding appends one after a completion (the demo's and GPT-2's tokenizers
   add none); the hybrid keeps it there, as the same encoding decides the training documents' tokens.
3. *Fusion* (`FUSIONS`) of the two rankings of the ``K`` candidates: reciprocal-rank fusion
   ``1/(c + rank_lexical) + 1/(c + rank_gradient)`` (ranks from 1) or ``zscore``, the sum of both scores
   standardised over the query's candidates.

Sign: a higher fused score means the record is ranked as more likely to raise the query's log-probability; the
fused score is a rank statistic, not a predicted change of it. Non-candidates are ``-inf`` (not scored).
Per-module and per-token parts, when asked for, are the gradient stage's: they sum to the candidate's gradient
score, not to the fused one.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from llm_attrib.attributors.base import Attributor
from llm_attrib.config import Config, at_least, option
from llm_attrib.data import Columns
from llm_attrib.attributors.prefilter import NOT_A_CANDIDATE, PREFILTERS, Prefilter
from llm_attrib.scores import Scores

Fusion = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
"""``fusion(lexical [n_query, K], gradient [n_query, K], constant) -> [n_query, K]``: both score matrices over
each query's candidates, the lexical one in descending order (column 0 = the lexical best)."""


def ranks(values: torch.Tensor) -> torch.Tensor:
    """``[n_query, K]`` rank of each entry within its row, 1 = the largest (ties: the earlier column first)."""
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    result = torch.empty_like(order)
    result.scatter_(1, order, torch.arange(1, values.shape[1] + 1).expand_as(order).contiguous())
    return result


def reciprocal_rank_fusion(lexical: torch.Tensor, gradient: torch.Tensor, constant: float) -> torch.Tensor:
    """``1/(c + rank_lexical) + 1/(c + rank_gradient)`` (Cormack et al. 2009; ``c`` = ``constant``)."""
    return (1.0 / (constant + ranks(lexical).double())) + (1.0 / (constant + ranks(gradient).double()))


def _standardised(values: torch.Tensor) -> torch.Tensor:
    centred = values.double() - values.double().mean(dim=1, keepdim=True)
    spread = centred.pow(2).mean(dim=1, keepdim=True).sqrt()
    return centred / torch.where(spread > 0, spread, torch.ones_like(spread))


def z_fusion(lexical: torch.Tensor, gradient: torch.Tensor, constant: float) -> torch.Tensor:
    """The sum of both scores, each standardised (mean 0, population s.d. 1) over the query's candidates
    (``constant`` unused; a row of equal scores contributes 0)."""
    return _standardised(lexical) + _standardised(gradient)


FUSIONS: dict[str, Fusion] = {"rrf": reciprocal_rank_fusion, "zscore": z_fusion}


@dataclass(frozen=True)
class HybridConfig(Config):
    """Options of `HybridAttributor`. The defaults (BM25, ``K`` = 20, reciprocal-rank fusion with ``c`` = 60, an
    unnormalised gradient stage) won both selection rounds of ``eval/facts`` on one corpus of a few hundred
    documents (facts-hard, seed 1): a small ``K`` keeps BM25's recall, a larger one lets the gradient stage add
    documents BM25 ranks low (aliases) but demotes others. Measured there: better MRR than BM25 and TF-IDF on
    paraphrased queries, not on every query group (``eval/facts/README.md``)."""

    flag_prefix = "hybrid-"
    index: str = option("bm25", "lexical index of the recall stage", choices=tuple(PREFILTERS))
    candidates: int = option(20, "training records recalled per query (the others are not scored)",
                             check=at_least(1))
    fusion: str = option("rrf", "how the lexical and gradient rankings are combined", choices=tuple(FUSIONS))
    rrf_constant: float = option(60.0, "c of reciprocal-rank fusion, 1/(c + rank)", check=at_least(0))
    query_chunk: int = option(16, "queries re-ranked together (a group scores the union of its candidates)",
                              check=at_least(1))
    answer_only: bool = option(True, "measure only the answer: the completion without trailing whitespace "
                                     "and punctuation")


def answer_record(record: Mapping[str, Any], columns: Columns = Columns()) -> Mapping[str, Any]:
    """``record`` with its completion cut to the answer (trailing whitespace and punctuation removed; kept whole if
    nothing would remain); a record without a completion is returned as is."""
    completion = record.get(columns.completion)
    if not isinstance(completion, str):
        return record
    answer = completion.rstrip(string.whitespace + string.punctuation)
    return {**record, columns.completion: answer} if answer.strip() else record


class HybridAttributor(Prefilter):
    """Lexical recall, gradient re-ranking on the answer tokens, fused rankings (see the module docstring).

    Args:
        attributor: the gradient attributor that re-ranks (e.g. ``InfluenceAttributor(adapter, "ekfac")``).
        config: a `HybridConfig`; keyword ``options`` are its fields (``candidates=50, fusion="zscore"``).
        columns: which record fields hold the text.
        index_config: the lexical index's own options (`BM25Config`, `TfidfConfig`).

    ``HybridAttributor(InfluenceAttributor(adapter, "ekfac")).fit(train).score(queries, train)``; saved with
    `save_pretrained` (index + config, the attributor in ``attributor/``), reloaded with ``from_pretrained(dir,
    adapter)``.
    """

    kind = "hybrid"
    config_class = HybridConfig
    config: HybridConfig

    def __init__(self, attributor: Attributor | None = None, *, config: HybridConfig | None = None,
                 columns: Columns = Columns(), index_config: Config | None = None, **options: Any):
        super().__init__(attributor, config=config, columns=columns, index_config=index_config, **options)

    @property
    def name(self) -> str:
        inner = "" if self.attributor is None else f"{self.attributor.name}+"
        return f"hybrid-{inner}{self.config.index}-{self.config.fusion}"

    @property
    def units(self) -> str:
        return (f"{self.config.fusion} fusion of {self.config.index} and gradient rankings (higher = ranked as "
                "raising the query's log-probability more; not a log-probability change); -inf = not a candidate")

    def score(self, queries: Sequence[Any], train: Sequence[Any], **options: Any) -> Scores:
        """``[n_query, n_train]`` fused scores of each query's candidates, ``-inf`` elsewhere (``options`` go to the
        gradient attributor's ``score``: ``per_token=True`` keeps its parts)."""
        chosen = self.select(queries)  # [n_query, K], lexical best first
        lexical = torch.gather(self.index.score(queries).values.double(), 1, chosen)
        measured = [answer_record(q, self.columns) for q in queries] if self.config.answer_only else list(queries)
        gradient = self.score_candidates(measured, train, chosen, **options)
        fused = FUSIONS[self.config.fusion](lexical, torch.gather(gradient.values.double(), 1, chosen),
                                            self.config.rrf_constant)
        values = torch.full(gradient.values.shape, NOT_A_CANDIDATE, dtype=torch.float64)
        values.scatter_(1, chosen, fused)
        return Scores(values=values, query_ids=gradient.query_ids, train_ids=gradient.train_ids, method=self.name,
                      units=self.units, per_module=gradient.per_module, per_token=gradient.per_token,
                      metadata={**gradient.metadata, "fusion": self.config.fusion,
                                "rrf_constant": self.config.rrf_constant, "answer_only": self.config.answer_only})
