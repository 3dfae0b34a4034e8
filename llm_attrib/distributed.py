"""Several processes (``accelerate launch`` / ``torchrun``): shard data, sum statistics, gather scores.

Nothing here wraps the user's model: processes run the same unwrapped model on disjoint shards of the
data, and only statistics (sums and counts) and score columns cross process boundaries. With one process
every function is the identity.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def shard(items: Sequence[T]) -> list[T]:
    """This process's share of ``items``: a contiguous block, so gathered results keep their order."""
    n, size, r = len(items), world_size(), rank()
    start, stop = (n * r) // size, (n * (r + 1)) // size
    return list(items[start:stop])


def sum_across_processes(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Element-wise sum of each tensor over processes (in place, float64 kept as is)."""
    if is_distributed():
        for tensor in tensors.values():
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensors


def gather_columns(values: torch.Tensor) -> torch.Tensor:
    """Concatenate each process's ``[n_query, n_shard]`` block along dim 1, in rank order."""
    if not is_distributed():
        return values
    sizes = [torch.zeros(1, dtype=torch.long, device=values.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([values.shape[1]], device=values.device))
    width = int(max(s.item() for s in sizes))
    padded = torch.zeros(values.shape[0], width, dtype=values.dtype, device=values.device)
    padded[:, : values.shape[1]] = values
    blocks = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(blocks, padded)
    return torch.cat([block[:, : int(size.item())] for block, size in zip(blocks, sizes)], dim=1)
