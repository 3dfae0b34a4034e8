"""The grid's influence variants: curvature × tracked modules × Fisher × training-side EOS × damping × normalisation.

A `Variant` names one combination; `factory` turns it into a suite-style factory (`llm_attrib.attributors`
``factory(model, tokenizer, training=None)``) with ``fit_key`` (variants differing only in damping share one fit,
damping applied at use, as the suite does) and ``damping``. "Training-side EOS" is how training records are
encoded for the curvature fit and their gradients: ``"trained"`` appends EOS as the model was trained
(`train_causal_lm` uses ``eos=True``), ``"tokenizer"`` leaves it to the tokenizer (the library default; the grid's
tokenizers add none). Queries are always encoded as the ground truth measures them (tokenizer default: no EOS).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from llm_attrib.adapters.causal_lm import LAYER_PRESETS, CausalLMAdapter
from llm_attrib.attributors import AttributorFactory
from llm_attrib.data import EncodingConfig, Encoded

MODULES: dict[str, tuple[str, ...]] = {"mlp": LAYER_PRESETS["mlp"],
                                       "attention+mlp": LAYER_PRESETS["attention"] + LAYER_PRESETS["mlp"]}
"""Tracked-module options → the layer patterns `CausalLMAdapter(modules=...)` gets."""
DAMPINGS: dict[str, float | str] = {"1e-8": 1e-8, "1e-4": 1e-4, "heuristic": "heuristic"}
FISHERS = ("sampled", "empirical")
EOS = ("tokenizer", "trained")
NORMALIZE = ("none", "relative")

DEFAULTS: dict[str, str] = {"damping": "heuristic", "modules": "mlp", "fisher": "sampled", "eos": "tokenizer",
                            "normalize": "none"}
"""The library's defaults before the grid (the rule keeps them unless a value wins by more than 2 s.e.)."""
OPTIONS: dict[str, tuple[str, ...]] = {"modules": tuple(MODULES), "fisher": FISHERS, "eos": EOS,
                                       "damping": tuple(DAMPINGS), "normalize": NORMALIZE}
"""Each option the rule chooses → its values in the grid (labels; `DAMPINGS` maps damping labels to values)."""
COST_ORDER: dict[str, tuple[str, ...]] = {
    "modules": ("mlp", "attention+mlp"), "fisher": ("empirical", "sampled"), "eos": ("tokenizer", "trained"),
    "damping": ("heuristic", "1e-8", "1e-4"), "normalize": ("none", "relative")}
"""Tie-break order, cheapest then simplest first: fewer tracked layers; empirical targets need no sampling; the
tokenizer's encoding is the simplest; dampings cost the same, so the current default is simplest; no normalisation
needs no self-influence pass."""


@dataclass(frozen=True)
class Variant:
    """One influence configuration of the grid (labels as in `OPTIONS`)."""

    curvature: str = "ekfac"
    modules: str = "mlp"
    fisher: str = "sampled"
    eos: str = "tokenizer"
    damping: str = "heuristic"
    normalize: str = "none"

    @property
    def name(self) -> str:
        return (f"{self.curvature}|{self.modules}|fisher={self.fisher}|eos={self.eos}|damping={self.damping}"
                f"|normalize={self.normalize}")

    def options(self) -> dict[str, str]:
        return {key: getattr(self, key) for key in OPTIONS}


class TrainingEOSAdapter(CausalLMAdapter):
    """A `CausalLMAdapter` that encodes training records with ``train_encoding`` and the records whose id is in
    ``query_ids`` with its own ``encoding`` (so a query is measured exactly as the ground truth measures it)."""

    def __init__(self, model: Any, tokenizer: Any, *, query_ids: Sequence[Any], train_encoding: EncodingConfig,
                 **kwargs: Any):
        super().__init__(model, tokenizer, **kwargs)
        self.query_ids, self.train_encoding = set(query_ids), train_encoding
        self._train = CausalLMAdapter(model, tokenizer, encoding=train_encoding, **kwargs)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "train_encoding": self.train_encoding.to_dict()}

    def encode(self, records: Sequence[Mapping[str, Any]], first_index: int = 0, name: str = "record") -> list[Encoded]:
        if records and all(r.get("id") in self.query_ids for r in records):
            return super().encode(records, first_index, name)
        if any(r.get("id") in self.query_ids for r in records):
            raise ValueError("a batch mixes query and training records")
        return self._train.encode(records, first_index, name)


def factory(variant: Variant, query_ids: Sequence[Any]) -> AttributorFactory:
    """A suite-style factory of ``variant`` (``fit_key`` = everything but damping; ``damping`` its value)."""

    def make(model: Any, tokenizer: Any, training: Any = None) -> Any:
        from llm_attrib.attributors.influence import InfluenceAttributor

        modules = MODULES[variant.modules]
        if variant.eos == "trained":
            adapter: CausalLMAdapter = TrainingEOSAdapter(model, tokenizer, modules=modules, query_ids=query_ids,
                                                          train_encoding=EncodingConfig(eos=True))
        else:
            adapter = CausalLMAdapter(model, tokenizer, modules=modules)
        return InfluenceAttributor(adapter, variant.curvature, fisher=variant.fisher, damping=DAMPINGS[variant.damping],
                                   normalize=None if variant.normalize == "none" else variant.normalize)

    make.fit_key = ("grid", variant.curvature, variant.modules, variant.fisher, variant.eos, variant.normalize)  # type: ignore[attr-defined]
    make.damping = DAMPINGS[variant.damping]  # type: ignore[attr-defined]
    return make


def grid_variants() -> list[Variant]:
    """EK-FAC over every combination of `OPTIONS`; K-FAC over modules × damping (true Fisher, tokenizer's EOS, raw)."""
    ekfac = [Variant("ekfac", *values) for values in itertools.product(
        tuple(MODULES), FISHERS, EOS, tuple(DAMPINGS), NORMALIZE)]
    kfac = [Variant("kfac", modules, "sampled", "tokenizer", damping, "none")
            for modules, damping in itertools.product(tuple(MODULES), tuple(DAMPINGS))]
    return ekfac + kfac
