"""Thin, error-translating helpers around TenSEAL contexts and ciphertexts (internal).

Everything that touches ``tenseal`` objects directly lives here or in the modules that
wrap a context; every TenSEAL failure becomes a :class:`SecureAggregationError`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal as ts
import tenseal.sealapi

from fedpers.privacy.errors import ConfigError, SecureAggregationError
from fedpers.privacy.secagg.params import CkksParameters

__all__ = [
    "MAX_CONTEXT_BYTES",
    "ContextHolder",
    "check_fresh_vector",
    "context_from_bytes",
    "create_context",
    "decrypt_vector",
    "encrypt_vector",
    "first_parms_id",
    "key_id_of",
    "parameters_of",
    "public_bytes",
    "secret_bytes",
    "vector_from_bytes",
]

#: Largest context file accepted (N = 32768 with 881 bits is about 16 MB serialized).
MAX_CONTEXT_BYTES = 64 * 1024 * 1024
_TENSEAL_ERRORS = (ValueError, RuntimeError, TypeError, MemoryError, OverflowError)


def create_context(params: CkksParameters) -> Any:
    """Build a fresh private CKKS context (new secret and public keys) for ``params``.

    Args:
        params: the parameter set.

    Returns:
        A private ``tenseal.Context`` with its global scale set and no Galois keys.

    Raises:
        SecureAggregationError: TenSEAL refuses the parameters (e.g. below 128-bit security).
    """
    try:
        ctx = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=params.poly_modulus_degree,
            coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
        )
    except _TENSEAL_ERRORS as exc:
        raise SecureAggregationError(
            f"TenSEAL refuses CKKS parameters {params.to_dict()}: {exc}"
        ) from exc
    ctx.global_scale = float(params.global_scale)
    return ctx


def context_from_bytes(data: bytes, *, what: str) -> Any:
    """Deserialize a TenSEAL CKKS context.

    Args:
        data: serialized context.
        what: a name for messages (a file path, "public context", ...).

    Returns:
        The ``tenseal.Context``.

    Raises:
        SecureAggregationError: the bytes are not a CKKS context.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SecureAggregationError(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise SecureAggregationError(f"{what}: empty")
    if len(data) > MAX_CONTEXT_BYTES:
        raise SecureAggregationError(
            f"{what}: {len(data)} bytes, larger than any CKKS context ({MAX_CONTEXT_BYTES})"
        )
    try:
        ctx = ts.context_from(bytes(data))
    except _TENSEAL_ERRORS as exc:
        raise SecureAggregationError(f"{what}: not a TenSEAL context ({exc})") from exc
    try:
        scheme = ctx.seal_context().data.key_context_data().parms().scheme()
    except _TENSEAL_ERRORS as exc:
        raise SecureAggregationError(f"{what}: unreadable context parameters ({exc})") from exc
    if getattr(scheme, "name", str(scheme)) != "CKKS":
        raise SecureAggregationError(f"{what}: scheme {scheme}, expected CKKS")
    return ctx


def public_bytes(ctx: Any) -> bytes:
    """Canonical public serialization: public key only (no secret, Galois or relin keys).

    Raises:
        SecureAggregationError: the context has no public key.
    """
    if not ctx.has_public_key():
        raise SecureAggregationError("context has no public key")
    return _serialize(ctx, with_secret_key=False)


def secret_bytes(ctx: Any) -> bytes:
    """Serialization with the secret and public keys (no Galois or relin keys).

    Raises:
        SecureAggregationError: the context holds no secret key.
    """
    if not ctx.is_private():
        raise SecureAggregationError("context holds no secret key")
    return _serialize(ctx, with_secret_key=True)


def _serialize(ctx: Any, *, with_secret_key: bool) -> bytes:
    """Serialize the public key, and the secret key if asked; never Galois or relin keys."""
    data: bytes = ctx.serialize(
        save_public_key=True,
        save_secret_key=with_secret_key,
        save_galois_keys=False,
        save_relin_keys=False,
    )
    return data


def key_id_of(ctx: Any) -> str:
    """Key id: SHA-256 (hex) of the context's canonical public serialization.

    The same for the secret context and its public counterpart, so a ciphertext's key id
    can be checked by every party against the context it holds.
    """
    return hashlib.sha256(public_bytes(ctx)).hexdigest()


def parameters_of(ctx: Any) -> CkksParameters:
    """Read the CKKS parameters a context was built with.

    Raises:
        SecureAggregationError: the context's parameters are not a valid fedpers set.
    """
    try:
        parms = ctx.seal_context().data.key_context_data().parms()
        n = int(parms.poly_modulus_degree())
        bits = tuple(int(m.bit_count()) for m in parms.coeff_modulus())
        scale = float(ctx.global_scale)
    except _TENSEAL_ERRORS as exc:
        raise SecureAggregationError(f"unreadable context parameters ({exc})") from exc
    scale_int = int(scale)
    if scale_int <= 0 or float(scale_int) != scale:
        raise SecureAggregationError(f"context global scale {scale} is not a positive integer")
    try:
        return CkksParameters(
            poly_modulus_degree=n,
            coeff_mod_bit_sizes=bits,
            global_scale=scale_int,
            allow_insecure_for_tests=True,
        )
    except ConfigError as exc:
        raise SecureAggregationError(f"context parameters are not usable: {exc}") from exc


class ContextHolder:
    """A party holding one CKKS context: the device, the aggregator and the key holder.

    Reads the context's parameters and key id once, when the party is built.

    Args:
        ctx: the loaded ``tenseal.Context`` (public or secret, as the party requires).

    Raises:
        SecureAggregationError: the context's parameters are not a valid fedpers set, or
            it has no public key.
    """

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx
        self._params = parameters_of(ctx)
        self._key_id: str = key_id_of(ctx)

    @property
    def key_id(self) -> str:
        """Key id of the context (the same for its public and secret forms)."""
        return self._key_id

    @property
    def params(self) -> CkksParameters:
        """CKKS parameters of the context."""
        return self._params


def first_parms_id(ctx: Any) -> list[int]:
    """SEAL parms id of a fresh ciphertext's level under ``ctx``."""
    return list(ctx.seal_context().data.first_parms_id())


def encrypt_vector(ctx: Any, values: npt.NDArray[np.floating[Any]]) -> bytes:
    """Encrypt up to N/2 values as one ``ckks_vector`` and serialize it.

    Raises:
        SecureAggregationError: TenSEAL fails to encrypt.
    """
    try:
        vec = ts.ckks_vector(ctx, np.asarray(values, dtype=np.float64).tolist())
        data: bytes = vec.serialize()
    except _TENSEAL_ERRORS as exc:
        raise SecureAggregationError(f"encryption failed: {exc}") from exc
    return data


def vector_from_bytes(ctx: Any, data: bytes) -> Any:
    """Deserialize one ``ckks_vector`` under ``ctx``.

    Raises:
        SecureAggregationError: the bytes do not parse as a ciphertext valid for ``ctx``.
    """
    try:
        return ts.ckks_vector_from(ctx, data)
    except _TENSEAL_ERRORS as exc:
        raise SecureAggregationError(f"ciphertext does not deserialize ({exc})") from exc


def check_fresh_vector(ctx: Any, vec: Any, *, expected_size: int, parms_id: list[int]) -> None:
    """Check that a deserialized vector is a well-formed, additively usable ciphertext.

    Args:
        ctx: the context the vector was loaded under.
        vec: the ``CKKSVector``.
        expected_size: number of slots in use it must hold.
        parms_id: the parms id of a fresh ciphertext (:func:`first_parms_id`).

    Raises:
        SecureAggregationError: wrong slot count, level, scale, size, or a transparent
            (unencrypted) ciphertext.
    """
    try:
        size = int(vec.size())
        cts = vec.ciphertext()
    except _TENSEAL_ERRORS as exc:
        raise SecureAggregationError(f"ciphertext is unreadable ({exc})") from exc
    if size != expected_size:
        raise SecureAggregationError(f"holds {size} slots, expected {expected_size}")
    if len(cts) != 1:
        raise SecureAggregationError(f"holds {len(cts)} SEAL ciphertexts, expected 1")
    ct = cts[0]
    if int(ct.size()) != 2:
        raise SecureAggregationError(f"has {ct.size()} polynomials, expected 2 (fresh)")
    if list(ct.parms_id()) != parms_id:
        raise SecureAggregationError("is at another modulus level than a fresh ciphertext")
    if float(ct.scale) != float(ctx.global_scale):
        raise SecureAggregationError(f"has scale {ct.scale}, expected {ctx.global_scale}")
    if ct.is_transparent():
        raise SecureAggregationError("is transparent (not actually encrypted)")


def decrypt_vector(vec: Any) -> npt.NDArray[np.float64]:
    """Decrypt a vector with the secret key of the context it is linked to.

    Raises:
        SecureAggregationError: the context holds no secret key, or decryption fails.
    """
    try:
        return np.asarray(vec.decrypt(), dtype=np.float64)
    except _TENSEAL_ERRORS as exc:
        raise SecureAggregationError(f"decryption failed: {exc}") from exc
