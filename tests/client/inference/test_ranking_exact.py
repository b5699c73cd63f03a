"""``top_indices`` and ``select_items``: the faster searches pick exactly what the former ones
picked (kept here verbatim as references), ties and masks included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpers.client.inference import ranking
from fedpers.client.inference.ranking import (
    BLOCK_SEARCH_MIN,
    MIN_SEARCH_BLOCK,
    SEARCH_BLOCK,
    select_items,
    top_indices,
    unit_rows,
)


def reference_best_first(candidates: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
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


def reference_top_indices(scores: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """``top_indices`` before the strided search of small catalogues."""
    n = scores.size
    size = min(SEARCH_BLOCK, n // (8 * k)) if k > 0 else 0
    if n < BLOCK_SEARCH_MIN or size < MIN_SEARCH_BLOCK:
        candidates = np.flatnonzero(mask)
        return reference_best_first(candidates, scores[candidates], k)
    n_blocks = n // size
    masked = np.where(mask, scores, -np.inf)
    head = n_blocks * size
    block_max = masked[:head].reshape(n_blocks, size).max(axis=1)
    if head < n:
        block_max = np.append(block_max, masked[head:].max())
    bound = np.partition(block_max, block_max.size - k)[block_max.size - k]
    if not np.isfinite(bound):
        candidates = np.flatnonzero(mask)
        return reference_best_first(candidates, scores[candidates], k)
    blocks = np.flatnonzero(block_max >= bound)
    starts = blocks * size
    spans = (np.arange(size) + starts[:, None]).ravel()
    spans = spans[spans < n]
    candidates = spans[mask[spans]]
    return reference_best_first(candidates, scores[candidates], k)


def reference_select_items(
    scores: np.ndarray,
    mask: np.ndarray,
    k: int,
    diversity: float,
    item_vectors: np.ndarray,
    *,
    unit_vectors: np.ndarray | None = None,
) -> list[int]:
    """``select_items`` before the MMR loop was trimmed."""
    if diversity == 0.0:
        return [int(i) for i in reference_top_indices(scores, mask, k)]
    pool = reference_top_indices(scores, mask, max(10 * k, 100))
    if pool.size == 0:
        return []
    k = min(k, pool.size)
    rel = scores[pool]
    rel = (rel - rel.min()) / (np.ptp(rel) or 1.0)
    vecs = unit_rows(item_vectors[pool]) if unit_vectors is None else unit_vectors[pool]
    chosen: list[int] = []
    max_sim = np.full(pool.size, -np.inf)
    for _ in range(k):
        redundancy = np.where(np.isfinite(max_sim), max_sim, 0.0)
        value = (1.0 - diversity) * rel - diversity * redundancy
        value[chosen] = -np.inf
        best = int(np.argmax(value))
        chosen.append(best)
        max_sim = np.maximum(max_sim, vecs @ vecs[best])
    return [int(pool[i]) for i in chosen]


def assert_same_indices(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype == np.int64
    assert got.tolist() == want.tolist()


@settings(max_examples=400, deadline=None)
@given(
    n=st.integers(1, BLOCK_SEARCH_MIN + 600),
    k=st.one_of(st.integers(1, 12), st.integers(1, 400)),
    keep=st.sampled_from([1.0, 0.999, 0.9, 0.5, 0.05, 0.005, 0.0]),
    levels=st.sampled_from([1, 2, 3, 10, 50, 0]),
    dtype=st.sampled_from([np.float64, np.float32]),
    seed=st.integers(0, 2**32 - 1),
)
def test_top_indices_equals_the_reference(
    n: int, k: int, keep: float, levels: int, dtype: type, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    if levels:  # few distinct values: ties everywhere, also at the k-th place
        scores = rng.integers(0, levels, size=n).astype(dtype)
    else:
        scores = rng.standard_normal(n).astype(dtype)
    mask = np.ones(n, dtype=bool) if keep == 1.0 else rng.random(n) < keep
    assert_same_indices(top_indices(scores, mask, k), reference_top_indices(scores, mask, k))


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("k", [1, 2, 10, 100, 101, 400])
def test_top_indices_on_the_serving_catalogue(seed: int, k: int) -> None:
    """1,682 items: all candidates, the history masked out, or only a few left."""
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal(1682)
    if seed % 3 == 0:
        scores = np.round(scores * 4.0)  # integer-valued: long runs of ties
    for mask in (
        np.ones(1682, dtype=bool),
        rng.random(1682) > 0.02,
        rng.random(1682) < 0.01,
        np.zeros(1682, dtype=bool),
    ):
        got, want = top_indices(scores, mask, k), reference_top_indices(scores, mask, k)
        assert_same_indices(got, want)


def test_the_strided_search_runs_and_reads_few_candidates(monkeypatch) -> None:
    """The fast path is taken (not only the fallback) and sorts a handful of items."""
    sizes: list[int] = []
    real = np.lexsort

    def spy(keys: tuple[np.ndarray, ...]) -> np.ndarray:
        sizes.append(keys[0].size)
        return real(keys)

    monkeypatch.setattr(ranking.np, "lexsort", spy)
    scores = np.random.default_rng(0).standard_normal(1682)
    mask = np.ones(1682, dtype=bool)
    assert ranking._strided_search(scores, mask, 10) is not None
    sizes.clear()
    top_indices(scores, mask, 10)
    assert sizes and max(sizes) < 100


@pytest.mark.parametrize("k", [1, 5, 30])
def test_non_finite_and_integer_scores_equal_the_reference(k: int) -> None:
    """Outside the documented finite scores: NaN falls back to the full search, infinities
    and integer scores give what the reference gives too."""
    rng = np.random.default_rng(5)
    for fill in (np.nan, np.inf, -np.inf):
        scores = rng.standard_normal(1000)
        scores[rng.choice(1000, size=k + 3, replace=False)] = fill
        for mask in (np.ones(1000, dtype=bool), rng.random(1000) < 0.5):
            want = reference_top_indices(scores, mask, k)
            assert_same_indices(top_indices(scores, mask, k), want)
    ints = rng.integers(-(2**62), 2**62, size=1000)  # beyond float64's exact integers
    mask = np.ones(1000, dtype=bool)
    assert_same_indices(top_indices(ints, mask, k), reference_top_indices(ints, mask, k))


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 2500),
    dim=st.integers(1, 16),
    k=st.integers(1, 25),
    diversity=st.sampled_from([0.0, 0.1, 0.3, 0.5, 1.0]),
    keep=st.sampled_from([1.0, 0.95, 0.3, 0.02]),
    tied=st.booleans(),
    vector_type=st.sampled_from([np.float32, np.float64]),
    precomputed=st.booleans(),
)
def test_select_items_equals_the_reference(
    seed: int,
    n: int,
    dim: int,
    k: int,
    diversity: float,
    keep: float,
    tied: bool,
    vector_type: type,
    precomputed: bool,
) -> None:
    rng = np.random.default_rng(seed)
    if tied:  # equal scores and repeated vectors: ties in relevance and in similarity
        scores = rng.integers(0, 4, size=n).astype(np.float64)
        vectors = rng.integers(-1, 2, size=(n, dim)).astype(vector_type)
    else:
        scores = rng.standard_normal(n)
        vectors = rng.standard_normal((n, dim)).astype(vector_type)
    mask = np.ones(n, dtype=bool) if keep == 1.0 else rng.random(n) < keep
    unit = unit_rows(vectors) if precomputed else None
    got = select_items(scores, mask, k, diversity, vectors, unit_vectors=unit)
    want = reference_select_items(scores, mask, k, diversity, vectors, unit_vectors=unit)
    assert got == want
    assert all(type(i) is int for i in got)


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("diversity", [0.1, 0.3, 0.5, 1.0])
def test_select_items_on_the_serving_shape(seed: int, diversity: float) -> None:
    """1,682 items of dim 64 with precomputed float32 unit vectors, k = 10, as the API."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((1682, 64)).astype(np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = vectors @ rng.standard_normal(64).astype(np.float32) + rng.standard_normal(1682)
    mask = rng.random(1682) > 0.01
    for k in (1, 10, 20):
        got = select_items(scores, mask, k, diversity, vectors, unit_vectors=unit)
        assert got == reference_select_items(scores, mask, k, diversity, vectors, unit_vectors=unit)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e30])
