"""Value text records (e.g. LLM fine-tuning data): embed them with a Hugging Face model, then value the
embeddings with any method. The embedding is frozen; the method's base model learns on top of it."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from llm_attrib.errors import UserInputError
from llm_attrib.valuation.registry import make_method
from llm_attrib.valuation.result import ValuationResult

Pooling = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _mean_pooling(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def _last_token_pooling(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # the last non-padding position, whichever side the tokenizer pads
    last = mask.shape[1] - 1 - mask.flip(dims=[1]).argmax(dim=1)
    return hidden[torch.arange(len(hidden)), last]


POOLINGS: dict[str, Pooling] = {"mean": _mean_pooling, "last": _last_token_pooling}


@torch.no_grad()
def embed_texts(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int = 16,
                pooling: str = "mean", max_length: int = 512) -> np.ndarray:
    """Float ``[len(texts), hidden]``: the last hidden states of ``model`` (causal LM or encoder), pooled over
    each text's tokens (``"mean"``: padding masked out; ``"last"``: the last real token)."""
    if pooling not in POOLINGS:
        raise UserInputError(f"unknown pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserInputError("the tokenizer has neither a pad nor an eos token: set tokenizer.pad_token")
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    device = next(model.parameters()).device
    blocks = []
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt").to(device)
        hidden = model(**encoded, output_hidden_states=True).hidden_states[-1]
        blocks.append(POOLINGS[pooling](hidden.float(), encoded["attention_mask"]).cpu().numpy())
    return np.concatenate(blocks) if blocks else np.zeros((0, model.config.hidden_size))


def load_embedding_model(path: str) -> tuple[torch.nn.Module, Any]:
    """``(model, tokenizer)`` from a local Hugging Face model folder; a causal LM loads without its head."""
    from pathlib import Path

    if not Path(path, "config.json").is_file():
        raise UserInputError(f"no Hugging Face model folder (with config.json) at {path}")
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def text_columns(dataset: Any, text_column: str, label_column: str, name: str) -> tuple[list[str], np.ndarray]:
    """``(texts, labels [rows])`` of a `datasets.Dataset` or dict of columns; one-line errors for bad columns."""
    names = getattr(dataset, "column_names", None) or list(dataset.keys())
    for column in (text_column, label_column):
        if column not in names:
            raise UserInputError(f"{name} has no column {column!r}; its columns are {', '.join(map(str, names))}")
    return list(dataset[text_column]), np.asarray(dataset[label_column])


def value_dataset(dataset: Any, text_column: str, label_column: str, model: torch.nn.Module, tokenizer: Any,
                  method: str = "knn-shapley", val_dataset: Any | None = None, estimator: Any | None = None,
                  batch_size: int = 16, pooling: str = "mean", **method_params: Any) -> ValuationResult:
    """Value each record of ``dataset`` (a `datasets.Dataset` or a dict of columns) for predicting
    ``label_column`` from the embedding of ``text_column``. Higher = more valuable.

    ``method`` is a name in `VALUATION_METHODS`; ``estimator`` (default: logistic regression) is the base
    model for methods that train one; ``method_params`` go to the method (e.g. ``random_state``).
    """
    texts, labels = text_columns(dataset, text_column, label_column, "the training data")
    X_train = embed_texts(model, tokenizer, texts, batch_size, pooling)
    X_val = y_val = None
    if val_dataset is not None:
        val_texts, y_val = text_columns(val_dataset, text_column, label_column, "the validation data")
        X_val = embed_texts(model, tokenizer, val_texts, batch_size, pooling)
    if estimator is None:
        from sklearn.linear_model import LogisticRegression

        estimator = LogisticRegression(max_iter=1000)
    valuation = make_method(method, {"estimator": estimator}, **method_params)
    return valuation.fit(X_train, labels, X_val, y_val).result_
