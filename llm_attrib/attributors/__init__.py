"""Attributors: one interface, ``fit(train_records)`` then ``score(query_records, train_records) -> Scores``.

`ATTRIBUTORS` maps a method name to a factory ``factory(model, tokenizer) -> attributor``; methods that need no
model (the text baselines) ignore both. The evaluation suite runs every entry.
Scores follow the library's sign: positive = the training example raises the query's log-probability.
"""

from __future__ import annotations

from typing import Any, Callable

from llm_attrib.attributors.text import BM25Attributor, RandomAttributor, TfidfAttributor

AttributorFactory = Callable[[Any, Any], Any]


def influence(curvature: str, normalize: str | None = None) -> AttributorFactory:
    """Factory of an `InfluenceAttributor` on the MLP layers of a causal LM (identity curvature = grad-dot)."""

    def factory(model: Any, tokenizer: Any) -> Any:
        from llm_attrib.adapters.causal_lm import CausalLMAdapter
        from llm_attrib.attributors.influence import InfluenceAttributor

        return InfluenceAttributor(CausalLMAdapter(model, tokenizer, modules="mlp"), curvature, normalize=normalize)

    return factory


ATTRIBUTORS: dict[str, AttributorFactory] = {
    "random": lambda model, tokenizer: RandomAttributor(seed=0),
    "tfidf": lambda model, tokenizer: TfidfAttributor(),
    "bm25": lambda model, tokenizer: BM25Attributor(),
    "grad-dot": influence("identity"),
    "grad-cos": influence("identity", normalize="cosine"),
    "influence-diagonal": influence("diagonal"),
    "influence-kfac": influence("kfac"),
    "influence-ekfac": influence("ekfac"),
}
