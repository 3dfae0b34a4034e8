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
    """``[n, B]``: ``⟨Q_q, G_b⟩`` by whichever of the two contractions needs fewer operations."""
    n, (b, t, _) = queries.shape[0], a.shape
    if n * t < t + n:  # only when n == 1 or t == 1 can the per-token path be cheaper
        return per_token_inner_products(queries, a, g).sum(dim=-1)
    return torch.einsum("qoi,boi->qb", queries, per_example_gradients(a, g))


def squared_norms(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``[B]``: ``‖G_b‖²_F = Σ_{t,s} (g_t·g_s)(a_t·a_s)``, by the Gram trick when cheaper than materialising."""
    t, i, o = a.shape[1], a.shape[2], g.shape[2]
    if t * t * (i + o) < t * i * o:
        return (torch.einsum("bti,bsi->bts", a, a) * torch.einsum("bto,bso->bts", g, g)).sum(dim=(1, 2))
    return per_example_gradients(a, g).square().sum(dim=(1, 2))
