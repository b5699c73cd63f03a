"""The small in-process federation that the coordinator and ClientApp tests run.

A synthetic data set and its leave-one-out split (:func:`synthetic_split`), its devices
prepared in the run folder (``prepare_devices``), the run's :class:`FederationConfig`
over every one of them (:func:`federation_config`) and the real ClientApp behind a
:class:`~local_grid.LocalGrid` (:func:`client_grid`). Tests import it by name, like
``local_grid`` (``tests/`` is on ``sys.path``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flwr.clientapp.typing import Mod
from local_grid import Intercept, LocalGrid

from fedpers.client.app import ClientSettings, make_client_app
from fedpers.server.config import FederationConfig
from fedpers.server.dp_wrapper import UserDPConfig
from fedpers.simulation.data import SyntheticConfig, load_dataset
from fedpers.simulation.data.interactions import InteractionData
from fedpers.simulation.evaluation.protocol import LeaveOneOutSplit, leave_one_out
from fedpers.simulation.federation.population import DevicePopulation

__all__ = ["client_grid", "distributed_noise", "federation_config", "synthetic_split"]

SMALL_LOCAL: dict[str, Any] = {"epochs": 1, "user_warmup": 2}
"""Local training of the small federation: one epoch after two user-vector warm-up steps."""


def synthetic_split(
    n_users: int, n_items: int, seed: int
) -> tuple[InteractionData, LeaveOneOutSplit]:
    """A synthetic data set and its leave-one-out split, both drawn from ``seed``."""
    data = load_dataset(
        "synthetic", synthetic=SyntheticConfig(n_users=n_users, n_items=n_items, seed=seed)
    )
    return data, leave_one_out(data, seed=seed)


def federation_config(
    run_dir: Path, population: DevicePopulation, **fields: Any
) -> FederationConfig:
    """The run's config over every device of ``population``, its privacy resolved.

    Args:
        run_dir: the run folder.
        population: the devices (their folder, number and catalogue size).
        fields: the run's other fields (``rounds`` at least); they override the small
            federation's defaults: 8 dimensions, :data:`SMALL_LOCAL` training and, in
            node mode, one node per device.

    Returns:
        ``FederationConfig(...).resolve_privacy()``.
    """
    defaults: dict[str, Any] = {
        "run_dir": str(run_dir),
        "devices_dir": str(population.devices_dir),
        "num_devices": population.num_devices,
        "n_items": population.n_items,
        "dim": 8,
        "local": dict(SMALL_LOCAL),
    }
    if fields.get("mode") == "node":
        defaults["num_nodes"] = population.num_devices
    return FederationConfig(**{**defaults, **fields}).resolve_privacy()


def client_grid(
    config: FederationConfig,
    *,
    seed: int,
    settings: ClientSettings | None = None,
    intercept: Intercept | None = None,
    mods: Sequence[Mod] = (),
) -> LocalGrid:
    """The real ClientApp behind a :class:`LocalGrid` of ``config.num_nodes`` nodes.

    Args:
        config: the run (its devices folder, mode and number of nodes).
        seed: the grid's seed.
        settings: the nodes' settings; by default the run's devices folder and mode.
        intercept: what the coordinator gets instead of each reply (see ``LocalGrid``).
        mods: the ClientApp's mods.
    """
    settings = settings or ClientSettings(devices_dir=config.devices_dir, mode=config.mode)
    app = make_client_app(settings, mods=mods)
    return LocalGrid(app, config.num_nodes, seed=seed, intercept=intercept)


@contextmanager
def distributed_noise() -> Iterator[None]:
    """Within it, user-level DP places its noise as under secure aggregation, unencrypted.

    Every device adds its share of the noise and the coordinator sums the updates in
    plaintext: the secure-aggregation pipeline without the encryption.
    """

    def from_run(config: FederationConfig) -> UserDPConfig:
        return dataclasses.replace(original(config), distributed_noise=True)

    original = UserDPConfig.from_run
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(UserDPConfig, "from_run", staticmethod(from_run))
        yield
