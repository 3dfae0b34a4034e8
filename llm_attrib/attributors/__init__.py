"""Attributors: one interface, ``fit(train_records)`` then ``score(query_records, train_records) -> Scores``.

`ATTRIBUTORS` maps a method name to a factory ``factory(model, tokenizer) -> attributor``; methods that need no
model (the text baselines) ignore both. The evaluation suite runs every entry.
Scores follow the library's sign: positive = the training example raises the query's log-probability.

Damping variants (``influence-kfac@1e-8``, ``influence-ekfac@heuristic``…) exist so that the evaluation suite
chooses the damping by measurement (DESIGN.md): `DAMPINGS` are compared, while ``influence-kfac`` /
``influence-ekfac`` use the attributor's default (`llm_attrib.attributors.influence.DEFAULT_DAMPING`).
Factories made by `influence` carry ``fit_key`` (same key = same fitted curvature; damping is applied at use)
and ``damping`` (None = the default), so the suite fits once per curvature and scores every damping.
"""

from __future__ import annotations

from typing import Any, Callable

from llm_attrib.attributors.text import BM25Attributor, RandomAttributor, TfidfAttributor

AttributorFactory = Callable[[Any, Any], Any]

DAMPINGS: dict[str, float | str] = {"1e-8": 1e-8, "1e-4": 1e-4, "heuristic": "heuristic"}
"""Dampings the evaluation suite compares: kronfluence's tiny absolute default, a mid value, and Grosse et al.'s
per-layer 0.1 × mean eigenvalue."""


def influence_factory(curvature: str, normalize: str | None = None, damping: float | str | None = None) -> AttributorFactory:
    """Factory of an `InfluenceAttributor` on the MLP layers of a causal LM (identity curvature = grad-dot);
    ``damping=None`` keeps the attributor's default."""

    def factory(model: Any, tokenizer: Any) -> Any:
        from llm_attrib.adapters.causal_lm import CausalLMAdapter
        from llm_attrib.attributors.influence import InfluenceAttributor

        kwargs = {} if damping is None else {"damping": damping}
        return InfluenceAttributor(CausalLMAdapter(model, tokenizer, modules="mlp"), curvature, normalize=normalize,
                                   **kwargs)

    factory.fit_key = ("influence", curvature, normalize)  # type: ignore[attr-defined]
    factory.damping = damping  # type: ignore[attr-defined]
    return factory


def trak_factory(projection_dim: int = 32) -> AttributorFactory:
    """Factory of a `TrakAttributor` on the MLP layers of the one model given (default damping). TRAK's ensemble over
    independently trained models needs models a factory does not get; TracIn is not registered for the same reason:
    on the final model alone it is grad-dot times a learning rate."""

    def factory(model: Any, tokenizer: Any) -> Any:
        from llm_attrib.adapters.causal_lm import CausalLMAdapter
        from llm_attrib.attributors.trak import TrakAttributor

        return TrakAttributor([CausalLMAdapter(model, tokenizer, modules="mlp")], projection_dim=projection_dim)

    return factory


ATTRIBUTORS: dict[str, AttributorFactory] = {
    "random": lambda model, tokenizer: RandomAttributor(seed=0),
    "tfidf": lambda model, tokenizer: TfidfAttributor(),
    "bm25": lambda model, tokenizer: BM25Attributor(),
    "grad-dot": influence_factory("identity"),
    "grad-cos": influence_factory("identity", normalize="cosine"),
    "influence-diagonal": influence_factory("diagonal"),
    "influence-kfac": influence_factory("kfac"),
    "influence-ekfac": influence_factory("ekfac"),
    **{f"influence-{kind}@{label}": influence_factory(kind, damping=value)
       for kind in ("kfac", "ekfac") for label, value in DAMPINGS.items()},
    "trak": trak_factory(),
}
