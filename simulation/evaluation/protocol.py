"""The one evaluation protocol of fedpers: leave-one-out by time, sampled and full ranking.

Every model in the project (centralized reference, popularity, the federation with and
without differential privacy) is scored by this module, on the same split:

1. **Leave-one-out by timestamp** (:func:`leave_one_out`). A user's interactions are
   deduplicated per item (the *first* interaction with an item is kept: the split is
   about discovering items, so a later repeat never becomes a held-out item that the
   training history already contains). They are then ordered by timestamp, ties broken
   by the original row order (stable). The latest is the **test** item, the second
   latest the **validation** item, the rest are **training** interactions. A user with
   exactly two distinct items has a test item and no validation item; a user with one
   has neither (that item is training data). Missing held-out items are ``-1``.
2. **Sampled ranking** (``hr10_sampled``, ``ndcg10_sampled``; the NCF/PFedRec protocol):
   the held-out item competes with ``n_negatives`` (99) items sampled **once** per user
   with a fixed seed, uniformly and without replacement from the items the user never
   interacted with (not in training, validation or test). A user with fewer such items
   gets all of them, padded with ``-1`` (padding never competes).
3. **Full ranking** (``hr10_full``, ``ndcg10_full``): the held-out item competes with every
   item that is not in the user's training history; when the target is the test item,
   the validation item counts as history too and is excluded.
4. **Coverage** (``coverage10``): the fraction of the catalogue that appears in at least
   one evaluated user's full-ranking top 10.

A model scored on the test items may learn from :meth:`LeaveOneOutSplit.history`
``("test")``: the training interactions plus the validation item. Hyperparameters and
epochs are chosen on the validation items with ``history("valid")`` (training only),
then the model is refitted (the centralized reference does this; compare like with like).

Ranks are 0-based and ties count against the held-out item (see
:mod:`fedpers.client.metrics`, which holds the per-user definitions). Scores are produced
by a *scorer*: ``scorer(user_indices) -> float[len(user_indices), n_items]``.

Per-group metrics (:func:`user_groups`, :func:`evaluate_by_group`, :func:`fairness_gaps`)
report the same figures per gender and age band where the data has those attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from fedpers.client.metrics import hits_at_k, ndcgs_at_k, ranks_of
from fedpers.client.protocol import EVAL_KEYS
from fedpers.privacy.errors import ConfigError, DataError
from fedpers.simulation.data.interactions import InteractionData
from fedpers.simulation.data.movielens import age_band

__all__ = [
    "METRIC_NAMES",
    "LeaveOneOutSplit",
    "RankingMetrics",
    "Scorer",
    "Target",
    "UserRanks",
    "evaluate",
    "evaluate_by_group",
    "fairness_gaps",
    "leave_one_out",
    "metrics_from_ranks",
    "rank_users",
    "user_groups",
]

Scorer = Callable[[np.ndarray], np.ndarray]
"""``scorer(user_indices) -> float[len(user_indices), n_items]`` scores (higher is better)."""

Target = Literal["test", "valid"]

METRIC_NAMES: tuple[str, ...] = EVAL_KEYS
"""The four accuracy figures, in the order every report prints them (the devices report
the same four, :data:`fedpers.client.protocol.EVAL_KEYS`)."""

_K = 10
_NEGATIVE_CHUNK = 32_768
_MAX_BATCH_CELLS = 8_000_000  # users x items scored at once: about 64 MB of float64


@dataclass(frozen=True, eq=False)
class LeaveOneOutSplit:
    """A leave-one-out split with its fixed sampled negatives.

    The training arrays are sorted by user, then timestamp, then original row order;
    ``train_indptr`` delimits each user's rows (CSR), and ``train_by_user[u]`` is a view
    of ``train_items[train_indptr[u]:train_indptr[u + 1]]``.

    Attributes:
        n_users: number of users (as in the source data).
        n_items: number of items (as in the source data).
        train_users: ``int64[m]`` user of each training interaction.
        train_items: ``int64[m]`` item of each training interaction.
        train_timestamps: ``int64[m]`` timestamp of each training interaction.
        train_indptr: ``int64[n_users + 1]`` row offsets of each user's training items.
        train_by_user: each user's training items in time order.
        valid_items: ``int64[n_users]`` validation item per user, ``-1`` when none.
        test_items: ``int64[n_users]`` test item per user, ``-1`` when none.
        sampled_negatives: ``int64[n_users, n_negatives]`` fixed negatives per user,
            ``-1`` padding when a user has too few non-interacted items.
        seed: the seed the negatives were drawn with.
    """

    n_users: int
    n_items: int
    train_users: np.ndarray
    train_items: np.ndarray
    train_timestamps: np.ndarray
    train_indptr: np.ndarray
    train_by_user: list[np.ndarray]
    valid_items: np.ndarray
    test_items: np.ndarray
    sampled_negatives: np.ndarray
    seed: int

    @classmethod
    def from_training(
        cls,
        n_users: int,
        n_items: int,
        users: np.ndarray,
        items: np.ndarray,
        timestamps: np.ndarray,
        *,
        valid_items: np.ndarray,
        test_items: np.ndarray,
        sampled_negatives: np.ndarray,
        seed: int,
    ) -> LeaveOneOutSplit:
        """The split of training interactions sorted by user; the CSR offsets are derived.

        Args:
            n_users: number of users.
            n_items: number of items.
            users: ``int64[m]`` user of each training interaction, ascending.
            items: ``int64[m]`` its item.
            timestamps: ``int64[m]`` its timestamp.
            valid_items: ``int64[n_users]`` validation item per user, ``-1`` when none.
            test_items: ``int64[n_users]`` test item per user, ``-1`` when none.
            sampled_negatives: ``int64[n_users, n_negatives]`` fixed negatives per user.
            seed: the seed the negatives were drawn with.
        """
        counts = np.bincount(users, minlength=n_users)
        indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        return cls(
            n_users=n_users,
            n_items=n_items,
            train_users=users,
            train_items=items,
            train_timestamps=timestamps,
            train_indptr=indptr,
            train_by_user=np.split(items, indptr[1:-1]),
            valid_items=valid_items,
            test_items=test_items,
            sampled_negatives=sampled_negatives,
            seed=seed,
        )

    @property
    def n_negatives(self) -> int:
        """Number of sampled negatives per user (including padding)."""
        return int(self.sampled_negatives.shape[1])

    def targets(self, target: Target) -> np.ndarray:
        """The held-out item per user for ``target`` (``-1`` when none).

        Raises:
            ConfigError: when ``target`` is neither ``"test"`` nor ``"valid"``.
        """
        if target == "test":
            return self.test_items
        if target == "valid":
            return self.valid_items
        raise ConfigError(f"target must be 'test' or 'valid', got {target!r}")

    def eval_users(self, target: Target = "test") -> np.ndarray:
        """The users that have a held-out item for ``target``, ascending."""
        return np.flatnonzero(self.targets(target) >= 0).astype(np.int64)

    def history(self, target: Target = "test") -> tuple[np.ndarray, np.ndarray]:
        """What a model evaluated on ``target`` may learn from, as CSR ``(indptr, items)``.

        For ``"valid"`` this is the training interactions. For ``"test"`` it is the
        training interactions followed by each user's validation item (which precedes
        the test item in time): tune on ``"valid"``, then refit on ``history("test")``
        for the test figures. The full ranking excludes exactly this history.

        Raises:
            ConfigError: when ``target`` is neither ``"test"`` nor ``"valid"``.
        """
        self.targets(target)
        if target == "valid":
            return self.train_indptr, self.train_items
        has_valid = self.valid_items >= 0
        counts = np.diff(self.train_indptr) + has_valid
        indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        items = np.empty(int(indptr[-1]), dtype=np.int64)
        shift = indptr[:-1] - self.train_indptr[:-1]
        items[np.arange(len(self.train_items)) + shift[self.train_users]] = self.train_items
        items[indptr[1:][has_valid] - 1] = self.valid_items[has_valid]
        return indptr, items

    def history_pairs(self, target: Target = "test") -> tuple[np.ndarray, np.ndarray]:
        """:meth:`history` as parallel ``(users, items)`` arrays sorted by user, then time."""
        indptr, items = self.history(target)
        users = np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(indptr))
        return users, items

    def train_counts(self) -> np.ndarray:
        """``int64[n_items]`` number of training interactions of each item."""
        return np.bincount(self.train_items, minlength=self.n_items).astype(np.int64)


def _gather_csr(indptr: np.ndarray, values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """The CSR entries of ``rows``: (position of the row in ``rows``, value) pairs."""
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    total = int(lengths.sum())
    owner = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return owner, values[np.repeat(starts, lengths) + offsets]


def _first_valid(candidates: np.ndarray, valid: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """Rows with at least ``n`` valid entries and those entries (first ``n``, column order)."""
    counts = np.cumsum(valid, axis=1)
    complete = counts[:, -1] >= n
    keep = valid & (counts <= n)
    chosen = candidates[complete][keep[complete]].reshape(-1, n)
    return complete, chosen


def _sample_negatives(
    hist_users: np.ndarray,
    hist_items: np.ndarray,
    n_users: int,
    n_items: int,
    n_negatives: int,
    seed: int,
) -> np.ndarray:
    """Sample ``n_negatives`` distinct non-interacted items per user (``-1`` padded).

    ``(hist_users, hist_items)`` are distinct pairs sorted by user then item. The r-th
    non-interacted item of a user with sorted history ``h_0 < h_1 < ...`` is
    ``r + #{j : h_j - j <= r}``, so uniform draws of ``r`` in ``[0, available)`` map to
    uniform non-interacted items with one ``searchsorted`` over all users at once;
    duplicates within a row are rejected and the row redrawn with more candidates.
    """
    out = np.full((n_users, n_negatives), -1, dtype=np.int64)
    if n_negatives == 0:
        return out
    counts = np.bincount(hist_users, minlength=n_users).astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    within = np.arange(len(hist_users), dtype=np.int64) - starts[hist_users]
    stride = n_items + 1
    keys = hist_users * stride + (hist_items - within)
    available = n_items - counts
    rng = np.random.default_rng(seed)

    scarce = np.flatnonzero(available <= n_negatives)
    for u in scarce:
        free = np.setdiff1d(
            np.arange(n_items, dtype=np.int64), hist_items[starts[u] : starts[u] + counts[u]]
        )
        out[u, : len(free)] = rng.permutation(free)

    plenty = np.flatnonzero(available > n_negatives)
    for lo in range(0, len(plenty), _NEGATIVE_CHUNK):
        pending = plenty[lo : lo + _NEGATIVE_CHUNK]
        width = n_negatives + max(8, n_negatives // 4)
        while len(pending):
            draws = np.floor(rng.random((len(pending), width)) * available[pending, None])
            r = np.minimum(draws.astype(np.int64), available[pending, None] - 1)
            query = pending[:, None] * stride + r
            below = np.searchsorted(keys, query, side="right") - starts[pending, None]
            candidates = r + below
            order = np.argsort(candidates, axis=1, kind="stable")
            ordered = np.take_along_axis(candidates, order, axis=1)
            duplicate = np.zeros_like(candidates, dtype=bool)
            np.put_along_axis(
                duplicate,
                order[:, 1:],
                ordered[:, 1:] == ordered[:, :-1],
                axis=1,
            )
            complete, chosen = _first_valid(candidates, ~duplicate, n_negatives)
            out[pending[complete]] = chosen
            pending = pending[~complete]
            width *= 2
    return out


def leave_one_out(
    data: InteractionData, *, n_negatives: int = 99, seed: int = 0
) -> LeaveOneOutSplit:
    """Split ``data`` leave-one-out by timestamp and draw the fixed sampled negatives.

    Args:
        data: the interaction log.
        n_negatives: negatives per user for the sampled protocol (99 in NCF/PFedRec).
        seed: seed of the negative sampling; the same data and seed give the same split.

    Returns:
        The split (see the module docstring for the rules).

    Raises:
        ConfigError: when ``n_negatives`` is negative.
        DataError: when the log has no interactions.
    """
    if n_negatives < 0:
        raise ConfigError(f"n_negatives must be >= 0, got {n_negatives}")
    if data.n_interactions == 0:
        raise DataError(f"{data.name}: no interactions to split")
    users = np.asarray(data.users, dtype=np.int64)
    items = np.asarray(data.items, dtype=np.int64)
    stamps = np.asarray(data.timestamps, dtype=np.int64)
    order = np.lexsort((np.arange(len(users)), stamps, users))
    users, items, stamps = users[order], items[order], stamps[order]

    pair = users * data.n_items + items
    _, first = np.unique(pair, return_index=True)
    keep = np.sort(first)
    users, items, stamps = users[keep], items[keep], stamps[keep]

    counts = np.bincount(users, minlength=data.n_users).astype(np.int64)
    ends = np.cumsum(counts)
    from_end = ends[users] - 1 - np.arange(len(users), dtype=np.int64)
    test_row = (from_end == 0) & (counts[users] >= 2)
    valid_row = (from_end == 1) & (counts[users] >= 3)
    test_items = np.full(data.n_users, -1, dtype=np.int64)
    valid_items = np.full(data.n_users, -1, dtype=np.int64)
    test_items[users[test_row]] = items[test_row]
    valid_items[users[valid_row]] = items[valid_row]

    train = ~(test_row | valid_row)

    hist = np.sort(pair[keep])
    negatives = _sample_negatives(
        hist // data.n_items,
        hist % data.n_items,
        data.n_users,
        data.n_items,
        n_negatives,
        seed,
    )
    return LeaveOneOutSplit.from_training(
        data.n_users,
        data.n_items,
        users[train],
        items[train],
        stamps[train],
        valid_items=valid_items,
        test_items=test_items,
        sampled_negatives=negatives,
        seed=seed,
    )


@dataclass(frozen=True)
class RankingMetrics:
    """The protocol's figures, averaged over the evaluated users.

    Attributes:
        hr10_sampled: HR@10 against the sampled negatives.
        ndcg10_sampled: NDCG@10 against the sampled negatives.
        hr10_full: HR@10 in the full ranking over non-history items.
        ndcg10_full: NDCG@10 in the full ranking over non-history items.
        coverage10: fraction of the catalogue in at least one user's full top 10.
        n_users: number of users evaluated.
    """

    hr10_sampled: float
    ndcg10_sampled: float
    hr10_full: float
    ndcg10_full: float
    coverage10: float
    n_users: int

    def as_dict(self) -> dict[str, float | int]:
        """The figures as a JSON-ready dictionary (metric names as in every report)."""
        return dict(asdict(self))


@dataclass(frozen=True)
class UserRanks:
    """Per-user outcome of one evaluation, before averaging.

    Attributes:
        users: ``int64[U]`` the evaluated users.
        sampled: ``int64[U]`` 0-based rank of the held-out item among its sampled negatives.
        full: ``int64[U]`` 0-based rank of the held-out item in the full ranking.
        top10: ``int64[U, 10]`` each user's full-ranking top 10 (``-1`` where fewer
            candidates exist).
        n_items: catalogue size (the denominator of coverage).
    """

    users: np.ndarray
    sampled: np.ndarray
    full: np.ndarray
    top10: np.ndarray
    n_items: int

    def subset(self, mask: np.ndarray) -> UserRanks:
        """The ranks of the users where ``mask`` (``bool[U]``) is true."""
        return UserRanks(
            self.users[mask], self.sampled[mask], self.full[mask], self.top10[mask], self.n_items
        )


def metrics_from_ranks(ranks: UserRanks) -> RankingMetrics:
    """Average per-user ranks into :class:`RankingMetrics`.

    Raises:
        DataError: when no user was evaluated.
    """
    if len(ranks.users) == 0:
        raise DataError("no users to evaluate (no held-out items)")
    shown = ranks.top10[ranks.top10 >= 0]
    return RankingMetrics(
        hr10_sampled=float(hits_at_k(ranks.sampled, _K).mean()),
        ndcg10_sampled=float(ndcgs_at_k(ranks.sampled, _K).mean()),
        hr10_full=float(hits_at_k(ranks.full, _K).mean()),
        ndcg10_full=float(ndcgs_at_k(ranks.full, _K).mean()),
        coverage10=float(len(np.unique(shown)) / ranks.n_items),
        n_users=len(ranks.users),
    )


def _top_k(scores: np.ndarray, excluded: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k`` best non-excluded columns, best first; ties go to the lower index.

    Linear time per row: the k-th largest score is the threshold, every column above it
    is taken and the tied columns fill the remaining places in index order. Places
    beyond the number of non-excluded columns are ``-1``.
    """
    rows, n = scores.shape
    out = np.full((rows, k), -1, dtype=np.int64)
    take = min(k, n)
    if rows == 0 or take == 0:
        return out
    threshold = -np.partition(-scores, take - 1, axis=1)[:, take - 1 : take]
    above = scores > threshold
    tied = scores == threshold
    room = take - above.sum(axis=1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= room))
    cols = np.nonzero(chosen)[1].reshape(rows, take)
    order = np.argsort(-np.take_along_axis(scores, cols, axis=1), axis=1, kind="stable")
    cols = np.take_along_axis(cols, order, axis=1)
    out[:, :take] = np.where(np.take_along_axis(excluded, cols, axis=1), -1, cols)
    return out


