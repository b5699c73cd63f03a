"""The centralized reference: BPR matrix factorisation of the fedpers model family.

One process sees every user's interactions and trains the same model the federation
trains (the shared :class:`~fedpers.client.model.ItemSide` plus a table of user
vectors) with the Bayesian Personalized Ranking loss (Rendle et al. 2009)::

    loss = -mean log sigmoid(s(u, i) - s(u, j))
           + l2 * (mean |u|^2 + mean |v_i|^2 + mean |v_j|^2
                   + bias_l2_ratio * (mean b_i^2 + mean b_j^2))

over history pairs ``(u, i)`` and ``negatives`` items ``j`` per pair drawn uniformly
from the items ``u`` has no history with, optimised with Adam. Training follows the
protocol of :mod:`fedpers.simulation.evaluation.protocol`: select the number of epochs on the
validation items (early stopping), then refit on training plus validation items and
score the test items once. That test figure is the reference the federation must
approach (issue 4's targets are relative to it).

The defaults were tuned on ML-100K validation items (seeds 0-4 of the training, the
split's seed 0): dimension 32/64/128, L2 0.0003-0.1, learning rate 0.002-0.02, 1-16
negatives, batch 256-4096, Adagrad, whole-table weight decay, the attribute tower,
recency weighting and parameter averaging were tried. A larger dimension with a
lower learning rate, 8 negatives and a penalty on the biases too was the most accurate
and the least seed-dependent; the attribute tower did not help on ML-100K.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from torch.nn import functional

from fedpers.client.model import ItemSide, ModelConfig, score_items, shared_arrays
from fedpers.privacy.errors import ConfigError, DataError
from fedpers.simulation.data.interactions import InteractionData
from fedpers.simulation.evaluation.popularity import popularity_scorer
from fedpers.simulation.evaluation.protocol import (
    METRIC_NAMES,
    LeaveOneOutSplit,
    RankingMetrics,
    Scorer,
    evaluate,
    evaluate_by_group,
    fairness_gaps,
    leave_one_out,
    user_groups,
)

__all__ = [
    "CentralizedConfig",
    "CentralizedResult",
    "HistoryLookup",
    "centralized_report",
    "sample_training_negatives",
    "selection_score",
    "train_centralized",
]


@dataclass(frozen=True)
class CentralizedConfig:
    """Hyperparameters of the centralized BPR reference (defaults tuned on ML-100K).

    Attributes:
        dim: embedding dimension.
        epochs: maximum number of selection epochs (passes over the history).
        lr: Adam learning rate.
        l2: weight of the L2 penalty on the user and item vectors of each batch.
        bias_l2_ratio: the item biases' penalty relative to ``l2``.
        negatives: negative items sampled per positive pair.
        batch_size: positive pairs per optimiser step.
        seed: seed of initialisation, shuffling and negative sampling.
        use_item_features: train the attribute tower over ``data.item_features``.
        patience: selection epochs without validation improvement before stopping
            (0: run all ``epochs``).
        refit: retrain on training plus validation items for the selected number of
            epochs before scoring the test items.
        init_std: standard deviation of the user and item embedding initialisation.
    """

    dim: int = 128
    epochs: int = 60
    lr: float = 0.003
    l2: float = 0.005
    bias_l2_ratio: float = 1.0
    negatives: int = 8
    batch_size: int = 1024
    seed: int = 0
    use_item_features: bool = False
    patience: int = 4
    refit: bool = True
    init_std: float = 0.1

    def __post_init__(self) -> None:
        for name in ("dim", "epochs", "negatives", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.l2 < 0 or self.bias_l2_ratio < 0:
            raise ConfigError("l2 and bias_l2_ratio must be >= 0")
        if self.patience < 0:
            raise ConfigError(f"patience must be >= 0, got {self.patience}")
        if self.init_std <= 0:
            raise ConfigError(f"init_std must be positive, got {self.init_std}")


@dataclass(frozen=True, eq=False)
class CentralizedResult:
    """A trained centralized reference and its test figures.

    Attributes:
        config: the configuration it was trained with.
        shared: the shared item-side parameters in wire order
            (:func:`fedpers.client.model.shared_arrays`).
        item_vectors: ``float32[n_items, dim]`` effective item vectors (embedding plus tower).
        item_bias: ``float32[n_items]`` item biases.
        user_vectors: ``float32[n_users, dim]`` user vectors.
        metrics: test metrics of the final model.
        valid_metrics: validation metrics of the selected epoch (``None`` without
            validation items).
        best_epoch: the selected number of epochs.
        epochs_run: selection epochs actually trained (0 without validation items).
        train_seconds: wall time of selection and refit (validation scoring included,
            the final test scoring excluded).
        train_cpu_seconds: CPU time of this process over the same span (on a shared
            machine, the figure that does not depend on other processes).
        history: validation metrics after each selection epoch.
    """

    config: CentralizedConfig
    shared: list[np.ndarray]
    item_vectors: np.ndarray
    item_bias: np.ndarray
    user_vectors: np.ndarray
    metrics: RankingMetrics
    valid_metrics: RankingMetrics | None
    best_epoch: int
    epochs_run: int
    train_seconds: float
    train_cpu_seconds: float
    history: list[RankingMetrics] = field(default_factory=list)

    def scorer(self) -> Scorer:
        """A scorer for :func:`fedpers.simulation.evaluation.protocol.evaluate`."""
        return _dense_scorer(self.user_vectors, self.item_vectors, self.item_bias)


def _dense_scorer(users: np.ndarray, items: np.ndarray, bias: np.ndarray) -> Scorer:
    """``users[batch] @ items.T + bias`` through torch (which honours its thread setting)."""
    user_t = torch.from_numpy(np.ascontiguousarray(users, dtype=np.float32))
    item_t = torch.from_numpy(np.ascontiguousarray(items, dtype=np.float32))
    bias_t = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32))

    def score(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            rows = user_t[torch.from_numpy(np.asarray(batch, dtype=np.int64))]
            out: np.ndarray = score_items(rows, item_t, bias_t).numpy()
        return out

    return score


@dataclass(frozen=True, eq=False)
class _Snapshot:
    """The parameters after one epoch, as numpy copies."""

    user_vectors: np.ndarray
    item_vectors: np.ndarray
    item_bias: np.ndarray
    shared: list[np.ndarray]

    def scorer(self) -> Scorer:
        return _dense_scorer(self.user_vectors, self.item_vectors, self.item_bias)


class HistoryLookup:
    """Constant-time membership of ``(user, item)`` pairs in a history.

    A dense boolean matrix when ``n_users * n_items`` is at most ``dense_limit`` cells
    (ML-100K: 1.6 MB), sorted ``user * n_items + item`` keys with binary search otherwise.

    Args:
        users: ``int64[m]`` user of each history pair.
        items: ``int64[m]`` item of each history pair.
        n_users: number of users.
        n_items: catalogue size.
        dense_limit: the largest matrix (in cells) stored densely.
    """

    def __init__(
        self,
        users: np.ndarray,
        items: np.ndarray,
        n_users: int,
        n_items: int,
        dense_limit: int = 64_000_000,
    ) -> None:
        self.n_items = n_items
        self.dense: np.ndarray | None = None
        self.keys: np.ndarray | None = None
        if n_users * n_items <= dense_limit:
            self.dense = np.zeros((n_users, n_items), dtype=bool)
            self.dense[users, items] = True
        else:
            self.keys = np.unique(users * n_items + items)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each ``(users[k], items[k])`` is in the history (broadcasting)."""
        if self.dense is not None:
            found: np.ndarray = self.dense[users, items]
            return found
        keys = self.keys
        if keys is None or len(keys) == 0:
            return np.zeros(np.broadcast(users, items).shape, dtype=bool)
        query = users * self.n_items + items
        pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
        hit: np.ndarray = keys[pos] == query
        return hit


