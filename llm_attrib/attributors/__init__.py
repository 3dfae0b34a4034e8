"""Attributors: one interface, ``fit(train_records)`` then ``score(query_records, train_records) -> Scores``.

`ATTRIBUTORS` maps a method name to a factory ``factory(model, tokenizer, training=None) -> attributor``; methods that
need no model (the text baselines) ignore all three. ``training`` (a `TrainingHistory`) gives what the final model
alone does not: its run's checkpoints (TracIn), models trained from other seeds (TRAK's ensemble) and retraining on
subsets (AirRep's supervision); a factory that needs it and gets None refuses with a one-line error. The evaluation
suite runs every entry with its benchmark's history. Scores follow the library's sign: positive = the training
example raises the query's log-probability.

Damping variants (``influence-kfac@1e-8``, ``influence-ekfac@heuristic``…) exist so that the evaluation suite
chooses the damping by measurement (LDS and the other metrics of its benchmarks), not by habit: `DAMPINGS` are
compared, while ``influence-kfac`` / ``influence-ekfac`` use the attributor's default
(`llm_attrib.attributors.influence.DEFAULT_DAMPING`).
Factories made by `influence` carry ``fit_key`` (same key = same fitted curvature; damping is applied at use)
and ``damping`` (None = the default), so the suite fits once per curvature and scores every damping.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from llm_attrib.attributors.text import BM25Attributor, RandomAttributor, TfidfAttributor
from llm_attrib.errors import UserInputError

if TYPE_CHECKING:
    from llm_attrib.attributors.airrep import SubsetRetraining
    from llm_attrib.attributors.checkpoints import TrainingHistory

ATTRIBUTOR_CLASSES: dict[str, str] = {
    "influence": "llm_attrib.attributors.influence:InfluenceAttributor",
    "tracin": "llm_attrib.attributors.tracin:TracInAttributor",
    "trak": "llm_attrib.attributors.trak:TrakAttributor",
    "airrep": "llm_attrib.attributors.airrep:AirRepAttributor",
    "random": "llm_attrib.attributors.text:RandomAttributor",
    "tfidf": "llm_attrib.attributors.text:TfidfAttributor",
    "bm25": "llm_attrib.attributors.text:BM25Attributor",
    "prefilter": "llm_attrib.attributors.prefilter:Prefilter",
    "hybrid": "llm_attrib.attributors.hybrid:HybridAttributor",
    "influence-ensemble": "llm_attrib.attributors.influence.ensemble:InfluenceEnsemble",
    "magic": "llm_attrib.attributors.magic:MagicAttributor",
}
"""`Attributor.kind` → its class (``module:name``, imported when a saved attributor of that kind is loaded)."""


def load_attributor(directory: str | os.PathLike, *args: Any, **runtime: Any) -> Any:
    """The attributor `save_pretrained` wrote to ``directory``, of whatever class it was, built on ``args`` (what
    it differentiates: an adapter, checkpoint adapters, a model and tokenizer, or nothing for the text baselines)."""
    from llm_attrib.attributors.base import read_config

    kind = read_config(directory)["attributor"]
    if kind not in ATTRIBUTOR_CLASSES:
        raise UserInputError(f"{directory} holds an attributor of unknown kind {kind!r}; known: "
                             f"{', '.join(ATTRIBUTOR_CLASSES)}")
    return load_class(kind).from_pretrained(directory, *args, **runtime)


AttributorFactory = Callable[..., Any]
"""``factory(model, tokenizer, training: TrainingHistory | None = None) -> attributor``."""

DAMPINGS: dict[str, float | str] = {"1e-8": 1e-8, "1e-4": 1e-4, "heuristic": "heuristic"}
"""Dampings the evaluation suite compares: kronfluence's tiny absolute default, a mid value, and Grosse et al.'s
per-layer 0.1 × mean eigenvalue."""

TRAK_ENSEMBLE = 4
"""Models in ``trak-ensemble``: the final model and 3 trained from other seeds (each costs a full training)."""


def _history(training: TrainingHistory | None, method: str) -> TrainingHistory:
    if training is None:
        raise UserInputError(f"{method} needs the model's training history (checkpoints or models from other seeds), "
                             "not only the final model: build the attributor directly with Checkpoints")
    return training


def influence_factory(curvature: str, normalize: str | None = None, damping: float | str | None = None) -> AttributorFactory:
    """Factory of an `InfluenceAttributor` on the default layers of a causal LM (MLP; a peft model's LoRA layers)
    (identity curvature = grad-dot);
    ``damping=None`` keeps the attributor's default."""

    def factory(model: Any, tokenizer: Any, training: TrainingHistory | None = None) -> Any:
        from llm_attrib.adapters.causal_lm import CausalLMAdapter
        from llm_attrib.attributors.influence import InfluenceAttributor

        kwargs = {} if damping is None else {"damping": damping}
        return InfluenceAttributor(CausalLMAdapter(model, tokenizer), curvature, normalize=normalize,
                                   **kwargs)

    factory.fit_key = ("influence", curvature, normalize)  # type: ignore[attr-defined]
    factory.damping = damping  # type: ignore[attr-defined]
    return factory


def trak_factory(projection_dim: int = 32, n_models: int = 1, checkpoints: bool = False) -> AttributorFactory:
    """Factory of a `TrakAttributor` on the default layers (MLP; LoRA on peft) (default damping): of the one model
    given, or (``n_models`` > 1) averaged over it and ``n_models - 1`` models from ``training.models``, or
    (``checkpoints``) over the checkpoints of its own run, ``training.checkpoints()`` (no extra training)."""

    def factory(model: Any, tokenizer: Any, training: TrainingHistory | None = None) -> Any:
        from llm_attrib.attributors.checkpoints import Checkpoints
        from llm_attrib.attributors.trak import TrakAttributor

        if checkpoints:
            models = list(_history(training, "TRAK over checkpoints").checkpoints()[0])
        else:
            models = [model] if n_models == 1 else _history(training, "a TRAK ensemble").models(n_models)
        return TrakAttributor(Checkpoints(models, tokenizer), projection_dim=projection_dim)

    return factory


def tracin_factory(optimizer: str = "sgd") -> AttributorFactory:
    """Factory of a `TracInAttributor` on the default layers (MLP; LoRA on peft) over ``training.checkpoints()``
    (the last is the final model), each weighted by its learning rate × steps. On the final model alone TracIn is
    grad-dot times a learning rate. ``optimizer="adam"``: training-side Adam steps from ``training.adam_moments()``."""

    def factory(model: Any, tokenizer: Any, training: TrainingHistory | None = None) -> Any:
        from llm_attrib.attributors.checkpoints import AdamCheckpoints, Checkpoints
        from llm_attrib.attributors.tracin import TracInAttributor

        history = _history(training, "TracIn")
        checkpoints, learning_rates = history.checkpoints()
        if optimizer == "adam":
            return TracInAttributor(AdamCheckpoints(checkpoints, tokenizer, history.adam_moments()), learning_rates,
                                    optimizer="adam")
        return TracInAttributor(Checkpoints(checkpoints, tokenizer), learning_rates)

    return factory


def narrowed_factory(kind: str, curvature: str = "ekfac", normalize: str | None = None) -> AttributorFactory:
    """Factory of a default `Prefilter` (``kind="prefilter"``) or `HybridAttributor` (``kind="hybrid"``) around an
    `InfluenceAttributor` of ``curvature`` (and ``normalize``) on the default layers."""

    def factory(model: Any, tokenizer: Any, training: TrainingHistory | None = None) -> Any:
        return load_class(kind)(influence_factory(curvature, normalize)(model, tokenizer))

    return factory


HYBRID_NORMALIZE: str | None = None
"""`InfluenceConfig.normalize` of the ``hybrid`` method's gradient stage (chosen by eval/facts' selection rule)."""


def load_class(kind: str) -> type:
    """The attributor class registered as ``kind`` in `ATTRIBUTOR_CLASSES` (imported now)."""
    module, name = ATTRIBUTOR_CLASSES[kind].split(":")
    return getattr(importlib.import_module(module), name)


def refined_influence_factory(steps: int) -> AttributorFactory:
    """Factory of EK-FAC influence (default layers and damping) refined by ``steps`` CG steps towards the exact damped
    Fisher (``refine_steps``; one pass over the fit sample each); shares its fit across dampings like `influence`."""

    def factory(model: Any, tokenizer: Any, training: TrainingHistory | None = None) -> Any:
        from llm_attrib.adapters.causal_lm import CausalLMAdapter
        from llm_attrib.attributors.influence import InfluenceAttributor

        return InfluenceAttributor(CausalLMAdapter(model, tokenizer), "ekfac", refine_steps=steps)

    factory.fit_key = ("influence", "ekfac", None, "refine", steps)  # type: ignore[attr-defined]
    factory.damping = None  # type: ignore[attr-defined]
    return factory


def source_factory(last: int) -> AttributorFactory:
    """Factory of EK-FAC influence averaged over the last ``last`` checkpoints of ``training.checkpoints()``, weighted
    by learning rate × steps (SOURCE-style `InfluenceEnsemble`; default layers and damping)."""

    def factory(model: Any, tokenizer: Any, training: TrainingHistory | None = None) -> Any:
        from llm_attrib.adapters.causal_lm import CausalLMAdapter
        from llm_attrib.attributors.influence.ensemble import InfluenceEnsemble

        checkpoints, learning_rates = _history(training, "SOURCE-style influence").checkpoints()
        return InfluenceEnsemble([CausalLMAdapter(m, tokenizer) for m in list(checkpoints)[-last:]],
                                 list(learning_rates)[-last:])

    return factory


def seed_ensemble_factory(n_models: int) -> AttributorFactory:
    """Factory of EK-FAC influence averaged (equal weights) over the final model and ``n_models - 1`` models trained
    from other seeds (``training.models``; each costs a full training) — `InfluenceEnsemble`, default options."""

    def factory(model: Any, tokenizer: Any, training: TrainingHistory | None = None) -> Any:
        from llm_attrib.adapters.causal_lm import CausalLMAdapter
        from llm_attrib.attributors.influence.ensemble import InfluenceEnsemble

        models = _history(training, "an influence ensemble over seeds").models(n_models)
        return InfluenceEnsemble([CausalLMAdapter(m, tokenizer) for m in models])

    return factory


def airrep_factory() -> AttributorFactory:
    """Factory of an `AirRepAttributor` (default options) supervised by models that ``training.retrain`` trains on
    subsets of the training records; their outcomes and the encoder are cached under ``training.cache_dir``."""

    def factory(model: Any, tokenizer: Any, training: SubsetRetraining | None = None) -> Any:
        from llm_attrib.attributors.airrep import AirRepAttributor

        if training is None or not callable(getattr(training, "retrain", None)):
            raise UserInputError("AirRep learns from models retrained on subsets of the training data: give a "
                                 "training history with retrain(records, seed), or build AirRepAttributor directly")
        cache = None if training.cache_dir is None else Path(training.cache_dir) / "airrep"
        return AirRepAttributor(model, tokenizer, training.retrain, retrain_settings=training.settings(),
                                cache_dir=cache)

    return factory


def magic_factory() -> AttributorFactory:
    """Factory of a `MagicAttributor` (default options) on ``training.replayable_run``, the recorded run that made the
    model (`llm_attrib.training.ReplayableRun`); refused without one."""

    def factory(model: Any, tokenizer: Any, training: Any = None) -> Any:
        from llm_attrib.attributors.magic import MagicAttributor

        run = getattr(training, "replayable_run", None)
        if run is None:
            raise UserInputError("magic differentiates through the recorded run that made the model: train it with "
                                 "llm_attrib.training.train_replayable and build MagicAttributor(ReplayableRun(...))")
        return MagicAttributor(run)

    return factory


ATTRIBUTORS: dict[str, AttributorFactory] = {
    "random": lambda model, tokenizer, training=None: RandomAttributor(seed=0),
    "tfidf": lambda model, tokenizer, training=None: TfidfAttributor(),
    "bm25": lambda model, tokenizer, training=None: BM25Attributor(),
    "grad-dot": influence_factory("identity"),
    "grad-cos": influence_factory("identity", normalize="cosine"),
    "influence-diagonal": influence_factory("diagonal"),
    "influence-kfac": influence_factory("kfac"),
    "influence-ekfac": influence_factory("ekfac"),
    **{f"influence-{kind}@{label}": influence_factory(kind, damping=value)
       for kind in ("kfac", "ekfac") for label, value in DAMPINGS.items()},
    "trak": trak_factory(),
    "trak-ensemble": trak_factory(n_models=TRAK_ENSEMBLE),
    "trak-checkpoints": trak_factory(checkpoints=True),
    "tracin": tracin_factory(),
    "tracin-adam": tracin_factory("adam"),
    "airrep": airrep_factory(),
    "prefilter-ekfac": narrowed_factory("prefilter"),
    "hybrid": narrowed_factory("hybrid", normalize=HYBRID_NORMALIZE),
    "influence-ekfac-cg2": refined_influence_factory(2),
    "influence-ekfac-source3": source_factory(3),
    "influence-ekfac-seeds3": seed_ensemble_factory(3),
    "magic": magic_factory(),
}
