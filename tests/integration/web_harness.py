"""What the browser test and ``scripts/web_screenshots.py`` share.

A run directory to serve (a saved global model registered in the run database, with its
public catalogue), a real ``fedpers serve --demo`` process on a free loopback port that is
always stopped, and headless Debian Chromium driven by playwright (never a download).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from serve_process import free_port, serve_process

from fedpers.client.global_model import GlobalModel
from fedpers.client.model import ModelConfig
from fedpers.server.checkpoint import sha256_file
from fedpers.server.rundb import RunDB

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "DESKTOP",
    "PHONE",
    "build_run",
    "chromium_missing",
    "free_port",
    "launch_chromium",
    "serve_demo",
    "wait_until",
]

CHROMIUM = os.environ.get("FEDPERS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def chromium_missing() -> bool:
    """Whether Debian's Chromium is absent (the test skips then, except under CI)."""
    return not (Path(CHROMIUM).is_file() or shutil.which("chromium"))


def launch_chromium(playwright: Any) -> Any:
    """Headless Chromium from Debian; playwright gives it a fresh profile folder."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium"),
        headless=True,
        args=CHROMIUM_ARGS,
    )


def build_run(
    run_dir: Path,
    *,
    titles: Sequence[str],
    genres: Sequence[Sequence[str]],
    item_vectors: np.ndarray,
    item_bias: np.ndarray,
    privacy: dict[str, Any],
    item_ids: Sequence[str] | None = None,
) -> Path:
    """A servable run directory: catalogue, privacy parameters, one registered model.

    Args:
        run_dir: the folder to create.
        titles: display title of each item.
        genres: genre names of each item (``genre:<name>`` attribute columns).
        item_vectors: ``[items, dim]`` item embeddings of the model.
        item_bias: ``[items]`` item biases (the popularity the API falls back on).
        privacy: the run's privacy parameters (``unit``, ``epsilon``, ``delta``, ...).
        item_ids: catalogue ids (default ``"1"`` ... ``"n"``, as ML-100K).
    """
    n, dim = item_vectors.shape
    ids = list(item_ids) if item_ids is not None else [str(i + 1) for i in range(n)]
    names = sorted({g for gs in genres for g in gs})
    features = np.zeros((n, len(names)), dtype=np.float32)
    for i, gs in enumerate(genres):
        for g in gs:
            features[i, names.index(g)] = 1.0
    devices = run_dir / "devices"
    devices.mkdir(parents=True)
    np.savez(
        devices / "catalogue.npz",
        item_ids=np.asarray(ids, dtype=str),
        item_features=features,
        item_feature_names=np.asarray([f"genre:{g}" for g in names], dtype=str),
        item_titles=np.asarray(list(titles), dtype=str),
    )
    # the API reads categories from the model's attributes: a zero attribute tower keeps
    # the item vectors as given
    model = GlobalModel.from_arrays(
        ModelConfig(n_items=n, dim=dim, n_item_features=len(names)),
        [
            item_vectors.astype(np.float32),
            item_bias.astype(np.float32),
            np.zeros((len(names), dim), dtype=np.float32),
        ],
        ids,
        item_features=features,
        meta={"round": 1, **{k: privacy[k] for k in ("epsilon", "delta") if k in privacy}},
    )
    path = model.save(run_dir / "models" / "round-0001.npz")
    with RunDB.open(run_dir) as db:
        db.write_config({"devices_dir": str(devices), "rounds": 1})
        db.write_privacy(privacy)
        db.register_model(1, path, sha256_file(path), {})
    return run_dir


@contextmanager
def serve_demo(
    run_dir: Path, log: Path, *, db: Path | None = None, timeout: float = 60.0
) -> Iterator[str]:
    """Run ``fedpers serve --run RUN_DIR --demo`` on a free loopback port; yield its base URL.

    Args:
        run_dir: the run to serve.
        log: where the server's output goes.
        db: the API database (default ``RUN_DIR/api.db``).
        timeout: seconds to wait for ``/readyz``.

    The process (and its process group) is stopped on exit, whatever happened.
    """
    extra = ["--host", "127.0.0.1", "--demo", *(["--db", str(db)] if db is not None else [])]
    with serve_process(run_dir, lambda _port: log, *extra, timeout=timeout) as (base, _, _):
        yield base


def wait_until(page: Any, predicate: str, arg: Any = None, *, timeout: float = 20.0) -> None:
    """Poll the JavaScript function ``predicate(arg)`` in ``page`` until it is truthy.

    playwright's ``wait_for_function`` evaluates its predicate with ``eval`` in the page,
    which the pages' Content-Security-Policy (rightly) forbids; ``page.evaluate`` is not
    subject to it.

    Raises:
        TimeoutError: still false after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not page.evaluate(predicate, arg):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout:.0f} s: {predicate}")
        time.sleep(0.05)
