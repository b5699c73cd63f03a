"""The fedpers model family: a shared item side and a private user side.

The score of item ``i`` for a user with private vector ``u`` is::

    score(u, i) = u . v_i + b_i,   v_i = E[i] + W a_i   (W a_i only with an attribute tower)

``E`` (item embeddings), ``b`` (item bias) and ``W`` (attribute tower) form the *shared*
item side that the federation trains and publishes. Item attributes ``a_i`` are public
catalogue data (genres, year), stored as a buffer, never trained and never sent. The user
vector ``u`` is *private*: it lives on the device and never leaves it.

Shared parameters travel as a list of float32 arrays in the fixed order of
:meth:`ItemSide.shared_names`; :func:`shared_arrays` and :func:`load_shared_arrays`
are the only (de)serialisers, so every wire format uses the same order and shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from fedpers.client.model_layout import ModelConfig, shared_layout
from fedpers.privacy.errors import ConfigError

__all__ = [
    "ItemSide",
    "ModelConfig",
    "load_shared_arrays",
    "score_items",
    "shared_arrays",
]


def score_items(
    user_vectors: torch.Tensor, item_vectors: torch.Tensor, item_bias: torch.Tensor
) -> torch.Tensor:
    """Score every item for every user: ``user_vectors @ item_vectors.T + item_bias``.

    Args:
        user_vectors: ``[users, dim]``.
        item_vectors: ``[items, dim]``.
        item_bias: ``[items]``.

    Returns:
        ``[users, items]`` scores.
    """
    return user_vectors @ item_vectors.T + item_bias


class ItemSide(nn.Module):
    """The shared item side: embeddings, bias and an optional attribute tower.

    Example:
        >>> side = ItemSide(ModelConfig(n_items=5, dim=4))
        >>> side.item_vectors().shape
        torch.Size([5, 4])
    """

    def __init__(
        self,
        config: ModelConfig,
        item_features: np.ndarray | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.config = config
        generator = torch.Generator().manual_seed(seed)
        self.item_embedding = nn.Parameter(
            torch.randn(config.n_items, config.dim, generator=generator) * config.init_std
        )
        self.item_bias = nn.Parameter(torch.zeros(config.n_items))
        self.feature_tower: nn.Parameter | None = None
        if config.n_item_features:
            if item_features is None:
                raise ConfigError("n_item_features > 0 needs the item_features matrix")
            if item_features.shape != (config.n_items, config.n_item_features):
                raise ConfigError(
                    f"item_features has shape {item_features.shape}, expected "
                    f"({config.n_items}, {config.n_item_features})"
                )
            self.feature_tower = nn.Parameter(torch.zeros(config.n_item_features, config.dim))
            self.register_buffer(
                "item_features", torch.as_tensor(item_features, dtype=torch.float32)
            )

    @staticmethod
    def shared_names(config: ModelConfig) -> tuple[str, ...]:
        """The names of the shared parameters, in wire order."""
        return tuple(name for name, _ in shared_layout(config))

    def shared_shapes(self) -> list[tuple[int, ...]]:
        """The shapes of the shared parameters, in wire order."""
        return [tuple(getattr(self, n).shape) for n in self.shared_names(self.config)]

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Item vectors ``E[i] + W a_i`` for ``items`` (all items when ``None``)."""
        emb = self.item_embedding if items is None else self.item_embedding[items]
        if self.feature_tower is None:
            return emb
        feats: torch.Tensor = self.item_features  # type: ignore[assignment]
        if items is not None:
            feats = feats[items]
        return emb + feats @ self.feature_tower

    def biases(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Item biases for ``items`` (all items when ``None``)."""
        return self.item_bias if items is None else self.item_bias[items]

    def forward(self, user_vectors: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Score ``items[b, j]`` for ``user_vectors[b]``; ``items`` is ``[B]`` or ``[B, J]``."""
        vecs = self.item_vectors(items)
        dots = (
            (vecs * user_vectors.unsqueeze(-2)).sum(-1)
            if items.dim() == 2
            else (vecs * user_vectors).sum(-1)
        )
        return dots + self.biases(items)


def shared_arrays(side: ItemSide) -> list[np.ndarray]:
    """The shared parameters as float32 numpy arrays in wire order (copies)."""
    return [
        getattr(side, n).detach().cpu().numpy().astype(np.float32, copy=True)
        for n in side.shared_names(side.config)
    ]


def load_shared_arrays(side: ItemSide, arrays: Sequence[np.ndarray]) -> None:
    """Overwrite the shared parameters of ``side`` with ``arrays`` (wire order).

    Raises:
        ConfigError: when the number, shape or dtype kind of the arrays does not match.
    """
    names = side.shared_names(side.config)
    if len(arrays) != len(names):
        raise ConfigError(f"expected {len(names)} shared arrays, got {len(arrays)}")
    with torch.no_grad():
        for name, array in zip(names, arrays, strict=True):
            param = getattr(side, name)
            if tuple(array.shape) != tuple(param.shape):
                raise ConfigError(
                    f"shared array {name!r} has shape {tuple(array.shape)}, "
                    f"expected {tuple(param.shape)}"
                )
            if not np.issubdtype(array.dtype, np.floating):
                raise ConfigError(f"shared array {name!r} has dtype {array.dtype}, not float")
            param.copy_(torch.as_tensor(np.asarray(array, dtype=np.float32)))
