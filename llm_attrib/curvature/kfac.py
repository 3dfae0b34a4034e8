"""K-FAC and EK-FAC curvature of affine layers.

K-FAC (Martens & Grosse 2015): per layer ``F̄ ≈ τ · A ⊗ S`` with per-token means ``A = E[a aᵀ]`` (inputs, bias
column included) and ``S = E[g gᵀ]`` (output gradients), ``τ`` the mean number of tokens per sequence (so that
K-FAC, EK-FAC and the explicit Fisher all approximate the same per-sequence Fisher). With eigenbases
``A = Q_A diag(λ_A) Q_Aᵀ``, ``S = Q_S diag(λ_S) Q_Sᵀ``, the damped inverse is
``G ↦ Q_S [(Q_Sᵀ G Q_A) / (Λ + λ)] Q_Aᵀ`` with ``Λ = τ · λ_S λ_Aᵀ``.

EK-FAC (George et al. 2018) keeps the eigenbases and refits ``Λ = E_z[(Q_Sᵀ G_z Q_A)²]`` from per-sequence
gradients ``G_z = Σ_t g_t a_tᵀ`` in a second pass. Eigendecompositions run in float64.
"""

from __future__ import annotations

from typing import Sequence

import torch

from llm_attrib.capture import TrackedLayer
from llm_attrib.curvature.base import Curvature, Grads, add_to, example_count, check_finite, masked, resolve_damping
from llm_attrib.errors import CurvatureError


def symmetric_eigh(name: str, what: str, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 eigendecomposition with NaN/Inf guarded; negative round-off eigenvalues clipped to 0."""
    check_finite(name, what, matrix)
    matrix = (matrix.double() + matrix.double().T) / 2
    try:
        eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    except torch.linalg.LinAlgError:
        jitter = 1e-10 * float(matrix.diagonal().abs().mean().clamp(min=1e-30))
        try:
            eigenvalues, eigenvectors = torch.linalg.eigh(matrix + jitter * torch.eye(len(matrix), dtype=matrix.dtype,
                                                                                          device=matrix.device))
        except torch.linalg.LinAlgError as error:
            raise CurvatureError(f"layer {name}: eigendecomposition of {what} failed ({error})") from error
    return eigenvalues.clamp(min=0), eigenvectors


class KFACCurvature(Curvature):
    """Kronecker-factored curvature; see the module docstring."""

    kind = "kfac"
    passes = 1

    def _accumulate(self, stage: int, layer: TrackedLayer, a: torch.Tensor, g: torch.Tensor,
                    mask: torch.Tensor, sums: dict[str, torch.Tensor]) -> None:
        if stage == 0:
            a_real, g_real = masked(a, mask).flatten(0, 1), masked(g, mask).flatten(0, 1)
            add_to(sums, f"{layer.name}/a_cov", a_real.T @ a_real)
            add_to(sums, f"{layer.name}/g_cov", g_real.T @ g_real)
            add_to(sums, f"{layer.name}/n_tokens", mask.sum().double())
            add_to(sums, f"{layer.name}/n_examples", example_count(a))
        else:
            rotated_a = a @ self.state[f"{layer.name}/a_eigenvectors"].to(a.dtype)
            rotated_g = g @ self.state[f"{layer.name}/g_eigenvectors"].to(g.dtype)
            rotated = torch.einsum("bto,bti->boi", rotated_g, rotated_a)
            add_to(sums, f"{layer.name}/corrected_sum", rotated.square().sum(dim=0))
            add_to(sums, f"{layer.name}/n_examples_2", example_count(a))

    def _finalize(self, stage: int, layers: Sequence[TrackedLayer], sums: dict[str, torch.Tensor]) -> None:
        for layer in layers:
            if stage == 0:
                n_tokens = sums[f"{layer.name}/n_tokens"]
                if n_tokens == 0:
                    raise CurvatureError(f"layer {layer.name}: no real tokens were seen while fitting")
                a_values, a_vectors = symmetric_eigh(layer.name, "the input covariance A",
                                                     sums[f"{layer.name}/a_cov"] / n_tokens)
                g_values, g_vectors = symmetric_eigh(layer.name, "the output-gradient covariance S",
                                                     sums[f"{layer.name}/g_cov"] / n_tokens)
                tokens_per_example = n_tokens / sums[f"{layer.name}/n_examples"]
                self.state[f"{layer.name}/a_eigenvectors"] = a_vectors
                self.state[f"{layer.name}/g_eigenvectors"] = g_vectors
                self.state[f"{layer.name}/eigenvalues"] = tokens_per_example * torch.outer(g_values, a_values)
            else:
                corrected = sums[f"{layer.name}/corrected_sum"] / sums[f"{layer.name}/n_examples_2"]
                check_finite(layer.name, "the corrected eigenvalues", corrected)
                self.state[f"{layer.name}/eigenvalues"] = corrected

    def _apply(self, grads: Grads) -> Grads:
        out = {}
        for name, grad in grads.items():
            q_a = self.factor(f"{name}/a_eigenvectors", grad)
            q_g = self.factor(f"{name}/g_eigenvectors", grad)
            eigenvalues = self.state[f"{name}/eigenvalues"]
            damped = (eigenvalues + resolve_damping(self.damping, eigenvalues)).to(device=grad.device, dtype=grad.dtype)
            out[name] = q_g @ ((q_g.T @ grad @ q_a) / damped) @ q_a.T
        return out


class EKFACCurvature(KFACCurvature):
    """K-FAC eigenbases with eigenvalues refitted from per-sequence gradients (a second pass)."""

    kind = "ekfac"
    passes = 2
