"""`GridConfig`: the sizes and paths of one grid run (``python -m eval.grid``'s flags are its fields)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llm_attrib.config import Config, ConfigError, at_least, in_open_interval, option

DATASETS = ("roleplay", "gsm8k", "shakespeare")


@dataclass(frozen=True)
class GridConfig(Config):
    """Sizes and paths of the defaults grid (data sets × model depths, LDS ground truth per cell)."""

    data_dir: Path = option(Path("../shared/data"), "folder with gpteacher_roleplay.json, gsm8k_train.jsonl and "
                                                    "tinyshakespeare.txt")
    out_dir: Path = option(Path("eval/grid"), "where README.md and results.json are written")
    cache_dir: Path = option(Path("eval/_runs/grid"), "ground-truth caches (resumable)")
    datasets: tuple[str, ...] = option(DATASETS, "comma-separated data sets")
    depths: tuple[int, ...] = option((2, 4), "comma-separated model depths (transformer layers)")
    n_train: int = option(128, "training records per cell", check=at_least(4))
    n_query: int = option(32, "held-out query records per cell", check=at_least(1))
    max_prompt_tokens: int = option(48, "a prompt keeps its last this many tokens", check=at_least(1))
    max_completion_tokens: int = option(80, "a completion keeps its first this many tokens", check=at_least(1))
    max_document_tokens: int = option(126, "a document keeps its first this many tokens", check=at_least(2))
    vocab_size: int = option(512, "BPE vocabulary trained per cell", check=at_least(260))
    n_embd: int = option(64, "model width", check=at_least(8))
    epochs: int = option(8, "training epochs", check=at_least(1))
    lr: float = option(3e-3, "AdamW learning rate", check=at_least(0.0))
    batch_size: int = option(16, "training batch size", check=at_least(1))
    n_subsets: int = option(64, "LDS subsets (M) per cell", check=at_least(2))
    seeds_per_subset: int = option(2, "models trained per LDS subset (outcomes averaged)", check=at_least(1))
    alpha: float = option(0.5, "LDS subset fraction", check=in_open_interval(0.0, 1.0))
    seed: int = option(0, "seeds the records, the models, the subsets and the fits")
    threads: int = option(1, "torch intra-op threads", check=at_least(1))
    truth_only: bool = option(False, "only build the cells' LDS ground truth (to run it early, in the background)")
    finished_only: bool = option(False, "evaluate only the cells whose ground truth is complete; list the others as "
                                        "unfinished (how many subsets are done) instead of retraining them")

    def validate(self) -> None:
        unknown = sorted(set(self.datasets) - set(DATASETS))
        if unknown:
            raise ConfigError("datasets", f"must be among {', '.join(DATASETS)}, not {unknown[0]!r}")
