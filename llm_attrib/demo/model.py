"""Tiny randomly initialised causal LMs built from configs (GPT-2 with Conv1D layers; Llama with Linear).

Dropout is off, so a forward pass is a deterministic function of the weights. Initialisation is
deterministic under ``seed``. Attention is "eager": "sdpa" agrees with it to ~1e-7 under left or right
padding (checked with transformers 5.23) but not bitwise, and eager is the simplest to hook and differentiate.
"""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

ATTN_IMPLEMENTATION = "eager"


def tiny_gpt2(
    vocab_size: int,
    n_positions: int = 128,
    n_embd: int = 128,
    n_layer: int = 2,
    n_head: int = 4,
    seed: int = 0,
    *,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> GPT2LMHeadModel:
    """A GPT-2 (tied embeddings, Conv1D projections) with dropout disabled."""
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        attn_implementation=ATTN_IMPLEMENTATION,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).eval()


def tiny_llama(
    vocab_size: int,
    max_position_embeddings: int = 128,
    hidden_size: int = 128,
    intermediate_size: int = 256,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    seed: int = 0,
    *,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> LlamaForCausalLM:
    """A Llama (RoPE, RMSNorm, SwiGLU, grouped-query attention, untied head) with dropout disabled."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        max_position_embeddings=max_position_embeddings,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        attention_dropout=0.0,
        tie_word_embeddings=False,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        attn_implementation=ATTN_IMPLEMENTATION,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()
