"""The model family's shape and wire layout, in numpy only (no torch import).

Serving (``fedpers client recommend``, the API) needs the shared arrays' names, shapes
and the item vectors ``v_i = E[i] + W a_i``, not the trainable torch module; keeping them
here lets it start without loading torch. :mod:`fedpers.client.model` re-exports
:class:`ModelConfig` and builds :class:`~fedpers.client.model.ItemSide` on this layout.

Example:
    >>> cfg = ModelConfig(n_items=3, dim=2)
    >>> shared_layout(cfg)
    (('item_embedding', (3, 2)), ('item_bias', (3,)))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedpers.privacy.errors import ConfigError

__all__ = ["ModelConfig", "check_shared_arrays", "item_vectors", "shared_layout"]


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the model family.

    Attributes:
        n_items: number of items in the catalogue.
        dim: embedding dimension shared by items and users.
        n_item_features: width of the item attribute vectors; 0 disables the tower.
        init_std: standard deviation of the item embedding initialisation.
    """

    n_items: int
    dim: int = 32
    n_item_features: int = 0
    init_std: float = 0.1

    def __post_init__(self) -> None:
        if self.n_items <= 0:
            raise ConfigError(f"n_items must be positive, got {self.n_items}")
        if self.dim <= 0:
            raise ConfigError(f"dim must be positive, got {self.dim}")
        if self.n_item_features < 0:
            raise ConfigError(f"n_item_features must be >= 0, got {self.n_item_features}")


def shared_layout(config: ModelConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The shared parameters' names and shapes, in wire order."""
    layout: tuple[tuple[str, tuple[int, ...]], ...] = (
        ("item_embedding", (config.n_items, config.dim)),
        ("item_bias", (config.n_items,)),
    )
    if config.n_item_features:
        layout = (*layout, ("feature_tower", (config.n_item_features, config.dim)))
    return layout


def check_shared_arrays(config: ModelConfig, arrays: Sequence[np.ndarray]) -> None:
    """Check the number, shapes and dtype kind of ``arrays`` against ``config``.

    Raises:
        ConfigError: on a mismatch (the message names the array).
    """
    layout = shared_layout(config)
    if len(arrays) != len(layout):
        raise ConfigError(f"expected {len(layout)} shared arrays, got {len(arrays)}")
    for (name, shape), array in zip(layout, arrays, strict=True):
        if tuple(array.shape) != shape:
            raise ConfigError(
                f"shared array {name!r} has shape {tuple(array.shape)}, expected {shape}"
            )
        if not np.issubdtype(array.dtype, np.floating):
            raise ConfigError(f"shared array {name!r} has dtype {array.dtype}, not float")


def item_vectors(
    config: ModelConfig, arrays: Sequence[np.ndarray], item_features: np.ndarray | None
) -> np.ndarray:
    """``float32[items, dim]``: ``E[i] + W a_i`` (``E`` alone without a tower).

    Raises:
        ConfigError: when the arrays or the features do not match ``config``.
    """
    check_shared_arrays(config, arrays)
    vectors = np.array(arrays[0], dtype=np.float32)
    if config.n_item_features:
        if item_features is None:
            raise ConfigError("n_item_features > 0 needs the item_features matrix")
        feats = np.asarray(item_features, dtype=np.float32)
        if feats.shape != (config.n_items, config.n_item_features):
            raise ConfigError(
                f"item_features has shape {feats.shape}, expected "
                f"({config.n_items}, {config.n_item_features})"
            )
        vectors += feats @ np.asarray(arrays[2], dtype=np.float32)
    return vectors
