"""Ranking a catalogue for one request: pure numpy functions, no torch, no state.

The device's :class:`~fedpers.client.personalizer.Personalizer` and the serving API
(:mod:`fedpers.server.api.recommender`) rank with the same functions, so a device and the
API agree on what "personalised", "contextual" and "popular" mean:

1. scores: :func:`profile_scores` (``q . v_i + b_i`` for a query ``q``, the private user
   vector shifted by the session, see :mod:`fedpers.client.session`),
   :func:`contextual_scores` (public popularity plus per-context boosts, P11) or the
   popularity itself;
2. which items may be shown: :func:`candidate_mask` (allow/block lists, required item
   attributes, a predicate) and the seen items;
3. which ``k`` of them: :func:`select_items` (top-k, or maximal marginal relevance over
   item-vector cosine similarity when ``diversity > 0``);
4. why: :func:`explain_items` (cold items by their attributes, popularity, context, or the
   nearest item of the history).

Every function reads its inputs and returns new arrays; nothing is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fedpers.privacy.errors import ConfigError

__all__ = [
    "EXPLAIN_WINDOW",
    "Basis",
    "ItemFilter",
    "candidate_mask",
    "check_request",
    "contextual_scores",
    "explain_items",
    "profile_scores",
    "select_items",
    "top_indices",
    "unit_rows",
]

Basis = Literal["personalised", "contextual", "popular"]

#: How many of the newest history items an explanation compares an item with.
EXPLAIN_WINDOW = 256

#: Catalogues at least this large are searched block by block in :func:`top_indices`.
BLOCK_SEARCH_MIN = 4096
#: Items per block of that search (fewer for a large ``k``, so that there are at least
#: ``8 k`` blocks; below :data:`MIN_SEARCH_BLOCK` items a full partial sort is used).
SEARCH_BLOCK = 256
MIN_SEARCH_BLOCK = 16
#: Smaller catalogues are searched through ``STRIDED_GROUPS * k`` groups of items, item
#: ``i`` in group ``i % (STRIDED_GROUPS * k)`` (see :func:`_strided_search`).
STRIDED_GROUPS = 4
#: Up to this many candidates are sorted outright; more (many ties) are partitioned first.
SORT_CANDIDATES_MAX = 256


@dataclass(frozen=True)
class ItemFilter:
    """Which items may be recommended.

    Attributes:
        allow: when set, only these item ids.
        block: never these item ids.
        require_features: item attribute names (``item_feature_names`` of the data set,
            e.g. ``"Comedy"``) an item must have (value > 0).
        predicate: an arbitrary test on the item id.
    """

    allow: frozenset[str] | None = None
    block: frozenset[str] = frozenset()
    require_features: tuple[str, ...] = ()
    predicate: Callable[[str], bool] | None = None


def check_request(k: int, diversity: float) -> None:
    """Validate the size and diversity of a ranking request.

    Raises:
        ConfigError: ``k`` < 1 or ``diversity`` outside [0, 1].
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    if not 0.0 <= diversity <= 1.0:
        raise ConfigError(f"diversity must be in [0, 1], got {diversity}")


def profile_scores(
    item_vectors: np.ndarray, item_bias: np.ndarray, query: np.ndarray
) -> np.ndarray:
    """``q . v_i + b_i`` for every item, ``float64[items]``.

    Example:
        >>> v = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
        >>> profile_scores(v, np.array([0.0, 0.5]), np.array([2.0, 1.0])).tolist()
        [2.0, 1.5]
    """
    # einsum instead of ``@``: a BLAS matrix-vector product wakes the BLAS thread pool,
    # which on a busy 2-core device cost 25 ms instead of 1 ms (measured).
    scores = np.einsum("ij,j->i", item_vectors, np.asarray(query, dtype=item_vectors.dtype))
    out: np.ndarray = scores.astype(np.float64)
    out += item_bias  # in place: one float64 array per request, not two
    return out


