"""The device side of one federated round: local training, then the privacy pipeline.

For each device of a cohort (a Flower node is a cohort of one):

1. local training from the global shared parameters
   (:func:`fedpers.client.training.local.train_devices`), vectorised over the cohort, with
   the training seed derived from ``device_rng(seed, round, device_id, "train")``;
2. :func:`fedpers.privacy.dp.pipeline.privatize_device_update` on the delta: clip the whole
   update to ``C`` and add the device's noise share, drawn from
   :func:`noise_generator`: ``device_rng(seed, round, device_id, "noise")`` with
   ``"seeded"`` noise entropy (simulation), fresh operating-system entropy with
   ``"device"`` (deployments).

Because every other random draw of a device comes from streams derived from
``(seed, round, device_id)``, a device produces the same contribution whether it runs
alone on its own node or inside a cohort of virtual devices (with seeded noise, exactly).

The noise entropy is the device's own setting, never an instruction of the coordinator:
the coordinator chooses the seed, so with seeded noise it could recompute every share and
subtract it from a decrypted sum; with device entropy nobody but the device knows it.

:class:`RoundInstructions` is what the coordinator sends (a flat ``str -> int | float |
str | bool`` dict for Flower's ``ConfigRecord`` through :meth:`RoundInstructions.to_config`);
:class:`DeviceContribution` is what may leave the device (``arrays``, ``norm``,
``clipped``, ``n_examples``, ``loss``, ``indicator``) plus the private new user vector,
which the caller persists on the device and never sends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from fedpers.client.record_values import integer, number, number_or_unset, unset_as_negative
from fedpers.client.training.cohort import Cohort
from fedpers.client.training.global_parameters import GlobalParameters
from fedpers.client.training.local import LocalTrainConfig, init_user_vector, train_devices
from fedpers.client.training.update import LocalUpdate
from fedpers.privacy.dp.noise import device_rng
from fedpers.privacy.dp.pipeline import privatize_device_update
from fedpers.privacy.errors import ConfigError

__all__ = [
    "NOISE_ENTROPIES",
    "NO_CLIP",
    "DeviceContribution",
    "NoiseEntropy",
    "RoundInstructions",
    "evaluation_seed",
    "initial_user_vector",
    "initial_user_vectors",
    "noise_generator",
    "privatize",
    "run_device_rounds",
    "training_seed",
]

NO_CLIP: float = float(np.finfo(np.float64).max)
"""The clip norm passed to the pipeline when a round is not private (``clip_norm == 0``)."""

NoiseEntropy = Literal["seeded", "device"]
NOISE_ENTROPIES: tuple[NoiseEntropy, ...] = ("seeded", "device")
"""Where a device's noise share comes from (see :func:`noise_generator`)."""

_LOCAL_PREFIX = "local."
_RECORD = "round instructions"