def sample_training_negatives(
    history: HistoryLookup,
    users: np.ndarray,
    count: int,
    rng: np.random.Generator,
    max_rounds: int = 50,
) -> np.ndarray:
    """Draw ``count`` items per entry of ``users`` uniformly from items outside its history.

    Rejection sampling: draws that hit a history pair are redrawn (draws are with
    replacement; a user's history is a small part of the catalogue). After
    ``max_rounds`` the remaining hits are kept, which only happens for users who
    interacted with nearly every item.

    Args:
        history: the pairs that are not negatives.
        users: ``int64[B]`` the user of each positive pair.
        count: negatives per pair.
        rng: the random stream.
        max_rounds: bound on the redraw rounds.

    Returns:
        ``int64[B, count]`` negative items.
    """
    n_items = history.n_items
    draws = rng.integers(0, n_items, size=(len(users), count), dtype=np.int64)
    rows = users[:, None]
    for _ in range(max_rounds):
        hit = history.contains(rows, draws)
        if not hit.any():
            break
        draws[hit] = rng.integers(0, n_items, size=int(hit.sum()), dtype=np.int64)
    return draws


def selection_score(metrics: RankingMetrics) -> float:
    """The early-stopping criterion: validation ``hr10_sampled + hr10_full``."""
    return metrics.hr10_sampled + metrics.hr10_full


