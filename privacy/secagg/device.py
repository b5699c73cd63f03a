"""Device side: encrypt a clipped, noised flat update into an :class:`EncryptedUpdate`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fedpers.privacy.errors import SecureAggregationError
from fedpers.privacy.secagg._context import ContextHolder, context_from_bytes, encrypt_vector
from fedpers.privacy.secagg.packing import pack
from fedpers.privacy.secagg.payload import EncryptedUpdate

__all__ = ["DeviceEncryptor"]


class DeviceEncryptor(ContextHolder):
    """Encrypts flat updates under one CKKS context.

    Devices need only the public context (public-key encryption); the secret context
    also works, but then a device that colludes with the coordinator can decrypt other
    devices' payloads, so enrol devices with ``public.ctx`` only.

    Args:
        context: serialized TenSEAL CKKS context, public (recommended) or secret.

    Raises:
        SecureAggregationError: the bytes are not a usable CKKS context with a public key.
    """

    def __init__(self, context: bytes) -> None:
        ctx = context_from_bytes(context, what="device context")
        if not ctx.has_public_key():
            raise SecureAggregationError("device context has no public key: cannot encrypt")
        super().__init__(ctx)
        self._private = bool(ctx.is_private())

    @property
    def holds_secret_key(self) -> bool:
        """Whether the loaded context carries the secret key (should be false on devices)."""
        return self._private

    def encrypt(
        self,
        update: npt.NDArray[np.floating[Any]],
        *,
        count: int = 1,
        contributors: Sequence[str] = (),
    ) -> EncryptedUpdate:
        """Encrypt a flat update (already clipped and noised: the coordinator cannot clip).

        Args:
            update: one-dimensional float32 (or float64) array, finite, every value within
                :attr:`~fedpers.privacy.secagg.CkksParameters.value_bound`.
            count: number of device contributions already summed in ``update`` in
                plaintext (1 for a device; a simulation node that hosts many virtual
                devices may encrypt their plaintext sum once and say how many it holds).
            contributors: ids of those devices, if they should travel with the payload.

        Returns:
            The encrypted update: one ``ckks_vector`` per N/2 values.

        Raises:
            SecureAggregationError: the update is not a finite 1-D float array, a value is
                out of range, or encryption fails.
        """
        chunks = pack(update, self._params.slots)
        peak = max(float(np.max(np.abs(c))) for c in chunks)
        if peak > self._params.value_bound:
            raise SecureAggregationError(
                f"update value {peak:.3g} exceeds the CKKS value bound "
                f"{self._params.value_bound:.3g}: clip the update before encrypting"
            )
        return EncryptedUpdate(
            chunks=tuple(encrypt_vector(self._ctx, c) for c in chunks),
            key_id=self._key_id,
            length=int(np.asarray(update).size),
            params=self._params,
            count=count,
            contributors=tuple(contributors),
        )
