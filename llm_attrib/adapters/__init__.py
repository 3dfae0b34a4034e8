"""Adapters: what is differentiated. See `llm_attrib.adapters.base` for the contract."""

from llm_attrib.adapters.base import Adapter
from llm_attrib.adapters.causal_lm import CausalLMAdapter
from llm_attrib.adapters.classifier import ClassifierAdapter

__all__ = ["Adapter", "CausalLMAdapter", "ClassifierAdapter"]
