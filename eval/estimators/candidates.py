"""The candidates of the estimator comparison, each an attributor of the library built on a grid cell's benchmark.

All track the library's default layers (MLP), with the true Fisher (sampled targets) and no normalisation, so they
differ from the baseline ``ekfac`` only in the estimator. Damping is applied at use, so each candidate is fitted
once per cell and scored at every damping (`set_damping`). ``source*`` average EK-FAC over the last checkpoints of
the cell's own training run (`llm_attrib.retraining.runs.TrainingRuns`: checkpoints after 1/4, 2/4, 3/4 and all
of the epochs), weighted by learning rate × steps; ``models3`` averages over the cell's model and two trained from
other seeds. The training time of checkpoints and models is reported apart (``training_seconds``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from llm_attrib.adapters.causal_lm import CausalLMAdapter
from llm_attrib.attributors import (AttributorFactory, refined_influence_factory, seed_ensemble_factory,
                                   source_factory)
from llm_attrib.attributors.influence.ensemble import InfluenceEnsemble
from llm_attrib.curvature import Curvature
from llm_attrib.evaluation.benchmarks import Benchmark


@dataclass(frozen=True)
class Candidate:
    """``build(benchmark)``: the unfitted attributor; ``passes(n_train, n_query)``: the records it runs forward and
    backward through at one damping (EK-FAC: 2 statistics passes over the training records, the queries' gradients
    and one scoring pass: ``3·n_train + n_query``), a cost free of the shared machine's timing noise.
    ``extra_training``: it needs models the user's own run does not produce (checkpoints are a by-product of that
    run; models from other seeds cost whole trainings)."""

    description: str
    build: Callable[[Benchmark], Any]
    passes: Callable[[int, int], int]
    extra_training: bool = False


def _ekfac_passes(n: int, q: int) -> int:
    return 3 * n + q


def _registered(factory: AttributorFactory) -> Callable[[Benchmark], Any]:
    """A registry factory on a benchmark (its training runs as the history, as the suite gives them)."""
    return lambda b: factory(b.model, b.tokenizer, training=b.runs)


def _refined(steps: int) -> Callable[[Benchmark], Any]:
    return _registered(refined_influence_factory(steps))


def _fisher_samples(samples: int) -> Callable[[Benchmark], Any]:
    return lambda b: InfluenceEnsemble([CausalLMAdapter(b.model, b.tokenizer)], fisher_samples=samples)


def _source(last: int) -> Callable[[Benchmark], Any]:
    return _registered(source_factory(last))


def _shared_source(last: int) -> Callable[[Benchmark], Any]:
    def build(b: Benchmark) -> Any:
        models, rates = b.runs.checkpoints()
        return InfluenceEnsemble([CausalLMAdapter(m, b.tokenizer) for m in models[-last:]], rates[-last:],
                                 shared_curvature=True)

    return build


def _models(n: int) -> Callable[[Benchmark], Any]:
    return _registered(seed_ensemble_factory(n))


CANDIDATES: dict[str, Candidate] = {
    "ekfac": Candidate("EK-FAC (the baseline)", _refined(0), _ekfac_passes),
    **{f"ekfac-cg{k}": Candidate(f"EK-FAC refined by {k} preconditioned CG steps towards the exact damped Fisher "
                                 "(refine_steps)", _refined(k), lambda n, q, k=k: _ekfac_passes(n, q) + k * n)
       for k in (2, 4, 8)},
    "ekfac-fisher3": Candidate("EK-FAC averaged over 3 independent Fisher samples (fisher_samples=3)",
                               _fisher_samples(3), lambda n, q: 3 * _ekfac_passes(n, q)),
    **{f"ekfac-source{k}": Candidate(f"EK-FAC averaged over the run's last {k} checkpoints, learning-rate weights "
                                     "(SOURCE-style)", _source(k), lambda n, q, k=k: k * _ekfac_passes(n, q))
       for k in (2, 3, 4)},
    "ekfac-source4-shared": Candidate("EK-FAC of the final model applied at all 4 checkpoints' gradients, "
                                      "learning-rate weights (shared_curvature)", _shared_source(4),
                                      lambda n, q: 2 * n + 4 * (n + q)),
    "ekfac-models3": Candidate("EK-FAC averaged over the final model and 2 trained from other seeds on the same "
                               "records (equal weights; like TRAK's ensemble)", _models(3),
                               lambda n, q: 3 * _ekfac_passes(n, q), extra_training=True),
}
"""Candidate name → its definition; declared before any grid result was looked at."""


def curvatures(attributor: Any) -> list[Curvature]:
    """Every curvature an attributor applies (one, or one per ensemble member)."""
    members = getattr(attributor, "members", [attributor])
    return [member.curvature for member in members]


def set_damping(attributor: Any, damping: float | str) -> None:
    """Apply ``damping`` at use to every curvature of ``attributor`` (its fitted factors serve any damping)."""
    for curvature in curvatures(attributor):
        curvature.damping = damping
