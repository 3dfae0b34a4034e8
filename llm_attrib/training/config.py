"""`TrainConfig`: the options of a replayable fine-tune, and the learning rate of each step they give."""

from __future__ import annotations

import math
from dataclasses import dataclass

from llm_attrib.config import Config, ConfigError, at_least, in_open_interval, option

SCHEDULES = ("constant", "linear", "cosine")
OPTIMIZERS = ("adamw",)
"""Optimizers a run can record and MAGIC can replay (an explicit, differentiable update: `llm_attrib.training.step`)."""


@dataclass(frozen=True)
class TrainConfig(Config):
    """Options of `llm_attrib.training.train_replayable` (CLI ``llm-attrib train``; recipe ``training.*``)."""

    epochs: int = option(1, "passes over the training records", check=at_least(1))
    batch_size: int = option(8, "records per optimizer step (the last batch of an epoch may be smaller)",
                             check=at_least(1))
    lr: float = option(1e-3, "peak learning rate", check=at_least(0))
    schedule: str = option("constant", "after warm-up: constant, linear decay to 0, or cosine decay to 0",
                           choices=SCHEDULES)
    warmup_steps: int = option(0, "steps of linear warm-up: step t (0-based) uses lr x (t+1)/warmup_steps",
                               check=at_least(0))
    optimizer: str = option("adamw", "the optimizer (AdamW with decoupled weight decay and bias correction)",
                            choices=OPTIMIZERS)
    weight_decay: float = option(0.0, "AdamW's decoupled weight decay", check=at_least(0))
    beta1: float = option(0.9, "AdamW's first-moment decay", check=in_open_interval(0, 1))
    beta2: float = option(0.999, "AdamW's second-moment decay", check=in_open_interval(0, 1))
    eps: float = option(1e-8, "AdamW's epsilon (added to sqrt(v_hat))", check=in_open_interval(0, 1))
    max_grad_norm: float | None = option(None, "clip the global gradient norm to this (none: no clipping); MAGIC "
                                               "differentiates through the clipping", check=at_least(0))
    seed: int = option(0, "seed of the record order (a permutation per epoch) and of LoRA's initialisation")
    padding_side: str = option("right", "padding side of the training batches", choices=("right", "left"))
    checkpoint_every: int | None = option(None, "keep the optimizer state every this many steps (none: ceil(sqrt("
                                                "steps))); MAGIC recomputes the steps in between", check=at_least(1))
    num_threads: int = option(1, "torch threads while training (recorded: a replay uses the same)", check=at_least(1))
    lora_rank: int | None = option(None, "train a peft LoRA adapter of this rank on the model (none: every "
                                         "parameter)", check=at_least(1))
    lora_alpha: float = option(16.0, "LoRA's alpha (scale alpha / rank)", check=at_least(0))
    lora_targets: tuple[str, ...] = option((), "LoRA target modules (comma-separated names; none given: peft's "
                                               "default for the architecture)")

    def validate(self) -> None:
        if self.lora_targets and self.lora_rank is None:
            raise ConfigError("lora_targets", "goes with lora_rank; set lora_rank or drop lora_targets")


def steps_per_epoch(n_records: int, batch_size: int) -> int:
    return -(-n_records // batch_size)


def learning_rates(config: TrainConfig, total_steps: int) -> list[float]:
    """The learning rate of each of ``total_steps`` steps: linear warm-up to ``lr`` over ``warmup_steps``, then
    ``schedule`` from ``lr`` (linear and cosine reach 0 after the last step)."""
    rates = []
    decay_steps = max(total_steps - config.warmup_steps, 1)
    for t in range(total_steps):
        if t < config.warmup_steps:
            rates.append(config.lr * (t + 1) / config.warmup_steps)
            continue
        progress = (t - config.warmup_steps) / decay_steps
        factor = {"constant": 1.0, "linear": 1.0 - progress, "cosine": 0.5 * (1.0 + math.cos(math.pi * progress))}
        rates.append(config.lr * factor[config.schedule])
    return rates