def _score_batch(scorer: Scorer, batch: np.ndarray, n_items: int) -> np.ndarray:
    scores = np.asarray(scorer(batch), dtype=np.float64)
    if scores.shape != (len(batch), n_items):
        raise ConfigError(
            f"scorer returned shape {scores.shape}, expected ({len(batch)}, {n_items})"
        )
    return np.where(np.isnan(scores), -np.inf, scores)


def rank_users(
    scorer: Scorer,
    split: LeaveOneOutSplit,
    *,
    target: Target = "test",
    users: np.ndarray | None = None,
    batch_size: int = 512,
) -> UserRanks:
    """Rank every evaluated user's held-out item, sampled and full.

    Args:
        scorer: ``scorer(user_indices) -> float[len(user_indices), n_items]``.
        split: the leave-one-out split.
        target: ``"test"`` (the latest item) or ``"valid"`` (the second latest).
        users: users to evaluate; default every user with a held-out item. Users
            without one are dropped.
        batch_size: users scored per scorer call, lowered on large catalogues so that
            one batch holds at most 8 million scores (bounded memory).

    Returns:
        The per-user ranks and top-10 lists.

    Raises:
        ConfigError: on a bad target, batch size, user index or scorer output shape.
    """
    if batch_size <= 0:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    targets = split.targets(target)
    if users is None:
        chosen = split.eval_users(target)
    else:
        chosen = np.asarray(users, dtype=np.int64).reshape(-1)
        if len(chosen) and (chosen.min() < 0 or chosen.max() >= split.n_users):
            raise ConfigError(f"user indices must lie in [0, {split.n_users})")
        chosen = chosen[targets[chosen] >= 0]
    n_items = split.n_items
    hist_indptr, hist_items = split.history(target)
    sampled = np.empty(len(chosen), dtype=np.int64)
    full = np.empty(len(chosen), dtype=np.int64)
    top10 = np.full((len(chosen), _K), -1, dtype=np.int64)
    step = max(1, min(batch_size, _MAX_BATCH_CELLS // max(n_items, 1)))
    for lo in range(0, len(chosen), step):
        batch = chosen[lo : lo + step]
        scores = _score_batch(scorer, batch, n_items)
        rows = np.arange(len(batch))
        held_out = targets[batch]
        held_score = scores[rows, held_out]

        negatives = split.sampled_negatives[batch]
        neg_scores = scores[rows[:, None], np.maximum(negatives, 0)]
        sampled[lo : lo + len(batch)] = ranks_of(held_score, neg_scores, negatives >= 0)

        excluded = np.zeros(scores.shape, dtype=bool)
        owner, seen = _gather_csr(hist_indptr, hist_items, batch)
        excluded[owner, seen] = True
        competitors = ~excluded
        competitors[rows, held_out] = False
        full[lo : lo + len(batch)] = ranks_of(held_score, scores, competitors)

        top10[lo : lo + len(batch)] = _top_k(np.where(excluded, -np.inf, scores), excluded, _K)
    return UserRanks(chosen, sampled, full, top10, n_items)


def evaluate(
    scorer: Scorer,
    split: LeaveOneOutSplit,
    *,
    target: Target = "test",
    users: np.ndarray | None = None,
    batch_size: int = 512,
) -> RankingMetrics:
    """Evaluate ``scorer`` on ``split`` with the fedpers protocol.

    Args:
        scorer: ``scorer(user_indices) -> float[len(user_indices), n_items]``.
        split: the leave-one-out split.
        target: ``"test"`` or ``"valid"`` (tuning and early stopping use ``"valid"``).
        users: users to evaluate; default every user with a held-out item.
        batch_size: users scored per scorer call.

    Returns:
        The averaged metrics.

    Raises:
        ConfigError: on a bad argument or scorer output shape.
        DataError: when no user has a held-out item.

    Example:
        >>> from fedpers.simulation.data import SyntheticConfig, generate_synthetic
        >>> split = leave_one_out(generate_synthetic(SyntheticConfig(n_users=100, n_items=50)))
        >>> scores = np.zeros((split.n_users, split.n_items))
        >>> scores[np.arange(split.n_users), split.test_items] = 1.0  # an oracle
        >>> metrics = evaluate(lambda u: scores[u], split)
        >>> metrics.hr10_full, metrics.ndcg10_full, metrics.n_users
        (1.0, 1.0, 100)
    """
    ranks = rank_users(scorer, split, target=target, users=users, batch_size=batch_size)
    return metrics_from_ranks(ranks)


def user_groups(
    data: InteractionData, attributes: Sequence[str] = ("gender", "age_band", "segment")
) -> dict[str, np.ndarray]:
    """Per-user group labels for fairness reporting, from ``data.user_attributes``.

    ``"age_band"`` is derived from a numeric ``"age"`` column with
    :func:`fedpers.simulation.data.movielens.age_band` when the data has ages but no
    bands. Attributes the data does not have are skipped, so data without user
    attributes yields an empty dictionary.

    Args:
        data: the interaction log.
        attributes: which user attributes to group by.

    Returns:
        ``{group name: str[n_users] label of each user}``.

    Raises:
        DataError: when an attribute column does not have one entry per user, or ages
            are not numeric.
    """
    columns = dict(data.user_attributes)
    if "age_band" not in columns and "age" in columns:
        try:
            ages = np.asarray(columns["age"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{data.name}: user attribute 'age' is not numeric") from exc
        columns["age_band"] = np.array([age_band(int(a)) for a in ages], dtype=str)
    groups: dict[str, np.ndarray] = {}
    for name in attributes:
        if name not in columns:
            continue
        column = np.asarray(columns[name]).astype(str)
        if len(column) != data.n_users:
            raise DataError(
                f"{data.name}: user attribute {name!r} has {len(column)} rows, "
                f"expected {data.n_users}"
            )
        groups[name] = column
    return groups


def evaluate_by_group(
    scorer: Scorer,
    split: LeaveOneOutSplit,
    groups: Mapping[str, np.ndarray],
    *,
    target: Target = "test",
    batch_size: int = 512,
) -> dict[str, dict[str, RankingMetrics]]:
    """The protocol's metrics per group value (every user is scored once).

    Args:
        scorer: ``scorer(user_indices) -> float[len(user_indices), n_items]``.
        split: the leave-one-out split.
        groups: ``{group name: label per user}`` as from :func:`user_groups`.
        target: ``"test"`` or ``"valid"``.
        batch_size: users scored per scorer call.

    Returns:
        ``{group name: {label: metrics}}``; labels without evaluated users are left out.

    Raises:
        DataError: when a label array does not have one entry per user.
    """
    for name, labels in groups.items():
        if len(labels) != split.n_users:
            raise DataError(f"group {name!r} has {len(labels)} labels, expected {split.n_users}")
    if not groups:
        return {}
    ranks = rank_users(scorer, split, target=target, batch_size=batch_size)
    out: dict[str, dict[str, RankingMetrics]] = {}
    for name, labels in groups.items():
        user_labels = np.asarray(labels).astype(str)[ranks.users]
        out[name] = {
            str(label): metrics_from_ranks(ranks.subset(user_labels == label))
            for label in np.unique(user_labels)
        }
    return out


def fairness_gaps(
    by_group: Mapping[str, Mapping[str, RankingMetrics]],
) -> dict[str, dict[str, float]]:
    """Best-minus-worst group value of each accuracy metric, per grouping.

    Args:
        by_group: the output of :func:`evaluate_by_group`.

    Returns:
        ``{group name: {metric name: max - min over labels}}`` for :data:`METRIC_NAMES`.
    """
    gaps: dict[str, dict[str, float]] = {}
    for name, per_label in by_group.items():
        if not per_label:
            continue
        gaps[name] = {
            metric: float(
                max(getattr(m, metric) for m in per_label.values())
                - min(getattr(m, metric) for m in per_label.values())
            )
            for metric in METRIC_NAMES
        }
    return gaps
