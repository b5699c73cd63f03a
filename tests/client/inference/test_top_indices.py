"""``top_indices``: the block search gives exactly what a full sort gives."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpers.client.inference import ranking
from fedpers.client.inference.ranking import BLOCK_SEARCH_MIN, SEARCH_BLOCK, top_indices


def full_sort(scores: np.ndarray, mask: np.ndarray, k: int) -> list[int]:
    """The reference: every candidate sorted by score, ties by index."""
    candidates = np.flatnonzero(mask)
    order = np.lexsort((candidates, -scores[candidates]))
    return [int(i) for i in candidates[order][:k]]


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 3 * BLOCK_SEARCH_MIN),
    k=st.integers(1, 120),
    keep=st.floats(0.0, 1.0),
    levels=st.integers(2, 50),
    seed=st.integers(0, 2**32 - 1),
)
def test_top_indices_equals_a_full_sort(
    n: int, k: int, keep: float, levels: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    # Few distinct values: many ties, also across block boundaries.
    scores = rng.integers(0, levels, size=n).astype(np.float64)
    mask = rng.random(n) < keep
    assert top_indices(scores, mask, k).tolist() == full_sort(scores, mask, k)


def test_candidates_in_few_blocks_and_an_uneven_tail() -> None:
    n = 40 * SEARCH_BLOCK + 7
    scores = np.linspace(1.0, 0.0, n)
    mask = np.zeros(n, dtype=bool)
    mask[[3, n - 1, n - 2]] = True  # fewer candidate blocks than k
    assert top_indices(scores, mask, 5).tolist() == [3, n - 2, n - 1]
    assert top_indices(scores, np.zeros(n, dtype=bool), 5).tolist() == []


def test_the_block_search_reads_fewer_candidates(monkeypatch) -> None:
    seen: list[int] = []
    real = ranking._best_first

    def spy(candidates: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
        seen.append(candidates.size)
        return real(candidates, values, k)

    monkeypatch.setattr(ranking, "_best_first", spy)
    n = 100_000
    scores = np.random.default_rng(0).standard_normal(n)
    for k in (10, 100):  # the top 10, and the shortlist of 100 that MMR starts from
        seen.clear()
        top = top_indices(scores, np.ones(n, dtype=bool), k)
        assert top.tolist() == full_sort(scores, np.ones(n, dtype=bool), k)
        assert seen and seen[0] <= min(k * SEARCH_BLOCK, n // 4)
