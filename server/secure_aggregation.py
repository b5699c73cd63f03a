"""Secure aggregation (TenSEAL CKKS) as an :class:`~fedpers.server.aggregation.UpdateAggregator`.

With ``--secure-agg he`` the coordinator holds only the *public* CKKS context. Per round
:class:`CkksAggregator`

1. receives each device's (or cohort node's) update record: one uint8 array holding an
   :class:`~fedpers.privacy.secagg.EncryptedUpdate` of the privatized update (clipped and
   noised on the device, pipeline steps 3-5);
2. validates and adds it homomorphically with a
   :class:`~fedpers.privacy.secagg.CiphertextAggregator` (pipeline step 6); a payload that
   does not parse, fails its CRC, was made under another key or has the wrong shape is
   rejected with the library's reason code (``secagg_<code>``), which the strategy writes
   into the run database's participants table; the round continues;
3. sends only the encrypted *sum* to the key holder (a
   :class:`~fedpers.privacy.secagg.KeyHolderProcess` in its own process, the only holder
   of the secret context), which refuses fewer than ``min_contributions`` contributions
   and a second decryption of one round, adds the top-up noise for the shares missing
   from the sum (the DP wrapper's noise plan, from
   :func:`~fedpers.privacy.dp.pipeline.round_noise` with the contributions summed)
   *before* the sum
   leaves it, and applies the plaintext norm bound on the sum (:class:`NormCheck`);
4. returns that decrypted, fully noised sum; the rest of the pipeline (division by the
   expected cohort, server optimiser) is the plaintext one, with no further noise.

:func:`ckks_backend` sets this up for a run: it creates the key set (or uses an existing
one), starts the key holder, and yields the ``aggregator_factory`` of
:func:`fedpers.server.app.run_federation`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Unpack

import numpy as np
from flwr.app import ArrayRecord

from fedpers.client.wire import ciphertext_of
from fedpers.privacy.dp.clipping import unflatten
from fedpers.privacy.errors import ConfigError, SecureAggregationError
from fedpers.privacy.secagg import (
    DEFAULT_MIN_CONTRIBUTIONS,
    PUBLIC_CONTEXT_FILE,
    SECRET_CONTEXT_FILE,
    CiphertextAggregator,
    DecryptedSum,
    DecryptOptions,
    EncryptedUpdate,
    KeyHolderProcess,
    NormCheck,
    describe,
    generate_keys,
    load_public_context,
    write_keys,
)
from fedpers.server.aggregation import UpdateAggregator
from fedpers.server.config import FederationConfig

__all__ = [
    "SCHEME",
    "CkksAggregator",
    "NoisePlan",
    "SumDecryptor",
    "aggregation_backend",
    "ckks_backend",
    "ensure_keys",
]

logger = logging.getLogger(__name__)

SCHEME = "ckks"


class SumDecryptor(Protocol):
    """What the coordinator may ask of the key holder: decrypt one round's sum."""

    def decrypt_sum(
        self, aggregate: EncryptedUpdate | bytes, **options: Unpack[DecryptOptions]
    ) -> DecryptedSum:
        """Decrypt an aggregate of at least the key holder's minimum contributions."""
        ...


@dataclass(frozen=True)
class NoisePlan:
    """The DP wrapper's noise for one round, as the key holder applies it.

    Attributes:
        topup_std: standard deviation of the noise the key holder adds per coordinate for
            devices that did not report (0 when all expected devices reported).
        clip_norm: the round's clip norm ``C`` (for the norm check).
        noise_std: the total noise standard deviation of the released sum, ``sigma C``.
    """

    topup_std: float
    clip_norm: float
    noise_std: float