@dataclass(frozen=True)
class RoundInstructions:
    """What the coordinator tells every device of a round.

    Attributes:
        server_round: the round number (1-based in Flower).
        seed: the run seed; with ``server_round`` and the device id it derives every
            random stream of the device.
        clip_norm: ``C``, the L2 bound of a device's whole update; ``0`` disables
            clipping (non-private run; the pipeline still checks the update is finite).
        noise_share_std: standard deviation of the device's noise share (distributed DP
            with secure aggregation), ``0`` when the coordinator adds central noise or
            the run is not private.
        local: the local training hyperparameters.
        indicator_noise_share_std: with adaptive clipping, the device's share of the
            noise on the unclipped-count; ``None`` when adaptive clipping is off.
    """

    server_round: int
    seed: int
    clip_norm: float
    noise_share_std: float
    local: LocalTrainConfig = field(default_factory=LocalTrainConfig)
    indicator_noise_share_std: float | None = None

    def __post_init__(self) -> None:
        if self.server_round < 0 or self.seed < 0:
            raise ConfigError("server_round and seed must be >= 0")
        if not (math.isfinite(self.clip_norm) and self.clip_norm >= 0):
            raise ConfigError(f"clip_norm must be finite and >= 0, got {self.clip_norm}")
        if not (math.isfinite(self.noise_share_std) and self.noise_share_std >= 0):
            raise ConfigError(f"noise_share_std must be >= 0, got {self.noise_share_std}")
        if self.noise_share_std > 0 and self.clip_norm == 0:
            raise ConfigError("noise without a clip norm protects nothing; set clip_norm")
        ind = self.indicator_noise_share_std
        if ind is not None and not (math.isfinite(ind) and ind >= 0):
            raise ConfigError(f"indicator_noise_share_std must be >= 0, got {ind}")

    @property
    def private(self) -> bool:
        """Whether updates are clipped (a prerequisite of any DP guarantee)."""
        return self.clip_norm > 0

    def to_config(self) -> dict[str, int | float | str | bool]:
        """A flat dict for Flower's ``ConfigRecord`` (``local.*`` keys for the local config).

        Example:
            >>> cfg = RoundInstructions(server_round=3, seed=7, clip_norm=1.0,
            ...                         noise_share_std=0.0).to_config()
            >>> cfg["server_round"], cfg["local.epochs"] == LocalTrainConfig().epochs
            (3, True)
        """
        out: dict[str, int | float | str | bool] = {
            "server_round": int(self.server_round),
            "seed": int(self.seed),
            "clip_norm": float(self.clip_norm),
            "noise_share_std": float(self.noise_share_std),
            "indicator_noise_share_std": unset_as_negative(self.indicator_noise_share_std),
        }
        for key, value in self.local.to_dict().items():
            out[_LOCAL_PREFIX + key] = value
        return out

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> RoundInstructions:
        """Inverse of :meth:`to_config`; keys it does not know are ignored.

        Raises:
            DataError: when a required key is missing or a value is not of its type.
            ConfigError: when a value is out of range or a ``local.*`` key is unknown.
        """
        local = {
            k.removeprefix(_LOCAL_PREFIX): v
            for k, v in config.items()
            if k.startswith(_LOCAL_PREFIX)
        }
        return cls(
            server_round=integer(config, "server_round", _RECORD),
            seed=integer(config, "seed", _RECORD),
            clip_norm=number(config, "clip_norm", _RECORD),
            noise_share_std=number(config, "noise_share_std", _RECORD),
            local=LocalTrainConfig.from_dict(local, f"{_RECORD} ({_LOCAL_PREFIX}*)"),
            indicator_noise_share_std=number_or_unset(config, "indicator_noise_share_std", _RECORD),
        )


@dataclass(frozen=True)
class DeviceContribution:
    """One device's round: what may leave the device, and its private leftovers.

    Attributes:
        device_id: the device's stable identifier.
        arrays: clipped delta plus noise share, float32, wire order (may be sent).
        norm: the L2 norm of the delta before clipping (monitoring metric).
        clipped: whether clipping scaled the delta down.
        n_examples: training pairs used this round.
        loss: mean BPR loss of the last local epoch.
        user_vector: PRIVATE new user vector: the caller persists it on the device and
            never sends it.
        indicator: centred unclipped indicator plus noise share (adaptive clipping), else
            ``None``.
    """

    device_id: int | str
    arrays: list[np.ndarray]
    norm: float
    clipped: bool
    n_examples: int
    loss: float
    user_vector: np.ndarray = field(repr=False)
    indicator: float | None = None


def initial_user_vector(seed: int, device_id: int | str, dim: int) -> np.ndarray:
    """The user vector a device starts from, derived from ``(seed, device_id)``.

    Drawn with :func:`~fedpers.client.training.local.init_user_vector` seeded by
    ``device_rng(seed, 0, device_id, "user_init")``, so every runner (Flower node, cohort,
    in-process simulation) starts a device from the same private vector.
    """
    init_seed = int(device_rng(seed, 0, device_id, "user_init").integers(0, 2**62))
    vector: np.ndarray = init_user_vector(dim, init_seed)
    return vector


def initial_user_vectors(seed: int, device_ids: Sequence[int | str], dim: int) -> np.ndarray:
    """:func:`initial_user_vector` for several devices, stacked ``[m, dim]``."""
    if not device_ids:
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack([initial_user_vector(seed, d, dim) for d in device_ids])


