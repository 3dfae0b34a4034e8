"""The sampling loop shared by Monte Carlo methods: draw rounds of seeded tasks in parallel, fold them into an
estimate, stop when a `StoppingCriterion` says so."""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import numpy as np
from joblib import effective_n_jobs

from llm_attrib.progress import Progress
from llm_attrib.valuation.parallel import parallel_map, split_evenly
from llm_attrib.valuation.stopping import MaxIterations, SamplingState, StoppingCriterion


class Accumulator(Protocol):
    """Folds task results (in task order) into running estimates."""

    n_iterations: int
    n_evaluations: int

    def add(self, results: Sequence[Any]) -> None: ...

    def estimate(self) -> tuple[np.ndarray, np.ndarray]:
        """Current ``(values, stderr)``, float ``[n]`` each."""
        ...


def as_criterion(stopping: StoppingCriterion | int) -> StoppingCriterion:
    """An int ``k`` means `MaxIterations(k)`."""
    return MaxIterations(stopping) if isinstance(stopping, (int, np.integer)) else stopping


def sample_until(
    work: Callable[[np.ndarray], Sequence[Any]],
    accumulator: Accumulator,
    stopping: StoppingCriterion,
    n_jobs: int | None,
    tasks_per_round: int,
    progress: bool,
    description: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``work(task_ids) -> results`` on rounds of ``tasks_per_round`` task ids until ``stopping``.

    Rounds have the same size whatever ``n_jobs`` is (workers split a round), so the result does too.
    Returns the final ``(values, stderr)``.
    """
    budget = stopping.budget()
    previous = None
    with Progress(description, total=budget, enabled=progress, unit="samples") as bar:
        while True:
            size = tasks_per_round if budget is None else min(tasks_per_round, budget - accumulator.n_iterations)
            tasks = np.arange(accumulator.n_iterations, accumulator.n_iterations + max(size, 1))
            chunks = split_evenly(tasks, effective_n_jobs(n_jobs))
            for chunk_results in parallel_map(work, [(chunk,) for chunk in chunks], n_jobs):
                accumulator.add(chunk_results)
            bar.update(len(tasks))
            values, stderr = accumulator.estimate()
            state = SamplingState(accumulator.n_iterations, accumulator.n_evaluations, values, previous, stderr)
            if stopping(state):
                return values, stderr
            previous = values
