"""One AdamW step as an explicit function of (θ, m, v, w): used to train, to replay, and (differentiated) by MAGIC.

The loss of a batch ``B`` with per-record weights ``w`` is

    L(θ, w) = Σ_{i ∈ B} w_i · NLL_i(θ) / N_B,

``NLL_i`` the summed token NLL of record ``i``'s scored tokens and ``N_B`` the batch's number of scored tokens (a
constant: with every ``w_i = 1`` it is the mean token NLL of `llm_attrib.demo.training`). The step is AdamW with
decoupled weight decay and bias correction (step number ``k ≥ 1``, learning rate ``η``)::

    g  = clip(∇θ L)                       (global norm ≤ max_grad_norm, when set: g · min(1, c / (‖g‖ + 1e-6)))
    m' = β1 m + (1 - β1) g
    v' = β2 v + (1 - β2) g²
    θ' = θ (1 - η λ) - η (m' / (1 - β1^k)) / (sqrt(v' / (1 - β2^k)) + ε)

Every operation is differentiable in autograd (``create_graph=True``), the clipping almost everywhere. The square
root is taken so that its derivative at ``v' = 0`` (a parameter that has had no gradient yet) is 0, not ∞ · 0: the
values are exactly ``sqrt``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch.func import functional_call

from llm_attrib.adapters.base import upcast
from llm_attrib.adapters.causal_lm import _scored_log_probs
from llm_attrib.data import IGNORE_INDEX, Batch

Tensors = dict[str, torch.Tensor]


@dataclass
class State:
    """The optimizer state before a step: trainable parameters ``params``, Adam's moments ``m`` and ``v`` (same
    names and shapes)."""

    params: Tensors
    m: Tensors
    v: Tensors

    def tensors(self) -> list[torch.Tensor]:
        return [*self.params.values(), *self.m.values(), *self.v.values()]

    def named(self) -> Tensors:
        """Every tensor by ``params/<name>``, ``m/<name>``, ``v/<name>`` (how a checkpoint stores it)."""
        return {f"{group}/{n}": t for group, tensors in (("params", self.params), ("m", self.m), ("v", self.v))
                for n, t in tensors.items()}

    def detached(self, requires_grad: bool = False) -> "State":
        """A copy of leaves (``requires_grad`` set on each: the inputs of a step to differentiate)."""
        def leaves(group: Tensors) -> Tensors:
            return {name: t.detach().requires_grad_(requires_grad) for name, t in group.items()}
        return State(leaves(self.params), leaves(self.m), leaves(self.v))

    @classmethod
    def initial(cls, params: Mapping[str, torch.Tensor]) -> "State":
        return cls({n: p.detach().clone() for n, p in params.items()},
                   {n: torch.zeros_like(p) for n, p in params.items()},
                   {n: torch.zeros_like(p) for n, p in params.items()})


@dataclass(frozen=True)
class AdamW:
    """AdamW's hyper-parameters, constant over a run (the learning rate is per step)."""

    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    max_grad_norm: float | None


def log_probs(model: torch.nn.Module, params: Mapping[str, torch.Tensor], batch: Batch) -> torch.Tensor:
    """``[B]`` Σ log Pr(scored token | prefix) per record, with ``model``'s trainable parameters replaced by
    ``params`` (a peft model's frozen base is its own); float32 for half models, else the model's dtype."""
    logits = functional_call(model, dict(params), (), dict(input_ids=batch.input_ids,
                                                           attention_mask=batch.attention_mask,
                                                           position_ids=batch.position_ids)).logits
    return _scored_log_probs(torch.log_softmax(upcast(logits[:, :-1]), dim=-1), batch.labels[:, 1:]).sum(dim=1)


def batch_loss(model: torch.nn.Module, params: Mapping[str, torch.Tensor], batch: Batch,
               weights: torch.Tensor) -> torch.Tensor:
    """``L(θ, w)`` of the module docstring: Σ_i w_i NLL_i / (scored tokens of the batch); ``weights`` ``[B]``."""
    n_scored = int((batch.labels[:, 1:] != IGNORE_INDEX).sum())
    return -(weights * log_probs(model, params, batch)).sum() / max(n_scored, 1)


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(x)`` for ``x ≥ 0`` whose gradient at 0 is 0 (instead of ∞)."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)).sqrt(), torch.zeros_like(x))


def adamw_step(model: torch.nn.Module, state: State, batch: Batch, weights: torch.Tensor, lr: float, step: int,
               hyper: AdamW, *, create_graph: bool = False) -> tuple[State, torch.Tensor]:
    """The state after one step (``step`` = 1, 2, … for the bias correction) and the batch's loss.

    ``state.params`` must require grad. ``create_graph=True`` keeps the graph of the update (second derivatives
    included) so that the new state can be differentiated with respect to ``state`` and ``weights``."""
    names = list(state.params)
    loss = batch_loss(model, state.params, batch, weights)
    grads = torch.autograd.grad(loss, [state.params[n] for n in names], create_graph=create_graph,
                                materialize_grads=True)
    if hyper.max_grad_norm is not None:
        norm = torch.sqrt(sum((g * g).sum() for g in grads))
        scale = torch.clamp(hyper.max_grad_norm / (norm + 1e-6), max=1.0)
        grads = tuple(g * scale for g in grads)
    correction1, correction2 = 1.0 - hyper.beta1 ** step, 1.0 - hyper.beta2 ** step
    params, m, v = {}, {}, {}
    for name, g in zip(names, grads):
        m[name] = hyper.beta1 * state.m[name] + (1.0 - hyper.beta1) * g
        v[name] = hyper.beta2 * state.v[name] + (1.0 - hyper.beta2) * (g * g)
        update = (m[name] / correction1) / (_sqrt(v[name] / correction2) + hyper.eps)
        params[name] = state.params[name] * (1.0 - lr * hyper.weight_decay) - lr * update
    return State(params, m, v), loss
