"""Artefacts on disk: safetensors tensors + JSON metadata, fingerprints, atomic writes.

Every artefact carries metadata (kind, library version, model and data fingerprints, arguments). Loading
with ``expect=`` refuses an artefact whose metadata does not match, with a one-line message naming the field.
Writes go to a temporary name in the same folder and are renamed, so an interrupted run never leaves a
half-written artefact behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from safetensors.torch import load_file, save_file

from llm_attrib import __version__
from llm_attrib.errors import CacheMismatchError

METADATA_KEY = "llm_attrib"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str))


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
    """Save ``tensors`` as safetensors with ``metadata`` (JSON-serialisable) embedded, atomically."""
    meta = {"library_version": __version__, **metadata}
    contiguous = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata={METADATA_KEY: json.dumps(meta, default=str)})


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata stored in a safetensors artefact."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        raw = (handle.metadata() or {}).get(METADATA_KEY)
    if raw is None:
        raise CacheMismatchError(f"{path} is not an llm_attrib artefact (no metadata); delete it or pass another path")
    return json.loads(raw)


def check_metadata(path: str | os.PathLike, found: Mapping[str, Any], expect: Mapping[str, Any]) -> None:
    """Raise `CacheMismatchError` naming the first field where ``found`` differs from ``expect``."""
    for key, value in expect.items():
        if json.dumps(found.get(key), sort_keys=True, default=str) != json.dumps(value, sort_keys=True, default=str):
            raise CacheMismatchError(
                f"{path} was made with {key}={found.get(key)!r}, not {value!r}: "
                "delete it or point to a cache made for this model, data and arguments"
            )


def load_tensors(
    path: str | os.PathLike, expect: Mapping[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load tensors and metadata; if ``expect`` is given, refuse an artefact whose metadata differs."""
    metadata = read_metadata(path)
    if expect:
        check_metadata(path, metadata, expect)
    return load_file(str(path)), metadata


def _hash_update_tensor(digest: "hashlib._Hash", tensor: torch.Tensor, max_values: int = 4096) -> None:
    flat = tensor.detach().reshape(-1)
    step = max(1, flat.numel() // max_values)
    sample = flat[::step][:max_values].to(torch.float64).cpu()
    digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
    digest.update(sample.numpy().tobytes())
    digest.update(str(float(flat.double().abs().sum())).encode())


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's parameter names, shapes, dtypes and (strided samples of) values."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(name.encode())
        _hash_update_tensor(digest, param)
    return digest.hexdigest()[:16]


def data_fingerprint(items: Any) -> str:
    """A short hash of a JSON-serialisable description of a data set (e.g. its token ids)."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]