def _train_bpr(
    data: InteractionData,
    pairs: tuple[np.ndarray, np.ndarray],
    cfg: CentralizedConfig,
    epochs: int,
    after_epoch: Callable[[int, float, _Snapshot], bool],
) -> None:
    """Run up to ``epochs`` BPR epochs; ``after_epoch(epoch, loss, snapshot)`` returns stop."""
    features = data.item_features if cfg.use_item_features else None
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model_config = ModelConfig(
        n_items=data.n_items,
        dim=cfg.dim,
        n_item_features=0 if features is None else int(features.shape[1]),
        init_std=cfg.init_std,
    )
    side = ItemSide(model_config, item_features=features, seed=cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    user_table = torch.nn.Parameter(
        torch.randn(data.n_users, cfg.dim, generator=generator) * cfg.init_std
    )
    optimiser = torch.optim.Adam([*side.parameters(), user_table], lr=cfg.lr)
    users_np, items_np = pairs
    pair_users = torch.as_tensor(users_np)
    pair_items = torch.as_tensor(items_np)
    history = HistoryLookup(users_np, items_np, data.n_users, data.n_items)
    n_pairs = len(items_np)
    for epoch in range(1, epochs + 1):
        order = torch.as_tensor(rng.permutation(n_pairs))
        total = 0.0
        for lo in range(0, n_pairs, cfg.batch_size):
            idx = order[lo : lo + cfg.batch_size]
            users_b = pair_users[idx]
            pos_b = pair_items[idx]
            neg_b = torch.as_tensor(
                sample_training_negatives(history, users_b.numpy(), cfg.negatives, rng)
            )
            u = user_table[users_b]
            v_pos, v_neg = side.item_vectors(pos_b), side.item_vectors(neg_b)
            b_pos, b_neg = side.biases(pos_b), side.biases(neg_b)
            s_pos = (u * v_pos).sum(-1) + b_pos
            s_neg = torch.bmm(v_neg, u.unsqueeze(-1)).squeeze(-1) + b_neg
            rank_loss = -functional.logsigmoid(s_pos.unsqueeze(1) - s_neg).mean()
            penalty = (
                u.pow(2).sum(-1).mean()
                + v_pos.pow(2).sum(-1).mean()
                + v_neg.pow(2).sum(-1).mean()
                + cfg.bias_l2_ratio * (b_pos.pow(2).mean() + b_neg.pow(2).mean())
            )
            loss = rank_loss + cfg.l2 * penalty
            optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            total += float(rank_loss.detach()) * len(idx)
        with torch.no_grad():
            snapshot = _Snapshot(
                user_vectors=user_table.detach().numpy().copy(),
                item_vectors=side.item_vectors().detach().numpy().copy(),
                item_bias=side.biases().detach().numpy().copy(),
                shared=shared_arrays(side),
            )
        if after_epoch(epoch, total / n_pairs, snapshot):
            return


class _Selection:
    """Early stopping on the validation items: remembers the best epoch."""

    def __init__(
        self,
        split: LeaveOneOutSplit,
        patience: int,
        bar: Progress,
        task: TaskID,
        on_epoch: Callable[[int, RankingMetrics], None] | None,
    ) -> None:
        self.split = split
        self.patience = patience
        self.bar = bar
        self.task = task
        self.on_epoch = on_epoch
        self.history: list[RankingMetrics] = []
        self.best_score = -np.inf
        self.best_epoch = 0
        self.best_metrics: RankingMetrics | None = None
        self.best_snapshot: _Snapshot | None = None
        self.stale = 0

    def __call__(self, epoch: int, loss: float, snapshot: _Snapshot) -> bool:
        valid = evaluate(snapshot.scorer(), self.split, target="valid")
        self.history.append(valid)
        if self.on_epoch is not None:
            self.on_epoch(epoch, valid)
        self.bar.update(
            self.task,
            advance=1,
            status=f"loss {loss:.4f}  valid hr10 {valid.hr10_sampled:.3f}/{valid.hr10_full:.3f}",
        )
        score = selection_score(valid)
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self.best_metrics, self.best_snapshot = valid, snapshot
            self.stale = 0
            return False
        self.stale += 1
        return self.patience > 0 and self.stale >= self.patience


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]bpr-mf {task.description}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def train_centralized(
    data: InteractionData,
    split: LeaveOneOutSplit,
    config: CentralizedConfig | None = None,
    *,
    progress: bool = True,
    on_epoch: Callable[[int, RankingMetrics], None] | None = None,
) -> CentralizedResult:
    """Train the centralized BPR reference on ``split`` and score it on the test items.

    Two phases, following :meth:`LeaveOneOutSplit.history`:

    1. *Selection*: train on ``split.history("valid")`` (the training interactions),
       score the validation items after every epoch and stop after ``patience`` epochs
       without improvement of :func:`selection_score`; the best epoch is selected.
    2. *Refit* (``config.refit``): train again from the same initialisation and seed on
       ``split.history("test")`` (training plus validation items) for the selected number
       of epochs and score the test items. Without refit, the selected epoch's
       parameters are scored on the test items.

    When no user has a validation item, selection is skipped and the refit runs for
    ``config.epochs``.

    Args:
        data: the interaction log ``split`` was made from (item features, sizes).
        split: the leave-one-out split.
        config: hyperparameters; the tuned defaults when ``None``.
        progress: show a rich progress bar on stderr.
        on_epoch: optional callback with each selection epoch and its validation metrics.

    Returns:
        The trained model, its validation and test metrics and timings.

    Raises:
        ConfigError: when item features are requested but the data has none.
        DataError: when the split does not match the data or has no history to learn.
    """
    cfg = config or CentralizedConfig()
    if (split.n_users, split.n_items) != (data.n_users, data.n_items):
        raise DataError(
            f"split is for {split.n_users} users x {split.n_items} items, data has "
            f"{data.n_users} x {data.n_items}"
        )
    if cfg.use_item_features and data.item_features is None:
        raise ConfigError(f"{data.name} has no item features; drop use_item_features")
    select_pairs = split.history_pairs("valid")
    refit_pairs = split.history_pairs("test")
    if len(refit_pairs[1]) == 0:
        raise DataError(f"{data.name}: the split has no interactions to learn from")
    selecting = len(split.eval_users("valid")) > 0 and len(select_pairs[1]) > 0

    start, start_cpu = time.perf_counter(), time.process_time()
    with _progress_bar(progress) as bar:
        selection: _Selection | None = None
        epochs = cfg.epochs
        final: _Snapshot | None = None
        if selecting:
            task = bar.add_task("select", total=cfg.epochs, status="")
            selection = _Selection(split, cfg.patience, bar, task, on_epoch)
            _train_bpr(data, select_pairs, cfg, cfg.epochs, selection)
            bar.update(task, total=len(selection.history))  # stopped early: finish the bar
            epochs = selection.best_epoch
            final = selection.best_snapshot
        if cfg.refit or final is None:
            task = bar.add_task("refit", total=epochs, status="")
            last: list[_Snapshot] = []

            def after_refit(epoch: int, loss: float, snapshot: _Snapshot) -> bool:
                bar.update(task, advance=1, status=f"loss {loss:.4f}")
                last[:] = [snapshot]
                return False

            _train_bpr(data, refit_pairs, cfg, epochs, after_refit)
            final = last[0]
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    return CentralizedResult(
        config=cfg,
        shared=final.shared,
        item_vectors=final.item_vectors,
        item_bias=final.item_bias,
        user_vectors=final.user_vectors,
        metrics=evaluate(final.scorer(), split, target="test"),
        valid_metrics=None if selection is None else selection.best_metrics,
        best_epoch=epochs,
        epochs_run=0 if selection is None else len(selection.history),
        train_seconds=seconds,
        train_cpu_seconds=cpu_seconds,
        history=[] if selection is None else selection.history,
    )


