"""The run's public item catalogue as the API shows it: ids, titles and categories.

A simulated run keeps its public catalogue in ``RUN_DIR/devices/catalogue.npz`` (item ids,
item attributes, the attributes' names and display titles; the folder is named by
``devices_dir`` in ``RUN_DIR/config.json``). A category is an attribute named
``genre:<name>`` with a positive value (MovieLens-100K's genres). When titles or the file
are missing, the item id stands in for the title and items have no categories.

Nothing here is user data: the catalogue is what every device downloads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedpers.privacy.errors import DataError
from fedpers.server.run_dir import RunDirectory

__all__ = ["CATEGORY_PREFIX", "Catalogue", "catalogue_file", "load_catalogue"]

CATEGORY_PREFIX = "genre:"


@dataclass(frozen=True)
class Catalogue:
    """Titles and categories of the model's items, in model order.

    Attributes:
        item_ids: catalogue id of each model index.
        titles: display title of each item (its id when the run has no titles).
        categories: category names of each item.
        category_masks: per category name, ``bool[items]``.
    """

    item_ids: tuple[str, ...]
    titles: tuple[str, ...]
    categories: tuple[tuple[str, ...], ...]
    category_masks: Mapping[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        item_ids: Sequence[str],
        *,
        titles: Sequence[str] | None = None,
        item_features: np.ndarray | None = None,
        feature_names: Sequence[str] = (),
    ) -> Catalogue:
        """The catalogue of ``item_ids``, categories from ``genre:*`` attribute columns.

        Raises:
            DataError: titles or features do not have one row per item.
        """
        n = len(item_ids)
        if titles is not None and len(titles) != n:
            raise DataError(f"catalogue has {len(titles)} titles for {n} items")
        masks: dict[str, np.ndarray] = {}
        if item_features is not None and feature_names:
            if item_features.shape[0] != n or item_features.shape[1] != len(feature_names):
                raise DataError(
                    f"item features of shape {item_features.shape} do not match {n} items "
                    f"and {len(feature_names)} attribute names"
                )
            for j, name in enumerate(feature_names):
                if name.startswith(CATEGORY_PREFIX):
                    masks[name[len(CATEGORY_PREFIX) :]] = np.asarray(item_features[:, j] > 0)
        per_item: list[list[str]] = [[] for _ in range(n)]
        for name, mask in masks.items():
            for i in np.flatnonzero(mask):
                per_item[int(i)].append(name)
        return cls(
            item_ids=tuple(item_ids),
            titles=tuple(titles) if titles is not None else tuple(item_ids),
            categories=tuple(tuple(c) for c in per_item),
            category_masks=masks,
        )

    @property
    def category_names(self) -> list[str]:
        """Every category, sorted."""
        return sorted(self.category_masks)

    def category_mask(self, names: Sequence[str]) -> np.ndarray:
        """``bool[items]``: items in any of ``names``.

        Raises:
            DataError: a name is not a category of this catalogue (the message lists them).
        """
        unknown = [n for n in names if n not in self.category_masks]
        if unknown:
            known = ", ".join(self.category_names) or "none"
            raise DataError(f"unknown categories {unknown}; this catalogue has: {known}")
        out = np.zeros(len(self.item_ids), dtype=bool)
        for name in names:
            out |= self.category_masks[name]
        return out

    def entry(self, i: int) -> dict[str, Any]:
        """JSON-ready ``{"item", "title", "categories"}`` of model index ``i``."""
        return {
            "item": self.item_ids[i],
            "title": self.titles[i],
            "categories": list(self.categories[i]),
        }


def catalogue_file(run_dir: Path) -> Path | None:
    """Where the run's public catalogue lives, or ``None``.

    ``devices_dir`` of ``config.json`` first, then ``RUN_DIR/devices`` (a moved run).
    """
    run = RunDirectory(run_dir)
    try:
        configured = run.read_config().get("devices_dir")
    except DataError:
        configured = None
    folders = run.devices_candidates(configured if isinstance(configured, str) else None)
    return next((f.catalogue for f in folders if f.catalogue.is_file()), None)


def load_catalogue(
    run_dir: Path, item_ids: Sequence[str], item_features: np.ndarray | None
) -> Catalogue:
    """The catalogue of a model's items, with the run's titles and attribute names.

    Titles and names are used only when the file's item ids are the model's; otherwise
    (or without a file) ids stand in for titles.

    Args:
        run_dir: the run directory.
        item_ids: the model's catalogue.
        item_features: the model's item attributes, if any (else the file's are used).
    """
    path = catalogue_file(run_dir)
    titles: list[str] | None = None
    names: list[str] = []
    features = item_features
    if path is not None:
        try:
            with np.load(path, allow_pickle=False) as data:
                ids = [str(x) for x in data["item_ids"]] if "item_ids" in data else []
                if ids == list(item_ids):
                    if "item_titles" in data:
                        titles = [str(x) for x in data["item_titles"]]
                    if "item_feature_names" in data:
                        names = [str(x) for x in data["item_feature_names"]]
                    if features is None and "item_features" in data:
                        # A model without the attribute tower: categories still come from
                        # the public catalogue's attributes.
                        features = np.asarray(data["item_features"], dtype=np.float32)
        except (OSError, ValueError, KeyError):
            titles, names, features = None, [], item_features
    if features is None or features.ndim != 2 or len(names) != features.shape[1]:
        names = []
    return Catalogue.build(item_ids, titles=titles, item_features=features, feature_names=names)
