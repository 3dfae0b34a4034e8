"""Deterministic small-model training.

`train_causal_lm` is the one training routine used to build the demo model and to retrain it on subsets
(Linear Datamodeling Score, leave-one-out): on CPU, the same seed and the same records give bitwise-identical
weights. Records are encoded by `llm_attrib.adapters.causal_lm.CausalLMAdapter`, which also owns the measurement
every attribution score refers to (`CausalLMAdapter.measurements`).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from llm_attrib.adapters.causal_lm import CausalLMAdapter
from llm_attrib.data import IGNORE_INDEX, Batch, Columns, Encoded, batched, collate

EpochHook = Callable[[int, torch.nn.Module, float, torch.optim.Optimizer], None]
"""``hook(epochs done, model, η, optimizer)`` after each epoch of `train_causal_lm`, with ``η`` = the epoch's learning
rate × its optimizer steps (the weight TracIn gives a checkpoint that stands for the epoch) and the AdamW optimizer
(its moments: Adam-aware TracIn). The model is in train mode and training goes on with both: copy, never modify."""


def forward(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Logits ``[B, T, V]``; token ``t``'s logits predict token ``t + 1``."""
    return model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
    ).logits


def token_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[B, T-1]`` log Pr(labels[:, t+1] | prefix) from ``logits`` ``[B, T, V]``; 0 where not scored."""
    targets = labels[:, 1:]
    scored = targets != IGNORE_INDEX
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked * scored


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``num_threads`` intra-op threads (``None``: leave torch's setting), then restore."""
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_causal_lm(
    model: torch.nn.Module,
    tokenizer: Any,
    records: Sequence[Mapping[str, Any]],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    max_length: int | None = None,
    weight_decay: float = 0.0,
    columns: Columns = Columns(),
    eos: bool | None = True,
    progress: bool = False,
    num_threads: int | None = None,
    on_epoch_end: EpochHook | None = None,
) -> torch.nn.Module:
    """Train ``model`` in place with AdamW and return it (in eval mode).

    Each step minimises the *mean* NLL over the scored tokens of the batch (documents: every token after the
    first; prompt/completion: completion tokens, plus EOS if ``eos``, see `EncodingConfig`). The record order of
    each epoch is a seeded permutation; with ``seed`` and the thread count fixed the result is bitwise reproducible
    on CPU. ``num_threads=1`` is the fastest for tiny models on a busy machine and makes the weights independent of the
    machine's core count. An empty ``records`` returns the model unchanged. ``on_epoch_end`` sees the model after
    each epoch (to keep checkpoints) without changing the training.
    """
    adapter = CausalLMAdapter(model, tokenizer, modules="all", columns=columns, max_length=max_length,
                              eos=eos)
    encoded = adapter.encode(records)
    if not encoded:
        return model.eval()
    with torch_threads(num_threads):
        _optimise(model, tokenizer.pad_token_id, encoded, epochs, lr, batch_size, seed, weight_decay, progress,
                  on_epoch_end)
    return model.eval()


def _optimise(
    model: torch.nn.Module,
    pad_token_id: int,
    encoded: Sequence[Encoded],
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    weight_decay: float,
    progress: bool,
    on_epoch_end: EpochHook | None,
) -> None:
    """The AdamW loop of `train_causal_lm`."""
    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    for epoch in range(epochs):
        permutation = torch.randperm(len(encoded), generator=order).tolist()
        total, tokens, steps = 0.0, 0, 0
        for indices in batched(permutation, batch_size):
            batch = collate([encoded[i] for i in indices], pad_token_id=pad_token_id)
            log_probs = token_log_probs(forward(model, batch), batch.labels)
            n_scored = int((batch.labels[:, 1:] != IGNORE_INDEX).sum())
            loss = -log_probs.sum() / max(n_scored, 1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, tokens, steps = total + float(loss.detach()) * n_scored, tokens + n_scored, steps + 1
        if progress:
            print(f"epoch {epoch + 1}/{epochs}: mean token NLL {total / max(tokens, 1):.4f}", file=sys.stderr,
                  flush=True)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, model, optimizer.param_groups[0]["lr"] * steps, optimizer)


@torch.no_grad()
def greedy_correct(
    model: torch.nn.Module,
    tokenizer: Any,
    records: Sequence[Mapping[str, Any]],
    batch_size: int = 32,
    *,
    columns: Columns = Columns(),
) -> torch.Tensor:
    """``[n]`` bool: greedy decoding from the prompt reproduces every scored token (the completion)."""
    adapter = CausalLMAdapter(model, tokenizer, modules="all", columns=columns)
    correct = []
    for batch in adapter.batches(adapter.encode(records), batch_size):
        predicted, targets = adapter.logits(batch)[:, :-1].argmax(-1), batch.labels[:, 1:]
        correct.append(((predicted == targets) | (targets == IGNORE_INDEX)).all(dim=1))
    return torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool)
