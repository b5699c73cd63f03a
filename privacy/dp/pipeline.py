"""The privacy pipeline of one federated round, written once.

Every path that produces or consumes a device update (Flower node mode, cohort mode with
many virtual devices, secure aggregation, the simulation) calls the functions of this
module and nothing else re-implements their order. Per round:

======  ==========================================  =========================================
step    what                                        where / function
======  ==========================================  =========================================
1       local training from the global shared       device (``fedpers.client.training``)
        parameters
2       update = new minus global shared params     device
3       clip the WHOLE update to L2 norm ``C``      device, :func:`privatize_device_update`
4       add a noise share ``N(0, (sigma C)^2/m)``   device, :func:`privatize_device_update`
        -- only with secure aggregation             (``noise_share_std > 0``)
5       encrypt (CKKS) -- only with secure agg.     device (``fedpers.privacy.secagg``)
6       sum the (encrypted) updates                 coordinator (:func:`sum_updates` in
                                                    plaintext; homomorphic sum under CKKS)
7       decrypt only the SUM                        key holder
8       add central noise ``N(0, (sigma C)^2)``     coordinator, :func:`finalize_aggregate`
        -- only without secure aggregation          (``central_noise_std``)
9       divide by the expected cohort size ``m``    coordinator, :func:`finalize_aggregate`
10      server optimizer (FedAvg, FedAdam)          coordinator (``fedpers.server``)
11      publish; the accountant records the round   coordinator (:mod:`.accounting`)
======  ==========================================  =========================================

:data:`PIPELINE_ORDER` lists the same steps for programs (docs, audit reports).

Which noise, and why:

- Without secure aggregation the coordinator sees each clipped update, so devices add no
  noise (``noise_share_std = 0``) and :func:`finalize_aggregate` adds ``sigma C`` of
  central noise to the sum (:func:`~fedpers.privacy.dp.noise.central_noise_std`). The
  guarantee then holds for the *published* model, not against the coordinator.
- With secure aggregation each device adds a share of standard deviation
  ``sigma C / sqrt(m)`` (:func:`~fedpers.privacy.dp.noise.noise_share_std`) before
  encrypting, so the decrypted sum already carries ``(sigma C)^2`` and nobody, the key
  holder included, sees a less-noised value. If ``r < m`` devices report, the coordinator
  passes ``central_noise_std = distributed_topup_std(sigma, C, m, r)`` so the total
  variance is again ``(sigma C)^2``. If more than ``m`` report (Poisson sampling), the sum
  carries more noise than assumed; the accountant keeps ``sigma`` (it ignores the extra
  noise). The shares only add up if the devices are honest: a device that knows its own
  share removes it from what protects others (see docs/threat-model.md).
- The placement and size of all that noise is decided in one function,
  :func:`round_noise`, which every coordinator calls (the Flower DP wrapper, the key
  holder's noise plan, the in-process driver): the top-up is computed from the number of
  device contributions *actually in the sum* (accepted updates), never from the sampled
  cohort size. A sampled device that refused, dropped out or was rejected added no share,
  so counting it would leave the released sum with less noise than the accountant
  assumes.
- The denominator is the *expected* cohort size ``m`` (``q N`` under Poisson sampling),
  a public constant, never the number of devices that actually reported: that number
  depends on who was sampled and would leak through the scale of the average.

Adaptive clipping (Andrew et al. 2021) adds one more release per round, the noisy count
of unclipped updates; each device contributes a centred indicator
(:func:`~fedpers.privacy.dp.adaptive.centered_indicator`) with its own noise share, the
coordinator finalizes it with :func:`finalize_indicator_sum`. The accountant is then fed
the combined noise multiplier (see :mod:`.adaptive`).

Random streams: a device's noise share and indicator noise come from
:func:`~fedpers.privacy.dp.noise.device_rng` ``(seed, round, device_id, purpose)``; the
central noise from :func:`~fedpers.privacy.dp.noise.server_rng`. Node mode and cohort
mode therefore add identical noise for the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedpers.privacy.dp.clipping import NonFiniteUpdateError, clip_update, is_finite_update
from fedpers.privacy.dp.noise import (
    central_noise_std,
    distributed_topup_std,
    gaussian_noise_like,
    noise_share_std,
)
from fedpers.privacy.errors import ConfigError, DataError

__all__ = [
    "PIPELINE_ORDER",
    "PrivatizedUpdate",
    "RoundNoise",
    "expected_cohort_size",
    "finalize_aggregate",
    "finalize_indicator_sum",
    "privatize_device_update",
    "round_noise",
    "sum_updates",
]

PIPELINE_ORDER: tuple[str, ...] = (
    "local_train",
    "compute_update",
    "clip_update",
    "add_noise_share",
    "encrypt",
    "sum",
    "decrypt_sum",
    "add_central_noise",
    "divide_by_expected_cohort",
    "server_optimizer",
    "publish_and_account",
)
"""The steps of one round, in order (see the module docstring)."""


@dataclass(frozen=True)
class PrivatizedUpdate:
    """What a device may send after steps 3 and 4 of the pipeline.

    Attributes:
        arrays: the clipped update plus the device's noise share (float32, wire order).
        norm: the L2 norm of the update before clipping (a non-private monitoring metric).
        clipped: whether clipping scaled the update down.
        indicator: the centred unclipped indicator plus its noise share, for adaptive
            clipping; ``None`` when adaptive clipping is off.
    """

    arrays: list[np.ndarray]
    norm: float
    clipped: bool
    indicator: float | None = None


@dataclass(frozen=True)
class RoundNoise:
    """Where one round's Gaussian noise goes and how large it is (:func:`round_noise`).

    Attributes:
        share_std: standard deviation of each device's noise share (0: central noise).
        sum_std: noise added to the (decrypted) sum after it was formed: ``sigma C``
            with central noise, the top-up for missing shares with distributed noise.
        total_std: the noise the accountant assumes on the sum, ``sigma C``.
        distributed: whether devices add shares (secure aggregation).
    """

    share_std: float
    sum_std: float
    total_std: float
    distributed: bool


def round_noise(
    noise_multiplier: float,
    clip_norm: float,
    expected_cohort: float,
    *,
    distributed: bool,
    contributions: int | None = None,
) -> RoundNoise:
    """The one noise-placement decision of a round (device shares, top-up, central noise).

    Central noise: devices add nothing and the coordinator adds ``sigma C`` to the sum.
    Distributed noise: each device adds ``sigma C / sqrt(m)``; after the sum is formed,
    the missing variance ``(sigma C)^2 (1 - r/m)`` is topped up, where ``r`` is the number
    of device contributions *in the sum*: sampled devices that refused, dropped out or were
    rejected sent no share, so ``r`` is never the sampled cohort size. Adaptive clipping's
    count uses the same function with ``clip_norm = 1`` and ``sigma_b`` as multiplier.

    Args:
        noise_multiplier: ``sigma`` (0: no noise, a non-private run).
        clip_norm: ``C``.
        expected_cohort: ``m``, the public expected cohort size.
        distributed: devices add noise shares (secure aggregation).
        contributions: ``r``, device updates in the sum; needed for ``sum_std`` with
            distributed noise (``None`` before the round: ``sum_std`` is then the top-up
            for a full cohort, 0).

    Returns:
        The :class:`RoundNoise`.

    Raises:
        ConfigError: on invalid arguments.
    """
    if noise_multiplier == 0:
        return RoundNoise(0.0, 0.0, 0.0, distributed)
    total = central_noise_std(noise_multiplier, clip_norm)
    if not distributed:
        return RoundNoise(0.0, total, total, False)
    share = noise_share_std(noise_multiplier, clip_norm, expected_cohort)
    reporting = math.ceil(expected_cohort) if contributions is None else contributions
    topup = distributed_topup_std(noise_multiplier, clip_norm, expected_cohort, reporting)
    return RoundNoise(share, topup, total, True)


def expected_cohort_size(
    sampling: str,
    population: int,
    *,
    sample_rate: float | None = None,
    cohort: int | None = None,
) -> float:
    """The public denominator ``m`` of step 9 and of the noise shares.

    Args:
        sampling: ``"poisson"`` or ``"fixed"``.
        population: ``N``, the number of devices that could be sampled.
        sample_rate: ``q`` (Poisson).
        cohort: the cohort size (fixed).

    Returns:
        ``q N`` under Poisson sampling, the cohort size for fixed cohorts.

    Raises:
        ConfigError: on missing or out-of-range arguments.
    """
    if population < 1:
        raise ConfigError(f"population must be positive, got {population}")
    if sampling == "poisson":
        if sample_rate is None or not 0 < sample_rate <= 1:
            raise ConfigError(f"Poisson sampling needs 0 < sample_rate <= 1, got {sample_rate}")
        return sample_rate * population
    if sampling == "fixed":
        if cohort is None or not 0 < cohort <= population:
            raise ConfigError(f"fixed cohorts need 0 < cohort <= population, got {cohort}")
        return float(cohort)
    raise ConfigError(f"sampling must be 'poisson' or 'fixed', got {sampling!r}")


def privatize_device_update(
    delta: Sequence[np.ndarray],
    clip_norm: float,
    noise_share_std: float,
    rng: np.random.Generator,
    *,
    indicator_noise_share_std: float | None = None,
) -> PrivatizedUpdate:
    """Device side: clip the whole update to ``clip_norm`` and add the noise share.

    Args:
        delta: the update (new minus global shared parameters), wire order.
        clip_norm: ``C``.
        noise_share_std: standard deviation of the device's noise share
            (:func:`~fedpers.privacy.dp.noise.noise_share_std` with secure aggregation,
            0 without).
        rng: the device's generator for this round
            (:func:`~fedpers.privacy.dp.noise.device_rng`); the noise share is drawn first,
            then the indicator noise.
        indicator_noise_share_std: with adaptive clipping, the standard deviation of the
            device's share of the count noise (``sigma_b / sqrt(m)`` with secure
            aggregation, 0 without); ``None`` when adaptive clipping is off.

    Returns:
        The :class:`PrivatizedUpdate`.

    Raises:
        ConfigError: on a non-positive clip norm or a negative noise standard deviation.
        NonFiniteUpdateError: when the update contains NaN or inf (drop the device).
    """
    result = clip_update(delta, clip_norm)
    arrays = result.arrays
    if noise_share_std > 0:
        noise = gaussian_noise_like(arrays, noise_share_std, rng)
        arrays = [a + n for a, n in zip(arrays, noise, strict=True)]
    elif noise_share_std < 0 or not math.isfinite(noise_share_std):
        raise ConfigError(f"noise_share_std must be finite and >= 0, got {noise_share_std}")
    indicator: float | None = None
    if indicator_noise_share_std is not None:
        if not (math.isfinite(indicator_noise_share_std) and indicator_noise_share_std >= 0):
            raise ConfigError(
                f"indicator_noise_share_std must be finite and >= 0, got "
                f"{indicator_noise_share_std}"
            )
        indicator = -0.5 if result.clipped else 0.5
        if indicator_noise_share_std > 0:
            indicator += float(rng.normal(0.0, indicator_noise_share_std))
    return PrivatizedUpdate(arrays, result.norm, result.clipped, indicator)


def sum_updates(updates: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """Plaintext step 6: the coordinate-wise sum of privatized updates (float64 accumulate).

    Under secure aggregation the sum is homomorphic instead and this function is not used.

    Args:
        updates: one list of arrays per device, all with the same shapes.

    Returns:
        The sum, float32, wire order.

    Raises:
        DataError: when there are no updates or their shapes differ.
    """
    if not updates:
        raise DataError("cannot sum zero updates")
    shapes = [np.shape(a) for a in updates[0]]
    totals = [np.zeros(shape, dtype=np.float64) for shape in shapes]
    for index, update in enumerate(updates):
        if [np.shape(a) for a in update] != shapes:
            raise DataError(f"update {index} has shapes {[np.shape(a) for a in update]}")
        for total, array in zip(totals, update, strict=True):
            total += array
    return [t.astype(np.float32) for t in totals]


def finalize_aggregate(
    summed: Sequence[np.ndarray],
    *,
    central_noise_std: float,
    denominator: float,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Coordinator side, steps 8 and 9: add central noise to the sum, divide by ``m``.

    Args:
        summed: the (decrypted) sum of the privatized updates.
        central_noise_std: ``sigma C`` without secure aggregation, the top-up
            (:func:`~fedpers.privacy.dp.noise.distributed_topup_std`) with it, 0 for a
            non-private run.
        denominator: the expected cohort size ``m`` (``q N`` under Poisson sampling).
        rng: the coordinator's generator for this round
            (:func:`~fedpers.privacy.dp.noise.server_rng`).

    Returns:
        The noisy mean update, float32, wire order; the server optimizer takes it.

    Raises:
        ConfigError: on a non-positive denominator or a negative noise standard deviation.
        NonFiniteUpdateError: when the sum contains NaN or inf.
    """
    if not (math.isfinite(denominator) and denominator > 0):
        raise ConfigError(f"denominator must be positive and finite, got {denominator}")
    if not (math.isfinite(central_noise_std) and central_noise_std >= 0):
        raise ConfigError(f"central_noise_std must be finite and >= 0, got {central_noise_std}")
    if not is_finite_update(summed):
        raise NonFiniteUpdateError("the aggregated sum contains NaN or inf values")
    noise = gaussian_noise_like(summed, central_noise_std, rng)
    return [
        ((np.asarray(s, dtype=np.float64) + n) / denominator).astype(np.float32)
        for s, n in zip(summed, noise, strict=True)
    ]


