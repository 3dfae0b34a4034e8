"""Several processes (``accelerate launch`` / ``torchrun``): shard data, sum statistics, gather scores.

Nothing here wraps the user's model: processes run the same unwrapped model on disjoint shards of the
data, and only statistics (sums and counts) and score columns cross process boundaries. With one process
every function is the identity. `process_group_from_environment` joins the group a launcher describes
(the command line uses it), `local_device` is where this process's model belongs.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

from llm_attrib.errors import UserInputError

T = TypeVar("T")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0, the one process that prints results and writes shared outputs."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for with one process)."""
    if is_distributed():
        dist.barrier()


@contextmanager
def main_process_first() -> Iterator[None]:
    """Run the block on rank 0, then on the other ranks: rank 0 builds a cache that the others then load."""
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()


def broadcast_from_main(value: T) -> T:
    """Rank 0's ``value`` (picklable) on every process, so that all ranks go on with the same one."""
    if not is_distributed():
        return value
    holder: list[Any] = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def local_device() -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` when CUDA is available (``LOCAL_RANK`` from the launcher,
    0 when run directly), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if local_rank >= torch.cuda.device_count():
        raise UserInputError(f"LOCAL_RANK is {local_rank} but {torch.cuda.device_count()} GPUs are visible: "
                             "launch at most one process per GPU")
    return torch.device("cuda", local_rank)


@contextmanager
def process_group_from_environment() -> Iterator[None]:
    """Join, for the block, the process group that ``torchrun`` or ``accelerate launch`` describe.

    Both launchers set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT (``accelerate launch``
    starts its processes with torchrun's code). With WORLD_SIZE > 1 and no group yet, one is created —
    gloo for CPU tensors, plus NCCL for CUDA tensors when there is a GPU (scores are gathered on the CPU,
    statistics summed on the GPU) — and destroyed when the block ends, after a barrier when it ends normally; a group
    that exists is left alone.
    """
    created = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    if created:
        device = local_device()
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")
    try:
        yield
        if created:
            dist.barrier()  # leave together: a rank that finished early (an empty shard) and tore down gloo while
            # another was still running aborted with "terminate called without an active exception" (seen in CI)
    finally:
        if created:
            dist.destroy_process_group()


def require_one_process(why: str) -> None:
    """Refuse a command under several processes, where each would repeat the same work (``why`` says so)."""
    if is_distributed():
        raise UserInputError(f"this command runs in one process ({why}); launch it without torchrun/accelerate")


def shard_bounds(n: int) -> tuple[int, int]:
    """``(start, stop)`` of this process's contiguous block of ``n`` items (rank order = item order)."""
    size, r = world_size(), rank()
    return (n * r) // size, (n * (r + 1)) // size


def shard(items: Sequence[T]) -> list[T]:
    """This process's share of ``items``: a contiguous block, so gathered results keep their order."""
    start, stop = shard_bounds(len(items))
    return list(items[start:stop])


def process_seed(seed: int) -> int:
    """A per-process seed (``seed`` itself on rank 0): each rank draws its own, reproducible random stream."""
    return seed + 1_000_003 * rank()


def sum_across_processes(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Element-wise sum of each tensor over processes, by key (in place, float64 kept as is).

    Every process reduces the union of all processes' keys in one order; a key this process lacks (its shard
    was empty, or never reached that layer) joins as zeros of the shape and dtype another process reports.
    """
    if is_distributed():
        layouts = dict(item for part in gather_objects([{k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}])
                       for item in part.items())
        device = next(iter(tensors.values())).device if tensors else local_device()
        for key in sorted(layouts):
            shape, dtype = layouts[key]
            tensor = tensors.setdefault(key, torch.zeros(shape, dtype=dtype, device=device))
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


def gather_objects(items: list[T]) -> list[T]:
    """Concatenate each process's list of picklable ``items`` in rank order."""
    if not is_distributed():
        return items
    gathered: list[list[T] | None] = [None] * world_size()
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in (part or [])]


def shard_batches(items: Iterable[T], batch_size: int) -> Iterator[tuple[int, list[T]]]:
    """This process's contiguous shard of ``items`` in batches: ``(global index of the batch's first item, batch)``.

    Sequences (lists, ``datasets.Dataset``) are sliced; other iterables (``datasets.IterableDataset``,
    generators) are read once, in order, one batch in memory at a time. Under several processes an iterable
    must have a length, so that every process can find its block.
    """
    if batch_size < 1:
        raise UserInputError(f"batch_size must be at least 1, not {batch_size}")
    if hasattr(items, "__getitem__") and hasattr(items, "__len__"):
        start, stop = shard_bounds(len(items))  # type: ignore[arg-type]
        for first in range(start, stop, batch_size):
            yield first, [items[i] for i in range(first, min(first + batch_size, stop))]  # type: ignore[index]
        return
    if is_distributed() and not hasattr(items, "__len__"):
        raise UserInputError("several processes need a training set of known length (a list or Dataset) to shard it")
    start, stop = shard_bounds(len(items)) if is_distributed() else (0, None)  # type: ignore[arg-type]
    batch: list[T] = []
    first = start
    for index, item in enumerate(items):
        if index < start:
            continue
        if stop is not None and index >= stop:
            break
        batch.append(item)
        if len(batch) == batch_size:
            yield first, batch
            first, batch = first + batch_size, []
    if batch:
        yield first, batch