def test_non_finite_similarities_count_as_no_redundancy_as_before(bad: float) -> None:
    """Rows whose dot products are not finite (NaN, infinite, or overflowing float32)."""
    rng = np.random.default_rng(9)
    vectors = rng.standard_normal((300, 8)).astype(np.float32)
    scores = rng.standard_normal(300)
    top = np.argsort(-scores)[:40]
    vectors[top[::3], rng.integers(0, 8)] = bad  # inside the shortlist
    unit = vectors.copy()  # "unit" vectors as given: not normalised, so 1e30 overflows
    assert not ranking._finite_dot_products(unit[top])
    mask = np.ones(300, dtype=bool)
    for diversity in (0.3, 1.0):
        got = select_items(scores, mask, 10, diversity, vectors, unit_vectors=unit)
        want = reference_select_items(scores, mask, 10, diversity, vectors, unit_vectors=unit)
        assert got == want


def test_finite_dot_products_bound() -> None:
    assert ranking._finite_dot_products(np.ones((3, 64), dtype=np.float32))
    assert ranking._finite_dot_products(np.zeros((0, 4), dtype=np.float32))
    assert ranking._finite_dot_products(np.full((2, 64), 1e18, dtype=np.float32))  # 6.4e37
    assert not ranking._finite_dot_products(np.full((2, 64), 1e19, dtype=np.float32))
    assert ranking._finite_dot_products(np.full((2, 64), 1e19, dtype=np.float64))
    assert not ranking._finite_dot_products(np.array([[1.0, np.nan]], dtype=np.float32))
    assert not ranking._finite_dot_products(np.ones((2, 2), dtype=np.int64))
