"""A tiny run directory to serve: a saved GlobalModel in the run registry, no federation.

40 items in two clusters (items 0-19 along axis 0, 20-39 along axis 1), attributes
``genre:Comedy`` (items 0-9), ``genre:Drama`` (items 20-29) and ``year``, titles
``"Title iN"``, item ``i39`` cold (new), user-level DP privacy parameters, and model
version 1 (:func:`build_tiny_run`); :func:`publish_model` registers a new version.

A helper module with a name of its own (not ``conftest``): every folder's ``conftest``
is a module called ``conftest``, so importing names from one is ambiguous.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedpers.client.global_model import GlobalModel
from fedpers.client.model import ModelConfig
from fedpers.server.checkpoint import sha256_file
from fedpers.server.rundb import RunDB

N_ITEMS = 40
DIM = 4
ITEMS = [f"i{k}" for k in range(N_ITEMS)]
FEATURE_NAMES = ["genre:Comedy", "genre:Drama", "year"]

Publish = Callable[[Path, int, float], GlobalModel]


def _features() -> np.ndarray:
    feats = np.zeros((N_ITEMS, len(FEATURE_NAMES)), dtype=np.float32)
    feats[:10, 0] = 1.0
    feats[20:30, 1] = 1.0
    feats[:, 2] = np.linspace(0.0, 1.0, N_ITEMS)
    return feats


def tiny_model(round_: int = 1, shift: float = 0.0) -> GlobalModel:
    emb = np.zeros((N_ITEMS, DIM), dtype=np.float32)
    emb[:20, 0] = 1.0 + np.linspace(0, 0.1, 20)
    emb[20:, 1] = 1.0 + np.linspace(0, 0.1, 20)
    emb[:, 2] = shift
    bias = np.linspace(0.0, 0.5, N_ITEMS).astype(np.float32)
    tower = np.zeros((len(FEATURE_NAMES), DIM), dtype=np.float32)
    tower[0, 0] = 0.2
    tower[1, 1] = 0.2
    cold = np.zeros(N_ITEMS, dtype=bool)
    cold[39] = True
    return GlobalModel.from_arrays(
        ModelConfig(n_items=N_ITEMS, dim=DIM, n_item_features=len(FEATURE_NAMES)),
        [emb, bias, tower],
        ITEMS,
        item_features=_features(),
        cold_items=cold,
        meta={"round": round_, "epsilon": 1.5 * round_, "delta": 1e-4},
    )


def publish_model(run_dir: Path, round_: int, shift: float = 0.0) -> GlobalModel:
    model = tiny_model(round_, shift)
    path = model.save(run_dir / "models" / f"round-{round_:04d}.npz")
    with RunDB.open(run_dir) as db:
        db.register_model(round_, path, sha256_file(path), {"hr10_sampled": 0.1 * round_})
    return model


def build_tiny_run(run_dir: Path) -> Path:
    """Write the tiny run (catalogue, config, privacy, model version 1) into ``run_dir``."""
    devices = run_dir / "devices"
    devices.mkdir(parents=True)
    np.savez(
        devices / "catalogue.npz",
        item_ids=np.asarray(ITEMS, dtype=str),
        item_features=_features(),
        item_feature_names=np.asarray(FEATURE_NAMES, dtype=str),
        item_titles=np.asarray([f"Title {i}" for i in ITEMS], dtype=str),
    )
    with RunDB.open(run_dir) as db:
        db.write_config({"devices_dir": str(devices), "rounds": 1})
        db.write_privacy(
            {
                "unit": "user",
                "mechanism": "gaussian",
                "accountant": "rdp",
                "delta": 1e-4,
                "epsilon": 1.5,
                "label": "user-level DP (DP-FedAvg)",
            }
        )
    publish_model(run_dir, 1)
    return run_dir
