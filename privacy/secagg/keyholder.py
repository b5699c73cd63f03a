"""Key holder: the only component with the secret key, and it decrypts only sums.

:class:`KeyHolder` refuses any payload that carries fewer than ``min_contributions``
device contributions (a single device's update is never decrypted) and, when given a
round id, decrypts at most one aggregate per round, so a coordinator cannot ask for two
sums that differ by one device and subtract them. ``count`` is asserted by the
coordinator; with single-key CKKS nothing in the ciphertext proves it, which is why the
coordinator is assumed honest-but-curious (see ``docs/secure-aggregation.md``).

:class:`KeyHolderProcess` runs a :class:`KeyHolder` in a separate process (spawned, so it
shares no memory with the coordinator) that reads the secret key file itself and answers
decryption requests over a pipe: the coordinator process never loads the secret key.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing as mp
import secrets
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np
import numpy.typing as npt

from fedpers.privacy.errors import ConfigError, FedpersError, SecureAggregationError
from fedpers.privacy.secagg._context import (
    ContextHolder,
    check_fresh_vector,
    context_from_bytes,
    decrypt_vector,
    first_parms_id,
    vector_from_bytes,
)
from fedpers.privacy.secagg.keys import load_secret_context
from fedpers.privacy.secagg.packing import chunk_lengths, unpack
from fedpers.privacy.secagg.params import CkksParameters
from fedpers.privacy.secagg.payload import EncryptedUpdate

__all__ = [
    "DEFAULT_MIN_CONTRIBUTIONS",
    "DecryptOptions",
    "DecryptedSum",
    "KeyHolder",
    "KeyHolderProcess",
    "NormCheck",
    "sum_norm_bound",
]

logger = logging.getLogger(__name__)

DEFAULT_MIN_CONTRIBUTIONS = 2


@dataclass(frozen=True)
class NormCheck:
    """Plaintext sanity bound on the decrypted sum's L2 norm.

    Every honest device clips its update to ``clip_norm`` before adding its noise share,
    so by the triangle inequality the sum of ``count`` updates has norm at most
    ``count * clip_norm``, plus the Gaussian noise in the sum. A decrypted sum above
    :func:`sum_norm_bound` means some device skipped clipping (or sent garbage under the
    right key id); the check cannot say which device.

    Attributes:
        clip_norm: per-device clipping norm C.
        noise_std: standard deviation per coordinate of the total noise in the sum
            (sigma * C with distributed DP; 0 when no noise was added before encryption).
        slack: relative slack on the clipping part (CKKS error, float rounding).
        tail_probability: probability that honest noise alone exceeds its allowance.
    """

    clip_norm: float
    noise_std: float = 0.0
    slack: float = 0.05
    tail_probability: float = 1e-9

    def __post_init__(self) -> None:
        """Validate.

        Raises:
            ConfigError: a value is negative, not finite, or the probability not in (0, 1).
        """
        for name in ("clip_norm", "noise_std", "slack"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"NormCheck.{name} must be finite and >= 0, got {value!r}")
        if self.clip_norm <= 0:
            raise ConfigError(f"NormCheck.clip_norm must be positive, got {self.clip_norm!r}")
        if not 0.0 < self.tail_probability < 1.0:
            raise ConfigError(
                f"NormCheck.tail_probability must be in (0, 1), got {self.tail_probability!r}"
            )


def sum_norm_bound(count: int, length: int, check: NormCheck) -> float:
    """Largest L2 norm an honest sum of ``count`` clipped, noised updates may have.

    ``count * C * (1 + slack)`` for the clipped updates plus, for Gaussian noise of
    standard deviation ``s`` per coordinate over ``length`` coordinates,
    ``s * (sqrt(length) + sqrt(2 ln(1/p)))``: the norm of such a vector exceeds that with
    probability at most ``p`` (Gaussian concentration of a 1-Lipschitz function).

    Args:
        count: number of device contributions in the sum.
        length: number of coordinates.
        check: the bound's parameters.

    Returns:
        The bound.

    Raises:
        ConfigError: ``count`` or ``length`` is not positive.
    """
    if count < 1 or length < 1:
        raise ConfigError(f"count and length must be positive, got {count} and {length}")
    clip_part = count * check.clip_norm * (1.0 + check.slack)
    tail = math.sqrt(2.0 * math.log(1.0 / check.tail_probability))
    return clip_part + check.noise_std * (math.sqrt(length) + tail)


@dataclass(frozen=True)
class DecryptedSum:
    """A decrypted aggregate.

    Attributes:
        values: the sum of the contributions, float64, flat (wire order).
        count: number of device contributions in it.
        key_id: key id it was encrypted under.
        round_id: the round it was requested for, if any.
        norm: L2 norm of ``values``.
        norm_bound: :func:`sum_norm_bound` when a :class:`NormCheck` was given.
        within_bound: ``norm <= norm_bound`` (``None`` without a check). ``False`` flags a
            device that skipped clipping; the caller decides (e.g. skip the round).
        topup_noise_std: standard deviation of the Gaussian noise the key holder added
            per coordinate before releasing the sum (0 when none).
    """

    values: npt.NDArray[np.float64]
    count: int
    key_id: str
    round_id: str | None
    norm: float
    norm_bound: float | None = None
    within_bound: bool | None = None
    topup_noise_std: float = 0.0


class DecryptOptions(TypedDict, total=False):
    """The keyword options of :meth:`KeyHolder.decrypt_sum` (see it for their meaning).

    :class:`KeyHolderProcess` sends them as they are to the key holder in its process.
    """

    round_id: str | int | None
    norm_check: NormCheck | None
    topup_noise_std: float
    noise_seed: int | None


class KeyHolder(ContextHolder):
    """Holds the secret context and decrypts aggregates of at least ``min_contributions``.

    Args:
        secret_context: serialized private TenSEAL context (``secret.ctx``).
        min_contributions: smallest ``count`` it will decrypt; at least 2.

    Raises:
        SecureAggregationError: the context holds no secret key or is not usable.
        ConfigError: ``min_contributions`` < 2.
    """

    def __init__(
        self, secret_context: bytes, *, min_contributions: int = DEFAULT_MIN_CONTRIBUTIONS
    ) -> None:
        if isinstance(min_contributions, bool) or not isinstance(min_contributions, int):
            raise ConfigError(f"min_contributions must be an integer, got {min_contributions!r}")
        if min_contributions < 2:
            raise ConfigError(
                f"min_contributions must be at least 2 (a key holder never decrypts a single "
                f"device's update), got {min_contributions}"
            )
        ctx = context_from_bytes(secret_context, what="key holder context")
        if not ctx.is_private():
            raise SecureAggregationError("the key holder's context holds no secret key")
        super().__init__(ctx)
        self._parms_id = first_parms_id(ctx)
        self._min = min_contributions
        self._rounds: set[str] = set()

    @classmethod
    def from_file(
        cls, path: Path | str, *, min_contributions: int = DEFAULT_MIN_CONTRIBUTIONS
    ) -> KeyHolder:
        """Load from a ``secret.ctx`` file (or key-set directory); it must be mode 0600.

        Raises:
            SecureAggregationError: see :func:`load_secret_context`.
        """
        return cls(load_secret_context(path), min_contributions=min_contributions)

    @property
    def min_contributions(self) -> int:
        """Smallest contribution count it decrypts."""
        return self._min

    def decrypt_sum(
        self,
        aggregate: EncryptedUpdate | bytes,
        *,
        round_id: str | int | None = None,
        norm_check: NormCheck | None = None,
        topup_noise_std: float = 0.0,
        noise_seed: int | None = None,
    ) -> DecryptedSum:
        """Decrypt an aggregate (a homomorphic sum), never a single device's payload.

        Args:
            aggregate: the coordinator's :meth:`CiphertextAggregator.sum` (or its bytes).
            round_id: the round it belongs to; a second request for the same round id is
                refused (no differencing of two sums from one round).
            norm_check: optional plaintext sanity bound on the released sum's norm (its
                ``noise_std`` is the total noise, top-up included).
            topup_noise_std: Gaussian noise (standard deviation per coordinate) the key
                holder adds before releasing the sum. When fewer devices reported than the
                noise shares assumed, pass the top-up
                (``fedpers.privacy.dp.noise.distributed_topup_std``) here rather than
                letting the coordinator add it after decryption, so that no one outside
                the key holder sees a less-noised sum.
            noise_seed: seed for the top-up noise; ``None`` (the default, and the right
                choice outside tests) draws 128 bits from the OS.

        Returns:
            The decrypted sum.

        Raises:
            SecureAggregationError: malformed payload, another key set or parameters,
                fewer than ``min_contributions`` contributions, a round already
                decrypted, or an invalid ciphertext.
        """
        if not isinstance(aggregate, EncryptedUpdate):
            aggregate = EncryptedUpdate.from_bytes(aggregate)
        bad = aggregate.corrupted_chunk()
        if bad is not None:
            raise SecureAggregationError(f"aggregate chunk {bad} fails its CRC-32 check")
        if aggregate.key_id != self._key_id:
            raise SecureAggregationError(
                f"aggregate key id {aggregate.key_id[:12]}… is not the key holder's "
                f"{self._key_id[:12]}…"
            )
        if aggregate.params != self._params:
            raise SecureAggregationError("aggregate CKKS parameters differ from the key holder's")
        if aggregate.count < self._min:
            raise SecureAggregationError(
                f"refusing to decrypt: the payload carries {aggregate.count} contribution(s), "
                f"fewer than the minimum {self._min}; the key holder decrypts only sums"
            )
        rid = None if round_id is None else str(round_id)
        if rid is not None and rid in self._rounds:
            raise SecureAggregationError(
                f"refusing to decrypt: round {rid!r} was already decrypted once"
            )
        if not math.isfinite(topup_noise_std) or topup_noise_std < 0:
            raise ConfigError(f"topup_noise_std must be finite and >= 0, got {topup_noise_std!r}")
        lengths = chunk_lengths(aggregate.length, self._params.slots)
        if len(aggregate.chunks) != len(lengths):
            raise SecureAggregationError(
                f"aggregate has {len(aggregate.chunks)} chunks for length {aggregate.length}, "
                f"expected {len(lengths)}"
            )
        parts = []
        for i, (chunk, n) in enumerate(zip(aggregate.chunks, lengths, strict=True)):
            if len(chunk) > self._params.max_ciphertext_bytes:
                raise SecureAggregationError(f"aggregate chunk {i} is oversized ({len(chunk)} B)")
            vec = vector_from_bytes(self._ctx, chunk)
            try:
                check_fresh_vector(self._ctx, vec, expected_size=n, parms_id=self._parms_id)
            except SecureAggregationError as exc:
                raise SecureAggregationError(f"aggregate chunk {i} {exc}") from None
            parts.append(decrypt_vector(vec))
        values = unpack(parts, aggregate.length)
        if topup_noise_std > 0:
            seed = secrets.randbits(128) if noise_seed is None else noise_seed
            values += np.random.default_rng(seed).normal(0.0, topup_noise_std, values.size)
        if rid is not None:
            self._rounds.add(rid)
        norm = float(np.linalg.norm(values)) if np.all(np.isfinite(values)) else math.inf
        bound = within = None
        if norm_check is not None:
            bound = sum_norm_bound(aggregate.count, aggregate.length, norm_check)
            within = norm <= bound
            if not within:
                logger.warning(
                    "secure aggregation: decrypted sum of %d contributions has norm %.4g above "
                    "the sanity bound %.4g: a device may have skipped clipping",
                    aggregate.count,
                    norm,
                    bound,
                )
        return DecryptedSum(
            values=values,
            count=aggregate.count,
            key_id=self._key_id,
            round_id=rid,
            norm=norm,
            norm_bound=bound,
            within_bound=within,
            topup_noise_std=float(topup_noise_std),
        )


def _serve(conn: Connection, secret_path: str, min_contributions: int) -> None:
    """Entry point of the key-holder process: load the secret key, answer over ``conn``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        holder = KeyHolder.from_file(secret_path, min_contributions=min_contributions)
    except FedpersError as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        conn.close()
        return
    conn.send(("ready", holder.key_id, holder.params.to_dict()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        if not isinstance(message, tuple) or not message or message[0] == "close":
            break
        if message[0] != "decrypt" or len(message) != 3 or not isinstance(message[2], dict):
            conn.send(("error", f"unknown request {message[0]!r}"))
            continue
        _, payload, options = message
        try:
            result = holder.decrypt_sum(payload, **options)
        except Exception as exc:  # report any failure to the caller; keep serving
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        else:
            conn.send(("ok", result))
    conn.close()


class KeyHolderProcess:
    """A :class:`KeyHolder` in its own (spawned) process, queried over a pipe.

    The child reads ``secret.ctx`` itself; the parent (the coordinator) only ever sends
    aggregate payload bytes and receives decrypted sums, so no context with a secret key
    is ever loaded in the coordinator's process.

    Args:
        secret_context_path: ``secret.ctx`` or the key-set directory (mode 0600 required).
        min_contributions: passed to :class:`KeyHolder`.
        timeout_s: how long to wait for start-up and for each decryption.

    Example::

        with KeyHolderProcess(keys_dir) as holder:
            total = holder.decrypt_sum(aggregator.sum(), round_id=3)
    """

    def __init__(
        self,
        secret_context_path: Path | str,
        *,
        min_contributions: int = DEFAULT_MIN_CONTRIBUTIONS,
        timeout_s: float = 120.0,
    ) -> None:
        if min_contributions < 2:
            raise ConfigError(f"min_contributions must be at least 2, got {min_contributions}")
        self._path = str(secret_context_path)
        self._min = min_contributions
        self._timeout = timeout_s
        self._proc: Any = None
        self._conn: Connection | None = None
        self._key_id: str | None = None
        self._params: CkksParameters | None = None

    def __enter__(self) -> KeyHolderProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def key_id(self) -> str:
        """Key id reported by the key-holder process.

        Raises:
            SecureAggregationError: the process is not started.
        """
        if self._key_id is None:
            raise SecureAggregationError("key-holder process is not started")
        return self._key_id

    @property
    def params(self) -> CkksParameters:
        """CKKS parameters reported by the key-holder process.

        Raises:
            SecureAggregationError: the process is not started.
        """
        if self._params is None:
            raise SecureAggregationError("key-holder process is not started")
        return self._params

    @property
    def pid(self) -> int | None:
        """Process id of the key holder, ``None`` before :meth:`start`."""
        return None if self._proc is None else int(self._proc.pid)

    def start(self) -> None:
        """Spawn the key-holder process and wait until it has loaded the secret key.

        Raises:
            SecureAggregationError: already started, or the child failed to load the key
                (the child's error message is included) or did not answer in time.
        """
        if self._proc is not None:
            raise SecureAggregationError("key-holder process already started")
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_serve,
            args=(child, self._path, self._min),
            name="fedpers-key-holder",
            daemon=True,
        )
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        reply = self._receive("start-up")
        if reply[0] != "ready":
            self.close()
            raise SecureAggregationError(f"key-holder process failed to start: {reply[1]}")
        self._key_id = str(reply[1])
        self._params = CkksParameters.from_dict(reply[2])

    def _receive(self, what: str) -> tuple[Any, ...]:
        conn = self._conn
        if conn is None:
            raise SecureAggregationError("key-holder process is not started")
        try:
            ready = conn.poll(self._timeout)
            if not ready:
                self.close()
                raise SecureAggregationError(
                    f"key-holder process did not answer {what} within {self._timeout:.0f} s"
                )
            reply = conn.recv()
        except (EOFError, OSError) as exc:
            self.close()
            raise SecureAggregationError(f"key-holder process died during {what}") from exc
        if not isinstance(reply, tuple) or not reply:
            raise SecureAggregationError(f"key-holder process sent an invalid reply to {what}")
        return reply

    def decrypt_sum(
        self, aggregate: EncryptedUpdate | bytes, **options: Unpack[DecryptOptions]
    ) -> DecryptedSum:
        """Ask the key-holder process to decrypt an aggregate; see :meth:`KeyHolder.decrypt_sum`.

        Raises:
            SecureAggregationError: the key holder refused (its reason is included), died,
                or timed out.
        """
        if self._conn is None:
            raise SecureAggregationError("key-holder process is not started")
        payload = (
            aggregate.to_bytes() if isinstance(aggregate, EncryptedUpdate) else bytes(aggregate)
        )
        try:
            self._conn.send(("decrypt", payload, dict(options)))
        except (OSError, ValueError) as exc:
            self.close()
            raise SecureAggregationError("key-holder process is gone") from exc
        reply = self._receive("decryption")
        if reply[0] == "ok" and isinstance(reply[1], DecryptedSum):
            return reply[1]
        raise SecureAggregationError(f"key holder refused: {reply[1]}")

    def close(self) -> None:
        """Stop the key-holder process (idempotent)."""
        conn, proc = self._conn, self._proc
        self._conn = self._proc = None
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("close",))
            conn.close()
        if proc is not None:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
