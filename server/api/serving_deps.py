"""Dependencies of the serving routes: the model a request is answered with.

:data:`ServedDep` takes the holder's current :class:`~fedpers.server.api.model_state.ServedModel`
once, at the start of the request; the request keeps it even if a reload swaps in a new
version meanwhile. Before any model is loaded it answers 503 (``StoreError``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from fedpers.privacy.errors import StoreError
from fedpers.server.api.deps import ModelDep
from fedpers.server.api.model_state import ServedModel
from fedpers.server.api.observability import set_model_version

__all__ = ["ServedDep", "served_model"]


async def served_model(holder: ModelDep) -> ServedModel:
    """The model to answer this request with.

    Raises:
        StoreError: no model is loaded yet (503).
    """
    served = holder.current()
    if served is None:
        why = f" ({holder.last_error})" if holder.last_error else ""
        raise StoreError(f"no model is loaded yet{why}")
    set_model_version(served.version)
    return served


ServedDep = Annotated[ServedModel, Depends(served_model)]