class CkksAggregator:
    """Sums CKKS ciphertexts; only the key holder's decryption of the sum comes back.

    Args:
        public_context: the serialized public context (no secret key).
        decryptor: the key holder (a :class:`~fedpers.privacy.secagg.KeyHolderProcess`).
        names: the shared parameters' names (wire order).
        shapes: their shapes.
        run_tag: prefix of the round ids sent to the key holder (one decryption per id).
        norm_check: apply the key holder's plaintext norm bound on the sum when a noise
            plan gives the clip norm.

    Raises:
        SecureAggregationError: the context holds a secret key or is not CKKS.
    """

    scheme = SCHEME

    def __init__(
        self,
        public_context: bytes,
        decryptor: SumDecryptor,
        names: Sequence[str],
        shapes: Sequence[tuple[int, ...]],
        *,
        run_tag: str = "",
        norm_check: bool = True,
    ) -> None:
        self.names = list(names)
        self.shapes = [tuple(s) for s in shapes]
        self.length = int(sum(int(np.prod(s, dtype=np.int64)) for s in self.shapes))
        self._public = public_context
        self._decryptor = decryptor
        self._run_tag = run_tag
        self._norm_check = norm_check
        self._round = 0
        self._agg = CiphertextAggregator(public_context, expected_length=self.length)
        self.noise_plan: Callable[[int], NoisePlan] | None = None
        """Set by the DP wrapper: the round's noise given the number of contributions."""
        self.last_decryption: DecryptedSum | None = None
        self.bytes_received: dict[str, int] = {}
        self.custody: dict[str, Any] = {}
        """Where the keys live (folder, key-holder process), for the run database."""

    @property
    def key_id(self) -> str:
        """The key id every payload must carry."""
        return self._agg.key_id

    def wire_request(self) -> tuple[str, str]:
        """``(scheme, key id)``, sent to the nodes so that they encrypt."""
        return SCHEME, self.key_id

    def describe(self, **extra: Any) -> dict[str, Any]:
        """Scheme, parameters, bytes per update and key custody (for the run database).

        Args:
            extra: entries added to (or replacing) the description.
        """
        out = describe(self._public, update_length=self.length)
        out.update(self.custody)
        out.update(extra)
        return out

    def reset(self, server_round: int) -> None:
        """Start a new round's encrypted sum."""
        self._round = server_round
        self._agg = CiphertextAggregator(self._public, expected_length=self.length)
        self.last_decryption = None
        self.bytes_received = {}

    def add(self, sender: str, record: ArrayRecord, count: int, norm_bound: float) -> str | None:
        """Validate one encrypted record (of ``count`` devices) and add it to the sum.

        ``norm_bound`` cannot be checked on a ciphertext; the key holder's norm check on
        the decrypted sum replaces it.

        Returns:
            ``None`` when accepted, else ``secagg_<code>: <reason>``.
        """
        data = ciphertext_of(record)
        if data is None:
            return "secagg_not_a_ciphertext: the update record is not one uint8 payload array"
        self.bytes_received[sender] = len(data)
        payload: EncryptedUpdate | bytes = data
        # Bytes that do not parse go to the aggregator, which rejects them as malformed.
        with contextlib.suppress(SecureAggregationError):
            payload = EncryptedUpdate.from_bytes(data)
        if isinstance(payload, EncryptedUpdate) and payload.count != count:
            return f"secagg_count_mismatch: payload counts {payload.count}, reply says {count}"
        result = self._agg.add(sender, payload)
        if result.accepted:
            return None
        return f"secagg_{result.code}: {result.reason}"

    @property
    def count(self) -> int:
        """Number of device contributions in the encrypted sum."""
        return int(self._agg.count)

    @property
    def report(self) -> dict[str, Any]:
        """The round's accepted/rejected payloads with reasons and bytes."""
        out: dict[str, Any] = self._agg.report.to_dict()
        return out

    def total(self) -> list[np.ndarray]:
        """Ask the key holder to decrypt the round's sum (with top-up noise and norm check).

        Raises:
            SecureAggregationError: the key holder refused (too few contributions, a
                repeated round) or the sum exceeds the norm bound (a device that did not
                clip); the strategy then skips the round with this reason.
        """
        plan = self.noise_plan(self.count) if self.noise_plan is not None else None
        check = (
            NormCheck(clip_norm=plan.clip_norm, noise_std=plan.noise_std)
            if plan is not None and self._norm_check and plan.clip_norm > 0
            else None
        )
        result = self._decryptor.decrypt_sum(
            self._agg.sum(),
            round_id=f"{self._run_tag}round-{self._round}",
            norm_check=check,
            topup_noise_std=plan.topup_std if plan is not None else 0.0,
        )
        self.last_decryption = result
        if result.within_bound is False:
            raise SecureAggregationError(
                f"norm_check_failed: the decrypted sum's norm {result.norm:.4g} exceeds the "
                f"bound {result.norm_bound:.4g} for {result.count} clipped updates"
            )
        return unflatten(np.asarray(result.values, dtype=np.float64), self.shapes)

    @property
    def topup_applied(self) -> float:
        """The top-up noise the key holder added to the last decrypted sum."""
        return 0.0 if self.last_decryption is None else float(self.last_decryption.topup_noise_std)