def finalize_indicator_sum(
    indicator_sum: float,
    *,
    central_noise_std: float,
    expected_cohort: float,
    rng: np.random.Generator,
) -> float:
    """Coordinator side of adaptive clipping: the noisy fraction of unclipped updates.

    Devices send centred indicators (``+1/2`` unclipped, ``-1/2`` clipped), so the sum has
    sensitivity ``1/2`` and the estimate ``(sum + noise) / m + 1/2`` needs no knowledge of
    how many devices reported.

    Args:
        indicator_sum: the (decrypted) sum of the devices' centred indicators.
        central_noise_std: ``sigma_b`` without secure aggregation, the top-up with it.
        expected_cohort: ``m``.
        rng: the coordinator's generator (use a purpose distinct from the update noise).

    Returns:
        The noisy estimate of the unclipped fraction (may fall outside ``[0, 1]``).

    Raises:
        ConfigError: on invalid arguments.
    """
    if not (math.isfinite(expected_cohort) and expected_cohort > 0):
        raise ConfigError(f"expected_cohort must be positive, got {expected_cohort}")
    if not (math.isfinite(central_noise_std) and central_noise_std >= 0):
        raise ConfigError(f"central_noise_std must be finite and >= 0, got {central_noise_std}")
    noise = float(rng.normal(0.0, central_noise_std)) if central_noise_std > 0 else 0.0
    return (indicator_sum + noise) / expected_cohort + 0.5
