"""A cohort: the devices that train, or are evaluated, together in one call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Cohort"]


@dataclass(frozen=True)
class Cohort:
    """Devices that train or are evaluated together, device ``i`` in row ``i`` of each field.

    A Flower node's hosted devices, a chunk of a simulated round, or every device of a
    simulated federation (:meth:`select` picks an evaluation batch). Lengths and shapes
    are checked where the cohort is used
    (:func:`~fedpers.client.training.local.train_devices` and its siblings).

    Attributes:
        device_ids: per device, its stable identifier (it derives the device's random
            streams: :func:`~fedpers.client.device_round.training_seed`,
            :func:`~fedpers.client.device_round.evaluation_seed`).
        items: per device, the catalogue indices of its positives, in time order.
        user_vectors: ``[m, dim]`` the devices' private user vectors (never modified).
    """

    device_ids: Sequence[int | str]
    items: Sequence[np.ndarray]
    user_vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.items)

    def select(self, rows: Sequence[int] | np.ndarray) -> Cohort:
        """The devices at positions ``rows``, in that order."""
        rows = [int(r) for r in rows]
        return Cohort(
            [self.device_ids[r] for r in rows],
            [self.items[r] for r in rows],
            self.user_vectors[rows],
        )