def _figures(metrics: RankingMetrics) -> dict[str, float]:
    return {name: getattr(metrics, name) for name in (*METRIC_NAMES, "coverage10")}


def centralized_report(
    data: InteractionData,
    config: CentralizedConfig | None = None,
    *,
    n_negatives: int = 99,
    split_seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Split ``data``, train the BPR reference, score it beside popularity, per group too.

    This is what ``fedpers bench centralized --json`` and ``benchmarks/bench_centralized.py``
    print.

    Args:
        data: the interaction log.
        config: hyperparameters; the tuned defaults when ``None``.
        n_negatives: sampled negatives per user of the protocol.
        split_seed: seed of the sampled negatives.
        progress: show the training progress bar on stderr.

    Returns:
        A JSON-ready dictionary: ``model``, ``dataset``, the four metrics, ``coverage10``,
        ``train_seconds``, ``train_cpu_seconds``, ``num_users``, ``num_items``,
        ``num_interactions``, ``eval_users``, ``best_epoch``, ``config``, ``popularity``
        (the four metrics and ``coverage10``), ``groups`` (per attribute and label, model
        and popularity) and ``group_gaps`` (best minus worst label per attribute, model
        and popularity).
    """
    cfg = config or CentralizedConfig()
    split = leave_one_out(data, n_negatives=n_negatives, seed=split_seed)
    result = train_centralized(data, split, cfg, progress=progress)
    pop_scorer = popularity_scorer(split, "test")
    popularity = evaluate(pop_scorer, split, target="test")
    groups = user_groups(data)
    model_groups = evaluate_by_group(result.scorer(), split, groups)
    pop_groups = evaluate_by_group(pop_scorer, split, groups)
    return {
        "model": "bpr-mf",
        "dataset": data.name,
        **_figures(result.metrics),
        "train_seconds": round(result.train_seconds, 3),
        "train_cpu_seconds": round(result.train_cpu_seconds, 3),
        "num_users": data.n_users,
        "num_items": data.n_items,
        "num_interactions": data.n_interactions,
        "eval_users": result.metrics.n_users,
        "best_epoch": result.best_epoch,
        "config": asdict(cfg),
        "popularity": _figures(popularity),
        "groups": {
            name: {
                label: {
                    "n_users": metrics.n_users,
                    "model": _figures(metrics),
                    "popularity": _figures(pop_groups[name][label]),
                }
                for label, metrics in per_label.items()
            }
            for name, per_label in model_groups.items()
        },
        "group_gaps": {
            "model": fairness_gaps(model_groups),
            "popularity": fairness_gaps(pop_groups),
        },
    }
