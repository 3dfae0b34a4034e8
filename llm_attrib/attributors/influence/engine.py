"""The influence scoring engine: per-example gradients, and one training batch scored against the query matrices.

A training batch's forward/backward pass yields each tracked layer's per-token inputs ``a [B, T, I]`` and output
gradients ``g [B, T, O]`` of ``log p(z)``; its score against a query's preconditioned gradient ``Q`` is
``Σ_t g_tᵀ Q a_t`` (`llm_attrib.contraction`), so no training example's ``[O, I]`` gradient is formed unless the
normalisation needs it (RelatIF).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from llm_attrib.adapters.base import Adapter
from llm_attrib.attributors.chunks import ChunkScores
from llm_attrib.capture import LayerCapture, TrackedLayer, per_example_gradients
from llm_attrib.contraction import QueryMatrices, squared_norms
from llm_attrib.curvature import Curvature, Grads
from llm_attrib.curvature.base import working_precision


def layer_gradients(adapter: Adapter, records: Sequence[Any], layers: Sequence[TrackedLayer], *, measure: bool,
                    batch_size: int, first_index: int = 0) -> Grads:
    """Per-example gradients ``{layer: [n, O, I]}`` of the measurement ``f`` (``measure``, queries) or of
    ``log p`` (training records), in working precision (float32; float64 for a float64 model)."""
    parts: dict[str, list[torch.Tensor]] = {layer.name: [] for layer in layers}
    examples = adapter.encode(records, first_index=first_index)
    for batch in adapter.batches(examples, batch_size):
        with LayerCapture(layers) as capture:
            objective = adapter.measure(batch) if measure else adapter.log_prob(batch)
            for layer, a, g in capture.output_gradients(objective.sum()):
                parts[layer.name].append(per_example_gradients(working_precision(a), working_precision(g)))
    return {name: torch.cat(chunks) for name, chunks in parts.items()}


def gradient_squared_norms(grads: Grads) -> torch.Tensor:
    """``[n]``: the squared Frobenius norm of each example's gradient over the layers in ``grads``."""
    return sum(g.double().flatten(1).square().sum(dim=1) for g in grads.values())


def score_chunk(adapter: Adapter, curvature: Curvature, start: int, records: Sequence[Any],
                layers: Sequence[TrackedLayer], contractions: Mapping[str, QueryMatrices], *, per_token: bool,
                normalize: str | None) -> ChunkScores:
    """One training batch (global index ``start`` of its first record) against ``layers``: per-layer
    ``[n_query, B]`` blocks, each record's ``‖G‖²`` (cosine) or self-influence (relative), and token parts."""
    batch = adapter.collate(adapter.encode(records, first_index=start))
    blocks: dict[str, torch.Tensor] = {}
    tokens: torch.Tensor | None = None
    squared_norm = torch.zeros(len(batch), dtype=torch.float64, device=adapter.device)
    record_grads: Grads = {}
    with LayerCapture(layers) as capture:
        objective = adapter.log_prob(batch)
        for layer, a, g in capture.output_gradients(objective.sum()):
            contraction = contractions[layer.name]
            if per_token:
                layer_tokens = contraction.token_scores(a, g)
                tokens = layer_tokens if tokens is None else tokens + layer_tokens
                blocks[layer.name] = layer_tokens.sum(dim=-1)
            else:
                blocks[layer.name] = contraction.scores(a, g)
            if normalize == "cosine":
                squared_norm += squared_norms(a.double(), g.double())
            elif normalize == "relative":
                record_grads[layer.name] = per_example_gradients(a.double(), g.double())
    if record_grads:
        preconditioned = curvature.precondition(record_grads)
        squared_norm += sum((record_grads[k] * preconditioned[k]).flatten(1).sum(dim=1) for k in record_grads)
    token_parts = None
    if tokens is not None:
        mask = adapter.token_mask(batch)
        token_parts = [[tokens[q, b][mask[b]].cpu() for b in range(len(records))] for q in range(tokens.shape[0])]
    return ChunkScores({k: v.cpu() for k, v in blocks.items()}, squared_norm.cpu(), token_parts)
