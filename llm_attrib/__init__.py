"""llm_attrib: which training data made a Hugging Face language model say this, and what is each example worth.

Sign convention (everywhere in this library): a **positive score means the training example raises the
query's measurement** ``log Pr(completion | prompt)``; removing it would lower it.

The public surface is importable from here and loaded on first use (``import llm_attrib`` itself imports neither
torch nor transformers)::

    from llm_attrib import CausalLMAdapter, InfluenceAttributor, trace
    attributor = InfluenceAttributor(CausalLMAdapter(model, tokenizer), damping=1e-8).fit(train)
    attributor.save_pretrained("influence/")
    same = llm_attrib.load_attributor("influence/", CausalLMAdapter(model, tokenizer))   # no refit
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

PUBLIC: dict[str, str] = {
    # adapters: what is differentiated
    "CausalLMAdapter": "llm_attrib.adapters.causal_lm",
    "ClassifierAdapter": "llm_attrib.adapters.classifier",
    "Columns": "llm_attrib.data",
    # attributors and their configs
    "Attributor": "llm_attrib.attributors.base",
    "InfluenceAttributor": "llm_attrib.attributors.influence",
    "InfluenceConfig": "llm_attrib.attributors.influence",
    "TracInAttributor": "llm_attrib.attributors.tracin",
    "TracInConfig": "llm_attrib.attributors.tracin",
    "TrakAttributor": "llm_attrib.attributors.trak",
    "TrakConfig": "llm_attrib.attributors.trak",
    "AirRepAttributor": "llm_attrib.attributors.airrep",
    "AirRepConfig": "llm_attrib.attributors.airrep",
    "RandomAttributor": "llm_attrib.attributors.text",
    "RandomConfig": "llm_attrib.attributors.text",
    "TfidfAttributor": "llm_attrib.attributors.text",
    "TfidfConfig": "llm_attrib.attributors.text",
    "BM25Attributor": "llm_attrib.attributors.text",
    "BM25Config": "llm_attrib.attributors.text",
    "Checkpoints": "llm_attrib.attributors.checkpoints",
    "TrainerRun": "llm_attrib.attributors.trainer_run",
    "AttributionCallback": "llm_attrib.attributors.trainer_run",
    "ATTRIBUTORS": "llm_attrib.attributors",
    "load_attributor": "llm_attrib.attributors",
    "MagicAttributor": "llm_attrib.attributors.magic",
    "MagicConfig": "llm_attrib.attributors.magic",
    "ReplayableRun": "llm_attrib.training",
    "TrainConfig": "llm_attrib.training",
    "train_replayable": "llm_attrib.training",
    "Prefilter": "llm_attrib.attributors.prefilter",
    "PrefilterConfig": "llm_attrib.attributors.prefilter",
    "HybridAttributor": "llm_attrib.attributors.hybrid",
    "HybridConfig": "llm_attrib.attributors.hybrid",
    "Config": "llm_attrib.config",
    # results and jobs
    "Scores": "llm_attrib.scores",
    "trace": "llm_attrib.apps.trace",
    "trace_queries": "llm_attrib.apps.trace",
    "audit": "llm_attrib.apps.audit",
    # errors
    "UserInputError": "llm_attrib.errors",
    "CacheMismatchError": "llm_attrib.errors",
    "CurvatureError": "llm_attrib.errors",
    "ConfigError": "llm_attrib.config",
}
"""Public name → the module that defines it (imported on first access)."""

__all__ = ["__version__", *PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in PUBLIC:
        raise AttributeError(f"module 'llm_attrib' has no attribute {name!r}")
    value = getattr(importlib.import_module(PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
