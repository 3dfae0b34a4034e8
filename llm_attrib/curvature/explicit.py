"""Explicit (dense) Fisher over all tracked parameters, for tiny models and for checking the factored ones.

``F̄ = E_z[vec(G_z) vec(G_z)ᵀ]`` over the concatenation of every tracked layer's per-sequence gradient
(layer order as tracked, each ``[O, I]`` flattened row-major). ``block_diagonal=True`` keeps only the
per-layer blocks (what K-FAC and EK-FAC approximate). Memory is ``D²`` for ``D`` tracked parameters.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from llm_attrib.capture import TrackedLayer, per_example_gradients
from llm_attrib.curvature.base import DEFAULT_DAMPING, Curvature, Grads, add_to, example_count, check_finite, resolve_damping
from llm_attrib.errors import UserInputError

MAX_PARAMETERS = 20_000


class ExplicitCurvature(Curvature):
    """Dense damped Fisher solve; see the module docstring."""

    kind = "explicit"
    layerwise = False

    def __init__(self, damping: float | str = DEFAULT_DAMPING, block_diagonal: bool = False):
        super().__init__(damping)
        self.block_diagonal = block_diagonal
        self._pending: dict[str, torch.Tensor] = {}
        self._shapes: dict[str, tuple[int, int]] = {}

    def fit(self, adapter: Any, examples: Sequence[Any], **kwargs: Any) -> "ExplicitCurvature":
        if kwargs.get("layers") is not None and len(kwargs["layers"]) != len(adapter.layers):
            raise UserInputError("explicit curvature is fitted on all tracked layers together; use layer_partitions=1")
        total = sum(layer.n_params for layer in adapter.layers)
        if total > MAX_PARAMETERS:
            raise UserInputError(f"explicit curvature needs a {total}² matrix; track fewer layers (≤ {MAX_PARAMETERS})")
        self._shapes = {layer.name: layer.shape for layer in adapter.layers}
        return super().fit(adapter, examples, **kwargs)

    def _accumulate(self, stage: int, layer: TrackedLayer, a: torch.Tensor, g: torch.Tensor,
                    mask: torch.Tensor, sums: dict[str, torch.Tensor]) -> None:
        self._pending[layer.name] = per_example_gradients(a, g).flatten(1)
        if len(self._pending) < len(self._shapes):
            return
        flat = torch.cat([self._pending.pop(name) for name in self._shapes], dim=1)
        add_to(sums, "fisher_sum", flat.T @ flat)
        add_to(sums, "n_examples", example_count(flat))

    def _finalize(self, stage: int, layers: Sequence[TrackedLayer], sums: dict[str, torch.Tensor]) -> None:
        fisher = sums["fisher_sum"] / sums["n_examples"]
        check_finite("(all tracked)", "the dense Fisher", fisher)
        if self.block_diagonal:
            keep = torch.zeros_like(fisher, dtype=torch.bool)
            start = 0
            for layer in layers:
                stop = start + layer.n_params
                keep[start:stop, start:stop] = True
                start = stop
            fisher = torch.where(keep, fisher, torch.zeros_like(fisher))
        self.state["fisher"] = fisher

    def _apply(self, grads: Grads) -> Grads:
        fisher = self.state["fisher"]
        names = list(self._shapes) if self._shapes else list(grads)
        if set(grads) != set(names):
            raise UserInputError("explicit curvature preconditions all tracked layers together; pass all of them")
        n = next(iter(grads.values())).shape[0]
        flat = torch.cat([grads[name].reshape(n, -1) for name in names], dim=1).to(fisher)  # a dense solve: float64
        damping = resolve_damping(self.damping, torch.linalg.eigvalsh(fisher))
        solved = torch.linalg.solve(fisher + damping * torch.eye(len(fisher), dtype=fisher.dtype,
                                                                 device=fisher.device), flat.T).T
        out, start = {}, 0
        for name in names:
            size = grads[name][0].numel()
            out[name] = solved[:, start : start + size].reshape(grads[name].shape).to(grads[name].dtype)
            start += size
        return out

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "block_diagonal": self.block_diagonal,
                "layers": {name: list(shape) for name, shape in self._shapes.items()}}

    def load_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> "ExplicitCurvature":
        self._shapes = {name: tuple(shape) for name, shape in metadata["layers"].items()}
        self.block_diagonal = bool(metadata["block_diagonal"])
        return super().load_state(tensors, metadata)
