"""Replayable fine-tuning of Hugging Face causal LMs (full or peft LoRA): the record MAGIC differentiates through.

    run = train_replayable(model, tokenizer, records, "run/", TrainConfig(epochs=2, lr=1e-3, schedule="cosine"))
    final = run.replay()                 # bitwise the recorded run (CPU, same libraries and thread count)
    run = ReplayableRun("run/", model, tokenizer)
"""

from llm_attrib.training.config import TrainConfig, learning_rates
from llm_attrib.training.run import ReplayableRun, check_replayable, train_replayable
from llm_attrib.training.step import AdamW, State, adamw_step, batch_loss, log_probs

__all__ = ["AdamW", "ReplayableRun", "State", "TrainConfig", "adamw_step", "batch_loss", "check_replayable",
           "learning_rates", "log_probs", "train_replayable"]
