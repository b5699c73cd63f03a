"""Atomic per-round checkpoints of everything a resumed run needs.

A checkpoint holds the global model, the server optimiser state, the sampler and noise
generator states, the accountant's ``state_dict``, the adaptive clipping state and the
number of the last completed round. It is one ``.npz`` file: every numpy array of the
state tree is stored as its own entry and the rest of the tree as JSON (Python's JSON
keeps the arbitrary-precision integers of numpy's generator states exactly). Nothing is
pickled, so loading a checkpoint never executes code.

Writes are atomic: the file is written next to its destination, flushed, ``fsync``-ed and
renamed over the previous checkpoint, then the directory is ``fsync``-ed. A process
killed with SIGKILL at any instant leaves either the previous or the new checkpoint,
never a torn one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedpers.privacy.errors import StoreCorruptedError, StoreError
from fedpers.server.run_dir import RunDirectory

__all__ = [
    "Checkpoint",
    "atomic_write_bytes",
    "atomic_write_json",
    "load_checkpoint",
    "save_checkpoint",
    "sha256_file",
]

_STATE_KEY = "__state__"
_ARRAY_TAG = "__ndarray__"
_FORMAT = 1


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename, fsync dir)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """The state of a run after a completed (or skipped) round.

    Attributes:
        round: number of the last round whose effects are included (0: initial state).
        arrays: the global shared parameters, wire order.
        state: everything else as a JSON-compatible tree whose leaves may be numpy
            arrays (optimizer moments, generator states, accountant history, ...).
    """

    round: int
    arrays: list[np.ndarray]
    state: dict[str, Any]


def _flatten(node: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Replace every ndarray in ``node`` by a reference into ``arrays``."""
    if isinstance(node, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = node
        return {_ARRAY_TAG: key}
    if isinstance(node, dict):
        return {str(k): _flatten(v, arrays) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_flatten(v, arrays) for v in node]
    if isinstance(node, np.generic):
        return node.item()
    return node


def _inflate(node: Any, arrays: Any) -> Any:
    if isinstance(node, dict):
        if set(node) == {_ARRAY_TAG}:
            return np.array(arrays[node[_ARRAY_TAG]])
        return {k: _inflate(v, arrays) for k, v in node.items()}
    if isinstance(node, list):
        return [_inflate(v, arrays) for v in node]
    return node


def save_checkpoint(run_dir: Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``run_dir/checkpoint.npz`` atomically.

    Returns:
        The checkpoint's path.
    """
    arrays: dict[str, np.ndarray] = {}
    tree = {
        "format": _FORMAT,
        "round": checkpoint.round,
        "model": _flatten(list(checkpoint.arrays), arrays),
        "state": _flatten(checkpoint.state, arrays),
    }
    buf = io.BytesIO()
    arrays[_STATE_KEY] = np.frombuffer(json.dumps(tree).encode(), np.uint8)
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    path = RunDirectory(run_dir).checkpoint
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_checkpoint(run_dir: Path) -> Checkpoint:
    """Read the checkpoint of ``run_dir``.

    Raises:
        StoreError: when the run directory has no checkpoint.
        StoreCorruptedError: when the file cannot be parsed.
    """
    path = RunDirectory(run_dir).checkpoint
    if not path.is_file():
        raise StoreError(f"{path}: no checkpoint to resume from")
    try:
        with np.load(path, allow_pickle=False) as data:
            tree = json.loads(bytes(data[_STATE_KEY]).decode())
            if tree.get("format") != _FORMAT:
                raise StoreCorruptedError(f"{path}: unknown checkpoint format {tree.get('format')}")
            model = _inflate(tree["model"], data)
            state = _inflate(tree["state"], data)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise StoreCorruptedError(f"{path}: unreadable checkpoint ({exc})") from exc
    return Checkpoint(round=int(tree["round"]), arrays=list(model), state=state)
