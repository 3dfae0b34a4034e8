"""The lifecycle of fitted curvature factors: a seeded fit sample, one cache file per layer group, one group held.

`Factors` fits the curvature on a seeded random sample of the training records (or loads it from a cache folder
whose metadata must match: model, encoded examples — token ids *and* labels —, training-set size, sample size,
seed, Fisher targets), one contiguous group of tracked layers at a time. With several groups and a cache folder,
each group's factors are written to their own file and released from memory, and `hold` loads a group only while
it is used, so the factors of all layers are never in memory together.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from llm_attrib.adapters.base import Adapter
from llm_attrib.attributors.influence.config import InfluenceConfig
from llm_attrib.capture import TrackedLayer
from llm_attrib.curvature import Curvature
from llm_attrib.distributed import barrier, broadcast_from_main, is_main_process
from llm_attrib.errors import UserInputError
from llm_attrib.store import data_fingerprint, load_tensors, save_tensors, tensors_fingerprint


def sample_indices(n: int, max_examples: int | None, seed: int) -> list[int]:
    """A seeded random sample of ``min(n, max_examples)`` indices, sorted (all of them if no limit)."""
    if max_examples is None or max_examples >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), max_examples))


class Factors:
    """``curvature``'s factors for ``adapter``'s tracked layers (see the module docstring).

    ``fingerprint`` identifies factors released to files (exact bytes of each group's tensors), for score chunks;
    None while every factor is in memory, where chunks hash `Curvature.state` itself.
    """

    def __init__(self, adapter: Adapter, curvature: Curvature, config: InfluenceConfig,
                 cache_dir: Path | None, progress: bool):
        self.adapter, self.curvature, self.config = adapter, curvature, config
        self.cache_dir, self.progress = cache_dir, progress
        self.fingerprint: str | None = None
        self.examples: list[Any] = []  # the encoded fit sample (refine_steps streams it); empty once loaded from a save
        self._files: dict[int, Path] = {}  # layer group -> the file its factors were released to

    def partitions(self) -> list[list[TrackedLayer]]:
        """The tracked layers in ``layer_partitions`` contiguous groups, fitted and scored one group at a time."""
        layers = list(self.adapter.layers)
        k = self.config.layer_partitions
        return [layers[(len(layers) * i) // k:(len(layers) * (i + 1)) // k] for i in range(k)]

    def fit(self, train: Sequence[Any]) -> None:
        """Fit (or load) every layer group's factors on a seeded sample of ``train``."""
        if len(train) == 0:
            raise UserInputError("the training set is empty")
        indices = sample_indices(len(train), self.config.max_examples, self.config.seed)
        examples = self.adapter.encode([train[i] for i in indices])
        self.examples = examples
        expect = None if self.cache_dir is None else {  # hashing every weight costs ~1 s/GB: only for a cache
            "kind": self.curvature.kind,
            "model": self.adapter.fingerprint(),
            "data": data_fingerprint(examples),  # token ids and labels: which tokens are scored counts
            "n_train": len(train),
            "max_examples": self.config.max_examples,
            "seed": self.config.seed,
            "fisher": self.config.fisher,
        }
        self._files = {}
        offloaded = self.cache_dir is not None and self.config.layer_partitions > 1
        fingerprints: list[str] = []  # each released group's (exact bytes), while its factors are at hand
        for part, layers in enumerate(self.partitions()):
            path = self._path(part)
            if path is not None and broadcast_from_main(path.exists()):  # every rank takes rank 0's branch
                tensors, metadata = load_tensors(path, expect=expect)  # its layers: the fingerprint's and file name's
                self.curvature.load_state({**self.curvature.state, **tensors}, metadata).to(self.adapter.device)
            else:
                self.curvature.fit(self.adapter, examples, n_train=len(train), batch_size=self.config.batch_size,
                                   seed=self.config.seed, fisher=self.config.fisher, progress=self.progress,
                                   layers=layers)
                if path is not None:
                    if is_main_process():
                        save_tensors(path, self.curvature.layer_state(layers), {
                            **expect, **self.curvature.metadata(), "layers": [layer.name for layer in layers]})
                    barrier()  # the file exists before any rank reloads this group from it
            if offloaded:
                fingerprints.append(tensors_fingerprint(self.curvature.layer_state(layers)))
                self._files[part] = path
                self._release(layers)
        self.fingerprint = data_fingerprint(fingerprints) if offloaded else None

    def _path(self, part: int) -> Path | None:
        """Where layer group ``part``'s factors are cached (one file for all layers when there is one group)."""
        if self.cache_dir is None:
            return None
        if self.config.layer_partitions == 1:
            return self.cache_dir / f"{self.curvature.kind}-factors.safetensors"
        parts = self.config.layer_partitions
        return self.cache_dir / f"{self.curvature.kind}-factors-part{part + 1:02d}of{parts:02d}.safetensors"

    def _release(self, layers: Sequence[TrackedLayer]) -> None:
        for key in self.curvature.layer_state(layers):
            del self.curvature.state[key]

    @contextmanager
    def hold(self, layers: Sequence[TrackedLayer]) -> Iterator[None]:
        """Hold the factors of ``layers`` in memory for the block: those of a layer group written to its own file by
        `fit` are loaded for the block and released after it; factors fitted in memory stay where they are."""
        names = {layer.name for layer in layers}
        parts = [part for part, group in enumerate(self.partitions())
                 if part in self._files and names & {layer.name for layer in group}]
        for part in parts:
            tensors, _ = load_tensors(self._files[part])
            self.curvature.state.update({k: v.to(self.adapter.device) for k, v in tensors.items()})
        try:
            yield
        finally:
            for part in parts:
                self._release(self.partitions()[part])

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Every layer's factors on the CPU (groups released to files are read back) and their metadata."""
        with self.hold(self.adapter.layers):
            tensors = {key: value.cpu() for key, value in self.curvature.state.items()}
        return tensors, {"curvature": self.curvature.metadata(), "factors": self.fingerprint}

    def load_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        """Restore what `state` returned (all layers in memory)."""
        self.curvature.load_state(tensors, metadata["curvature"]).to(self.adapter.device)
        self._files = {}
        self.fingerprint = metadata["factors"]