def contextual_scores(
    popularity: np.ndarray,
    context_popularity: Mapping[str, np.ndarray],
    context: Mapping[str, Any] | None,
) -> np.ndarray:
    """Public popularity plus the boost of every ``"key=value"`` of the request context.

    Args:
        popularity: ``[items]`` public popularity (the global item bias).
        context_popularity: per ``"key=value"`` context, a ``[items]`` boost.
        context: the request's context, e.g. ``{"hour": 21, "device": "tv"}``.

    Returns:
        A new ``float64[items]`` array.
    """
    base: np.ndarray = np.asarray(popularity, dtype=np.float64).copy()
    for key, value in (context or {}).items():
        boost = context_popularity.get(f"{key}={value}")
        if boost is not None:
            base = base + boost
    return base


def candidate_mask(
    item_ids: Sequence[str],
    index: Mapping[str, int],
    filters: ItemFilter | None,
    *,
    item_features: np.ndarray | None = None,
    feature_names: Sequence[str] = (),
) -> np.ndarray:
    """``bool[items]``: which items ``filters`` lets through.

    Unknown ids in ``allow``/``block`` are ignored (the catalogue may have changed).

    Raises:
        ConfigError: a required feature is unknown, or the model has no item features.
    """
    mask = np.ones(len(item_ids), dtype=bool)
    if filters is None:
        return mask
    if filters.allow is not None:
        mask[:] = False
        allowed = [index[item] for item in filters.allow if item in index]
        mask[np.asarray(allowed, dtype=np.int64)] = True
    blocked = [index[item] for item in filters.block if item in index]
    if blocked:
        mask[np.asarray(blocked, dtype=np.int64)] = False
    if filters.require_features:
        if item_features is None:
            raise ConfigError("require_features needs a model with item features")
        names = list(feature_names)
        for name in filters.require_features:
            if name not in names:
                raise ConfigError(f"unknown item feature {name!r}")
            mask &= item_features[:, names.index(name)] > 0
    if filters.predicate is not None:
        for i in np.flatnonzero(mask):
            mask[i] = bool(filters.predicate(item_ids[int(i)]))
    return mask


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), for cosine similarity."""
    norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    out: np.ndarray = vectors / norms
    return out


def _best_first(candidates: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best of ``candidates`` (ascending indices) by ``values``, best first.

    Exact, ties in index order: everything above the ``k``-th value, then as many of the
    items equal to it as fit, lowest index first.
    """
    k = min(k, candidates.size)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    kth = np.partition(values, values.size - k)[values.size - k]
    above = values > kth
    ties = np.flatnonzero(values == kth)[: k - int(above.sum())]
    keep = np.concatenate([np.flatnonzero(above), ties])
    order = np.lexsort((candidates[keep], -values[keep]))
    out: np.ndarray = candidates[keep[order]].astype(np.int64, copy=False)
    return out


