"""The embedded default: a synthetic-fact corpus with known ground truth and a tiny causal LM trained on it."""

from llm_attrib.demo.default import DemoBundle, DemoRecipe, cache_root, load_default
from llm_attrib.demo.facts import FactCorpus, generate_facts
from llm_attrib.demo.model import tiny_gpt2, tiny_llama
from llm_attrib.demo.tokenizer import train_tokenizer
from llm_attrib.demo.training import greedy_correct, train_causal_lm

__all__ = [
    "DemoBundle",
    "DemoRecipe",
    "FactCorpus",
    "cache_root",
    "generate_facts",
    "greedy_correct",
    "load_default",
    "tiny_gpt2",
    "tiny_llama",
    "train_causal_lm",
    "train_tokenizer",
]
