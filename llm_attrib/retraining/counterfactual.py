"""Counterfactual ground truth: retrain on subsets of the training data and measure the queries.

The expensive part of LDS and leave-one-out evaluation. A *trial* trains one model per seed on the
training records selected by one boolean mask and records every query's measurement. Trials are cached
in a folder, one safetensors file per finished trial written atomically, so an interrupted run resumes
where it stopped; a folder made for other data, masks, seeds or settings is refused (`CacheMismatchError`).

The callables:

* ``retrain(subset_records, seed) -> model``: a model trained from a fresh, seeded initialisation on exactly
  ``subset_records`` (deterministic given the seed);
* ``measure(model, query_records) -> Tensor[n_query]``: each query's measurement, higher = more likely
  (for causal LMs: the sum of completion-token log-probabilities).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from llm_attrib.errors import CacheMismatchError
from llm_attrib.store import check_metadata, data_fingerprint, load_tensors, save_tensors, write_json

Record = Mapping[str, Any]
Retrain = Callable[[list[Record], int], torch.nn.Module]
Measure = Callable[[torch.nn.Module, list[Record]], torch.Tensor]

MANIFEST = "manifest.json"


def trial_metadata(
    train_records: Sequence[Record],
    query_records: Sequence[Record],
    masks: torch.Tensor,
    seeds: torch.Tensor,
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """What a cache of trials must match: data and mask fingerprints, seeds, and the caller's ``settings``
    (model config, training hyper-parameters, α, M...)."""
    return {
        "kind": "counterfactual_trials",
        "settings": dict(settings),
        "train_fingerprint": data_fingerprint(list(train_records)),
        "query_fingerprint": data_fingerprint(list(query_records)),
        "masks_fingerprint": data_fingerprint(masks.to(torch.int8).tolist()),
        "seeds": seeds.tolist(),
    }


def _trial_path(cache_dir: Path, index: int) -> Path:
    return cache_dir / f"trial_{index:05d}.safetensors"


def _open_cache(cache_dir: Path, expect: Mapping[str, Any]) -> None:
    manifest = cache_dir / MANIFEST
    if manifest.exists():
        check_metadata(manifest, json.loads(manifest.read_text()), expect)
    elif any(cache_dir.glob("trial_*.safetensors")):
        raise CacheMismatchError(f"{cache_dir} holds trials but no {MANIFEST}; delete the folder or choose another")
    else:
        write_json(manifest, dict(expect))


def run_trials(
    train_records: Sequence[Record],
    query_records: Sequence[Record],
    masks: torch.Tensor,
    seeds: torch.Tensor,
    *,
    retrain: Retrain,
    measure: Measure,
    cache_dir: str | Path | None = None,
    settings: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Retrain on each masked subset with each of its seeds and measure every query.

    masks: ``[M, n_train]`` booleans (True = the example is trained on).
    seeds: ``[M, S]`` integer seeds; trial ``m`` trains ``S`` models, one per seed.
    Returns ``[M, S, n_query]`` float64 measurements. With ``cache_dir``, finished trials are read back instead
    of recomputed; ``settings`` (JSON-serialisable) must describe everything else that changes the outcome.
    """
    if masks.ndim != 2 or masks.shape[1] != len(train_records):
        raise ValueError(f"masks must be [M, n_train={len(train_records)}], got {tuple(masks.shape)}")
    if seeds.ndim != 2 or seeds.shape[0] != masks.shape[0]:
        raise ValueError(f"seeds must be [M={masks.shape[0]}, S], got {tuple(seeds.shape)}")
    expect = trial_metadata(train_records, query_records, masks, seeds, settings or {})
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        _open_cache(cache, expect)
    queries = list(query_records)
    outcomes = torch.empty(masks.shape[0], seeds.shape[1], len(queries), dtype=torch.float64)
    for m in range(masks.shape[0]):
        path = None if cache is None else _trial_path(cache, m)
        if path is not None and path.exists():
            outcomes[m] = load_tensors(path, expect={**expect, "trial": m})[0]["outcomes"]
        else:
            subset = [train_records[j] for j in torch.nonzero(masks[m]).flatten().tolist()]
            for s, seed in enumerate(seeds[m].tolist()):
                model = retrain(subset, int(seed))
                with torch.no_grad():
                    outcomes[m, s] = measure(model, queries).to(torch.float64)
            if path is not None:
                save_tensors(path, {"outcomes": outcomes[m]}, {**expect, "trial": m})
        if progress is not None:
            progress(m + 1, masks.shape[0])
    return outcomes


def trial_seeds(base_seed: int, n_trials: int, seeds_per_trial: int) -> torch.Tensor:
    """``[n_trials, seeds_per_trial]`` distinct training seeds derived from ``base_seed`` (deterministic)."""
    generator = torch.Generator().manual_seed(base_seed)
    return torch.randint(0, 2**31 - 1, (n_trials, seeds_per_trial), generator=generator, dtype=torch.long)
