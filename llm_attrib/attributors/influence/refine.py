"""Refining a factored solve towards the exact damped Fisher by preconditioned conjugate gradients.

K-FAC/EK-FAC solve ``(F̃ + λ)⁻¹ ∇f(q)`` with a block-diagonal, Kronecker-factored ``F̃``. The exact per-example
Fisher of the tracked layers (all layers together, cross-layer blocks included) is
``F̄ = (1/n) Σ_i vec(G_i) vec(G_i)ᵀ`` over the ``n`` records of the curvature's fit sample, with ``G_i`` the
per-sequence gradient of log p(ŷ_i | z_i) for targets ŷ sampled from the model (or the data's targets,
``fisher="empirical"``): the same sample, seed and targets as the first statistics pass of `Curvature.fit`.
`refine` solves ``N·(F̄ + Λ) x = ∇f(q)`` with ``Λ`` the preconditioner's own damping (per layer: an absolute
value, or 0.1 × that layer's mean eigenvalue) and ``N`` the training-set size, so ``x`` replaces
``curvature.precondition(∇f(q))`` and the score's sign and units are unchanged (positive = raises the query's
log-probability).

Preconditioned CG from ``x₀ = 0`` with ``curvature.precondition`` as the preconditioner, batched over queries
(each query has its own step sizes): ``steps = 0`` returns the preconditioner's solve itself; step 1 is that
solve rescaled per query (an equal ranking); each step costs one pass over the fit sample (a forward and a
backward pass per batch, as one statistics pass), and with as many steps as tracked parameters it reaches the
exact solve (in exact arithmetic). A Fisher-vector product never forms ``F̄``:
``F̄ V = (1/n) Σ_i ⟨V, G_i⟩ G_i`` with each batch's ``G_i`` materialised per layer.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from llm_attrib.adapters.base import Adapter
from llm_attrib.capture import TrackedLayer, per_example_gradients
from llm_attrib.curvature import Curvature, Grads, resolve_damping
from llm_attrib.curvature.base import add_to, gradient_passes, working_precision
from llm_attrib.distributed import process_seed, sum_across_processes
from llm_attrib.errors import UserInputError

EIGENVALUES: dict[str, str] = {"kfac": "eigenvalues", "ekfac": "eigenvalues", "diagonal": "diagonal"}
"""Curvature kind → the state tensor whose mean sets its heuristic damping: the preconditioners `refine` accepts."""


def layer_damping(curvature: Curvature, name: str) -> float:
    """The absolute damping ``curvature`` adds to layer ``name`` (its heuristic resolved on its own eigenvalues)."""
    return resolve_damping(curvature.damping, curvature.state[f"{name}/{EIGENVALUES[curvature.kind]}"])


class FisherOperator:
    """``V ↦ N·(F̄ + Λ) V`` on ``{layer: [Q, O, I]}``, one pass over the encoded fit ``examples`` per product."""

    def __init__(self, adapter: Adapter, curvature: Curvature, examples: Sequence[Any], *, layers: Sequence[TrackedLayer],
                 batch_size: int, seed: int, fisher: str):
        if curvature.kind not in EIGENVALUES:
            raise UserInputError(f"refining needs a factored preconditioner ({', '.join(EIGENVALUES)}), "
                                 f"not {curvature.kind!r} curvature")
        if not examples:
            raise UserInputError("refining needs the curvature's fit sample: call fit(train) first")
        self.adapter, self.examples, self.layers = adapter, examples, list(layers)
        self.batch_size, self.seed, self.fisher = batch_size, seed, fisher
        self.n_train = curvature.n_train
        self.damping = {layer.name: layer_damping(curvature, layer.name) for layer in self.layers}
        self.passes = 0

    def __call__(self, vectors: Grads) -> Grads:
        generator = torch.Generator(device=self.adapter.device).manual_seed(process_seed(self.seed))
        sums: dict[str, torch.Tensor] = {}
        pending: dict[str, torch.Tensor] = {}  # one batch's per-example gradients, until every layer is seen
        for layer, a, g, _ in gradient_passes(self.adapter, self.examples, layers=self.layers,
                                               batch_size=self.batch_size, generator=generator, fisher=self.fisher,
                                               description="Fisher-vector product", progress=False):
            pending[layer.name] = per_example_gradients(working_precision(a), working_precision(g))
            if len(pending) < len(self.layers):
                continue
            # ⟨V_q, G_b⟩ summed over layers: [Q, B]; then Σ_b ⟨V_q, G_b⟩ G_b per layer.
            products = sum(vectors[k].flatten(1).to(pending[k]) @ pending[k].flatten(1).T for k in pending)
            for k, grads in pending.items():
                add_to(sums, k, (products @ grads.flatten(1)).reshape(vectors[k].shape))
            add_to(sums, "n_examples", torch.tensor(float(products.shape[1]), device=products.device))
            pending = {}
        sums = sum_across_processes(sums)
        self.passes += 1
        n = sums.pop("n_examples")
        return {k: (self.n_train * (sums[k] / n + self.damping[k] * vectors[k].double())).to(vectors[k].dtype)
                for k in vectors}


def _dot(left: Grads, right: Grads) -> torch.Tensor:
    """``[Q]``: per-query inner product over every layer, in float64."""
    return sum((left[k].double() * right[k].double()).flatten(1).sum(dim=1) for k in left)


def _axpy(x: Grads, alpha: torch.Tensor, y: Grads) -> Grads:
    """``x + alpha[q] · y`` per query."""
    return {k: x[k] + (alpha.to(x[k]).reshape(-1, *([1] * (x[k].dim() - 1))) * y[k]) for k in x}


def refine(curvature: Curvature, operator: FisherOperator, grads: Grads, steps: int) -> Grads:
    """``steps`` of preconditioned CG on ``operator(x) = grads`` from ``x₀ = 0``, ``curvature.precondition`` as the
    preconditioner: ``{layer: [Q, O, I]}`` in, the refined preconditioned gradients out (same shapes and dtypes);
    ``steps = 0`` is ``curvature.precondition(grads)``."""
    z = curvature.precondition(grads)
    if steps == 0:
        return z
    x = {k: torch.zeros_like(v) for k, v in z.items()}
    r, p, rz = dict(grads), z, _dot(grads, z)
    for step in range(steps):
        product = operator(p)
        curvature_along = _dot(p, product)
        alpha = torch.where(curvature_along > 0, rz / curvature_along.clamp(min=1e-300), torch.zeros_like(rz))
        x = _axpy(x, alpha, p)
        if step == steps - 1:
            break
        r = _axpy(r, -alpha, product)
        z = curvature.precondition(r)
        rz_next = _dot(r, z)
        beta = torch.where(rz > 0, rz_next / rz.clamp(min=1e-300), torch.zeros_like(rz))
        p, rz = _axpy(z, beta, p), rz_next
    return x
