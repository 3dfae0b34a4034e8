"""The curvature interface and the statistics pass shared by every estimator.

A curvature object approximates the per-example (true) Fisher ``F̄ = E_z E_{ŷ~p_θ}[∇ log p(ŷ|z) ∇ log p(ŷ|z)ᵀ]``
of the tracked layers (the Gauss–Newton matrix in expectation; Bae et al. 2022), estimated from a seeded
random sample of the training data with targets sampled from the model (``fisher="sampled"``; the empirical
Fisher with the data's own targets is offered as ``fisher="empirical"``).

`precondition` applies the damped inverse Hessian of the *summed* training loss,
``(N·(F̄ + λI))⁻¹ = (F̄ + λI)⁻¹ / N`` with ``N`` the training-set size, so that
``precondition(∇f(q)) · ∇ log p(z)`` predicts how much ``f(q)`` drops when ``z`` is removed (first order).
Damping ``λ`` is absolute (a float) or ``"heuristic"`` = 0.1 × the mean eigenvalue of each layer (Grosse et al.);
it is applied at use, so fitted factors serve any damping.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Iterator, Sequence

import torch

from llm_attrib.adapters.base import Adapter
from llm_attrib.capture import LayerCapture, TrackedLayer
from llm_attrib.distributed import process_seed, shard, sum_across_processes
from llm_attrib.errors import CurvatureError, UserInputError
from llm_attrib.progress import progress as tracked

Grads = dict[str, torch.Tensor]
"""Per-layer gradient matrices ``{layer name: [n, d_out, d_in(+1)]}``."""

HEURISTIC_DAMPING_FACTOR = 0.1
DEFAULT_DAMPING: float | str = 1e-4
"""Chosen by the defaults grid's rule (eval/grid/README.md: 3 data sets × 2 depths, full-length records): 1e-4 beats
"heuristic" by +0.0059 ± 0.0022 LDS (grid means 0.258 vs 0.253; 1e-8 0.251). An absolute value: it does not
follow the gradients' scale as "heuristic" (0.1 × each layer's mean eigenvalue) does."""
FISHER_TARGETS = ("sampled", "empirical")


def resolve_damping(damping: float | str, eigenvalues: torch.Tensor) -> float:
    """An absolute damping, or ``"heuristic"``: 0.1 × the mean of this layer's eigenvalues."""
    if damping == "heuristic":
        return HEURISTIC_DAMPING_FACTOR * float(eigenvalues.mean())
    if isinstance(damping, (int, float)) and damping >= 0:
        return float(damping)
    raise UserInputError(f"damping must be a non-negative number or 'heuristic', not {damping!r}")


def check_finite(name: str, what: str, tensor: torch.Tensor) -> None:
    """Raise `CurvatureError` if ``tensor`` holds NaN or Inf."""
    bad = (~torch.isfinite(tensor)).sum().item()
    if bad:
        raise CurvatureError(
            f"layer {name}: {what} has {bad} NaN/Inf entries; the model produced non-finite values "
            "(try float32 instead of fp16/bf16, or check the data)"
        )


