"""Hooks on tracked layers: per-token layer inputs ``a`` and output gradients ``g``.

A tracked layer is an affine map ``y = W a (+ b)``: every ``nn.Linear`` (subclasses included) and GPT-2's
``Conv1D`` (which stores ``W`` transposed). Whatever the storage, this library writes a layer's gradient as a
matrix ``[d_out, d_in (+1 if bias)]``: the bias gradient is the last column, matched by a column of ones
appended to ``a``. The gradient of a scalar objective summed over a sequence is then ``G = Σ_t g_t a_tᵀ``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from llm_attrib.errors import UserInputError


@dataclass(frozen=True)
class TrackedLayer:
    """One affine layer whose gradient is attributed. ``shape`` is ``(d_out, d_in + has_bias)``."""

    name: str
    module: nn.Module

    @property
    def is_conv1d(self) -> bool:
        return isinstance(self.module, Conv1D)

    @property
    def has_bias(self) -> bool:
        return getattr(self.module, "bias", None) is not None

    @property
    def shape(self) -> tuple[int, int]:
        weight = self.module.weight
        d_out, d_in = (weight.shape[1], weight.shape[0]) if self.is_conv1d else tuple(weight.shape)
        return int(d_out), int(d_in) + int(self.has_bias)

    @property
    def n_params(self) -> int:
        d_out, d_in = self.shape
        return d_out * d_in

    def parameters(self) -> list[nn.Parameter]:
        return [self.module.weight] + ([self.module.bias] if self.has_bias else [])

    def matrix_from_parameter_grads(self, weight_grad: torch.Tensor, bias_grad: torch.Tensor | None) -> torch.Tensor:
        """Autograd's ``weight.grad`` (and ``bias.grad``) as this library's ``[d_out, d_in(+1)]`` matrix."""
        matrix = weight_grad.T if self.is_conv1d else weight_grad
        if self.has_bias:
            matrix = torch.cat([matrix, bias_grad.unsqueeze(-1)], dim=-1)
        return matrix


def is_trackable(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, Conv1D))


def find_layers(model: nn.Module, patterns: Sequence[str], exclude: Sequence[str] = ()) -> list[TrackedLayer]:
    """Trackable layers whose qualified name matches any regex in ``patterns`` and none in ``exclude``."""
    try:
        compiled = [re.compile(p) for p in patterns]
    except re.error as error:
        raise UserInputError(f"modules: {error.pattern!r} is not a valid regular expression ({error}); give a "
                             "preset (mlp, attention, all) or a regex matched against layer names") from None
    excluded = [re.compile(p) for p in exclude]
    layers = [
        TrackedLayer(name, module)
        for name, module in model.named_modules()
        if is_trackable(module)
        and any(p.search(name) for p in compiled)
        and not any(p.search(name) for p in excluded)
    ]
    if not layers:
        names = [n for n, m in model.named_modules() if is_trackable(m)][:8]
        raise UserInputError(f"no Linear/Conv1D layer matches {list(patterns)}; layer names look like {names}")
    return layers


def _as_tokens(x: torch.Tensor) -> torch.Tensor:
    """``[B, d]`` → ``[B, 1, d]``; ``[B, T, d]`` unchanged."""
    return x.unsqueeze(1) if x.ndim == 2 else x


class LayerCapture:
    """Records each tracked layer's input ``a`` ``[B, T, d_in(+1)]`` and output during a forward pass.

    Use as a context manager around the forward pass, then `output_gradients(objective)` to obtain the
    output gradients ``g`` ``[B, T, d_out]`` of a scalar objective for every tracked layer.
    Tracked weights are made to require grad inside the context (and restored after).
    """

    def __init__(self, layers: Sequence[TrackedLayer]):
        self.layers = list(layers)
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._requires_grad: list[tuple[nn.Parameter, bool]] = []

    def _hook(self, layer: TrackedLayer):
        def forward_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if layer.name in self.outputs:
                raise RuntimeError(f"layer {layer.name} is called twice in one forward pass; track another layer")
            a = _as_tokens(args[0].detach())
            if layer.has_bias:
                a = torch.cat([a, a.new_ones(*a.shape[:-1], 1)], dim=-1)
            self.inputs[layer.name] = a
            self.outputs[layer.name] = output

        return forward_hook

    def __enter__(self) -> "LayerCapture":
        for layer in self.layers:
            for param in layer.parameters():
                self._requires_grad.append((param, param.requires_grad))
                param.requires_grad_(True)
            self._handles.append(layer.module.register_forward_hook(self._hook(layer)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        for param, flag in self._requires_grad:
            param.requires_grad_(flag)
        self._handles.clear()
        self._requires_grad.clear()

    def output_gradients(self, objective: torch.Tensor) -> Iterator[tuple[TrackedLayer, torch.Tensor, torch.Tensor]]:
        """Yield ``(layer, a [B,T,d_in(+1)], g [B,T,d_out])`` for each tracked layer, g = ∂objective/∂output."""
        missing = [layer.name for layer in self.layers if layer.name not in self.outputs]
        if missing:
            raise RuntimeError(f"tracked layers {missing[:3]} were not called in the forward pass")
        outputs = [self.outputs[layer.name] for layer in self.layers]
        grads = torch.autograd.grad(objective, outputs, allow_unused=True)
        self.outputs.clear()
        for layer, grad, output in zip(self.layers, grads, outputs):
            a = self.inputs.pop(layer.name)
            g = torch.zeros_like(output) if grad is None else grad
            yield layer, a, _as_tokens(g.detach())


def per_example_gradients(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``G_i = Σ_t g_t a_tᵀ``: ``a [B,T,I]``, ``g [B,T,O]`` → ``[B, O, I]``."""
    return torch.einsum("bto,bti->boi", g, a)
