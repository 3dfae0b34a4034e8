"""Artefacts on disk: safetensors tensors + JSON metadata, fingerprints, checksums, atomic writes.

Every artefact carries metadata (kind, library version, model and data fingerprints, arguments) and a checksum of
its tensors' bytes. Loading with ``expect=`` refuses an artefact whose metadata does not match, with a one-line
message naming the field; a file whose bytes changed (checksum) or that is not safetensors is refused in one line.
Fingerprints hash exact bytes (dtype, shape, raw values of a contiguous CPU copy), so they do not depend on thread
count, memory layout or device. Writes go to a temporary name beside the target (``.<name>.<host>-<pid>.*.tmp``)
and are renamed, so an interrupted run never leaves a half-written artefact; temporary files of dead processes
are removed on a later write to the same folder. Files get the user's umask (0644 under umask 022).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from llm_attrib import __version__
from llm_attrib.errors import CacheMismatchError

METADATA_KEY = "llm_attrib"
CHECKSUM_KEY = "checksum"
_HOST = re.sub(r"\W", "_", socket.gethostname()) or "host"
_TEMP_NAME = re.compile(r"^\..+\.(?P<host>\w+)-(?P<pid>\d+)\.\w+\.tmp$")
_cleaned: set[Path] = set()  # folders whose stale temporary files this process has removed


def _read_umask() -> int:
    """The process umask, read without changing it where Linux exposes it (else set and restored once)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
FILE_MODE = 0o666 & ~_UMASK
"""Mode of every artefact: what ``open()`` would give under the user's umask (0644 under 022)."""
DIR_MODE = 0o777 & ~_UMASK
"""Mode of an artefact folder built in a temporary folder (``mkdtemp`` makes it 0700): 0755 under umask 022."""


def apply_umask(folder: str | os.PathLike) -> None:
    """Give ``folder`` and everything in it the modes of the user's umask (`DIR_MODE`, `FILE_MODE`)."""
    folder = Path(folder)
    for path in [folder, *folder.rglob("*")]:
        os.chmod(path, DIR_MODE if path.is_dir() else FILE_MODE)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (of `atomic_path`) in ``folder`` whose writing process, on this host, is dead;
    returns them. A live writer's (another rank's, another host's) are left alone."""
    folder = Path(folder)
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            match = _TEMP_NAME.match(entry.name)
            if match and match["host"] == _HOST and not _alive(int(match["pid"])):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    _cleaned.add(folder.resolve())
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` (mode `FILE_MODE`) only if the block
    succeeds. The first write into a folder removes the folder's temporary files left by dead processes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent.resolve() not in _cleaned:
        remove_stale_temps(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str))


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
    """Save ``tensors`` as safetensors with ``metadata`` (JSON-serialisable) and their checksum, atomically."""
    contiguous = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    meta = {"library_version": __version__, **metadata, CHECKSUM_KEY: tensors_checksum(contiguous)}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata={METADATA_KEY: json.dumps(meta, default=str)})


def _corrupted(path: str | os.PathLike, reason: str) -> CacheMismatchError:
    return CacheMismatchError(f"{path} is corrupted ({reason}); delete it and rerun")


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata stored in a safetensors artefact (its header only: no tensor is read)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
        metadata = None if raw is None else json.loads(raw)
    except (SafetensorError, ValueError) as error:
        raise _corrupted(path, f"not a readable safetensors file: {' '.join(str(error).split())}") from None
    if not isinstance(metadata, dict):
        raise CacheMismatchError(f"{path} is not an llm_attrib artefact (no metadata); delete it or pass another path")
    return metadata


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
    """Load tensors and metadata; refuse (`CacheMismatchError`, one line) an artefact whose metadata differs from
    ``expect`` (checked before any tensor is read), whose tensors fail their checksum, or that is not safetensors."""
    metadata = read_metadata(path)
    if expect:
        check_metadata(path, metadata, expect)
    if CHECKSUM_KEY not in metadata:
        raise _corrupted(path, "no checksum: written by an older llm_attrib or another tool")
    try:
        tensors = load_file(str(path))
    except SafetensorError as error:
        raise _corrupted(path, f"not a readable safetensors file: {' '.join(str(error).split())}") from None
    if tensors_checksum(tensors) != metadata[CHECKSUM_KEY]:
        raise _corrupted(path, "checksum mismatch")
    return tensors, metadata


def _update_with_tensor(digest: "hashlib._Hash", tensor: torch.Tensor) -> None:
    """Hash a tensor's dtype, shape and exact bytes (of a contiguous CPU copy: layout and device do not matter)."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest.update(f"{flat.dtype}{tuple(tensor.shape)}".encode())
    digest.update(flat.view(torch.uint8).numpy().data)


def tensors_checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 (hex) of the names, dtypes, shapes and bytes of ``tensors``, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode() + b"\0")
        _update_with_tensor(digest, tensors[name])
    return digest.hexdigest()


def tensors_fingerprint(tensors: Mapping[str, torch.Tensor]) -> str:
    """A short hash of exact tensor contents (e.g. fitted factors): `tensors_checksum`, truncated."""
    return tensors_checksum(tensors)[:16]


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's parameter names, dtypes, shapes and exact values (in parameter order)."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(name.encode() + b"\0")
        _update_with_tensor(digest, param)
    return digest.hexdigest()[:16]


def _canonical(value: Any) -> Any:
    """A JSON stand-in for what `json` cannot encode: a tensor or array by its exact bytes, a dataclass by its
    fields (`Encoded` → input ids and labels), anything else by ``str``."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        digest = hashlib.sha256()
        _update_with_tensor(digest, value)
        return {"tensor": digest.hexdigest()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {type(value).__name__: {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}}
    return str(value)


def data_fingerprint(items: Any) -> str:
    """A short hash of a description of a data set: JSON values, tensors and arrays (exact bytes), dataclasses
    (their fields: an `Encoded` example's token ids *and* labels, so which tokens are scored counts)."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=_canonical).encode()).hexdigest()[:16]
