"""User-level differential privacy (DP-FedAvg) as a wrapper around the fedpers strategy.

Like Flower's ``DifferentialPrivacyClientSideFixedClipping``, the wrapper does not
subclass the strategy it protects; it tells the devices how to clip (and, with secure
aggregation, how much noise to add themselves) and finishes the aggregate with the one
privacy pipeline (:mod:`fedpers.privacy.dp.pipeline`). Per round:

1. before sampling, ask the ledger whether one more round would exceed the budget; if
   so, the run stops there (:meth:`UserLevelDP.budget_allows`);
2. send the clip norm ``C_t`` (and the noise shares under secure aggregation) with the
   round instructions; devices clip their whole update on the device;
3. let the wrapped strategy validate and sum the updates (a device whose update is
   longer than ``C_t`` did not clip and is dropped);
4. :func:`~fedpers.privacy.dp.pipeline.round_noise` decides the noise (the one
   placement decision, shared with the in-process driver): ``N(0, (sigma_u C_t)^2)`` on
   the sum, or with distributed noise the top-up for the accepted contributions' missing
   shares (under secure aggregation the key holder adds that top-up before the sum leaves
   it, through :meth:`UserLevelDP.noise_plan`);
   :func:`~fedpers.privacy.dp.pipeline.finalize_aggregate` adds what is left to add and
   divides by the *expected* cohort size;
5. adaptive clipping (Andrew et al. 2021): the noisy fraction of unclipped updates
   (:func:`~fedpers.privacy.dp.pipeline.finalize_indicator_sum`) moves ``C`` towards the
   target quantile; the update noise multiplier ``sigma_u`` is raised so that the pair
   of releases is accounted as one Gaussian mechanism of multiplier ``sigma``;
6. the wrapped strategy's server optimiser steps; the ledger records exactly the round
   that happened: ``sigma`` and how the devices were sampled (Poisson with rate ``q``,
   a fixed cohort of ``m`` of ``N``, or everyone).

Skipped rounds (too few accepted updates) release nothing derived from the devices' data
and are not accounted; this is written in the run database next to the round.

A run whose noise multiplier is 0 is *not private*: its epsilon is ``None`` everywhere,
never a number.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedpers.privacy.dp.accounting import EpsilonResult, PrivacyLedger, RoundEvent
from fedpers.privacy.dp.adaptive import (
    AdaptiveClipConfig,
    next_clip_norm,
    update_noise_multiplier,
)
from fedpers.privacy.dp.noise import server_rng
from fedpers.privacy.dp.pipeline import (
    RoundNoise,
    finalize_aggregate,
    finalize_indicator_sum,
    round_noise,
)
from fedpers.privacy.errors import ConfigError
from fedpers.server.collect import RoundCollection, RoundPrivacy
from fedpers.server.config import FederationConfig
from fedpers.server.rundb import RoundReport
from fedpers.server.sampling import SamplingMethod
from fedpers.server.secure_aggregation import NoisePlan
from fedpers.server.strategy import FedPersStrategy, train_metrics

__all__ = ["UserDPConfig", "UserLevelDP"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UserDPConfig:
    """User-level DP settings of a run.

    Attributes:
        noise_multiplier: ``sigma`` the accountant records (with adaptive clipping, the
            combined multiplier of update and count). Must be positive.
        clip_norm: ``C`` (the initial ``C_0`` with adaptive clipping).
        delta: the target delta.
        target_epsilon: the budget: the run stops before a round that would exceed it
            (``None``: no budget, epsilon is only reported).
        adaptive: adaptive clipping settings, or ``None`` for a fixed clip norm.
        distributed_noise: devices add noise shares (secure aggregation) instead of the
            coordinator adding central noise.
        accountant: ``"rdp"`` (reported) or ``"prv"``.
    """

    noise_multiplier: float
    clip_norm: float
    delta: float
    target_epsilon: float | None = None
    adaptive: AdaptiveClipConfig | None = None
    distributed_noise: bool = False
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ConfigError(
                f"user-level DP needs a positive noise multiplier, got {self.noise_multiplier}"
            )
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ConfigError(f"clip norm must be positive, got {self.clip_norm}")
        if self.adaptive is not None:
            update_noise_multiplier(self.noise_multiplier, self.adaptive.count_noise_std)

    @classmethod
    def from_run(cls, config: FederationConfig) -> UserDPConfig:
        """The user-level DP settings of a run configuration with user-level DP.

        Args:
            config: the run configuration, after
                :meth:`~fedpers.server.config.FederationConfig.resolve_privacy`.

        Raises:
            ConfigError: the configuration has no resolved noise multiplier.
        """
        if config.noise_multiplier is None:
            raise ConfigError("user-level DP needs a resolved noise multiplier (resolve_privacy)")
        return cls(
            noise_multiplier=config.noise_multiplier,
            clip_norm=config.clip_norm,
            delta=config.resolved_delta,
            target_epsilon=config.target_epsilon,
            adaptive=config.adaptive(),
            distributed_noise=config.secure_agg != "none",
            accountant=config.accountant,
        )


class UserLevelDP(Strategy):
    """DP-FedAvg around a :class:`~fedpers.server.strategy.FedPersStrategy`.

    Args:
        strategy: the wrapped strategy (sampling, validation, sum, optimiser).
        config: the DP settings.
        ledger: the run's privacy ledger (restored on resume).
    """

    strategy: FedPersStrategy
    config: UserDPConfig
    ledger: PrivacyLedger
    clip_norm: float
    keyholder_adds_noise: bool

    def __init__(
        self, strategy: FedPersStrategy, config: UserDPConfig, ledger: PrivacyLedger
    ) -> None:
        super().__init__()
        self.strategy = strategy
        self.config = config
        self.ledger = ledger
        self.clip_norm = config.clip_norm
        # Secure aggregation: the key holder adds the top-up before the sum leaves it.
        self.keyholder_adds_noise = config.distributed_noise and strategy.delegate_noise(
            self.noise_plan
        )

    # ------------------------------------------------------------------ accounting

    @property
    def update_multiplier(self) -> float:
        """``sigma_u``: the multiplier of the noise on the update sum."""
        if self.config.adaptive is None:
            return float(self.config.noise_multiplier)
        return float(
            update_noise_multiplier(
                self.config.noise_multiplier, self.config.adaptive.count_noise_std
            )
        )

    def round_event(self) -> RoundEvent:
        """The accounting event of one round as this run samples devices."""
        sampling = self.strategy.sampler.config
        sigma = self.config.noise_multiplier
        if sampling.method is SamplingMethod.FIXED:
            return RoundEvent.fixed(sigma, sampling.num_devices, int(sampling.cohort_size or 0))
        return RoundEvent.poisson(sigma, sampling.rate)

    def budget_allows(self) -> bool:
        """Whether one more round stays within the target epsilon (always without one)."""
        target = self.config.target_epsilon
        return target is None or not self.ledger.would_exceed(target, self.round_event())

    def epsilon(self) -> EpsilonResult:
        """Epsilon spent so far (with its method)."""
        return self.ledger.report()

    def noise_plan(self, accepted: int) -> NoisePlan:
        """The current round's noise as the key holder applies it (secure aggregation).

        Args:
            accepted: device contributions in the encrypted sum.

        Returns:
            The top-up for the devices that did not report, ``C`` and ``sigma C``.
        """
        noise = self.update_noise(accepted)
        return NoisePlan(
            topup_std=noise.sum_std, clip_norm=self.clip_norm, noise_std=noise.total_std
        )

    def update_noise(self, contributions: int | None = None) -> RoundNoise:
        """The round's update noise (:func:`~fedpers.privacy.dp.pipeline.round_noise`).

        Args:
            contributions: device updates in the sum (``None`` before the round).
        """
        return round_noise(
            self.update_multiplier,
            self.clip_norm,
            self.strategy.expected_cohort,
            distributed=self.config.distributed_noise,
            contributions=contributions,
        )

    def count_noise(self, contributions: int | None = None) -> RoundNoise:
        """Adaptive clipping's count noise (the same placement, ``sigma_b``, sensitivity 1).

        Raises:
            ConfigError: without adaptive clipping.
        """
        if self.config.adaptive is None:
            raise ConfigError("count noise needs adaptive clipping")
        return round_noise(
            self.config.adaptive.count_noise_std,
            1.0,
            self.strategy.expected_cohort,
            distributed=self.config.distributed_noise,
            contributions=contributions,
        )

    # ------------------------------------------------------------------ train

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send the clip norm (and noise shares under secure aggregation) to the devices."""
        overrides: dict[str, float] = {"clip_norm": float(self.clip_norm)}
        if self.config.distributed_noise:
            overrides["noise_share_std"] = self.update_noise().share_std
        if self.config.adaptive is not None:
            overrides["indicator_noise_share_std"] = self.count_noise().share_std
        merged = ConfigRecord({**dict(config or {}), **overrides})
        messages: Iterable[Message] = self.strategy.configure_train(
            server_round, arrays, merged, grid
        )
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Finish the round with the privacy pipeline, step the optimiser and account."""
        inner = self.strategy
        coll = inner.collect_train(server_round, replies)
        clip = self.clip_norm
        m = inner.expected_cohort
        skip = inner.skip_reason(coll)
        if skip is not None:
            rep = self._report(coll, "skipped", f"{skip}; not accounted: nothing released", clip)
            return None, train_metrics(rep)
        if coll.total is None:
            raise ConfigError(f"round {server_round}: no aggregate to finalize")
        noise = self.update_noise(coll.accepted)
        std = noise.sum_std
        # Under secure aggregation the key holder already added the top-up.
        added_here = 0.0 if self.keyholder_adds_noise else std
        mean = finalize_aggregate(
            coll.total,
            central_noise_std=added_here,
            denominator=m,
            rng=server_rng(inner.seed, server_round),
        )
        adaptive = self.config.adaptive
        if adaptive is not None:
            fraction = finalize_indicator_sum(
                coll.indicator_sum,
                central_noise_std=self.count_noise(coll.accepted).sum_std,
                expected_cohort=m,
                rng=server_rng(inner.seed, server_round, "indicator_noise"),
            )
            coll.unclipped_estimate = fraction
            self.clip_norm = next_clip_norm(
                clip, fraction, adaptive.target_quantile, adaptive.learning_rate
            )
        new = inner.apply_mean(server_round, mean)
        self.ledger.record(self.round_event())
        rep = self._report(coll, "completed", None, clip, noise_std=std)
        return inner.model_record(new), train_metrics(rep)

    def _report(
        self,
        coll: RoundCollection,
        status: str,
        reason: str | None,
        clip: float,
        noise_std: float | None = None,
    ) -> RoundReport:
        result = self.ledger.report()
        privacy = RoundPrivacy(
            clip_norm=clip,
            noise_multiplier=self.config.noise_multiplier,
            noise_std=noise_std,
            epsilon=result.epsilon if result.private else None,
            delta=self.config.delta,
        )
        return self.strategy.report(coll, status, reason, privacy)

    # ------------------------------------------------------------------ evaluate, state

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Delegate to the wrapped strategy."""
        messages: Iterable[Message] = self.strategy.configure_evaluate(
            server_round, arrays, config, grid
        )
        return messages

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Delegate to the wrapped strategy."""
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        """Log the DP settings, then the wrapped strategy's."""
        logger.info(
            "UserLevelDP: sigma=%.4g, C=%.4g%s, delta=%.3g, budget=%s",
            self.config.noise_multiplier,
            self.clip_norm,
            " (adaptive)" if self.config.adaptive else "",
            self.config.delta,
            self.config.target_epsilon,
        )
        self.strategy.summary()

    def state_dict(self) -> dict[str, Any]:
        """Wrapped strategy state, the ledger and the current clip norm."""
        return {
            **self.strategy.state_dict(),
            "ledger": self.ledger.state_dict(),
            "clip_norm": self.clip_norm,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (epsilon is neither reset nor counted twice)."""
        self.strategy.load_state_dict(state)
        self.ledger.load_state_dict(state["ledger"])
        self.clip_norm = float(state["clip_norm"])
