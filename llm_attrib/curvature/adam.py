"""Adam's per-parameter step sizes as a preconditioner, read from a training run's saved optimizer state.

``precondition(G) = G / (√v̂ + ε)`` per tracked layer, with ``v̂ = exp_avg_sq / (1 − β₂^t)`` the bias-corrected second
moment that Adam(W) divides its step by at the checkpoint (``t`` = the optimizer steps taken). It is not fitted:
`AdamPreconditioner.from_moments` builds it from the moments of `AdamMoment`. TracIn uses it for the Adam-aware
training-side feature ``Γ(z) = ∇log p(z) / (√v̂ + ε)`` (`llm_attrib.attributors.tracin`): the first-order change of
the weights that ``z``'s gradient causes under Adam. The momentum delivers ``(1 − β₁) g`` per step over the following
steps, ``g`` in total, and one example barely moves ``v``; LESS's ``m̂ / (√v̂ + ε)`` with the example's own moments
also carries the run's momentum, the same for every record, which would add a query-dependent constant to every
score. The preconditioner is symmetric, so applying it to the query gradient gives the same inner product.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from llm_attrib.capture import TrackedLayer
from llm_attrib.curvature.base import Curvature, Grads, check_finite
from llm_attrib.errors import UserInputError


@dataclass(frozen=True)
class AdamMoment:
    """One parameter's Adam state: ``exp_avg_sq`` (shape of the parameter), the steps taken, ``β₂`` and ``ε``."""

    exp_avg_sq: torch.Tensor
    step: float
    beta2: float
    eps: float

    def denominator(self) -> torch.Tensor:
        """``√v̂ + ε`` with ``v̂ = exp_avg_sq / (1 − β₂^step)``, as torch's Adam/AdamW compute it (float64)."""
        if self.step < 1:
            raise UserInputError("an optimizer state with no step taken has no second moment to precondition with")
        corrected = self.exp_avg_sq.double() / (1.0 - self.beta2 ** self.step)
        return corrected.sqrt() + self.eps


def layer_parameter_names(model: torch.nn.Module, layers: Sequence[TrackedLayer]) -> dict[TrackedLayer, list[str]]:
    """Each tracked layer's ``[weight, bias]`` parameter names in ``model.named_parameters()`` (the names an
    optimizer state is read by)."""
    names = {module: name for name, module in model.named_modules()}
    return {layer: [f"{names[layer.module]}.weight", f"{names[layer.module]}.bias"] for layer in layers}


def optimizer_moments(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, AdamMoment]:
    """A live Adam/AdamW ``optimizer``'s moments of ``model``'s parameters by name (copies; parameters not stepped
    yet are left out)."""
    by_parameter = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    moments = {}
    for name, parameter in model.named_parameters():
        state = optimizer.state.get(parameter)
        if state and "exp_avg_sq" in state:
            group = by_parameter[id(parameter)]
            moments[name] = AdamMoment(state["exp_avg_sq"].detach().clone(), float(state["step"]),
                                       float(group["betas"][1]), float(group["eps"]))
    return moments


class AdamPreconditioner(Curvature):
    """``G / (√v̂ + ε)`` per layer (``[O, I]``, bias column included); no damping and no ``1/N``."""

    kind = "adam"
    passes = 0

    def __init__(self, damping: None = None):
        if damping is not None:
            raise UserInputError(f"adam preconditioning applies no damping (its ε is the optimizer's); "
                                 f"leave damping unset, not {damping!r}")
        self.damping = None
        self.state = {}
        self.n_train = None

    @classmethod
    def from_moments(cls, model: torch.nn.Module, layers: Sequence[TrackedLayer],
                     moments: Mapping[str, AdamMoment]) -> "AdamPreconditioner":
        """The preconditioner of ``model``'s tracked ``layers`` from ``moments`` keyed by parameter name
        (`layer_parameter_names`). A Conv1D weight (stored ``[I, O]``) is transposed to the layer's ``[O, I]``."""
        preconditioner = cls()
        for layer, names in layer_parameter_names(model, layers).items():
            missing = [name for name in names[: 1 + layer.has_bias] if name not in moments]
            if missing:
                raise UserInputError(f"the optimizer state has no Adam moments for {missing[0]}: was that parameter "
                                     "trained (requires_grad) in this run?")
            weight = moments[names[0]].denominator()
            if layer.is_conv1d:
                weight = weight.T
            columns = [weight] + ([moments[names[1]].denominator().unsqueeze(1)] if layer.has_bias else [])
            denominator = torch.cat(columns, dim=1)
            if tuple(denominator.shape) != layer.shape:
                raise UserInputError(f"the Adam moments of {layer.name} have shape {tuple(denominator.shape)}, the "
                                     f"layer {layer.shape}: the optimizer state belongs to another model")
            check_finite(layer.name, "Adam's second moment", denominator)
            preconditioner.state[f"{layer.name}/denominator"] = denominator
        preconditioner.n_train = 0  # nothing is estimated from training data
        return preconditioner

    def fit(self, *args: Any, **kwargs: Any) -> "AdamPreconditioner":
        raise UserInputError("adam preconditioning is read from a training run's optimizer state "
                             "(llm_attrib.TrainerRun, TracIn with optimizer='adam'); it cannot be fitted")

    def _accumulate(self, stage, layer, a, g, mask, sums) -> None:
        """Nothing to collect (``passes = 0``)."""

    def _finalize(self, stage, layers, sums) -> None:
        """Nothing to finalise (``passes = 0``)."""

    def _apply(self, grads: Grads) -> Grads:
        return {name: grad / self.factor(f"{name}/denominator", grad) for name, grad in grads.items()}

    def precondition(self, grads: Grads) -> Grads:
        """``G / (√v̂ + ε)`` per layer, in the dtype of ``G`` (no ``1/N``: a step size, not an inverse Fisher)."""
        if not self.state:
            raise UserInputError("adam preconditioner has no moments; build it with AdamPreconditioner.from_moments")
        return {name: out.to(grads[name].dtype) for name, out in self._apply(dict(grads)).items()}
