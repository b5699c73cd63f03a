"""The configuration of one federation run, and how its privacy parameters are resolved.

:class:`FederationConfig` is frozen, JSON-serialisable (``config.json`` in the run
directory) and the only input of the ServerApp. :meth:`FederationConfig.resolve_privacy`
turns the user's request into the parameters the run uses:

* ``dp="none"`` (or ``"record"`` only): no user-level noise; the run is labelled
  non-private and reports no user-level epsilon;
* ``target_epsilon`` without ``noise_multiplier``: solve ``sigma`` so that exactly
  ``rounds`` rounds spend at most ``target_epsilon`` (accounted for the sampling method
  actually used), and stop before any further round;
* ``noise_multiplier`` (with or without a budget): use it; epsilon is reported, and with a
  budget the run stops before exceeding it.

``delta`` defaults to ``0.1 / N``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from fedpers.client.training.local import LocalTrainConfig
from fedpers.privacy.dp.accounting import default_delta, solve_noise_multiplier
from fedpers.privacy.dp.adaptive import AdaptiveClipConfig, default_count_noise_std
from fedpers.privacy.errors import ConfigError
from fedpers.server.sampling import SamplingConfig, SamplingMethod

__all__ = ["DP_MODES", "MONITORING_MODES", "MONITORING_WARNING", "FederationConfig"]

DP_MODES = ("none", "user", "record", "both")
MONITORING_MODES = ("off", "plaintext")
MONITORING_WARNING = (
    "MONITORING METRICS IN PLAINTEXT: every device sends its update norm before clipping, "
    "clipped or not, number of examples, loss and record-level epsilon to the coordinator "
    "in plaintext, per device; these values are NOT covered by the differential-privacy "
    "guarantee and NOT protected by secure aggregation"
)
"""The warning a run with ``monitoring_metrics = "plaintext"`` logs and records."""


@dataclass(frozen=True)
class FederationConfig:
    """Everything a federation run needs (see the module docstring).

    Attributes:
        run_dir: the run directory (run.db, checkpoints, models).
        devices_dir: folder of the device stores and the public ``catalogue.npz``.
        rounds: number of rounds.
        num_devices: population size ``N``.
        n_items: catalogue size.
        dim: embedding dimension.
        n_item_features: width of the item attribute tower (0: none).
        init_std: item embedding initialisation.
        seed: the run seed.
        sample_rate: Poisson rate ``q`` (exclusive with ``clients_per_round``).
        clients_per_round: fixed cohort size ``m``.
        mode: ``"cohort"`` or ``"node"``.
        reply: ``"per-device"`` or ``"sum"`` (cohort nodes may pre-sum).
        num_nodes: Flower nodes the run expects (node mode: ``N``).
        local: local training hyperparameters (``LocalTrainConfig`` fields).
        eval_local: fine-tuning hyperparameters at evaluation (``None``: ``local``).
        server_opt: ``fedavg``, ``fedavgm`` or ``fedadam``.
        server_lr: server learning rate.
        optimizer_kwargs: further optimiser hyperparameters.
        dp: ``none``, ``user``, ``record`` or ``both``.
        noise_multiplier: user-level ``sigma`` (``None``: solve from ``target_epsilon``).
        target_epsilon: user-level budget.
        delta: target delta (``None``: ``0.1 / N``).
        clip_norm: ``C`` (initial ``C_0`` when adaptive); ``0`` with ``dp=none``.
        adaptive_clip: adaptive clipping (Andrew et al. 2021).
        target_quantile: adaptive clipping's ``gamma``.
        clip_lr: adaptive clipping's ``eta``.
        count_noise_std: adaptive clipping's ``sigma_b`` (``None``: ``m / 20``).
        accountant: ``rdp`` or ``prv``.
        secure_agg: ``none`` or ``he``.
        secagg_keys: with ``he``, the CKKS key-set folder (``public.ctx`` for the
            coordinator and devices, ``secret.ctx`` for the key holder only).
        min_participants: fewest accepted updates for a round to be applied.
        round_timeout: seconds the coordinator waits for a round's replies.
        eval_every: evaluate every this many rounds (0: only at the end).
        eval_split: ``test`` or ``valid`` for the per-round evaluations.
        eval_devices: evaluate a fixed random sample of this many devices (``None``:
            every device).
        max_update_norm: bound on an update's norm when devices do not clip.
        record_epsilon_budget: each device's record-level budget (``dp`` record/both).
        monitoring_metrics: ``off`` (default): devices send only what the privacy
            pipeline needs (updates, adaptive clipping's indicator, participation);
            ``plaintext``: they also send their training statistics (update norm before
            clipping, clipped or not, examples, loss, record-level epsilon) to the
            coordinator in plaintext, per device, outside the DP guarantee and outside
            secure aggregation. Logged as a warning and recorded in the privacy table.
        record_level: the devices' DP-SGD settings (fields of
            :class:`~fedpers.client.training.dpsgd.DPSGDConfig` but the budget), sent with
            every training round when ``dp`` is ``record`` or ``both``.
    """

    run_dir: str
    devices_dir: str
    rounds: int
    num_devices: int
    n_items: int
    dim: int = 32
    n_item_features: int = 0
    init_std: float = 0.1
    seed: int = 0
    sample_rate: float | None = None
    clients_per_round: int | None = None
    mode: str = "cohort"
    reply: str = "per-device"
    num_nodes: int = 2
    local: dict[str, Any] = field(default_factory=dict)
    eval_local: dict[str, Any] | None = None
    server_opt: str = "fedavg"
    server_lr: float = 1.0
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    dp: str = "none"
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float | None = None
    clip_norm: float = 0.0
    adaptive_clip: bool = False
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    count_noise_std: float | None = None
    accountant: str = "rdp"
    secure_agg: str = "none"
    secagg_keys: str = ""
    min_participants: int = 1
    round_timeout: float = 600.0
    eval_every: int = 0
    eval_split: str = "test"
    eval_devices: int | None = None
    max_update_norm: float = 1e4
    record_epsilon_budget: float | None = None
    record_level: dict[str, Any] | None = None
    monitoring_metrics: str = "off"

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ConfigError(f"rounds must be >= 0, got {self.rounds}")
        if self.dp not in DP_MODES:
            raise ConfigError(f"--dp must be one of {', '.join(DP_MODES)}, got {self.dp!r}")
        if self.mode not in ("cohort", "node"):
            raise ConfigError(f"--mode must be cohort or node, got {self.mode!r}")
        if self.reply not in ("per-device", "sum"):
            raise ConfigError(f"reply must be per-device or sum, got {self.reply!r}")
        if self.mode == "node" and self.reply == "sum":
            raise ConfigError("a node hosts one device; sum replies need --mode cohort")
        if self.secure_agg not in ("none", "he"):
            raise ConfigError(f"--secure-agg must be none or he, got {self.secure_agg!r}")
        if self.eval_split not in ("test", "valid"):
            raise ConfigError(f"eval split must be test or valid, got {self.eval_split!r}")
        if self.user_level:
            if self.noise_multiplier is None and self.target_epsilon is None:
                raise ConfigError("user-level DP needs --epsilon or --noise-multiplier")
            if self.noise_multiplier is not None and not self.noise_multiplier > 0:
                raise ConfigError("--noise-multiplier must be positive with user-level DP")
            if not self.clip_norm > 0:
                raise ConfigError("user-level DP needs a positive --clip")
        elif self.noise_multiplier or self.target_epsilon is not None:
            raise ConfigError(
                "--epsilon/--noise-multiplier need user-level DP (--dp user or --dp both)"
            )
        if self.eval_devices is not None and not 0 < self.eval_devices <= self.num_devices:
            raise ConfigError(f"eval devices must be in 1..{self.num_devices}")
        if self.dp in ("record", "both") and self.record_level is None:
            raise ConfigError("--dp record/both needs the devices' DP-SGD settings")
        if self.dp not in ("record", "both") and self.record_level is not None:
            raise ConfigError("DP-SGD settings are only used with --dp record or both")
        if self.adaptive_clip and not self.user_level:
            raise ConfigError("--adaptive-clip needs user-level DP")
        if self.monitoring_metrics not in MONITORING_MODES:
            raise ConfigError(
                f"--monitoring-metrics must be off or plaintext, got {self.monitoring_metrics!r}"
            )
        if self.adaptive_clip and self.secure_agg == "he" and not self.monitoring:
            raise ConfigError(
                "--adaptive-clip with --secure-agg he sends each device's clipped-or-not "
                "indicator outside the ciphertext; it needs --monitoring-metrics plaintext"
            )
        self.sampling  # validates the sampling options  # noqa: B018
        LocalTrainConfig.from_dict(self.local)

    # ------------------------------------------------------------------ derived values

    @property
    def monitoring(self) -> bool:
        """Whether devices send plaintext training statistics (the monitoring flag)."""
        return self.monitoring_metrics == "plaintext"

    @property
    def user_level(self) -> bool:
        """Whether user-level DP (DP-FedAvg) is on."""
        return self.dp in ("user", "both")

    @property
    def sampling(self) -> SamplingConfig:
        """The sampling configuration."""
        return SamplingConfig.from_options(
            self.num_devices,
            sample_rate=self.sample_rate,
            clients_per_round=self.clients_per_round,
        )

    @property
    def resolved_delta(self) -> float:
        """``delta`` or its default ``0.1 / N``."""
        return self.delta if self.delta is not None else default_delta(self.num_devices)

    @property
    def local_config(self) -> LocalTrainConfig:
        """The local training configuration."""
        return LocalTrainConfig.from_dict(self.local)

    @property
    def eval_local_config(self) -> LocalTrainConfig:
        """The fine-tuning configuration at evaluation."""
        return LocalTrainConfig.from_dict(
            self.eval_local if self.eval_local is not None else self.local
        )

    def evaluated_devices(self) -> list[int] | None:
        """The devices every evaluation asks (a fixed seeded sample), ``None`` for all."""
        if self.eval_devices is None or self.eval_devices == self.num_devices:
            return None
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0xE7]))
        return sorted(rng.choice(self.num_devices, size=self.eval_devices, replace=False).tolist())

    def adaptive(self) -> AdaptiveClipConfig | None:
        """Adaptive clipping settings, or ``None``."""
        if not self.adaptive_clip:
            return None
        sigma_b = self.count_noise_std or default_count_noise_std(self.sampling.expected_cohort)
        return AdaptiveClipConfig(
            initial_clip_norm=self.clip_norm,
            target_quantile=self.target_quantile,
            learning_rate=self.clip_lr,
            count_noise_std=sigma_b,
        )

    def resolve_privacy(self) -> FederationConfig:
        """The config with ``delta`` filled in and ``noise_multiplier`` solved if needed.

        Raises:
            ConfigError: on inconsistent privacy options.
            PrivacyAccountingError: when no noise multiplier reaches the target.
        """
        if not self.user_level:
            return self
        delta = self.resolved_delta
        sigma = self.noise_multiplier
        if sigma is None:
            if self.target_epsilon is None:
                raise ConfigError("user-level DP needs --epsilon or --noise-multiplier")
            s = self.sampling
            fixed = s.method is SamplingMethod.FIXED
            sigma = solve_noise_multiplier(
                self.target_epsilon,
                None if fixed else s.rate,
                max(self.rounds, 1),
                delta,
                sampling="fixed" if fixed else "poisson",
                population=s.num_devices if fixed else None,
                cohort=s.cohort_size if fixed else None,
                accountant=self.accountant,  # type: ignore[arg-type]
            )
        return replace(self, delta=delta, noise_multiplier=float(sigma))

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the run directory's ``config.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FederationConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown federation config keys: {sorted(unknown)}")
        return cls(**data)

    def privacy_parameters(self) -> dict[str, Any]:
        """The ``privacy`` table of the run database (a non-private run says so)."""
        s = self.sampling
        params: dict[str, Any] = {
            "unit": {"none": None, "user": "user", "record": "record", "both": "user+record"}[
                self.dp
            ],
            "user_level": self.user_level,
            "label": "user-level DP (DP-FedAvg)"
            if self.user_level
            else "non-private (no user-level noise)",
            "mechanism": "gaussian" if self.user_level else None,
            "noise_multiplier": self.noise_multiplier if self.user_level else None,
            "clip_norm": self.clip_norm if self.user_level else None,
            "clipping": ("adaptive" if self.adaptive_clip else "fixed")
            if self.user_level
            else None,
            "target_quantile": self.target_quantile if self.adaptive_clip else None,
            "count_noise_std": (a.count_noise_std if (a := self.adaptive()) else None),
            "sampling": s.method.value,
            "sample_rate": s.rate,
            "cohort_size": s.cohort_size,
            "num_devices": s.num_devices,
            "expected_cohort": s.expected_cohort,
            "delta": self.resolved_delta if self.user_level else None,
            "target_epsilon": self.target_epsilon,
            "accountant": self.accountant if self.user_level else None,
            "noise_placement": (
                ("distributed (device noise shares)" if self.secure_agg == "he" else "central")
                if self.user_level
                else None
            ),
            "secure_aggregation": self.secure_agg,
            "record_level": self.dp in ("record", "both"),
            "record_epsilon_budget": self.record_epsilon_budget,
            "record_noise_multiplier": (self.record_level or {}).get("noise_multiplier"),
            "record_clip_norm": (self.record_level or {}).get("max_grad_norm"),
            "record_delta": (self.record_level or {}).get("delta"),
            "skipped_rounds": "not accounted: a skipped round releases nothing",
            "monitoring_metrics": self.monitoring_metrics,
            "monitoring_warning": MONITORING_WARNING if self.monitoring else None,
            "rounds": self.rounds,
        }
        if math.isinf(params["expected_cohort"]):
            params["expected_cohort"] = None
        return params