def ensure_keys(keys_dir: Path) -> Path:
    """The key-set folder of a run: an existing one, or a new CKKS key set written there.

    Raises:
        ConfigError: when ``keys_dir`` exists but holds no public or secret context.
    """
    keys_dir = Path(keys_dir)
    public, secret = keys_dir / PUBLIC_CONTEXT_FILE, keys_dir / SECRET_CONTEXT_FILE
    if public.is_file() and secret.is_file():
        return keys_dir
    if keys_dir.exists() and any(keys_dir.iterdir()):
        raise ConfigError(f"{keys_dir}: not a fedpers key set (public.ctx and secret.ctx)")
    write_keys(keys_dir, generate_keys())
    logger.info("generated a CKKS key set in %s", keys_dir)
    return keys_dir


AggregatorFactory = Callable[[FederationConfig, list[str], list[tuple[int, ...]]], UpdateAggregator]


@contextmanager
def ckks_backend(
    keys_dir: Path | str,
    *,
    min_contributions: int = DEFAULT_MIN_CONTRIBUTIONS,
    norm_check: bool = True,
) -> Iterator[AggregatorFactory]:
    """Start the key holder on ``keys_dir`` and yield the coordinator's aggregator factory.

    The calling (coordinator) process loads only ``public.ctx``; ``secret.ctx`` is loaded
    by the spawned key-holder process alone.

    Args:
        keys_dir: the key-set folder (``fedpers keys generate`` or :func:`ensure_keys`).
        min_contributions: the key holder's smallest decryptable count.
        norm_check: apply the plaintext norm bound on each decrypted sum.

    Yields:
        ``factory(config, names, shapes)`` building a :class:`CkksAggregator`.
    """
    keys_dir = Path(keys_dir)
    public = load_public_context(keys_dir)
    with KeyHolderProcess(keys_dir, min_contributions=min_contributions) as holder:

        def factory(
            config: FederationConfig, names: list[str], shapes: list[tuple[int, ...]]
        ) -> UpdateAggregator:
            agg = CkksAggregator(
                public, holder, names, shapes, run_tag=f"{config.run_dir}:", norm_check=norm_check
            )
            if agg.key_id != holder.key_id:
                raise ConfigError(
                    f"{keys_dir}: the key holder's key id differs from the public context's"
                )
            agg.custody = {
                "keys_dir": str(keys_dir.resolve()),
                "key_holder_process": "KeyHolderProcess (spawned)",
                "key_holder_pid": holder.pid,
                "coordinator_pid": os.getpid(),
                "key_holder_min_contributions": min_contributions,
            }
            return agg

        yield factory


@contextmanager
def aggregation_backend(config: FederationConfig) -> Iterator[AggregatorFactory | None]:
    """The aggregation backend ``config`` asks for, for as long as the run lasts.

    With ``secure_agg == "he"`` this starts the key holder on ``config.secagg_keys``
    (:func:`ckks_backend`) and yields its aggregator factory; the key holder stops when
    the block ends, also on an error. Otherwise it yields ``None`` (plaintext).

    Raises:
        ConfigError: ``he`` without a key-set folder.
        SecureAggregationError: the key set cannot be loaded or the key holder not started.
    """
    if config.secure_agg != "he":
        yield None
        return
    if not config.secagg_keys:
        raise ConfigError("--secure-agg he needs a key-set folder (secagg_keys in the config)")
    with ckks_backend(config.secagg_keys) as factory:
        yield factory