def gradient_passes(
    adapter: Adapter,
    examples: Sequence[Any],
    *,
    layers: Sequence[TrackedLayer],
    batch_size: int,
    generator: torch.Generator,
    fisher: str,
    description: str,
    progress: bool,
) -> Iterator[tuple[TrackedLayer, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(layer, a [B,T,I], g [B,T,O], mask [B,T])`` for each of ``layers`` and batch, this process's shard only.

    ``g`` is the output gradient of the summed log-likelihood of targets sampled from the model
    (``fisher="sampled"``) or of the data's targets (``"empirical"``).
    """
    if fisher not in FISHER_TARGETS:
        raise UserInputError(f"fisher must be one of {FISHER_TARGETS}, not {fisher!r}")
    local = shard(examples)
    for batch in tracked(adapter.batches(local, batch_size), description, total=-(-len(local) // batch_size),
                         enabled=progress):
        mask = adapter.token_mask(batch)
        with LayerCapture(layers) as capture:
            if fisher == "sampled":
                objective = adapter.sampled_log_prob(batch, generator)
            else:
                objective = adapter.log_prob(batch)
            for layer, a, g in capture.output_gradients(objective.sum()):
                yield layer, a, g, mask


class Curvature(ABC):
    """Base class: fit statistics with `fit`, apply the damped inverse with `precondition`.

    Subclasses implement `_accumulate` / `_finalize` over one or more passes (`passes`), `_apply`
    (the damped inverse on one layer or on all layers together) and declare their tensors in `state`.
    """

    kind: ClassVar[str]
    passes: ClassVar[int] = 1
    layerwise: ClassVar[bool] = True
    """Whether each layer's block is fitted and applied on its own (so layers can be fitted in groups)."""

    def __init__(self, damping: float | str = DEFAULT_DAMPING):
        resolve_damping(damping, torch.ones(1))
        self.damping = damping
        self.state: dict[str, torch.Tensor] = {}
        self.n_train: int | None = None

    @property
    def is_fitted(self) -> bool:
        return self.n_train is not None

    def fit(
        self,
        adapter: Adapter,
        examples: Sequence[Any],
        *,
        n_train: int,
        batch_size: int = 8,
        seed: int = 0,
        fisher: str = "sampled",
        progress: bool = False,
        layers: Sequence[TrackedLayer] | None = None,
    ) -> "Curvature":
        """Estimate the curvature from encoded ``examples`` (a seeded sample of a training set of size ``n_train``).

        ``layers``: fit only these tracked layers (default: all the adapter's), adding their tensors to `state`
        beside those of layers fitted before. A group of layers fitted alone gets exactly the statistics it
        would get with all layers, sampled Fisher targets included (the same seed draws the same targets).

        Each batch's products run in `working_precision` (float32; float64 for a float64 model), their sums over
        batches in float64. Under several processes each fits on its contiguous shard of ``examples`` and the float64 sums are added
        across processes; sampled Fisher targets come from a per-rank seeded generator (reproducible for a
        given number of processes; ``fisher="empirical"`` gives the same factors for any number).
        """
        if n_train < 1 or not examples:
            raise UserInputError("cannot fit curvature on an empty training set")
        layers = list(adapter.layers if layers is None else layers)
        generator = torch.Generator(device=adapter.device).manual_seed(process_seed(seed))
        for stage in range(self.passes):
            sums: dict[str, torch.Tensor] = {}
            for layer, a, g, mask in gradient_passes(
                adapter, examples, layers=layers, batch_size=batch_size, generator=generator, fisher=fisher,
                description=f"{self.kind} statistics {stage + 1}/{self.passes}", progress=progress,
            ):
                self._accumulate(stage, layer, working_precision(a), working_precision(g), mask, sums)
            self._finalize(stage, layers, sum_across_processes(sums))
        self.n_train = n_train
        return self

    @abstractmethod
    def _accumulate(self, stage: int, layer: TrackedLayer, a: torch.Tensor, g: torch.Tensor,
                    mask: torch.Tensor, sums: dict[str, torch.Tensor]) -> None:
        """Add one batch's statistics of ``layer`` to ``sums`` (float64, summed later across processes)."""

    @abstractmethod
    def _finalize(self, stage: int, layers: Sequence[TrackedLayer], sums: dict[str, torch.Tensor]) -> None:
        """Turn the summed statistics of pass ``stage`` into ``self.state``."""

    @abstractmethod
    def _apply(self, grads: Grads) -> Grads:
        """``(F̄ + λI)⁻¹ G`` for every layer in ``grads`` (no 1/N), in the dtype of ``grads``."""

    def precondition(self, grads: Grads) -> Grads:
        """``(F̄ + λI)⁻¹ G / N`` per layer: ``{name: [n, O, I]}`` → same shapes, in the input dtype.

        Applied in `working_precision` (float32, or float64 for float64 gradients): the factors were
        eigendecomposed in float64 and are cast, which keeps the rotations of large layers affordable.
        """
        if not self.is_fitted:
            raise CurvatureError(f"{self.kind} curvature is not fitted; call fit() or load() first")
        out = self._apply({name: working_precision(g) for name, g in grads.items()})
        return {name: (out[name] / self.n_train).to(grads[name].dtype) for name in grads}

    def factor(self, key: str, like: torch.Tensor) -> torch.Tensor:
        """``state[key]`` on the device and in the dtype of ``like``."""
        return self.state[key].to(device=like.device, dtype=like.dtype)

    def layer_state(self, layers: Sequence[TrackedLayer]) -> dict[str, torch.Tensor]:
        """The tensors of `state` that belong to ``layers`` (keys ``"{layer name}/{what}"``)."""
        names = {layer.name for layer in layers}
        return {key: value for key, value in self.state.items() if key.rsplit("/", 1)[0] in names}

    def to(self, device: torch.device | str) -> "Curvature":
        self.state = {k: v.to(device) for k, v in self.state.items()}
        return self

    def metadata(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_train": self.n_train}

    def load_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> "Curvature":
        self.state = dict(tensors)
        self.n_train = int(metadata["n_train"])
        return self


def working_precision(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32, or float64 if it is float64: one batch's products run in this precision (fp16/bf16
    activations are upcast), and `add_to` accumulates them across batches in float64."""
    return tensor if tensor.dtype == torch.float64 else tensor.float()


def masked(tensor: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the padded positions of ``[B, T, D]`` by ``mask [B, T]``."""
    return tensor * mask.unsqueeze(-1).to(tensor.dtype)


def example_count(a: torch.Tensor) -> torch.Tensor:
    """The batch size of ``a [B, T, I]`` as a float64 scalar (summed across processes like any statistic)."""
    return torch.tensor(float(a.shape[0]), dtype=torch.float64, device=a.device)


def add_to(sums: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> None:
    """``sums[key] += value``, accumulated in float64 whatever the batch's precision."""
    value = value.double()
    sums[key] = sums[key] + value if key in sums else value.clone()

