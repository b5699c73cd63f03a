"""Packing flat updates into N/2-slot chunks and back, and the payload wire form."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpers.privacy.errors import SecureAggregationError
from fedpers.privacy.secagg import CkksParameters, EncryptedUpdate, chunk_lengths, pack, unpack


def test_chunk_lengths_of_the_ml100k_shared_part() -> None:
    lengths = chunk_lengths(1682 * 32 + 1682, 4096)
    assert len(lengths) == 14
    assert lengths[:-1] == (4096,) * 13
    assert lengths[-1] == 55506 - 13 * 4096
    assert chunk_lengths(8192, 4096) == (4096, 4096)


@settings(max_examples=60, deadline=None)
@given(length=st.integers(1, 3000), slots=st.integers(1, 700), seed=st.integers(0, 2**31))
def test_pack_unpack_round_trip(length: int, slots: int, seed: int) -> None:
    flat = np.random.default_rng(seed).standard_normal(length).astype(np.float32)
    chunks = pack(flat, slots)
    assert [c.size for c in chunks] == list(chunk_lengths(length, slots))
    assert all(c.size <= slots for c in chunks)
    back = unpack(chunks, length)
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back, flat.astype(np.float64))


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((3, 4), dtype=np.float32),
        np.zeros(5, dtype=np.int32),
        np.zeros(0, dtype=np.float32),
        np.array([1.0, np.nan], dtype=np.float32),
        np.array([np.inf], dtype=np.float64),
    ],
)
def test_pack_rejects_bad_updates(bad: np.ndarray) -> None:
    with pytest.raises(SecureAggregationError):
        pack(bad, 16)


def test_unpack_checks_the_length() -> None:
    with pytest.raises(SecureAggregationError, match="expected 11"):
        unpack([np.zeros(4), np.zeros(6)], 11)
    with pytest.raises(SecureAggregationError):
        unpack([], 1)
    with pytest.raises(SecureAggregationError):
        chunk_lengths(0, 16)


def _payload(**changes: object) -> EncryptedUpdate:
    base = EncryptedUpdate(
        chunks=(b"\x01" * 10, b"\x02" * 7),
        key_id="ab" * 32,
        length=5000,
        params=CkksParameters(),
        count=2,
        contributors=("d1", "d2"),
    )
    return dataclasses.replace(base, **changes) if changes else base


def test_wire_round_trip() -> None:
    p = _payload()
    data = p.to_bytes()
    q = EncryptedUpdate.from_bytes(data)
    assert q == p
    assert q.nbytes == 17
    assert len(data) > q.nbytes


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:3],
        lambda b: b"XXXX" + b[4:],
        lambda b: b[:4] + b"\x00\x09" + b[6:],
        lambda b: b[:-1],
        lambda b: b + b"\x00",
        lambda b: b[:10] + b"!" + b[11:],
    ],
    ids=["short", "magic", "version", "truncated", "trailing", "header"],
)
def test_wire_form_rejects_damage(mutate: object) -> None:
    data = _payload().to_bytes()
    with pytest.raises(SecureAggregationError):
        EncryptedUpdate.from_bytes(mutate(data))  # type: ignore[operator]


@pytest.mark.parametrize(
    "changes",
    [
        {"count": 0},
        {"count": 3},  # three contributions but two ids
        {"contributors": ("d1", "d1")},
        {"chunks": ()},
        {"key_id": ""},
        {"scheme": "bfv"},
        {"length": True},
    ],
)
def test_payload_metadata_is_validated(changes: dict[str, object]) -> None:
    with pytest.raises(SecureAggregationError):
        _payload(**changes)
