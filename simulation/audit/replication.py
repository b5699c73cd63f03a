"""The audited run, read back and replicated: the data and federation the audit trains on.

The audit's own federations (the canary audit and the non-private reference) train on the
run's data, rebuilt from its devices folder (:func:`split_from_devices`), restricted to
the devices whose consent allows it (:func:`consenting_devices`, :func:`restrict_split`),
with the run's configuration replicated in process (:func:`fedsim_config_from_run`).
:func:`identify_dataset` recognises the dataset behind a run for its user attributes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from fedpers.client.devices_folder import DevicesFolder
from fedpers.client.training.local import LocalTrainConfig
from fedpers.privacy.consent import ConsentState, Purpose, may_train
from fedpers.privacy.errors import DataError
from fedpers.simulation.audit.sources import RunSources, finite_or_none
from fedpers.simulation.evaluation.protocol import LeaveOneOutSplit
from fedpers.simulation.federation.fedsim import FedSimConfig

__all__ = [
    "consenting_devices",
    "fedsim_config_from_run",
    "identify_dataset",
    "restrict_split",
    "split_from_devices",
]


def split_from_devices(devices_dir: Path) -> tuple[LeaveOneOutSplit, np.ndarray | None]:
    """Rebuild the run's leave-one-out split from its devices folder (every device's data).

    Uses the simulation's ``seed.npz`` (each device's history: its training interactions,
    plus its validation item when the run evaluates on test items, as ``population.json``
    says), ``holdout/`` (held-out and negative items) and ``catalogue.npz`` (item
    features).

    Raises:
        DataError: when the folder lacks those files.
    """
    folder = DevicesFolder(devices_dir)
    if not folder.seed.is_file() or not folder.holdout.is_dir():
        raise DataError(f"{devices_dir}: no seed.npz/holdout to rebuild the data split from")
    with np.load(folder.seed, allow_pickle=False) as seed:
        indptr = np.asarray(seed["indptr"], dtype=np.int64)
        items = np.asarray(seed["items"], dtype=np.int64)
        stamps = np.asarray(seed["timestamps"]).astype(np.int64)
    test, valid, negatives = (
        np.load(folder.holdout_file(split), allow_pickle=False).astype(np.int64)
        for split in ("test", "valid", "negatives")
    )
    target = "test"
    if folder.population.is_file():
        population = json.loads(folder.population.read_text(encoding="utf-8"))
        target = str(population.get("target", "test"))
    if target == "test":
        # the stores hold each device's history before its test item: the training
        # interactions followed by the validation item; drop that last entry again
        has_valid = valid >= 0
        last = indptr[1:] - 1
        ends_in_valid = has_valid & (np.diff(indptr) > 0)
        ends_in_valid &= items[np.where(ends_in_valid, last, 0)] == valid
        keep = np.ones(items.size, dtype=bool)
        keep[last[ends_in_valid]] = False
        counts = np.diff(indptr) - ends_in_valid
        items, stamps = items[keep], stamps[keep]
        indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    features: np.ndarray | None = None
    n_items = int(max(items.max(initial=-1), test.max(initial=-1), valid.max(initial=-1)) + 1)
    catalogue = folder.catalogue
    if catalogue.is_file():
        with np.load(catalogue, allow_pickle=False) as cat:
            n_items = len(cat["item_ids"])
            if "item_features" in cat.files:
                features = np.asarray(cat["item_features"], dtype=np.float32)
    n_users = int(indptr.size - 1)
    split = LeaveOneOutSplit.from_training(
        n_users,
        n_items,
        np.repeat(np.arange(n_users, dtype=np.int64), np.diff(indptr)),
        items,
        stamps,
        valid_items=valid,
        test_items=test,
        sampled_negatives=negatives,
        seed=0,
    )
    return split, features


def consenting_devices(devices_dir: Path, sources: RunSources) -> np.ndarray:
    """Which devices may be used to train the audit's own federations.

    A device counts when its store's current consent allows training (P10 and P1, no GPC)
    and it was not erased; a device without a store (lazy enrolment) counts when the
    population's seed file gives it P10 and no GPC.

    Returns:
        ``bool[n_devices]``.
    """
    with np.load(DevicesFolder(devices_dir).seed, allow_pickle=False) as seed:
        n = int(np.asarray(seed["indptr"]).size - 1)
        no_p10 = np.asarray(seed["no_p10"], dtype=bool) if "no_p10" in seed.files else None
        gpc = np.asarray(seed["gpc"], dtype=bool) if "gpc" in seed.files else None
    allowed = np.ones(n, dtype=bool)
    if no_p10 is not None:
        allowed &= ~no_p10
    if gpc is not None:
        allowed &= ~gpc
    for device, rec in sources.devices.items():
        if device >= n:
            continue
        if rec.erased_at is not None or rec.consent is None:
            allowed[device] = False
            continue
        granted, flag = rec.consent
        state = ConsentState(frozenset(Purpose(p) for p in granted), flag, 0.0)
        allowed[device] = may_train(state)
    return allowed


def restrict_split(split: LeaveOneOutSplit, allowed: np.ndarray) -> LeaveOneOutSplit:
    """The split in which devices outside ``allowed`` hold no data and are not evaluated.

    Such a device stays in the population (its update is zero, like a device that refused
    the round) so the sampling rate and the expected cohort are unchanged.
    """
    keep = np.asarray(allowed, dtype=bool)[split.train_users]
    off = ~np.asarray(allowed, dtype=bool)
    return LeaveOneOutSplit.from_training(
        split.n_users,
        split.n_items,
        split.train_users[keep],
        split.train_items[keep],
        split.train_timestamps[keep],
        valid_items=np.where(off, -1, split.valid_items),
        test_items=np.where(off, -1, split.test_items),
        sampled_negatives=split.sampled_negatives,
        seed=split.seed,
    )


def fedsim_config_from_run(
    config: dict[str, Any], privacy: dict[str, Any], rounds: int
) -> tuple[FedSimConfig, list[str]]:
    """The in-process federation that replicates a run's configuration, and what differs.

    Args:
        config: the run's ``config.json``.
        privacy: the run's privacy table.
        rounds: how many rounds to replicate (the rounds the run accounted).

    Returns:
        ``(config, notes)``: the notes say where the replication is approximate.
    """
    notes: list[str] = []
    sigma = finite_or_none(privacy.get("noise_multiplier")) or 0.0
    private = bool(privacy.get("user_level")) and sigma > 0
    clip = float(config.get("clip_norm") or 0.0) if private else 0.0
    if privacy.get("clipping") == "adaptive":
        notes.append(
            "adaptive clipping is replicated as fixed clipping at the initial clip norm with "
            "the combined noise multiplier"
        )
    eval_local = config.get("eval_local")
    fed = FedSimConfig(
        rounds=max(1, rounds),
        dim=int(config.get("dim") or 32),
        local=LocalTrainConfig.from_dict(dict(config.get("local") or {})),
        eval_local=LocalTrainConfig.from_dict(dict(eval_local)) if eval_local else None,
        server_optimizer=str(config.get("server_opt") or "fedavg"),
        server_lr=float(config.get("server_lr") or 1.0),
        optimizer_kwargs=dict(config.get("optimizer_kwargs") or {}),
        clip_norm=clip,
        noise_multiplier=sigma if private else 0.0,
        sample_rate=config.get("sample_rate"),
        clients_per_round=config.get("clients_per_round"),
        distributed_noise=private and config.get("secure_agg") == "he",
        use_item_features=int(config.get("n_item_features") or 0) > 0,
        seed=int(config.get("seed") or 0),
        init_std=float(config.get("init_std") or 0.1),
    )
    if fed.sample_rate is None and fed.clients_per_round is None:
        fed = dataclasses.replace(fed, sample_rate=1.0)
    return fed, notes


def identify_dataset(split: LeaveOneOutSplit, devices_dir: Path) -> tuple[Any, str]:
    """The dataset with user attributes the run was built from, when it can be recognised.

    The run configuration does not name its dataset, so the catalogue's item ids and the
    population size are matched against MovieLens-100K (the only bundled dataset with
    user attributes). Returns ``(data or None, how)``.
    """
    catalogue = DevicesFolder(devices_dir).catalogue
    if not catalogue.is_file() or split.n_users != 943 or split.n_items != 1682:
        return None, "the run's dataset has no user attributes the auditor can recognise"
    try:
        from fedpers.simulation.data import load_dataset

        data = load_dataset("ml-100k")
    except (DataError, OSError) as exc:
        return None, f"MovieLens-100K could not be loaded for user attributes ({exc})"
    with np.load(catalogue, allow_pickle=False) as cat:
        ids = [str(i) for i in cat["item_ids"]]
    if ids != [str(i) for i in data.item_ids]:
        return None, "the catalogue does not match MovieLens-100K"
    return data, "MovieLens-100K user attributes (recognised from the run's catalogue)"
