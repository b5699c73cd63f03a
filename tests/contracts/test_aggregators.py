"""One contract, every aggregation backend: the plaintext sum and the CKKS (TenSEAL) sum.

The strategy only knows :class:`~fedpers.server.aggregation.UpdateAggregator`; whichever
backend a run uses, these properties hold. Each test takes the ``backend`` fixture, which
yields the backend with a way to build the records its devices would send. CKKS cases
use a 7-value update and an in-process key holder, so the whole suite stays fast.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pytest
from flwr.app import ArrayRecord

from fedpers.client.wire import array_record, ciphertext_record
from fedpers.privacy.dp.clipping import flatten
from fedpers.privacy.errors import FedpersError
from fedpers.privacy.secagg import DeviceEncryptor, KeyHolder, KeyMaterial, generate_keys
from fedpers.server.aggregation import PlaintextAggregator, UpdateAggregator
from fedpers.server.secure_aggregation import CkksAggregator

NAMES = ["item_factors", "bias"]
SHAPES = [(2, 2), (3,)]
NO_BOUND = float("inf")
REASON = re.compile(r"^[a-z_]+")
"""A rejection starts with its reason code (``wrong_shape``, ``secagg_length``, ...)."""


@dataclass
class Backend:
    """One aggregation backend under contract.

    Attributes:
        name: ``"plaintext"`` or ``"ckks"``.
        make: a fresh aggregator for the given names and shapes.
        record: the update record a device of this backend sends for its arrays.
        foreign: a well-formed record of the *other* backend (not this one's wire form).
        atol: how far the released sum may be from the exact one (CKKS is approximate).
    """

    name: str
    make: Callable[[Sequence[str], Sequence[tuple[int, ...]]], UpdateAggregator]
    record: Callable[[Sequence[np.ndarray]], ArrayRecord]
    foreign: Callable[[Sequence[np.ndarray]], ArrayRecord]
    atol: float


def _plaintext_record(arrays: Sequence[np.ndarray]) -> ArrayRecord:
    return array_record(NAMES, [np.asarray(a, dtype=np.float32) for a in arrays])


@pytest.fixture(scope="module")
def keys() -> KeyMaterial:
    return generate_keys()


def _ckks_backend(keys: KeyMaterial) -> Backend:
    encryptor = DeviceEncryptor(keys.public_context)
    rounds = itertools.count()

    def make(names: Sequence[str], shapes: Sequence[tuple[int, ...]]) -> UpdateAggregator:
        # A fresh key holder and run tag each time: it decrypts every round id only once.
        holder = KeyHolder(keys.secret_context, min_contributions=2)
        return CkksAggregator(
            keys.public_context, holder, names, shapes, run_tag=f"contract-{next(rounds)}:"
        )

    def record(arrays: Sequence[np.ndarray]) -> ArrayRecord:
        flat = flatten([np.asarray(a, dtype=np.float32) for a in arrays])
        return ciphertext_record(encryptor.encrypt(flat).to_bytes())

    return Backend("ckks", make, record, _plaintext_record, atol=1e-3)


@pytest.fixture(params=["plaintext", "ckks"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "plaintext":
        ckks = _ckks_backend(request.getfixturevalue("keys"))
        yield Backend("plaintext", PlaintextAggregator, _plaintext_record, ckks.record, 1e-6)
    else:
        yield _ckks_backend(request.getfixturevalue("keys"))


def _updates(n: int, seed: int = 0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=s).astype(np.float32) for s in SHAPES] for _ in range(n)]


def _exact_sum(updates: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    return [np.sum([u[i] for u in updates], axis=0, dtype=np.float64) for i in range(len(SHAPES))]


def _round(backend: Backend, updates: Sequence[Sequence[np.ndarray]]) -> UpdateAggregator:
    agg = backend.make(NAMES, SHAPES)
    agg.reset(1)
    for i, update in enumerate(updates):
        assert agg.add(f"d{i}", backend.record(update), 1, NO_BOUND) is None
    return agg


def _assert_sums_equal(
    total: Sequence[np.ndarray], expected: Sequence[np.ndarray], atol: float
) -> None:
    assert [t.shape for t in total] == [tuple(s) for s in SHAPES]
    for got, want in zip(total, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=atol)


def test_the_aggregators_follow_the_protocol(backend: Backend) -> None:
    agg = backend.make(NAMES, SHAPES)
    assert isinstance(agg, UpdateAggregator)
    assert isinstance(agg.scheme, str) and agg.scheme


def test_sum_equals_the_plaintext_sum(backend: Backend) -> None:
    updates = _updates(3)
    agg = _round(backend, updates)
    assert agg.count == 3
    total = agg.total()
    assert all(t.dtype == np.float32 for t in total)
    _assert_sums_equal(total, _exact_sum(updates), backend.atol)


def test_sum_does_not_depend_on_arrival_order(backend: Backend) -> None:
    updates = _updates(3, seed=1)
    forward = _round(backend, updates).total()
    backward = _round(backend, updates[::-1]).total()
    _assert_sums_equal(forward, backward, 2 * backend.atol)


def test_a_wrongly_shaped_update_is_rejected_with_a_reason(backend: Backend) -> None:
    updates = _updates(2, seed=2)
    agg = _round(backend, updates)
    wrong = [np.ones((2, 3), np.float32), np.ones(3, np.float32)]
    reason = agg.add("bad", backend.record(wrong), 1, NO_BOUND)
    assert isinstance(reason, str) and REASON.match(reason), reason
    assert agg.count == 2
    _assert_sums_equal(agg.total(), _exact_sum(updates), backend.atol)


def test_a_record_in_another_wire_form_is_rejected(backend: Backend) -> None:
    updates = _updates(2, seed=3)
    agg = _round(backend, updates)
    reason = agg.add("other", backend.foreign(_updates(1, seed=4)[0]), 1, NO_BOUND)
    assert isinstance(reason, str) and REASON.match(reason), reason
    assert agg.count == 2
    _assert_sums_equal(agg.total(), _exact_sum(updates), backend.atol)


def test_an_empty_round_releases_nothing(backend: Backend) -> None:
    agg = backend.make(NAMES, SHAPES)
    agg.reset(1)
    assert agg.count == 0
    try:
        total = agg.total()
    except FedpersError:
        return  # the key holder never decrypts a sum of fewer than two devices
    assert all(not np.any(t) for t in total)


def test_reset_starts_an_independent_sum(backend: Backend) -> None:
    first, second = _updates(2, seed=5), _updates(2, seed=6)
    agg = _round(backend, first)
    agg.total()
    agg.reset(2)
    assert agg.count == 0
    for i, update in enumerate(second):
        assert agg.add(f"d{i}", backend.record(update), 1, NO_BOUND) is None
    assert agg.count == 2
    _assert_sums_equal(agg.total(), _exact_sum(second), backend.atol)
