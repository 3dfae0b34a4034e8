"""`Attributor`: the one contract of every attribution method (influence, TracIn, TRAK, AirRep, text baselines).

    attributor = Method(what_is_differentiated, config=MethodConfig(...))   # or Method(..., **options)
    attributor.fit(train)                       # factors, features, an index … (whatever the method estimates)
    scores = attributor.score(queries, train)   # Scores [n_query, n_train]; positive = raises log Pr(completion|prompt)
    attributor.self_influence(train)            # [n_train], where the method defines it
    attributor.save_pretrained("dir")           # attributor_config.json + attributor_state.safetensors
    Method.from_pretrained("dir", what_is_differentiated)   # bitwise-equal scores, no refit

``what_is_differentiated`` is the method's first constructor argument (an adapter, a sequence of checkpoint
adapters, a model and tokenizer, or nothing for the text baselines); it is not saved, and the saved state records
its fingerprint, so reloading with another model is refused. Options live in a frozen, validated `Config`
(`config_class`); constructor keywords are its fields. Runtime choices that do not change a result (progress bars,
cache folders) are plain keywords and are not saved.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Sequence, TypeVar

import torch

from llm_attrib import __version__
from llm_attrib.config import Config
from llm_attrib.data import record_ids
from llm_attrib.errors import CacheMismatchError, UserInputError
from llm_attrib.scores import Scores

CONFIG_FILE = "attributor_config.json"
STATE_FILE = "attributor_state.safetensors"
A = TypeVar("A", bound="Attributor")


def make_config(config_class: type[Config], config: Config | None, options: Mapping[str, Any]) -> Config:
    """``config`` (of ``config_class``) with ``options`` applied, or a new one from ``options``: the shape every
    constructor accepts (``Method(x, config=cfg)``, ``Method(x, batch_size=4)``, both)."""
    if config is not None and not isinstance(config, config_class):
        raise UserInputError(f"config must be a {config_class.__name__}, not {type(config).__name__}")
    if config is None:
        return config_class.from_dict(options)
    return config.replace(**options) if options else config


class Attributor(ABC):
    """Base class; see the module docstring. Subclasses set `kind` and `config_class` and implement `fit`,
    `score`, `_state` and `_load_state` (and `self_influence` where it is defined)."""

    kind: ClassVar[str]
    """The name under which `save_pretrained` records the class (``"influence"``, ``"trak"`` …)."""
    config_class: ClassVar[type[Config]]
    config: Config

    @property
    @abstractmethod
    def name(self) -> str:
        """The method's name in `Scores.method` and reports (``"influence-ekfac"``)."""

    @property
    @abstractmethod
    def units(self) -> str:
        """What one unit of a score means, with the sign."""

    @property
    @abstractmethod
    def is_fitted(self) -> bool:
        """Whether `fit` (or `from_pretrained`) has run."""

    @abstractmethod
    def fit(self: A, train: Sequence[Any]) -> A:
        """Estimate what scoring needs from the training records; returns ``self``."""

    @abstractmethod
    def score(self, queries: Sequence[Any], train: Iterable[Any]) -> Scores:
        """``[n_query, n_train]`` scores; positive = the training record raises the query's log-probability."""

    def self_influence(self, train: Sequence[Any]) -> torch.Tensor:
        """``[n_train]`` self-influence (large = atypical or mislabelled); refused where the method has none."""
        raise UserInputError(f"{self.name} defines no self-influence; use an influence, TracIn or TRAK attributor")

    # ------------------------------------------------------------------------------------------ persistence
    @abstractmethod
    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The fitted state: tensors and JSON metadata (``"bound_to"``: fingerprints of the models it needs)."""

    @abstractmethod
    def _load_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        """Restore what `_state` returned (the metadata's ``bound_to`` has been checked by then)."""

    def _bound_to(self) -> dict[str, Any]:
        """Fingerprints of what this attributor differentiates (checked on `from_pretrained`); none by default."""
        return {}

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise UserInputError(f"{self.name}: call fit(train) (or from_pretrained) before scoring")

    # ----------------------------------------------- methods that keep per-record state of the fitted training set
    def _remember_train(self, train: Sequence[Any]) -> None:
        """Record which training records were fitted (their fingerprint and ids), for `_check_same_train`."""
        self._train_fingerprint = self._train_fingerprint_of(train)
        self._train_ids = record_ids(train)

    def _train_fingerprint_of(self, train: Iterable[Any]) -> str:
        """What identifies a training set for this method (default: every record's exact content; tensors by their
        bytes, where ``repr`` would elide them)."""
        from llm_attrib.store import data_fingerprint

        return data_fingerprint(list(train))

    def _check_same_train(self, train: Iterable[Any] | None) -> None:
        """Refuse to score other records than those fitted (methods whose fit keeps per-record features)."""
        self._check_fitted()
        if train is not None and self._train_fingerprint_of(train) != self._train_fingerprint:
            raise UserInputError(f"{self.name}: these training records differ from those given to fit(); it scores "
                                 "only the records it was fitted on: call fit(train) with them first")

    def _train_metadata(self) -> dict[str, Any]:
        """The fitted training set's fingerprint and ids, for `_state` (restored by `_restore_train`)."""
        return {"train_fingerprint": self._train_fingerprint, "train_ids": list(self._train_ids)}

    def _restore_train(self, metadata: Mapping[str, Any]) -> None:
        self._train_fingerprint = metadata["train_fingerprint"]
        self._train_ids = list(metadata["train_ids"])

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the config (JSON) and the fitted state (safetensors, with a checksum) to ``directory``, atomically;
        `from_pretrained` reloads them without refitting."""
        from llm_attrib.store import save_tensors, write_json

        self._check_fitted()
        directory = Path(directory)
        tensors, metadata = self._state()
        save_tensors(directory / STATE_FILE, tensors, {"kind": f"attributor-{self.kind}",
                                                       "bound_to": self._bound_to(), **metadata})
        write_json(directory / CONFIG_FILE, {"attributor": self.kind, "library_version": __version__,
                                             "config": self.config.to_dict()})
        return directory

    @classmethod
    def from_pretrained(cls: type[A], directory: str | os.PathLike, *args: Any, **runtime: Any) -> A:
        """The attributor saved in ``directory``, built on ``args`` (what it differentiates, as for the
        constructor) with ``runtime`` keywords (``progress``…); refused if it was saved for another model."""
        from llm_attrib.store import load_tensors

        saved = read_config(directory)
        if saved["attributor"] != cls.kind:
            raise CacheMismatchError(f"{directory} holds a {saved['attributor']!r} attributor, not {cls.kind!r}: "
                                     f"load it with that class (llm_attrib.load_attributor picks it)")
        config = cls.config_class.from_dict(saved["config"], where=str(Path(directory) / CONFIG_FILE))
        attributor = cls(*args, config=config, **runtime)
        tensors, metadata = load_tensors(Path(directory) / STATE_FILE,
                                         expect={"kind": f"attributor-{cls.kind}", "bound_to": attributor._bound_to()})
        attributor._load_state(tensors, metadata)
        return attributor


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``attributor_config.json`` of a saved attributor, with a one-line error if it is not one."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise UserInputError(f"{directory} holds no saved attributor ({CONFIG_FILE} is missing); "
                             "write one with save_pretrained")
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CacheMismatchError(f"{path} is not valid JSON ({error}); save the attributor again") from None
    if not isinstance(saved, dict) or not {"attributor", "config"} <= set(saved):
        raise CacheMismatchError(f"{path} is not an llm_attrib attributor config; save the attributor again")
    return saved
