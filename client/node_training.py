"""Train a node's ready devices and keep each new private user vector on its device.

:func:`train_cohort` trains every device at once
(:func:`~fedpers.client.device_round.run_device_rounds`: local training, clipping, noise
share, all per device, with per-device random streams); :func:`train_record_level` runs
record-level DP-SGD per device through the same privacy pipeline and appends the round
to the device's ledger; :func:`persist` saves each new user vector in its own store
(never sent).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedpers.client.device_round import (
    DeviceContribution,
    NoiseEntropy,
    RoundInstructions,
    privatize,
    run_device_rounds,
    training_seed,
)
from fedpers.client.hosted_devices import HostedDevice
from fedpers.client.protocol import DeviceStatus
from fedpers.client.store import LedgerEntry
from fedpers.client.training.cohort import Cohort
from fedpers.client.training.global_parameters import GlobalParameters
from fedpers.privacy.dp.accounting import record_level_epsilon
from fedpers.privacy.errors import BudgetExhaustedError, ConsentError, FedpersError

__all__ = ["GlobalRound", "hosted_cohort", "persist", "train_cohort", "train_record_level"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GlobalRound:
    """What every device of a round starts from, as the coordinator's message gives it.

    Attributes:
        model: the round's global parameters (arrays, model shape, item attributes).
        instructions: the round's instructions.
    """

    model: GlobalParameters
    instructions: RoundInstructions


def hosted_cohort(devices: Sequence[HostedDevice]) -> Cohort:
    """The node's hosted devices as a :class:`~fedpers.client.training.cohort.Cohort`."""
    return Cohort(
        [d.device_id for d in devices],
        [d.items for d in devices],
        np.stack([d.user_vector for d in devices]),
    )


def train_cohort(
    devices: Sequence[HostedDevice], round_: GlobalRound, noise_entropy: NoiseEntropy = "seeded"
) -> tuple[list[DeviceContribution], dict[int, DeviceStatus]]:
    """Train the cohort at once; when that fails, one by one to isolate the failures.

    ``noise_entropy`` is where the noise shares come from
    (:func:`~fedpers.client.device_round.noise_generator`).
    """
    if not devices:
        return [], {}
    model, instructions = round_.model, round_.instructions
    try:
        contributions = run_device_rounds(
            model, hosted_cohort(devices), instructions, noise_entropy
        )
        return contributions, {}
    except FedpersError as exc:
        logger.warning("cohort training failed (%s); retrying device by device", exc)
    contributions = []
    failed: dict[int, DeviceStatus] = {}
    for d in devices:
        try:
            contributions.extend(
                run_device_rounds(model, hosted_cohort([d]), instructions, noise_entropy)
            )
        except FedpersError as exc:
            logger.warning("device %s: local training failed: %s", d.device_id, exc)
            failed[d.device_id] = DeviceStatus.FAILED
    return contributions, failed


def train_record_level(
    devices: Sequence[HostedDevice],
    round_: GlobalRound,
    settings: dict[str, Any],
    budget: float | None,
    noise_entropy: NoiseEntropy = "seeded",
) -> tuple[list[DeviceContribution], dict[int, DeviceStatus], dict[int, float]]:
    """Record-level DP-SGD on each device, then the same privacy pipeline as the others.

    Per device: local training is :func:`~fedpers.client.training.dpsgd.dp_sgd_local_update`
    (its seed from ``training_seed``), then
    :func:`~fedpers.client.device_round.privatize` clips the whole update and adds the
    noise share, exactly as :func:`~fedpers.client.device_round.run_device_rounds` does
    after non-private training. The round is appended to the device's ledger (composed
    record-level epsilon); a device whose ledger already holds this round, or whose next
    round would exceed its budget, does not train.

    Returns:
        The contributions, the devices that did not train and why, and each trained
        device's composed record-level epsilon.
    """
    from fedpers.client.training.dpsgd import DPSGDConfig, dp_sgd_local_update, round_entry

    values = dict(settings)
    if budget is not None:
        values["epsilon_budget"] = budget
    config = DPSGDConfig(**values)
    instructions = round_.instructions
    seed, rnd = instructions.seed, instructions.server_round
    out: list[DeviceContribution] = []
    statuses: dict[int, DeviceStatus] = {}
    spent: dict[int, float] = {}
    for d in devices:
        ledger = d.store.ledger()
        if any(e.round == rnd for e in ledger):
            statuses[d.device_id] = DeviceStatus.ROUND_ALREADY_SPENT
            continue
        history = [(e.noise_multiplier, e.sample_rate, e.steps) for e in ledger]
        try:
            update = dp_sgd_local_update(
                round_.model.arrays,
                round_.model.config,
                round_.model.item_features,
                d.user_vector,
                d.items,
                config,
                training_seed(seed, rnd, d.device_id),
                history,
            )
            contribution = privatize(update, d.device_id, instructions, noise_entropy)
        except BudgetExhaustedError:
            statuses[d.device_id] = DeviceStatus.BUDGET_SPENT
            continue
        except FedpersError as exc:
            logger.warning("device %s: DP-SGD round failed: %s", d.device_id, exc)
            statuses[d.device_id] = DeviceStatus.FAILED
            continue
        entry = round_entry(config, int(d.items.size))
        total = record_level_epsilon([*history, entry], config.delta)
        d.store.append_ledger(
            LedgerEntry(
                round=rnd,
                epsilon=total,
                delta=config.delta,
                noise_multiplier=entry.noise_multiplier,
                sample_rate=entry.sample_rate,
                steps=entry.steps,
                accountant="rdp",
                created_at=time.time(),
            )
        )
        spent[d.device_id] = total
        out.append(contribution)
    return out, statuses, spent


def persist(devices: Sequence[HostedDevice], contributions: Sequence[DeviceContribution]) -> None:
    """Save each new private user vector in its own store (never sent)."""
    by_id = {d.device_id: d for d in devices}
    for c in contributions:
        device = by_id[int(c.device_id)]
        try:
            device.store.save_user_vector(c.user_vector)
        except ConsentError:
            # P10 without P5: the device trains but keeps no profile.
            logger.info("device %s: no P5 consent, user vector not kept", c.device_id)