def training_seed(seed: int, server_round: int, device_id: int | str) -> int:
    """The seed of a device's local training draws in a round.

    Drawn from ``device_rng(seed, server_round, device_id, "train")`` so that it is
    independent of the noise stream and identical in node and cohort mode.
    """
    return int(device_rng(seed, server_round, device_id, "train").integers(0, 2**62))


def evaluation_seed(seed: int, server_round: int, device_id: int | str) -> int:
    """The seed of a device's fine-tuning draws when it is evaluated after ``server_round``.

    Drawn from ``device_rng(seed, server_round, device_id, "eval")``.
    """
    return int(device_rng(seed, server_round, device_id, "eval").integers(0, 2**62))


def run_device_rounds(
    model: GlobalParameters,
    cohort: Cohort,
    instructions: RoundInstructions,
    noise_entropy: NoiseEntropy = "seeded",
) -> list[DeviceContribution]:
    """Train a cohort of devices and privatise each device's update.

    Args:
        model: the round's global parameters (arrays, model shape, item attributes).
        cohort: the devices (their ids seed their random streams), their positives and
            their private user vectors (not modified).
        instructions: the round's instructions.
        noise_entropy: where the devices' noise shares come from (:func:`noise_generator`).

    Returns:
        One :class:`DeviceContribution` per device, in cohort order.

    Raises:
        ConfigError: on mismatched lengths or shapes, or invalid instructions.
        NonFiniteUpdateError: when a device's training diverged (NaN/inf delta).
    """
    device_ids = cohort.device_ids
    if len(device_ids) != len(cohort):
        raise ConfigError(f"{len(device_ids)} device ids for {len(cohort)} devices")
    if len(set(device_ids)) != len(device_ids):
        raise ConfigError("device ids must be unique within a cohort")
    seed, rnd = instructions.seed, instructions.server_round
    seeds = [training_seed(seed, rnd, d) for d in device_ids]
    updates = train_devices(model, cohort, instructions.local, seeds)
    return [
        privatize(update, device_id, instructions, noise_entropy)
        for device_id, update in zip(device_ids, updates, strict=True)
    ]


def noise_generator(
    noise_entropy: NoiseEntropy, instructions: RoundInstructions, device_id: int | str
) -> np.random.Generator:
    """The generator of one device's noise share in one round.

    Args:
        noise_entropy: ``"seeded"``: ``device_rng(seed, round, device_id, "noise")``, the
            same share in every runner and on a resumed run (simulation, parity tests; the
            coordinator, which chose the seed, can recompute it). ``"device"``: fresh
            operating-system entropy, known to nobody but the device (deployments).
        instructions: the round's instructions (the seed and the round).
        device_id: the device.

    Raises:
        ConfigError: an unknown ``noise_entropy``.
    """
    if noise_entropy == "device":
        return np.random.default_rng()  # seeded from the operating system's entropy
    if noise_entropy != "seeded":
        raise ConfigError(f"noise entropy must be one of {NOISE_ENTROPIES}, got {noise_entropy!r}")
    return device_rng(instructions.seed, instructions.server_round, device_id, "noise")


def privatize(
    update: LocalUpdate,
    device_id: int | str,
    instructions: RoundInstructions,
    noise_entropy: NoiseEntropy = "seeded",
) -> DeviceContribution:
    """The device side of the privacy pipeline on one device's local update.

    :func:`~fedpers.privacy.dp.pipeline.privatize_device_update` clips the whole delta to
    ``C`` (no clipping when the round is not private) and adds the device's noise share,
    drawn from :func:`noise_generator`.

    Raises:
        NonFiniteUpdateError: when the delta is not finite.
        ConfigError: an unknown ``noise_entropy``.
    """
    private = privatize_device_update(
        update.delta,
        instructions.clip_norm if instructions.private else NO_CLIP,
        instructions.noise_share_std,
        noise_generator(noise_entropy, instructions, device_id),
        indicator_noise_share_std=instructions.indicator_noise_share_std,
    )
    return DeviceContribution(
        device_id=device_id,
        arrays=private.arrays,
        norm=private.norm,
        clipped=private.clipped,
        n_examples=update.n_examples,
        loss=update.loss,
        user_vector=update.user_vector,
        indicator=private.indicator,
    )