def _strided_search(scores: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray | None:
    """What :func:`_best_first` gives over all of ``mask``, found among a few candidates.

    Item ``i`` belongs to group ``i % groups`` (the columns of a ``[rows, groups]`` view:
    no copy, one reduction). The ``k``-th largest group maximum is at most the ``k``-th
    best score, so the items scoring at least that much hold the whole answer, ties
    included, and only they are sorted. ``None`` (use the full search) when that
    cannot be told: integer scores, too few items per group, fewer than ``k`` groups
    with a candidate, or a NaN candidate (the full search orders NaN its own way).
    """
    n = scores.size
    groups = STRIDED_GROUPS * k
    rows = n // groups if k > 0 else 0
    if rows < 2 or scores.dtype.kind != "f":
        return None
    # All True (no history, no filter): read the scores in place.
    values = scores if np.count_nonzero(mask) == n else np.where(mask, scores, -np.inf)
    group_max = np.maximum.reduce(values[: rows * groups].reshape(rows, groups), axis=0)
    bound = np.partition(group_max, groups - k)[groups - k]
    if np.isnan(np.maximum.reduce(values)) or bound == -np.inf:
        return None
    candidates = np.flatnonzero(values >= bound)
    if candidates.size > SORT_CANDIDATES_MAX:
        return _best_first(candidates, values[candidates], k)
    order = np.lexsort((candidates, -values[candidates]))[:k]
    out: np.ndarray = candidates[order].astype(np.int64, copy=False)
    return out


def top_indices(scores: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest ``scores`` among ``mask``, best first (exact).

    Ties keep index order, so the answer does not depend on how the search is done.
    Catalogues of :data:`BLOCK_SEARCH_MIN` items or more are searched in blocks of
    up to :data:`SEARCH_BLOCK`: the ``k``-th largest block maximum bounds the ``k``-th best score
    from below, so only blocks whose maximum reaches it can hold an answer and the
    partial sort runs over those few blocks instead of the whole catalogue. Smaller
    catalogues use the same bound over strided groups of items (:func:`_strided_search`:
    half the time of the partial sort of all 1,682 scores of MovieLens 100k), or that
    partial sort when the bound does not apply.

    Args:
        scores: ``[items]`` finite scores.
        mask: ``bool[items]`` candidates.
        k: how many (fewer when fewer candidates).

    Returns:
        ``int64`` model indices, at most ``k``.

    Example:
        >>> top_indices(np.array([0.5, 2.0, 2.0, 1.0]), np.array([True] * 4), 2).tolist()
        [1, 2]
    """
    n = scores.size
    if n < BLOCK_SEARCH_MIN:
        found = _strided_search(scores, mask, k)
        if found is not None:
            return found
    size = min(SEARCH_BLOCK, n // (8 * k)) if k > 0 else 0  # at least 8 k blocks
    if n < BLOCK_SEARCH_MIN or size < MIN_SEARCH_BLOCK:
        candidates = np.flatnonzero(mask)
        return _best_first(candidates, scores[candidates], k)
    n_blocks = n // size
    masked = np.where(mask, scores, -np.inf)
    head = n_blocks * size
    block_max = masked[:head].reshape(n_blocks, size).max(axis=1)
    if head < n:
        block_max = np.append(block_max, masked[head:].max())
    bound = np.partition(block_max, block_max.size - k)[block_max.size - k]
    if not np.isfinite(bound):  # fewer than k blocks hold candidates: scan them all
        candidates = np.flatnonzero(mask)
        return _best_first(candidates, scores[candidates], k)
    blocks = np.flatnonzero(block_max >= bound)
    starts = blocks * size
    spans = (np.arange(size) + starts[:, None]).ravel()
    spans = spans[spans < n]
    candidates = spans[mask[spans]]
    return _best_first(candidates, scores[candidates], k)


def select_items(
    scores: np.ndarray,
    mask: np.ndarray,
    k: int,
    diversity: float,
    item_vectors: np.ndarray,
    *,
    unit_vectors: np.ndarray | None = None,
) -> list[int]:
    """The indices of the ``k`` items to show, best first.

    With ``diversity == 0`` the top ``k`` candidates by score (:func:`top_indices`).
    Otherwise maximal marginal relevance over a shortlist of the ``max(10 k, 100)`` most
    relevant candidates: each pick maximises ``(1 - diversity) * relevance - diversity *
    max cosine similarity to the items already picked``, relevance min-max scaled over the
    shortlist (first index on ties).

    Each pick computes the similarities to the item just picked as ``vecs @ vecs[best]``
    (one matrix-vector product: a row of ``vecs @ vecs.T`` may differ in the last bits)
    and keeps their running maximum; a redundancy that is not finite counts as 0, a
    check that is skipped when no dot product of the shortlist can overflow.

    Args:
        scores: ``[items]`` scores on any scale.
        mask: ``bool[items]`` candidates.
        k: how many items (fewer when fewer candidates).
        diversity: 0 (pure relevance) to 1 (maximal diversity).
        item_vectors: ``[items, dim]`` the vectors similarity is measured on.
        unit_vectors: the same rows scaled to unit norm, when precomputed (serving does it
            once per model); computed for the shortlist otherwise.

    Returns:
        Model indices, at most ``k``.
    """
    if diversity == 0.0:
        chosen: list[int] = top_indices(scores, mask, k).tolist()
        return chosen
    pool = top_indices(scores, mask, max(10 * k, 100))
    if pool.size == 0:
        return []
    k = min(k, pool.size)
    rel = scores[pool]
    low = np.minimum.reduce(rel)
    rel = (rel - low) / ((np.maximum.reduce(rel) - low) or 1.0)
    vecs = unit_rows(item_vectors[pool]) if unit_vectors is None else unit_vectors[pool]
    gain = (1.0 - diversity) * rel  # the relevance term, the same at every pick
    picks = np.empty(k, dtype=np.intp)
    best = picks[0] = int(gain.argmax())  # nothing picked yet: no redundancy
    max_sim = np.full(pool.size, -np.inf)
    weight = np.asarray(diversity, dtype=np.result_type(diversity, max_sim.dtype))
    finite = _finite_dot_products(vecs)
    for i in range(1, k):
        gain[best] = -np.inf  # never again: -inf minus diversity * a finite redundancy
        max_sim = np.maximum(max_sim, vecs @ vecs[best])
        redundancy = max_sim if finite else np.where(np.isfinite(max_sim), max_sim, 0.0)
        best = picks[i] = int((gain - weight * redundancy).argmax())
    selected: list[int] = pool[picks].tolist()
    return selected


def _finite_dot_products(vectors: np.ndarray) -> bool:
    """Whether every dot product of two float rows is finite, whatever the summation order.

    True when the rows are finite and ``dim * max|v|^2`` stays far below the dtype's
    largest value: no product or partial sum can then overflow.
    """
    if vectors.dtype.kind != "f":
        return False
    largest = float(np.abs(vectors).max(initial=0.0))
    dim = max(int(vectors.shape[-1]), 1)
    return largest * largest * dim < float(np.finfo(vectors.dtype).max) / 4.0


def explain_items(
    items: Sequence[int],
    basis: Basis,
    *,
    item_ids: Sequence[str],
    item_vectors: np.ndarray,
    cold_items: np.ndarray,
    history: Sequence[int] | np.ndarray = (),
    context: Mapping[str, Any] | None = None,
    unit_vectors: np.ndarray | None = None,
) -> list[str]:
    """A short, human-readable reason why each of ``items`` was ranked.

    Cold items are explained by their attributes; popular and contextual ones by the
    popularity and the context used; a personalised item by the history item most similar
    to it (cosine of the item vectors over the newest :data:`EXPLAIN_WINDOW` history
    items, one similarity product for all the items).

    Args:
        items: model indices.
        basis: what the ranking used.
        item_ids: catalogue ids of the model.
        item_vectors: ``[items, dim]`` global item vectors.
        cold_items: ``bool[items]`` items scored from their attributes.
        history: the user's item indices in time order (personalised basis only).
        context: the request context (contextual basis).
        unit_vectors: ``item_vectors`` scaled to unit norm, when precomputed.
    """
    if basis == "popular":
        fallback = "popular with everyone (no personal data used)"
    elif basis == "contextual":
        used = ", ".join(f"{k}={v}" for k, v in (context or {}).items())
        fallback = f"popular in this context ({used})" if used else "popular right now"
    else:
        fallback = "matches your profile"
    out = [fallback] * len(items)
    if basis == "personalised" and len(history) > 0 and len(items) > 0:
        recent = np.asarray(history, dtype=np.int64)[-EXPLAIN_WINDOW:]
        chosen = np.asarray(items, dtype=np.int64)
        if unit_vectors is None:
            past, targets = unit_rows(item_vectors[recent]), unit_rows(item_vectors[chosen])
        else:
            past, targets = unit_vectors[recent], unit_vectors[chosen]
        nearest = recent[np.argmax(targets @ past.T, axis=1)]
        out = [f"because you interacted with {item_ids[int(j)]}" for j in nearest]
    return [
        "new item, scored from its attributes" if cold_items[i] else text
        for i, text in zip(items, out, strict=True)
    ]
