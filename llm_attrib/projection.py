"""Random projections of per-example gradients, factored per affine layer (LoGra-style).

A layer's per-example gradient is ``G = Σ_t g_t a_tᵀ`` ``[O, I]`` (`llm_attrib.capture`). A Kronecker-factored
projection ``P = P_g ⊗ P_a`` with ``P_g [O, k_o]`` and ``P_a [I, k_i]`` maps it to
``P_gᵀ G P_a = Σ_t (P_gᵀ g_t)(P_aᵀ a_t)ᵀ`` ``[k_o, k_i]``: each token's ``a`` and ``g`` are projected first, so the
``[O, I]`` matrix is never formed. Every random matrix is scaled so that ``E[P Pᵀ] = I``: inner products of
gradients are preserved in expectation (Johnson–Lindenstrauss), and an orthogonal projection of full size
(``k_o = O``, ``k_i = I``) preserves them exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from llm_attrib.capture import TrackedLayer, per_example_gradients
from llm_attrib.errors import UserInputError
from llm_attrib.store import data_fingerprint


def _gaussian(d: int, k: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(d, k, generator=generator, dtype=torch.float64) / math.sqrt(k)


def _rademacher(d: int, k: int, generator: torch.Generator) -> torch.Tensor:
    signs = torch.randint(0, 2, (d, k), generator=generator, dtype=torch.int64).double() * 2 - 1
    return signs / math.sqrt(k)


def _orthogonal(d: int, k: int, generator: torch.Generator) -> torch.Tensor:
    if k > d:
        raise UserInputError(f"an orthogonal projection cannot have more columns ({k}) than rows ({d})")
    q, r = torch.linalg.qr(torch.randn(d, k, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None, :] * math.sqrt(d / k)


RANDOM_MATRICES: dict[str, Callable[[int, int, torch.Generator], torch.Tensor]] = {
    "gaussian": _gaussian,
    "rademacher": _rademacher,
    "orthogonal": _orthogonal,
}
"""``kind -> make(d, k, generator) -> [d, k]`` float64 with ``E[P Pᵀ] = I_d`` (orthonormal columns × sqrt(d/k))."""


def random_matrix(d: int, k: int, kind: str, seed: int) -> torch.Tensor:
    """A seeded ``[d, k]`` random projection (float64) of the given kind (see `RANDOM_MATRICES`)."""
    if kind not in RANDOM_MATRICES:
        raise UserInputError(f"unknown projection {kind!r}; choose one of {sorted(RANDOM_MATRICES)}")
    return RANDOM_MATRICES[kind](d, k, torch.Generator().manual_seed(seed))


@dataclass
class KroneckerProjection:
    """One layer's projection ``P_g ⊗ P_a``: ``outputs`` ``P_g [O, k_o]``, ``inputs`` ``P_a [I, k_i]``."""

    outputs: torch.Tensor
    inputs: torch.Tensor

    @property
    def dim(self) -> int:
        return self.outputs.shape[1] * self.inputs.shape[1]

    def project(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``[B, k_o·k_i]``: ``vec(P_gᵀ G_b P_a)`` of each example's gradient, from ``a [B,T,I]``, ``g [B,T,O]``."""
        return per_example_gradients(a @ self.inputs.to(a), g @ self.outputs.to(g)).flatten(1)

    def project_matrices(self, grads: torch.Tensor) -> torch.Tensor:
        """``[B, k_o·k_i]``: the same from materialised gradients ``[B, O, I]``."""
        return (self.outputs.T.to(grads) @ grads @ self.inputs.to(grads)).flatten(1)


def layer_projections(layers: Sequence[TrackedLayer], dim: int | tuple[int, int], kind: str = "gaussian",
                      seed: int = 0) -> dict[str, KroneckerProjection]:
    """``{layer name: KroneckerProjection}`` with ``dim = (k_o, k_i)`` (an int: both), each clamped to the layer's
    ``(O, I)``. Each matrix is seeded by ``seed``, the layer's name and its side, so the same layers and seed give
    the same projection on any model or process."""
    k_out, k_in = (dim, dim) if isinstance(dim, int) else dim
    if min(k_out, k_in) < 1:
        raise UserInputError(f"projection dimensions must be positive, not {dim!r}")

    def matrix(layer: TrackedLayer, side: str, d: int, k: int) -> torch.Tensor:
        return random_matrix(d, min(k, d), kind, int(data_fingerprint([seed, layer.name, side]), 16))

    return {layer.name: KroneckerProjection(matrix(layer, "outputs", layer.shape[0], k_out),
                                            matrix(layer, "inputs", layer.shape[1], k_in))
            for layer in layers}
