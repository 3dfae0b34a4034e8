"""Seeded, parallel map over sampling tasks.

Task ``t`` always gets the random generator seeded by ``(random_state, t)``, so results do not depend on
``n_jobs`` or on how tasks are batched. Each task runs with BLAS/OpenMP limited to one thread: the models
fitted on subsets are small, where several BLAS threads cost several times more than they compute
(parallelism comes from ``n_jobs`` instead). joblib chooses the backend: ``with joblib.parallel_backend("ray")``
(or ``"dask"``) around a ``fit`` runs it on a Ray or Dask cluster once the user has installed them.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

import numpy as np
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits

T = TypeVar("T")


def root_entropy(random_state: int | None) -> int:
    """An integer seed: ``random_state`` itself, or fresh entropy when it is ``None``."""
    if random_state is None:
        return int(np.random.SeedSequence().entropy)
    return int(random_state)


def task_rng(entropy: int, task: int) -> np.random.Generator:
    """The generator of task number ``task``: independent streams, identical across runs and workers."""
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(task,)))


def parallel_map(function: Callable[..., T], argument_lists: Sequence[tuple[Any, ...]], n_jobs: int | None) -> list[T]:
    """``[function(*args) for args in argument_lists]``, run by joblib with ``n_jobs`` workers, in order."""
    if n_jobs in (None, 1) or len(argument_lists) <= 1:
        return [single_threaded_call(function, *args) for args in argument_lists]
    return Parallel(n_jobs=n_jobs)(delayed(single_threaded_call)(function, *args) for args in argument_lists)


def single_threaded_call(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` with BLAS and OpenMP thread pools limited to one thread."""
    with threadpool_limits(limits=1):
        return function(*args)


def split_evenly(tasks: Sequence[int], n_chunks: int) -> list[np.ndarray]:
    """``tasks`` cut into at most ``n_chunks`` contiguous, non-empty pieces."""
    return [chunk for chunk in np.array_split(np.asarray(tasks), max(1, n_chunks)) if len(chunk)]
