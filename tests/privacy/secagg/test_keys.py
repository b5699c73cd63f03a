"""Key generation, key files (0600, atomic), loading with permission checks, rotation."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import tenseal as ts

from fedpers.privacy.errors import SecureAggregationError
from fedpers.privacy.secagg import (
    KEYSET_FILE,
    PREVIOUS_DIR,
    PUBLIC_CONTEXT_FILE,
    SECRET_CONTEXT_FILE,
    CkksParameters,
    KeyMaterial,
    compute_key_id,
    generate_keys,
    load_public_context,
    load_secret_context,
    read_keyset,
    rotate_keys,
    write_keys,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def material() -> KeyMaterial:
    return generate_keys()


def test_generated_contexts(material: KeyMaterial) -> None:
    public = ts.context_from(material.public_context)
    secret = ts.context_from(material.secret_context)
    assert not public.is_private()
    assert not public.has_galois_keys()
    assert not public.has_relin_keys()
    assert secret.is_private()
    assert not secret.has_galois_keys()
    assert public.global_scale == 2.0**40
    # the key id names the key set and is the same computed from either side
    assert compute_key_id(material.public_context) == material.key_id
    assert compute_key_id(material.secret_context) == material.key_id
    assert len(material.key_id) == 64
    assert "secret_context" not in repr(material)
    assert "public_context" not in repr(material)
    assert material.key_id != generate_keys().key_id


def test_key_files_are_0600_even_with_a_permissive_umask(
    tmp_path: Path, material: KeyMaterial
) -> None:
    old = os.umask(0o000)
    try:
        info = write_keys(tmp_path / "keys", material)
    finally:
        os.umask(old)
    directory = tmp_path / "keys"
    assert _mode(directory) == 0o700
    for name in (KEYSET_FILE, PUBLIC_CONTEXT_FILE, SECRET_CONTEXT_FILE):
        assert _mode(directory / name) == 0o600, name
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [KEYSET_FILE, PUBLIC_CONTEXT_FILE, SECRET_CONTEXT_FILE]
    )  # no temporary files left behind
    assert info.key_id == material.key_id
    assert info.has_secret
    assert info.generation == 1
    meta = json.loads((directory / KEYSET_FILE).read_text())
    assert meta["key_id"] == material.key_id
    assert set(meta) == {"format", "key_id", "params", "generation", "created_at"}


def test_load_round_trip_and_roles(tmp_path: Path, material: KeyMaterial) -> None:
    write_keys(tmp_path, material)
    assert load_public_context(tmp_path) == material.public_context
    assert load_public_context(tmp_path / PUBLIC_CONTEXT_FILE) == material.public_context
    assert load_secret_context(tmp_path) == material.secret_context
    # a secret context where a public one belongs is refused, and vice versa
    (tmp_path / "swapped").mkdir()
    swapped = tmp_path / "swapped" / PUBLIC_CONTEXT_FILE
    swapped.write_bytes(material.secret_context)
    swapped.chmod(0o600)
    with pytest.raises(SecureAggregationError, match="holds a secret key"):
        load_public_context(swapped)
    pub_as_secret = tmp_path / "swapped" / SECRET_CONTEXT_FILE
    pub_as_secret.write_bytes(material.public_context)
    pub_as_secret.chmod(0o600)
    with pytest.raises(SecureAggregationError, match="holds no secret key"):
        load_secret_context(pub_as_secret)


def test_wrong_permissions_missing_and_corrupted_files(
    tmp_path: Path, material: KeyMaterial
) -> None:
    write_keys(tmp_path, material)
    secret = tmp_path / SECRET_CONTEXT_FILE
    secret.chmod(0o640)
    with pytest.raises(SecureAggregationError, match="chmod 600"):
        load_secret_context(tmp_path)
    secret.chmod(0o600)
    public = tmp_path / PUBLIC_CONTEXT_FILE
    public.chmod(0o666)
    with pytest.raises(SecureAggregationError, match="writable"):
        load_public_context(tmp_path)
    public.chmod(0o644)  # readable by others is fine for a public context
    assert load_public_context(tmp_path) == material.public_context
    with pytest.raises(SecureAggregationError, match="does not exist"):
        load_secret_context(tmp_path / "nope.ctx")
    broken = tmp_path / "broken.ctx"
    broken.write_bytes(material.public_context[: len(material.public_context) // 2])
    broken.chmod(0o600)
    with pytest.raises(SecureAggregationError, match="not a TenSEAL context"):
        load_public_context(broken)
    empty = tmp_path / "empty.ctx"
    empty.write_bytes(b"")
    empty.chmod(0o600)
    with pytest.raises(SecureAggregationError, match="empty"):
        load_secret_context(empty)


def test_write_refuses_to_clobber(tmp_path: Path, material: KeyMaterial) -> None:
    write_keys(tmp_path, material)
    with pytest.raises(SecureAggregationError, match="already holds a key set"):
        write_keys(tmp_path, generate_keys())
    assert read_keyset(tmp_path).key_id == material.key_id


def test_mixed_key_sets_are_detected(tmp_path: Path, material: KeyMaterial) -> None:
    write_keys(tmp_path, material)
    other = generate_keys()
    (tmp_path / PUBLIC_CONTEXT_FILE).write_bytes(other.public_context)
    with pytest.raises(SecureAggregationError, match="mixed key sets"):
        read_keyset(tmp_path)
    with pytest.raises(SecureAggregationError):
        read_keyset(tmp_path / "absent")


def test_rotation_keeps_one_previous_generation(tmp_path: Path, material: KeyMaterial) -> None:
    write_keys(tmp_path, material)
    second = rotate_keys(tmp_path)
    assert second.generation == 2
    assert second.key_id != material.key_id
    assert second.previous_key_id == material.key_id
    assert load_secret_context(tmp_path / PREVIOUS_DIR) == material.secret_context
    for path in [*tmp_path.iterdir(), *(tmp_path / PREVIOUS_DIR).iterdir()]:
        if path.is_file():
            assert _mode(path) == 0o600, path
    assert _mode(tmp_path / PREVIOUS_DIR) == 0o700
    third = rotate_keys(tmp_path)
    assert third.generation == 3
    assert third.previous_key_id == second.key_id  # only one previous generation is kept
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_rotation_can_delete_the_old_generation(tmp_path: Path, material: KeyMaterial) -> None:
    write_keys(tmp_path, material)
    rotate_keys(tmp_path)
    info = rotate_keys(
        tmp_path, keep_previous=False, params=CkksParameters(coeff_mod_bit_sizes=(60, 60))
    )
    assert info.previous_key_id is None
    assert not (tmp_path / PREVIOUS_DIR).exists()
    assert info.params.coeff_mod_bit_sizes == (60, 60)
    assert info.generation == 3


def test_rotation_needs_an_existing_key_set(tmp_path: Path) -> None:
    with pytest.raises(SecureAggregationError):
        rotate_keys(tmp_path)
