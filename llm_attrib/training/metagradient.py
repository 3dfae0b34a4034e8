"""Metagradients of a replayed run (MAGIC, Ilyas & Engstrom 2025): ``d f(q; θ_T) / d w_i`` for every record ``i``.

``θ_T`` is the end of the recorded run (`llm_attrib.training.run`) as a function of the per-record loss weights
``w`` (`llm_attrib.training.step`), ``f(q) = log Pr(completion | prompt)`` (summed over completion tokens). The
reverse pass carries the adjoints ``(dθ, dm, dv)`` of the optimizer state from ``∇θ f(θ_T)`` back through every
step: for step ``t`` with state ``s_t``, ``s_{t+1} = step_t(s_t, w_{B_t})`` is rebuilt with its graph (second
derivatives through the gradient, the clipping and Adam's moments) and one vector-Jacobian product gives
``(ds_t, dw_{B_t})``; the ``dw`` of every step that used a record add up.

Memory: the run keeps the state every ``K ≈ √T`` steps; a segment's ``K`` states are recomputed forward and held,
so the pass holds ``K + 3`` states (one ``(θ, m, v)`` each) plus the ``Q`` queries' adjoints (one state each) and
one step's double-backward graph. Time: per reverse pass about one forward training (the recomputation) plus ``T``
steps with a double backward, shared by the ``Q`` queries of the pass (each adds one vector-Jacobian product per
step).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from llm_attrib.data import Batch
from llm_attrib.training.run import ReplayableRun
from llm_attrib.training.step import State, adamw_step, log_probs


@dataclass
class ReverseCost:
    """What one reverse pass used: wall ``seconds``, steps recomputed forward, and the largest number of states
    held at once (``state_bytes`` each)."""

    seconds: float
    recomputed_steps: int
    states_held: int
    state_bytes: int


def state_bytes(state: State) -> int:
    return sum(t.numel() * t.element_size() for t in state.tensors())


def _query_adjoints(run: ReplayableRun, final: State, queries: Batch) -> list[State]:
    """Per query, the adjoint of the final state: ``(∇θ f(q; θ_T), 0, 0)``."""
    params = {n: p.detach().requires_grad_() for n, p in final.params.items()}
    measured = log_probs(run.model, params, queries)
    adjoints = []
    for q in range(len(measured)):
        grads = torch.autograd.grad(measured[q], list(params.values()), retain_graph=q + 1 < len(measured),
                                    materialize_grads=True)
        adjoints.append(State(dict(zip(params, grads)), {n: torch.zeros_like(t) for n, t in final.m.items()},
                              {n: torch.zeros_like(t) for n, t in final.v.items()}))
    return adjoints


def metagradients(run: ReplayableRun, queries: Batch,
                  on_step: Callable[[int], None] | None = None) -> tuple[torch.Tensor, ReverseCost]:
    """``[Q, n_records]`` float64 ``d f(q) / d w_i`` at the recorded weights for the queries of ``queries``
    (one reverse pass for all of them), and its cost. ``on_step(t)`` after each reversed step (progress)."""
    from llm_attrib.demo.training import torch_threads

    began = time.perf_counter()
    steps = run.checkpoint_steps
    dw = torch.zeros(len(queries), len(run.encoded), dtype=torch.float64)
    recomputed, held = 0, 0
    with torch_threads(run.config.num_threads), torch.enable_grad():
        final = run.state(run.total_steps)
        adjoints = _query_adjoints(run, final, queries)
        size = state_bytes(final)
        for first, stop in reversed(list(zip(steps[:-1], steps[1:]))):
            segment = [run.state(first)]
            segment.extend(run.states(segment[0], first, stop - 1))
            recomputed += stop - 1 - first
            held = max(held, len(segment) + len(adjoints) + 1)
            for t in reversed(range(first, stop)):
                inputs = segment.pop().detached(requires_grad=True)
                records = torch.tensor(run.order[t])
                batch_weights = run.weights[records].clone().requires_grad_()
                new, _ = adamw_step(run.model, inputs, run.batch(t), batch_weights, run.learning_rates[t], t + 1,
                                    run.hyper, create_graph=True)
                outputs, wrt = new.tensors(), [*inputs.tensors(), batch_weights]
                for q, adjoint in enumerate(adjoints):
                    grads = torch.autograd.grad(outputs, wrt, grad_outputs=adjoint.tensors(),
                                                retain_graph=q + 1 < len(adjoints), materialize_grads=True)
                    adjoints[q] = _state_like(inputs, grads[:-1])
                    dw[q, records] += grads[-1].detach().double()
                if on_step is not None:
                    on_step(t)
    return dw, ReverseCost(time.perf_counter() - began, recomputed, held, size)


def _state_like(template: State, tensors: tuple[torch.Tensor, ...]) -> State:
    """A `State` with ``template``'s names from the flat ``tensors`` (params, then m, then v)."""
    names = list(template.params)
    n = len(names)
    detached = [t.detach() for t in tensors]
    return State(dict(zip(names, detached[:n])), dict(zip(names, detached[n:2 * n])),
                 dict(zip(names, detached[2 * n:])))
