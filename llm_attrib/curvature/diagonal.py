"""Diagonal curvature: ``F̄ ≈ diag(E_z[G_z ⊙ G_z])`` from per-example gradients with sampled targets."""

from __future__ import annotations

from typing import Sequence

import torch

from llm_attrib.capture import TrackedLayer, per_example_gradients
from llm_attrib.curvature.base import Curvature, Grads, add_to, example_count, check_finite, resolve_damping


class DiagonalCurvature(Curvature):
    """Per-parameter second moment of per-example gradients ``[O, I]`` per layer."""

    kind = "diagonal"

    def _accumulate(self, stage: int, layer: TrackedLayer, a: torch.Tensor, g: torch.Tensor,
                    mask: torch.Tensor, sums: dict[str, torch.Tensor]) -> None:
        add_to(sums, f"{layer.name}/second_moment", per_example_gradients(a, g).square().sum(dim=0))
        add_to(sums, f"{layer.name}/n_examples", example_count(a))

    def _finalize(self, stage: int, layers: Sequence[TrackedLayer], sums: dict[str, torch.Tensor]) -> None:
        for layer in layers:
            diagonal = sums[f"{layer.name}/second_moment"] / sums[f"{layer.name}/n_examples"]
            check_finite(layer.name, "the gradient second moment", diagonal)
            self.state[f"{layer.name}/diagonal"] = diagonal

    def _apply(self, grads: Grads) -> Grads:
        out = {}
        for name, grad in grads.items():
            diagonal = self.state[f"{name}/diagonal"]
            out[name] = grad / (diagonal + resolve_damping(self.damping, diagonal)).to(device=grad.device, dtype=grad.dtype)
        return out
