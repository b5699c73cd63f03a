"""``GET /v1/items``: the served model's public catalogue (serve scope)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query

from fedpers.server.api.deps import ServeKey
from fedpers.server.api.serving_deps import ServedDep
from fedpers.server.api.serving_schemas import ItemPage, ItemPublic

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["items"])


@router.get("/items", response_model=ItemPage)
def get_items(
    key: ServeKey,
    served: ServedDep,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    category: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
) -> ItemPage:
    """Items with titles and categories, in model order, optionally of one category."""
    catalogue = served.catalogue
    if category is None:
        indices = np.arange(len(catalogue.item_ids))
    else:
        indices = np.flatnonzero(catalogue.category_mask([category]))
    page = indices[offset : offset + limit]
    return ItemPage(
        total=int(indices.size),
        offset=offset,
        limit=limit,
        categories=catalogue.category_names,
        items=[ItemPublic(**catalogue.entry(int(i))) for i in page],
    )
