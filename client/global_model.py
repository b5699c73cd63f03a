"""The published global model as a device holds it: item vectors, biases and catalogue.

A device receives the shared item side from the coordinator (a registry entry or a
Flower round) and keeps it read-only. Item vectors are precomputed once
(``E[i] + W a_i``), so serving is one matrix-vector product per request.

The file format is a single ``.npz`` with the shared arrays in wire order
(``shared_0``, ``shared_1``, ...), the catalogue (``item_ids``), optional item
features, and a JSON header (``meta``) holding the model config and provenance.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedpers.client.model_layout import ModelConfig, item_vectors, shared_layout
from fedpers.client.private_file import private_file
from fedpers.privacy.errors import ConfigError, StoreError

__all__ = ["GLOBAL_MODEL_FORMAT", "GlobalModel"]

GLOBAL_MODEL_FORMAT = "fedpers-global-model/1"


@dataclass(frozen=True)
class GlobalModel:
    """A read-only global model with its catalogue.

    Attributes:
        config: the model family's shape.
        arrays: shared parameters in wire order (see :func:`fedpers.client.model.shared_arrays`).
        item_ids: catalogue item id of each model index.
        item_features: attribute matrix when the model has an attribute tower.
        item_vectors: ``float32[items, dim]`` precomputed ``E[i] + W a_i``.
        item_bias: ``float32[items]``.
        cold_items: ``bool[items]``: items the catalogue owner marks as new (no
            interactions yet; public catalogue information, not user data). Their
            embedding rows carry no signal, so they are scored from their attributes
            alone: vector ``W a_i`` (zero without a tower) and the median bias of the
            other items. All ``False`` when unknown.
        meta: provenance (run id, round, epsilon, ...), JSON-able.
    """

    config: ModelConfig
    arrays: list[np.ndarray]
    item_ids: list[str]
    item_features: np.ndarray | None
    item_vectors: np.ndarray
    item_bias: np.ndarray
    cold_items: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_arrays(
        cls,
        config: ModelConfig,
        arrays: Sequence[np.ndarray],
        item_ids: Sequence[str],
        *,
        item_features: np.ndarray | None = None,
        cold_items: np.ndarray | None = None,
        meta: dict[str, Any] | None = None,
    ) -> GlobalModel:
        """Build a global model from shared arrays (validated against ``config``).

        Raises:
            ConfigError: when shapes, catalogue length or features do not match.
        """
        if len(item_ids) != config.n_items:
            raise ConfigError(f"catalogue has {len(item_ids)} items, model has {config.n_items}")
        if len(set(item_ids)) != len(item_ids):
            raise ConfigError("catalogue item ids must be unique")
        vectors = item_vectors(config, arrays, item_features)  # numpy: serving needs no torch
        bias = np.array(arrays[1], dtype=np.float32)
        cold = (
            np.zeros(config.n_items, dtype=bool)
            if cold_items is None
            else np.asarray(cold_items, dtype=bool)
        )
        if cold.shape != (config.n_items,):
            raise ConfigError(f"cold_items has shape {cold.shape}, expected ({config.n_items},)")
        if cold.any():
            tower = arrays[2] if config.n_item_features else None
            vectors, bias = _score_cold_from_attributes(item_features, tower, vectors, bias, cold)
        return cls(
            config=config,
            arrays=[np.asarray(a, dtype=np.float32) for a in arrays],
            item_ids=list(item_ids),
            item_features=item_features,
            item_vectors=vectors,
            item_bias=bias,
            cold_items=cold,
            meta=dict(meta or {}),
        )

    @property
    def index(self) -> dict[str, int]:
        """Map from catalogue item id to model index."""
        return {item: i for i, item in enumerate(self.item_ids)}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model atomically to ``path`` (``.npz``); returns the path."""
        target = Path(path)
        header = {
            "format": GLOBAL_MODEL_FORMAT,
            "config": {
                "n_items": self.config.n_items,
                "dim": self.config.dim,
                "n_item_features": self.config.n_item_features,
                "init_std": self.config.init_std,
            },
            "meta": self.meta,
        }
        payload: dict[str, np.ndarray] = {
            f"shared_{i}": np.asarray(a, dtype=np.float32) for i, a in enumerate(self.arrays)
        }
        payload["item_ids"] = np.asarray(self.item_ids, dtype=np.str_)
        payload["cold_items"] = self.cold_items
        payload["meta"] = np.asarray(json.dumps(header))
        if self.item_features is not None:
            payload["item_features"] = np.asarray(self.item_features, dtype=np.float32)
        target.parent.mkdir(parents=True, exist_ok=True)
        with private_file(target, "wb", suffix=".npz") as fh:
            np.savez(fh, **payload)  # type: ignore[arg-type]
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GlobalModel:
        """Read a model written by :meth:`save`.

        Raises:
            StoreError: when the file is missing, unreadable or of another format.
        """
        source = Path(path)
        if not source.is_file():
            raise StoreError(f"{source}: no such global model file")
        try:
            with np.load(source, allow_pickle=False) as data:
                header = json.loads(str(data["meta"]))
                if header.get("format") != GLOBAL_MODEL_FORMAT:
                    raise StoreError(
                        f"{source}: format {header.get('format')!r}, "
                        f"expected {GLOBAL_MODEL_FORMAT!r}"
                    )
                cfg = ModelConfig(**header["config"])
                n_arrays = len(shared_layout(cfg))
                arrays = [np.array(data[f"shared_{i}"]) for i in range(n_arrays)]
                features = np.array(data["item_features"]) if "item_features" in data else None
                item_ids = [str(x) for x in data["item_ids"]]
                cold = np.array(data["cold_items"])
        except (OSError, ValueError, KeyError) as exc:
            raise StoreError(f"{source}: not a readable fedpers global model ({exc})") from exc
        return cls.from_arrays(
            cfg,
            arrays,
            item_ids,
            item_features=features,
            cold_items=cold,
            meta=header.get("meta", {}),
        )


def _score_cold_from_attributes(
    item_features: np.ndarray | None,
    tower: np.ndarray | None,
    vectors: np.ndarray,
    bias: np.ndarray,
    cold: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Replace cold items' vectors by ``W a_i`` and their bias by the warm items' median."""
    vectors = vectors.copy()
    bias = bias.copy()
    if tower is not None and item_features is not None:
        feats = np.asarray(item_features, dtype=np.float32)[cold]
        vectors[cold] = feats @ np.asarray(tower, dtype=np.float32)
    else:
        vectors[cold] = 0.0
    warm = ~cold
    bias[cold] = float(np.median(bias[warm])) if warm.any() else 0.0
    return vectors, bias
