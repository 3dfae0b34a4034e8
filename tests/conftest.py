"""Shared fixtures: a tokenizer trained locally and tiny models built from configs (no downloads)."""

from __future__ import annotations

import json

import pytest
import torch

from llm_attrib.demo.model import tiny_gpt2, tiny_llama
from llm_attrib.demo.tokenizer import train_tokenizer

SENTENCES = [
    "the cat sat on the mat and looked at the door",
    "a dog ran across the park to find a red ball",
    "rain fell on the quiet town through the night",
    "she wrote a letter to her brother in the city",
    "the river runs past the old mill into the sea",
    "birds sing in the morning when the sun comes up",
    "he planted seven trees behind the small stone house",
    "the market opens early and closes before noon",
]

TRAIN = [{"text": s} for s in SENTENCES]
QUERIES = [
    {"prompt": "the cat sat on", "completion": " the mat"},
    {"prompt": "birds sing in the", "completion": " morning when the sun"},
    {"prompt": "a dog ran", "completion": " across the park"},
]


@pytest.fixture(scope="session")
def train_records() -> list[dict]:
    return [dict(r) for r in TRAIN]


@pytest.fixture(scope="session")
def query_records() -> list[dict]:
    return [dict(r) for r in QUERIES]


@pytest.fixture(scope="session")
def tokenizer():
    return train_tokenizer(SENTENCES * 4, vocab_size=300, model_max_length=64)


def _model_kwargs(tokenizer) -> dict:
    return dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


@pytest.fixture()
def gpt2(tokenizer):
    model = tiny_gpt2(n_positions=64, n_embd=16, n_layer=2, n_head=2, seed=0, **_model_kwargs(tokenizer))
    return model.double()


@pytest.fixture()
def llama(tokenizer):
    model = tiny_llama(
        max_position_embeddings=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, seed=0, **_model_kwargs(tokenizer),
    )
    return model  # float32: transformers' Llama masking overflows to NaN under left padding in float64


@pytest.fixture()
def lora_gpt2(gpt2):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["c_fc", "c_proj", "c_attn"], lora_dropout=0.0,
                        fan_in_fan_out=True, init_lora_weights=False)
    return get_peft_model(gpt2, config)


@pytest.fixture()
def model_dir(tmp_path, gpt2, tokenizer):
    """The float32 ``gpt2`` fixture and its tokenizer saved as a model folder (what the CLI loads)."""
    path = tmp_path / "model"
    gpt2.float().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture()
def train_file(tmp_path, train_records):
    """The training records as JSON lines with a ``doc`` id column (what the CLI reads)."""
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"doc": f"d{i}", **r}) + "\n" for i, r in enumerate(train_records)))
    return path
