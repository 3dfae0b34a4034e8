"""Options of the MAGIC benchmark (``python -m eval.magic --help``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llm_attrib.config import Config, at_least, in_open_interval, option

@dataclass(frozen=True)
class BenchConfig(Config):
    data_dir: Path = option(Path("../shared/data"), "folder with gpteacher_roleplay.json (run from the repository root)")
    cache_dir: Path = option(Path("eval/_runs/magic"), "cached runs, retrains and scores (resumable)")
    n_train: int = option(96, "fine-tuning records", check=at_least(8))
    n_query: int = option(16, "held-out query records", check=at_least(2))
    n_pretrain: int = option(192, "other records the base model is first trained on (train_causal_lm)",
                             check=at_least(0))
    n_embd: int = option(64, "GPT-2 width (2 layers, 4 heads)", check=at_least(8))
    vocab_size: int = option(512, "BPE vocabulary trained on the pre-training + fine-tuning records", check=at_least(64))
    epochs: int = option(8, "fine-tuning epochs", check=at_least(1))
    batch_size: int = option(8, "fine-tuning batch size", check=at_least(1))
    lr: float = option(5e-4, "fine-tuning peak learning rate (smooth setting)", check=at_least(0))
    rough_lr: float = option(5e-3, "learning rate of the rough setting (constant, no warm-up)", check=at_least(0))
    warmup_steps: int = option(10, "warm-up steps of the smooth setting (then cosine)", check=at_least(0))
    leave_out: float = option(0.05, "fraction removed in the same-seed leave-k-out LDS", check=in_open_interval(0, 1))
    loo_subsets: int = option(40, "same-seed leave-k-out subsets", check=at_least(4))
    alpha: float = option(0.5, "fraction kept in the alpha-LDS subsets", check=in_open_interval(0, 1))
    lds_subsets: int = option(32, "alpha-LDS subsets (each retrained once, from its own fresh seed)", check=at_least(4))
    smoothness_directions: int = option(4, "metasmoothness directions (2 replays each)", check=at_least(1))
    seed: int = option(0, "seeds the data, the model, the subsets")
