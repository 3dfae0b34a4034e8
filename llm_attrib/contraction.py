"""Inner products with per-example gradients of affine layers, without materialising them when cheaper.

For a layer with inputs ``a [B,T,I]`` and output gradients ``g [B,T,O]``, example ``b``'s gradient is
``G_b = Σ_t g_bt a_btᵀ``, and ``⟨Q_q, G_b⟩ = Σ_t g_btᵀ Q_q a_bt``. Two ways to compute it for ``n`` query
matrices ``Q [n,O,I]``:

* materialise ``G [B,O,I]`` (``B·T·O·I`` + ``n·B·O·I`` multiply-adds, ``B·O·I`` memory);
* per token (``n·B·T·O·I`` multiply-adds, ``n·B·T·min(O,I)`` memory), which also yields per-token parts.
"""

from __future__ import annotations

import torch

from llm_attrib.capture import per_example_gradients


def per_token_inner_products(queries: torch.Tensor, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``[n, B, T]``: ``g_btᵀ Q_q a_bt`` for each query, example and token."""
    if queries.shape[1] <= queries.shape[2]:
        projected = torch.einsum("qoi,bto->qbti", queries, g)
        return torch.einsum("qbti,bti->qbt", projected, a)
    projected = torch.einsum("qoi,bti->qbto", queries, a)
    return torch.einsum("qbto,bto->qbt", projected, g)


def inner_products(queries: torch.Tensor, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``[n, B]``: ``⟨Q_q, G_b⟩`` by whichever of the two contractions needs fewer operations.

    The materialised path is one ``[n, O·I] @ [O·I, B]`` matrix product (an einsum over ``qoi,boi`` is ~10×
    slower on CPU: it does not fold ``O`` and ``I`` into one dimension), so ``queries`` should be contiguous.
    """
    n, (b, t, _) = queries.shape[0], a.shape
    if n * t < t + n:  # only when n == 1 or t == 1 can the per-token path be cheaper
        return per_token_inner_products(queries, a, g).sum(dim=-1)
    return queries.reshape(n, -1) @ per_example_gradients(a, g).reshape(b, -1).T


def squared_norms(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``[B]``: ``‖G_b‖²_F = Σ_{t,s} (g_t·g_s)(a_t·a_s)``, by the Gram trick when cheaper than materialising."""
    t, i, o = a.shape[1], a.shape[2], g.shape[2]
    if t * t * (i + o) < t * i * o:
        return (torch.einsum("bti,bsi->bts", a, a) * torch.einsum("bto,bso->bts", g, g)).sum(dim=(1, 2))
    return per_example_gradients(a, g).square().sum(dim=(1, 2))


class QueryMatrices:
    """Preconditioned query matrices of one layer, ``Q [n, O, I]``, contracted with training batches.

    `scores` gives ``⟨Q_q, G_b⟩`` ``[n, B]``; `token_scores` gives the per-token parts ``g_btᵀ Q_q a_bt``
    ``[n, B, T]``. The contraction runs in ``dtype`` (e.g. bfloat16 on a GPU) and returns float64.
    """

    def __init__(self, matrices: torch.Tensor, dtype: torch.dtype | None = None):
        self.matrices = (matrices if dtype is None else matrices.to(dtype)).contiguous()
        self.dtype = self.matrices.dtype

    def scores(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return inner_products(self.matrices, a.to(self.dtype), g.to(self.dtype)).double()

    def token_scores(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return per_token_inner_products(self.matrices, a.to(self.dtype), g.to(self.dtype)).double()


class LowRankQueryMatrices(QueryMatrices):
    """Rank-``r`` query matrices ``Q_q ≈ U_q V_qᵀ`` (``U [n, O, r]`` scaled by the singular values, ``V [n, I, r]``).

    ``⟨U Vᵀ, G_b⟩ = Σ_t (g_btᵀ U)(Vᵀ a_bt)``: ``n·B·T·r·(O+I)`` multiply-adds, no ``[O, I]`` matrix per
    training example, so one pass over the training data serves many queries cheaply ("query batching").
    """

    def __init__(self, matrices: torch.Tensor, rank: int, dtype: torch.dtype | None = None):
        u, s, vh = torch.linalg.svd(matrices.double(), full_matrices=False)
        r = min(rank, s.shape[-1])
        target = dtype or matrices.dtype
        self.left = (u[..., :r] * s[:, None, :r]).to(target)
        self.right = vh[:, :r, :].transpose(1, 2).to(target)
        self.dtype = target

    def token_scores(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        projected_g = torch.einsum("bto,qor->qbtr", g.to(self.dtype), self.left)
        projected_a = torch.einsum("bti,qir->qbtr", a.to(self.dtype), self.right)
        return (projected_g * projected_a).sum(dim=-1).double()

    def scores(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self.token_scores(a, g).sum(dim=-1)


def query_matrices(matrices: torch.Tensor, rank: int | None = None, dtype: torch.dtype | None = None) -> QueryMatrices:
    """Full-rank (``rank=None``) or rank-``rank`` contraction of ``matrices [n, O, I]`` with training batches."""
    return QueryMatrices(matrices, dtype) if rank is None else LowRankQueryMatrices(matrices, rank, dtype)
