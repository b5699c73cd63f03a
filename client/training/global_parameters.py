"""The global parameters a round starts from: the shared arrays, their shape, the item attributes.

Not the published :class:`~fedpers.client.global_model.GlobalModel` (a saved model with its
catalogue): this is what local training reads of it for one round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedpers.client.model import ModelConfig

__all__ = ["GlobalParameters"]


@dataclass(frozen=True)
class GlobalParameters:
    """The global shared parameters every device of a round trains or is evaluated from.

    Shapes are checked where the model is used
    (:func:`~fedpers.client.training.local.train_devices` and its siblings).

    Attributes:
        arrays: the global shared parameters in wire order (item embeddings, item bias
            and, with an attribute tower, the tower; see :mod:`fedpers.client.model`).
        config: the shape of the model.
        item_features: ``[items, features]`` public item attributes when the model has an
            attribute tower, else ``None``.
    """

    arrays: list[np.ndarray]
    config: ModelConfig
    item_features: np.ndarray | None
