"""Coordinator (and cohort-node) side: validate and homomorphically sum encrypted updates.

The aggregator loads only a *public* context and refuses a context that holds a secret
key, so the process that sums the ciphertexts cannot decrypt any of them. Each payload
is validated in full before it touches the running sum; a bad payload rejects that one
sender with a reason and the round goes on. Payloads are added as they arrive and not
kept, so memory stays at one running sum whatever the number of devices.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedpers.privacy.errors import SecureAggregationError
from fedpers.privacy.secagg._context import (
    ContextHolder,
    check_fresh_vector,
    context_from_bytes,
    first_parms_id,
    vector_from_bytes,
)
from fedpers.privacy.secagg.packing import chunk_lengths
from fedpers.privacy.secagg.payload import EncryptedUpdate

__all__ = [
    "REJECT_CODES",
    "AddResult",
    "AggregationReport",
    "CiphertextAggregator",
    "Rejection",
    "presum",
]

logger = logging.getLogger(__name__)

#: Why a payload can be rejected (the ``code`` of :class:`Rejection`).
REJECT_CODES: Mapping[str, str] = {
    "malformed": "the payload bytes do not parse as an encrypted update",
    "corrupted": "a chunk fails its CRC-32 check (damaged in transit)",
    "wrong_key": "encrypted under another key set (key id differs)",
    "wrong_parameters": "CKKS parameters differ from the aggregator's context",
    "wrong_length": "plaintext length differs from the expected update length",
    "wrong_chunks": "number of ciphertext chunks does not match the length",
    "invalid_ciphertext": "a chunk fails to deserialize or is not a fresh ciphertext",
    "wrong_slots": "a chunk holds another number of slots than its position requires",
    "duplicate": "the sender or one of its contributors was already counted this round",
}


@dataclass(frozen=True)
class Rejection:
    """One rejected payload.

    Attributes:
        device_id: the sender (a device, or a cohort node for a pre-summed payload).
        code: a key of :data:`REJECT_CODES`.
        reason: human-readable detail.
    """

    device_id: str
    code: str
    reason: str


@dataclass(frozen=True)
class AddResult:
    """Outcome of :meth:`CiphertextAggregator.add`.

    Attributes:
        device_id: the sender.
        accepted: whether the payload was added to the sum.
        count: contributions it added (0 when rejected).
        nbytes: ciphertext bytes received (0 when the payload did not parse).
        code: rejection code, ``None`` when accepted.
        reason: rejection detail, ``None`` when accepted.
    """

    device_id: str
    accepted: bool
    count: int
    nbytes: int
    code: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class AggregationReport:
    """Everything the run database needs about one aggregation.

    Attributes:
        key_id: key id of the aggregator's context.
        accepted: senders whose payloads were summed, in arrival order.
        rejected: rejected payloads with reasons, in arrival order.
        count: total device contributions in the sum.
        bytes_received: ciphertext bytes of the accepted payloads.
        bytes_per_sender: ciphertext bytes per accepted sender.
    """

    key_id: str
    accepted: tuple[str, ...]
    rejected: tuple[Rejection, ...]
    count: int
    bytes_received: int
    bytes_per_sender: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "key_id": self.key_id,
            "accepted": list(self.accepted),
            "rejected": [
                {"device_id": r.device_id, "code": r.code, "reason": r.reason}
                for r in self.rejected
            ],
            "count": self.count,
            "bytes_received": self.bytes_received,
            "bytes_per_sender": dict(self.bytes_per_sender),
        }


class _Rejected(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class CiphertextAggregator(ContextHolder):
    """Sums encrypted updates under a public context; never holds a secret key.

    Args:
        public_context: serialized *public* TenSEAL context.
        expected_length: plaintext length of every update (the shared model's size); a
            payload of any other length is rejected.

    Raises:
        SecureAggregationError: the context holds a secret key, or is not a usable CKKS
            context.
    """

    def __init__(self, public_context: bytes, *, expected_length: int) -> None:
        ctx = context_from_bytes(public_context, what="coordinator context")
        if ctx.is_private():
            raise SecureAggregationError(
                "the aggregator was given a context holding the secret key; it must load "
                "only the public context (public.ctx), never secret.ctx"
            )
        super().__init__(ctx)
        self._parms_id = first_parms_id(ctx)
        self._length = expected_length
        self._chunk_lengths = chunk_lengths(expected_length, self._params.slots)
        self._sum: list[Any] | None = None
        self._count = 0
        self._senders: set[str] = set()
        self._contributors: set[str] = set()
        self._contributor_order: list[str] = []
        self._accepted: list[str] = []
        self._rejected: list[Rejection] = []
        self._bytes: dict[str, int] = {}

    @property
    def expected_length(self) -> int:
        """Plaintext length every payload must have."""
        return self._length

    @property
    def count(self) -> int:
        """Device contributions summed so far."""
        return self._count

    @property
    def report(self) -> AggregationReport:
        """Accepted and rejected senders so far."""
        return AggregationReport(
            key_id=self._key_id,
            accepted=tuple(self._accepted),
            rejected=tuple(self._rejected),
            count=self._count,
            bytes_received=sum(self._bytes.values()),
            bytes_per_sender=dict(self._bytes),
        )

    def _validate(self, device_id: str, payload: EncryptedUpdate) -> tuple[list[Any], list[str]]:
        """Full validation of one payload; returns its vectors and contributor ids."""
        bad = payload.corrupted_chunk()
        if bad is not None:
            raise _Rejected("corrupted", f"chunk {bad} fails its CRC-32 check")
        if payload.key_id != self._key_id:
            raise _Rejected(
                "wrong_key",
                f"key id {payload.key_id[:12]}… is not this round's {self._key_id[:12]}…",
            )
        if payload.params != self._params:
            raise _Rejected(
                "wrong_parameters",
                f"parameters {payload.params.to_dict()} differ from {self._params.to_dict()}",
            )
        if payload.length != self._length:
            raise _Rejected("wrong_length", f"length {payload.length}, expected {self._length}")
        if len(payload.chunks) != len(self._chunk_lengths):
            raise _Rejected(
                "wrong_chunks",
                f"{len(payload.chunks)} chunks, expected {len(self._chunk_lengths)}",
            )
        if device_id in self._senders:
            raise _Rejected("duplicate", f"sender {device_id!r} already sent a payload")
        ids = list(payload.contributors)
        if not ids and payload.count == 1:
            ids = [device_id]
        repeated = sorted(set(ids) & self._contributors)
        if repeated:
            raise _Rejected(
                "duplicate", f"contributor(s) {', '.join(map(repr, repeated[:5]))} already counted"
            )
        limit = self._params.max_ciphertext_bytes
        vectors = []
        for i, (chunk, n) in enumerate(zip(payload.chunks, self._chunk_lengths, strict=True)):
            if len(chunk) > limit:
                raise _Rejected(
                    "invalid_ciphertext", f"chunk {i} has {len(chunk)} bytes, more than {limit}"
                )
            try:
                vec = vector_from_bytes(self._ctx, chunk)
            except SecureAggregationError as exc:
                raise _Rejected("invalid_ciphertext", f"chunk {i}: {exc}") from None
            try:
                size = int(vec.size())
            except (ValueError, RuntimeError) as exc:
                raise _Rejected("invalid_ciphertext", f"chunk {i}: unreadable ({exc})") from None
            if size != n:
                raise _Rejected("wrong_slots", f"chunk {i} holds {size} slots, expected {n}")
            try:
                check_fresh_vector(self._ctx, vec, expected_size=n, parms_id=self._parms_id)
            except SecureAggregationError as exc:
                raise _Rejected("invalid_ciphertext", f"chunk {i} {exc}") from None
            vectors.append(vec)
        return vectors, ids

    def _accumulate(self, vectors: list[Any]) -> None:
        """Add validated vectors to the running sum, undoing a partial addition on failure."""
        if self._sum is None:
            self._sum = vectors
            return
        done = 0
        try:
            for acc, vec in zip(self._sum, vectors, strict=True):
                acc.add_(vec)
                done += 1
        except (ValueError, RuntimeError, TypeError) as exc:
            for acc, vec in zip(self._sum[:done], vectors[:done], strict=True):
                acc.sub_(vec)
            raise _Rejected("invalid_ciphertext", f"homomorphic addition failed ({exc})") from None

    def add(self, device_id: str, payload: EncryptedUpdate | bytes) -> AddResult:
        """Validate one payload and add it to the sum, or reject it with a reason.

        A rejection is logged and recorded in :attr:`report`; it never raises, so the
        round continues with the other senders.

        Args:
            device_id: the sender's id (a device, or the cohort node of a pre-sum).
            payload: an :class:`EncryptedUpdate` or its wire bytes. A pre-summed payload
                (``count`` > 1, from :func:`presum`) is accepted like any other.

        Returns:
            Whether it was accepted, how many contributions it added, and why not.
        """
        nbytes = 0
        try:
            if not isinstance(device_id, str) or not device_id:
                raise _Rejected("malformed", "device id must be a non-empty string")
            if not isinstance(payload, EncryptedUpdate):
                try:
                    payload = EncryptedUpdate.from_bytes(payload)
                except SecureAggregationError as exc:
                    raise _Rejected("malformed", str(exc)) from None
            nbytes = payload.nbytes
            vectors, ids = self._validate(device_id, payload)
            self._accumulate(vectors)
        except _Rejected as rej:
            if isinstance(device_id, str) and device_id:
                self._senders.add(device_id)
            self._rejected.append(Rejection(str(device_id), rej.code, rej.reason))
            logger.warning(
                "secure aggregation: rejected %s (%s): %s", device_id, rej.code, rej.reason
            )
            return AddResult(str(device_id), False, 0, nbytes, rej.code, rej.reason)
        self._senders.add(device_id)
        self._contributors.update(ids)
        self._contributor_order.extend(ids)
        self._count += payload.count
        self._accepted.append(device_id)
        self._bytes[device_id] = nbytes
        return AddResult(device_id, True, payload.count, nbytes)

    def sum(self) -> EncryptedUpdate:
        """The encrypted sum of every accepted payload.

        Returns:
            An aggregate payload with ``count`` = total contributions and, when every
            contributor is known, their ids.

        Raises:
            SecureAggregationError: no payload was accepted.
        """
        if self._sum is None:
            raise SecureAggregationError(
                f"nothing to sum: no payload accepted ({len(self._rejected)} rejected)"
            )
        contributors = tuple(self._contributor_order)
        return EncryptedUpdate(
            chunks=tuple(vec.serialize() for vec in self._sum),
            key_id=self._key_id,
            length=self._length,
            params=self._params,
            count=self._count,
            contributors=contributors if len(contributors) == self._count else (),
        )


def presum(
    public_context: bytes,
    payloads: Mapping[str, EncryptedUpdate | bytes],
    *,
    expected_length: int,
) -> tuple[EncryptedUpdate, AggregationReport]:
    """Sum the payloads of one cohort node's devices before forwarding them.

    The node holds only the public context, exactly like the coordinator; the result
    carries ``count`` (and the devices' ids), and the coordinator adds it with
    :meth:`CiphertextAggregator.add` like a single payload.

    Args:
        public_context: serialized public context.
        payloads: device id -> that device's payload.
        expected_length: plaintext length of every update.

    Returns:
        The pre-summed payload and the node's report of accepted and rejected devices.

    Raises:
        SecureAggregationError: the context holds a secret key, or no payload is valid.
    """
    agg = CiphertextAggregator(public_context, expected_length=expected_length)
    for device_id, payload in payloads.items():
        agg.add(device_id, payload)
    return agg.sum(), agg.report
