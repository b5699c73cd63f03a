"""CKKS key generation, key files (0600, written atomically), loading and rotation.

A key-set directory holds::

    keyset.json   metadata: key id, CKKS parameters, generation, creation time (no secrets)
    public.ctx    public TenSEAL context: public key only (no secret, Galois or relin keys)
    secret.ctx    private TenSEAL context: secret key too. Only the key holder needs it.
    previous/     the generation before the last rotation (same three files), if kept

Every file is created with mode 0600 through ``os.open`` and renamed into place, so a
reader never sees a half-written key and no umask can widen the mode. The directory is
created 0700. In a deployment, copy only ``public.ctx`` (and ``keyset.json``) to the
coordinator, cohort nodes and devices; ``secret.ctx`` goes to the key holder alone.

Rotation (:func:`rotate_keys`) generates a new key set with the same parameters and
moves the current one to ``previous/`` (replacing an older ``previous/``), so that the
key holder can still decrypt the sum of a round that was encrypted just before the
rotation; pass ``keep_previous=False`` to delete the old files instead. Deleting a file
does not scrub it from SSDs, journals or backups: treat a rotated-out secret key as
still existing wherever the disk's contents may be.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedpers.privacy.errors import ConfigError, SecureAggregationError
from fedpers.privacy.secagg._context import (
    MAX_CONTEXT_BYTES,
    context_from_bytes,
    create_context,
    key_id_of,
    parameters_of,
    public_bytes,
    secret_bytes,
)
from fedpers.privacy.secagg.params import CkksParameters

__all__ = [
    "KEYSET_FILE",
    "PREVIOUS_DIR",
    "PUBLIC_CONTEXT_FILE",
    "SECRET_CONTEXT_FILE",
    "KeyMaterial",
    "KeySetInfo",
    "compute_key_id",
    "generate_keys",
    "load_public_context",
    "load_secret_context",
    "read_keyset",
    "rotate_keys",
    "write_keys",
]

KEYSET_FILE = "keyset.json"
PUBLIC_CONTEXT_FILE = "public.ctx"
SECRET_CONTEXT_FILE = "secret.ctx"
PREVIOUS_DIR = "previous"
_KEYSET_FORMAT = "fedpers-ckks-keyset/1"
_FILES = (KEYSET_FILE, PUBLIC_CONTEXT_FILE, SECRET_CONTEXT_FILE)


@dataclass(frozen=True)
class KeyMaterial:
    """A freshly generated key set, in memory.

    Attributes:
        params: the CKKS parameters.
        key_id: SHA-256 (hex) of the public context; names the key set everywhere.
        public_context: serialized public context (public key only).
        secret_context: serialized private context (secret key); never logged or shown.
        created_at: ISO-8601 UTC creation time.
        generation: 1 for the first key set of a directory, +1 per rotation.
    """

    params: CkksParameters
    key_id: str
    public_context: bytes = field(repr=False)
    secret_context: bytes = field(repr=False)
    created_at: str
    generation: int = 1


@dataclass(frozen=True)
class KeySetInfo:
    """What a key-set directory holds, without any secret.

    Attributes:
        directory: the key-set directory.
        key_id: the current key id (verified against ``public.ctx``).
        params: the CKKS parameters.
        generation: rotation generation.
        created_at: ISO-8601 UTC creation time.
        has_secret: whether ``secret.ctx`` is present (the key holder's copy).
        previous_key_id: key id kept in ``previous/``, if any.
    """

    directory: Path
    key_id: str
    params: CkksParameters
    generation: int
    created_at: str
    has_secret: bool
    previous_key_id: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (no secrets)."""
        return {
            "directory": str(self.directory),
            "key_id": self.key_id,
            "params": self.params.to_dict(),
            "security_bits": self.params.security_bits,
            "slots": self.params.slots,
            "generation": self.generation,
            "created_at": self.created_at,
            "public_context": str(self.directory / PUBLIC_CONTEXT_FILE),
            "secret_context": (
                str(self.directory / SECRET_CONTEXT_FILE) if self.has_secret else None
            ),
            "previous_key_id": self.previous_key_id,
        }


def compute_key_id(context: bytes) -> str:
    """Key id of a serialized context, public or secret (both give the same id).

    Args:
        context: serialized TenSEAL CKKS context.

    Returns:
        SHA-256 (hex) of its canonical public serialization.

    Raises:
        SecureAggregationError: the bytes are not a CKKS context with a public key.
    """
    key_id: str = key_id_of(context_from_bytes(context, what="context"))
    return key_id


def generate_keys(params: CkksParameters | None = None, *, generation: int = 1) -> KeyMaterial:
    """Generate a new CKKS key set.

    Args:
        params: CKKS parameters (defaults: :class:`CkksParameters`).
        generation: generation number to record.

    Returns:
        The key material: a public context without the secret key and without Galois or
        relinearisation keys, and a secret context.

    Raises:
        SecureAggregationError: TenSEAL refuses the parameters.
    """
    params = params or CkksParameters()
    ctx = create_context(params)
    public = public_bytes(ctx)
    secret = secret_bytes(ctx)
    return KeyMaterial(
        params=params,
        key_id=hashlib.sha256(public).hexdigest(),
        public_context=public,
        secret_context=secret,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        generation=generation,
    )


def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry change to disk (best effort where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)


def _keyset_json(material: KeyMaterial) -> bytes:
    doc = {
        "format": _KEYSET_FORMAT,
        "key_id": material.key_id,
        "params": material.params.to_dict(),
        "generation": material.generation,
        "created_at": material.created_at,
    }
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _write_set(directory: Path, material: KeyMaterial) -> None:
    """Write the three files of a key set into ``directory`` (public and secret first)."""
    _write_private_file(directory / PUBLIC_CONTEXT_FILE, material.public_context)
    _write_private_file(directory / SECRET_CONTEXT_FILE, material.secret_context)
    _write_private_file(directory / KEYSET_FILE, _keyset_json(material))
    _fsync_dir(directory)


def _make_private_dir(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise SecureAggregationError(f"cannot create key directory {directory}: {exc}") from exc
    if not directory.is_dir():
        raise SecureAggregationError(f"{directory} is not a directory")


def write_keys(
    directory: Path | str, material: KeyMaterial, *, overwrite: bool = False
) -> KeySetInfo:
    """Write a key set to ``directory`` (created 0700); every file is 0600.

    Args:
        directory: the key-set directory.
        material: the keys from :func:`generate_keys`.
        overwrite: replace an existing key set (its keys are lost; prefer :func:`rotate_keys`).

    Returns:
        The written key set's description.

    Raises:
        SecureAggregationError: the directory already holds a key set and ``overwrite`` is
            false, or it cannot be written.
    """
    directory = Path(directory)
    _make_private_dir(directory)
    existing = [name for name in _FILES if (directory / name).exists()]
    if existing and not overwrite:
        raise SecureAggregationError(
            f"{directory} already holds a key set ({', '.join(existing)}); "
            "rotate it with `fedpers keys rotate` or choose another directory"
        )
    try:
        _write_set(directory, material)
    except OSError as exc:
        raise SecureAggregationError(f"cannot write keys to {directory}: {exc}") from exc
    return read_keyset(directory)


def _check_mode(path: Path, *, secret: bool) -> None:
    """Refuse key files whose permissions are too open."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise SecureAggregationError(f"{path} does not exist") from None
    except OSError as exc:
        raise SecureAggregationError(f"cannot stat {path}: {exc}") from exc
    if not path.is_file():
        raise SecureAggregationError(f"{path} is not a regular file")
    if secret and mode & 0o077:
        raise SecureAggregationError(
            f"{path} has permissions {mode:04o}; a secret key file must be readable by its "
            f"owner only (chmod 600 {path})"
        )
    if not secret and mode & 0o022:
        raise SecureAggregationError(
            f"{path} has permissions {mode:04o}; a public context must not be writable by "
            f"group or others, or anyone could substitute their own key (chmod 600 {path})"
        )


def _read_file(path: Path, *, secret: bool, limit: int = MAX_CONTEXT_BYTES) -> bytes:
    _check_mode(path, secret=secret)
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise SecureAggregationError(f"cannot read {path}: {exc}") from exc
    if len(data) > limit:
        raise SecureAggregationError(f"{path} is larger than {limit} bytes")
    return data


def _resolve(path: Path | str, name: str) -> Path:
    p = Path(path)
    return p / name if p.is_dir() else p


def load_public_context(path: Path | str) -> bytes:
    """Read and validate a public context file (what the coordinator and devices load).

    Args:
        path: a ``public.ctx`` file or a key-set directory.

    Returns:
        The serialized public context.

    Raises:
        SecureAggregationError: missing or unreadable file, permissions that let others
            write it, not a CKKS context, or a context that holds a secret key.
    """
    return _load_context(path, secret=False)


def load_secret_context(path: Path | str) -> bytes:
    """Read and validate a secret context file (the key holder's alone).

    Args:
        path: a ``secret.ctx`` file or a key-set directory.

    Returns:
        The serialized secret context.

    Raises:
        SecureAggregationError: missing or unreadable file, permissions other than
            owner-only, not a CKKS context, or a context without a secret key.
    """
    return _load_context(path, secret=True)


def _load_context(path: Path | str, *, secret: bool) -> bytes:
    """Read a context file that holds the secret key exactly when ``secret`` is true.

    Raises:
        SecureAggregationError: see :func:`load_public_context` and
            :func:`load_secret_context`.
    """
    file = _resolve(path, SECRET_CONTEXT_FILE if secret else PUBLIC_CONTEXT_FILE)
    data = _read_file(file, secret=secret)
    ctx = context_from_bytes(data, what=str(file))
    if secret and not ctx.is_private():
        raise SecureAggregationError(f"{file} holds no secret key")
    if not secret and ctx.is_private():
        raise SecureAggregationError(
            f"{file} holds a secret key: the public context must not (regenerate the key set)"
        )
    parameters_of(ctx)
    return data


def _read_meta(file: Path) -> dict[str, Any]:
    data = _read_file(file, secret=False, limit=1024 * 1024)
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SecureAggregationError(f"{file} is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != _KEYSET_FORMAT:
        raise SecureAggregationError(f"{file} is not a fedpers key-set file ({_KEYSET_FORMAT})")
    for key, kind in (("key_id", str), ("generation", int), ("created_at", str)):
        if not isinstance(doc.get(key), kind):
            raise SecureAggregationError(f"{file}: field {key!r} is missing or invalid")
    return doc


def read_keyset(directory: Path | str) -> KeySetInfo:
    """Describe the key set in ``directory``, checking that its files agree.

    The public context's key id must equal the one in ``keyset.json``; the secret
    context, when present, is only checked for owner-only permissions (it is not loaded).

    Args:
        directory: the key-set directory.

    Returns:
        The key set's description.

    Raises:
        SecureAggregationError: a file is missing, unreadable, too open, or the files
            belong to different key sets (e.g. an interrupted rotation).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SecureAggregationError(f"{directory} is not a key-set directory")
    doc = _read_meta(directory / KEYSET_FILE)
    try:
        params = CkksParameters.from_dict(doc.get("params"))
    except ConfigError as exc:
        raise SecureAggregationError(f"{directory / KEYSET_FILE}: {exc}") from exc
    public = load_public_context(directory / PUBLIC_CONTEXT_FILE)
    actual = compute_key_id(public)
    if actual != doc["key_id"]:
        raise SecureAggregationError(
            f"{directory}: {PUBLIC_CONTEXT_FILE} has key id {actual[:12]}… but {KEYSET_FILE} "
            f"says {doc['key_id'][:12]}… (mixed key sets, e.g. an interrupted rotation)"
        )
    secret_file = directory / SECRET_CONTEXT_FILE
    has_secret = secret_file.exists()
    if has_secret:
        _check_mode(secret_file, secret=True)
    previous_key_id = None
    prev_meta = directory / PREVIOUS_DIR / KEYSET_FILE
    if prev_meta.exists():
        previous_key_id = str(_read_meta(prev_meta)["key_id"])
    return KeySetInfo(
        directory=directory,
        key_id=actual,
        params=params,
        generation=int(doc["generation"]),
        created_at=str(doc["created_at"]),
        has_secret=has_secret,
        previous_key_id=previous_key_id,
    )


def rotate_keys(
    directory: Path | str,
    *,
    keep_previous: bool = True,
    params: CkksParameters | None = None,
) -> KeySetInfo:
    """Replace the key set in ``directory`` with a new generation.

    The new keys are written to a private staging directory first; then the current
    files move to ``previous/`` (an older ``previous/`` is removed) or are deleted, and
    the new files are renamed into place. A crash in between leaves files whose key ids
    disagree, which :func:`read_keyset` reports instead of silently mixing key sets.

    Args:
        directory: an existing key-set directory.
        keep_previous: keep the old generation in ``previous/`` (default) so sums
            encrypted just before the rotation can still be decrypted; false deletes it.
        params: parameters of the new generation (default: the current ones).

    Returns:
        The new key set's description.

    Raises:
        SecureAggregationError: no valid key set in ``directory``, or it cannot be written.
    """
    directory = Path(directory)
    current = read_keyset(directory)
    material = generate_keys(params or current.params, generation=current.generation + 1)
    staging = directory / f".staging-{secrets.token_hex(6)}"
    previous = directory / PREVIOUS_DIR
    try:
        staging.mkdir(mode=0o700)
        _write_set(staging, material)
        if keep_previous:
            if previous.exists():
                shutil.rmtree(previous)
            previous.mkdir(mode=0o700)
            for name in _FILES:
                if (directory / name).exists():
                    os.replace(directory / name, previous / name)
            _fsync_dir(previous)
        else:
            for name in _FILES:
                (directory / name).unlink(missing_ok=True)
            if previous.exists():
                shutil.rmtree(previous)
        for name in (PUBLIC_CONTEXT_FILE, SECRET_CONTEXT_FILE, KEYSET_FILE):
            os.replace(staging / name, directory / name)
        _fsync_dir(directory)
        staging.rmdir()
    except OSError as exc:
        raise SecureAggregationError(f"key rotation in {directory} failed: {exc}") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return read_keyset(directory)
