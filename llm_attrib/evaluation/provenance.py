"""Provenance of protected works: were these works in the training data behind this output?

A corpus of *works* (`split_works`: consecutive speeches of tiny Shakespeare, or any texts) is split into
*planted* works, mixed into the training data as documents, and *unrelated* works, never trained on. Queries
reproduce (verbatim excerpt) or perturb (words replaced) passages of works. Attribution scores over training
documents are summed per work (`llm_attrib.significance.group_scores`: positive = the work's documents together
raise the query's log-probability). A (query, work) pair is flagged when its group score exceeds a threshold
calibrated on queries from never-trained works (`calibrate_threshold`, e.g. their 95th percentile), so about 5% of
unrelated pairs are flagged by construction; `flag_report` gives precision and recall of flagged pairs.

`llm_attrib.significance.group_p_values` is the calibrated alternative that needs no never-trained queries: each
work's group score is compared with those of random groups of the same size drawn from the training records of no
work (a seeded permutation test); `evaluate_provenance_permutation` flags a (query, work) pair when its
p-value, adjusted for multiple testing across that query's works, is below ``alpha`` (the audit's rule, one query
being one audited output).
"""

from __future__ import annotations

import random
import re
from typing import Any, Hashable, Sequence

import torch

from llm_attrib.errors import UserInputError
from llm_attrib.significance import CORRECTIONS, group_p_values, group_scores


def split_works(text: str, n_works: int, speeches_per_work: int) -> list[list[str]]:
    """The first ``n_works`` works of ``speeches_per_work`` consecutive speeches (blank-line separated blocks)."""
    speeches = [block.strip() for block in re.split(r"\n\s*\n", text) if block.strip()]
    if n_works * speeches_per_work > len(speeches):
        raise UserInputError(f"{len(speeches)} speeches cannot make {n_works} works of {speeches_per_work}")
    return [speeches[i * speeches_per_work : (i + 1) * speeches_per_work] for i in range(n_works)]


def calibrate_threshold(null_scores: torch.Tensor, quantile: float = 0.95) -> float:
    """The ``quantile`` of group scores of queries known to come from no trained work (any shape)."""
    return float(torch.quantile(null_scores.double().flatten(), quantile))


def flag_report(group_values: torch.Tensor, truth: torch.Tensor, threshold: float) -> dict[str, float]:
    """Precision and recall of the (query, work) pairs with ``group_values > threshold``.

    group_values: ``[n_query, n_groups]``; truth: same shape, True where the query was derived from the work.
    Also the false-positive rate among pairs that are not true (from never-trained queries: about 1 - quantile).
    """
    return {**flag_counts(group_values > threshold, truth), "threshold": threshold}


def flag_counts(flagged: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Precision, recall and false-positive rate of the ``flagged`` pairs (bool, same shape as ``truth``)."""
    true_positive = int((flagged & truth).sum())
    return {
        "precision": true_positive / max(int(flagged.sum()), 1),
        "recall": true_positive / max(int(truth.sum()), 1),
        "false_positive_rate": int((flagged & ~truth).sum()) / max(int((~truth).sum()), 1),
    }


def perturb_words(text: str, fraction: float, vocabulary: Sequence[str], rng: random.Random) -> str:
    """``text`` with a ``fraction`` of its words replaced by random words of ``vocabulary`` (a crude paraphrase)."""
    tokens = text.split(" ")
    for i in rng.sample(range(len(tokens)), round(fraction * len(tokens))):
        tokens[i] = rng.choice(vocabulary)
    return " ".join(tokens)


def passage_queries(
    works: Sequence[Sequence[str]],
    work_ids: Sequence[Any],
    *,
    per_work: int,
    prompt_words: int,
    completion_words: int,
    perturb: float,
    seed: int,
) -> list[dict[str, Any]]:
    """Prompt/completion queries from each work: ``per_work`` excerpts, verbatim and (if ``perturb`` > 0)
    with that fraction of words replaced. Each query has ``id``, ``work`` and ``kind`` ("verbatim"/"perturbed")."""
    rng = random.Random(seed)
    vocabulary = sorted({w for work in works for speech in work for w in speech.split()})
    queries = []
    for work, work_id in zip(works, work_ids):
        words = " ".join(work).split()
        span = prompt_words + completion_words
        for _ in range(per_work):
            start = rng.randrange(0, max(1, len(words) - span))
            prompt = " ".join(words[start : start + prompt_words])
            completion = " " + " ".join(words[start + prompt_words : start + span])
            kinds = {"verbatim": (prompt, completion)}
            if perturb > 0:
                kinds["perturbed"] = (perturb_words(prompt, perturb, vocabulary, rng),
                                      " " + perturb_words(completion.strip(), perturb, vocabulary, rng))
            for kind, (p, c) in kinds.items():
                queries.append({"id": f"{work_id}/{kind}/{len(queries)}", "prompt": p, "completion": c,
                                "work": work_id, "kind": kind})
    return queries


def evaluate_provenance(
    scores: torch.Tensor,
    train_groups: Sequence[Hashable | None],
    query_works: Sequence[Hashable],
    calibration: Sequence[bool],
    quantile: float = 0.95,
) -> dict[str, float]:
    """Group the scores by work, calibrate the threshold on the ``calibration`` queries (from never-trained
    works), and report precision/recall of the flagged (query, work) pairs among the other queries.

    scores: ``[n_query, n_train]`` (positive = raises the query's log-probability); train_groups: each training
    column's work (None = unrelated filler); query_works: the work each query was derived from.
    """
    grouped, labels = group_scores(scores, train_groups)
    held = torch.as_tensor(list(calibration), dtype=torch.bool)
    if not held.any() or held.all():
        raise UserInputError("provenance needs both calibration queries (never-trained works) and test queries")
    threshold = calibrate_threshold(grouped[held], quantile)
    truth = torch.tensor([[work == label for label in labels] for work in query_works], dtype=torch.bool)
    return flag_report(grouped[~held], truth[~held], threshold)


def evaluate_provenance_permutation(
    scores: torch.Tensor,
    train_groups: Sequence[Hashable | None],
    query_works: Sequence[Hashable],
    calibration: Sequence[bool],
    *,
    alpha: float = 0.01,
    correction: str = "holm",
    draws: int = 9999,
    seed: int = 0,
) -> dict[str, float]:
    """Precision/recall/false-positive rate of the (query, work) pairs flagged by the permutation test
    (`llm_attrib.significance.group_p_values`; adjusted by ``correction`` across each query's works, flagged when
    below ``alpha``), on the same test queries as `evaluate_provenance` (the ``calibration`` queries are left out;
    the test needs none).
    """
    test = group_p_values(scores, train_groups, draws=draws, seed=seed)
    adjusted = torch.stack([CORRECTIONS[correction](row) for row in test.p_values])
    truth = torch.tensor([[work == label for label in test.labels] for work in query_works], dtype=torch.bool)
    held = torch.as_tensor(list(calibration), dtype=torch.bool)
    return {**flag_counts(adjusted[~held] < alpha, truth[~held]), "alpha": alpha}
