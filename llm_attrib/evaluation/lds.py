"""The Linear Datamodeling Score of an attributor against the ground truth of `llm_attrib.retraining.lds`.

Sign: scores are positive when a training example raises the query's log-probability, and the outcomes are
log-probabilities, so good attributions give a positive LDS.
"""

from __future__ import annotations

from llm_attrib.errors import UserInputError
from llm_attrib.evaluation.metrics import CorrelationSummary, linear_datamodeling_score
from llm_attrib.retraining.lds import LDSGroundTruth
from llm_attrib.scores import Scores


def evaluate_lds(scores: Scores, truth: LDSGroundTruth) -> CorrelationSummary:
    """LDS of ``scores`` against ``truth``; the ids must match (same queries, same training examples, same order)."""
    if list(scores.query_ids) != truth.query_ids or list(scores.train_ids) != truth.train_ids:
        raise UserInputError("the scores and the LDS ground truth are for different queries or training examples")
    return linear_datamodeling_score(scores.values, truth.masks, truth.outcomes)
