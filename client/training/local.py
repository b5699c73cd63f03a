"""Non-private local training of the shared item side, vectorised over a cohort of devices.

Every device holds a private user vector ``u`` and a list of positive items. A round of
local training starts from the *global* shared parameters (item embeddings ``E``, item
bias ``b`` and, optionally, the attribute tower ``W``; see :mod:`fedpers.client.model`),
gives the device its own copy of them, and runs BPR (Rendle et al., 2009) with uniformly
sampled negatives on that copy and on ``u``::

    x = u . (v_p - v_n) + b_p - b_n,     loss = -log sigmoid(x)

The device's update is its copy minus the global parameters; the user vector stays on the
device. The procedure is, per device:

1. ``user_warmup`` full-batch steps on ``u`` alone with the shared side frozen (the
   fold-in of :func:`fold_in`), so that a stale or fresh user vector first agrees with
   the current global item side before the item side is moved;
2. ``epochs`` passes over the device's positives, ``negatives`` sampled negatives per
   positive, in batches of ``batch_size`` pairs (``0``: one full batch per epoch); each
   step moves the user vector by ``lr_user`` times its *mean* gradient over the batch
   and every item row by ``lr_item`` (bias: ``lr_bias``) times the *sum* of its
   per-example gradients, so that an example moves its own rows by the same amount
   whatever the batch size; ``l2`` is the usual BPR weight decay on the rows (and the
   user vector) an example touches.

Vectorisation: devices are processed in chunks (sorted by history length so that padding
stays small, at most 128 devices and a memory budget per chunk); a chunk holds, per
device, a copy of only the item rows that device touches (its positives and sampled
negatives; the rest of its delta is zero) and a dense copy of the attribute tower, and
every step is a handful of batched tensor operations over the chunk. Padding is masked, all
operations are per device, and every random draw of device ``i`` comes from its own
generator seeded by ``seeds[i]``: the result for a device does not depend on which other
devices share its cohort (up to float rounding). A node is a cohort of one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from fedpers.client.inference.fold_in import fold_in  # re-exported: numpy only, for serving
from fedpers.client.metrics import hits_at_k, ndcgs_at_k, ranks_of
from fedpers.client.model import ModelConfig
from fedpers.client.record_values import (
    UNSET,
    Values,
    boolean,
    integer,
    number,
    number_or_unset,
)
from fedpers.client.session import SessionConfig, check_session, session_vectors
from fedpers.client.training.cohort import Cohort
from fedpers.client.training.global_parameters import GlobalParameters
from fedpers.client.training.update import LocalUpdate
from fedpers.privacy.errors import ConfigError

__all__ = [
    "LocalTrainConfig",
    "evaluate_devices",
    "fold_in",
    "init_user_vector",
    "score_devices",
    "train_devices",
]

_CHUNK_BYTES = 64 * 2**20
"""Memory budget of one chunk's per-device parameter copies (bytes)."""

_CHUNK_DEVICES = 128
"""At most this many devices per chunk: devices are sorted by history length, so smaller
chunks pad less; 128 keeps the per-step overhead of the batched ops negligible."""


@dataclass(frozen=True)
class LocalTrainConfig:
    """Hyperparameters of one device's local training (and evaluation fine-tuning).

    Attributes:
        epochs: passes over the device's positives per round.
        lr_item: step size of the item embedding rows (and the attribute tower).
        lr_bias: step size of the item bias; ``None`` uses ``lr_item``.
        lr_tower: step size of the attribute tower; ``None`` uses ``lr_item``.
        lr_user: step size of the private user vector.
        negatives: uniformly sampled negatives per positive and epoch.
        batch_size: (positive, negative) pairs per step; ``0`` is one full batch per epoch.
        l2: weight decay on the rows and the user vector an example touches.
        user_warmup: full-batch steps on the user vector alone before the item side moves.
        train_items: ``False`` freezes the shared side (a user-vector-only round).
        session_weight: ranking only (training ignores it): how far the device's recent
            events shift its query, ``u + session_weight * s`` with ``s`` the
            decay-weighted mean of the global item vectors of its last
            ``session_window`` history items (:mod:`fedpers.client.session`); ``0``
            ranks with ``u`` alone.
        session_decay: weight ratio between a history item and the next newer one.
        session_window: how many of the newest history items the session vector uses.
    """

    epochs: int = 2
    lr_item: float = 0.1
    lr_bias: float | None = None
    lr_tower: float | None = None
    lr_user: float = 0.5
    negatives: int = 1
    batch_size: int = 0
    l2: float = 0.0
    user_warmup: int = 10
    train_items: bool = True
    session_weight: float = 0.0
    session_decay: float = 0.7
    session_window: int = 10

    def __post_init__(self) -> None:
        check_session(self.session_weight, self.session_decay, self.session_window)
        if self.epochs < 0 or self.user_warmup < 0:
            raise ConfigError("epochs and user_warmup must be >= 0")
        if self.negatives < 1:
            raise ConfigError(f"negatives must be >= 1, got {self.negatives}")
        if self.batch_size < 0:
            raise ConfigError(f"batch_size must be >= 0, got {self.batch_size}")
        for name in ("lr_item", "lr_user", "l2"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0")
        for name in ("lr_bias", "lr_tower"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{name} must be >= 0")

    @property
    def session(self) -> SessionConfig:
        """The ranking-time session settings (:class:`~fedpers.client.session.SessionConfig`)."""
        return SessionConfig(self.session_weight, self.session_decay, self.session_window)

    @property
    def bias_lr(self) -> float:
        """The effective step size of the item bias."""
        return self.lr_item if self.lr_bias is None else self.lr_bias

    @property
    def tower_lr(self) -> float:
        """The effective step size of the attribute tower."""
        return self.lr_item if self.lr_tower is None else self.lr_tower

    def to_dict(self) -> dict[str, int | float | bool]:
        """The fields as a flat dict (``None`` step sizes become ``-1.0``)."""
        out: dict[str, int | float | bool] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = UNSET if value is None else value
        return out

    @classmethod
    def from_dict(cls, values: Values, record: str = "local") -> LocalTrainConfig:
        """Inverse of :meth:`to_dict`; a field left out keeps its default.

        Each value is read as its field's type (a negative step size is ``None``).

        Raises:
            ConfigError: on an unknown key or a value out of range.
            DataError: on a value that is not of its field's type.
        """
        unknown = set(values) - set(_FIELD_READERS)
        if unknown:
            raise ConfigError(f"unknown local training keys: {sorted(unknown)}")
        kwargs: dict[str, Any] = {
            name: _FIELD_READERS[name](values, name, record) for name in values
        }
        return cls(**kwargs)


_TYPE_READERS: dict[str, Callable[[Values, str, str], Any]] = {
    "int": integer,
    "float": number,
    "float | None": number_or_unset,
    "bool": boolean,
}
"""How :meth:`LocalTrainConfig.from_dict` reads a field, by its annotation."""
_FIELD_READERS = {f.name: _TYPE_READERS[str(f.type)] for f in fields(LocalTrainConfig)}


def init_user_vector(dim: int, seed: int, std: float = 0.1) -> np.ndarray:
    """A fresh private user vector, ``N(0, std^2)`` per coordinate, float32.

    Args:
        dim: embedding dimension.
        seed: seed of the device's generator.
        std: standard deviation of each coordinate.

    Returns:
        ``float32[dim]``.

    Raises:
        ConfigError: when ``dim`` is not positive.
    """
    if dim <= 0:
        raise ConfigError(f"dim must be positive, got {dim}")
    return (np.random.default_rng(seed).standard_normal(dim) * std).astype(np.float32)


@dataclass
class _Chunk:
    """The result of local training of a chunk of devices (sparse per-device copies).

    Device ``j`` of the chunk touched the catalogue rows ``rows[j, :n_rows[j]]``; its copy
    of those rows is ``emb[j, :n_rows[j]]`` and ``bias[j, :n_rows[j]]`` (padding rows are
    never read or written). The attribute tower, when present, is a dense per-device copy.
    """

    rows: np.ndarray  # [m, K] catalogue index of each local row (padded with 0)
    n_rows: np.ndarray  # [m]
    emb: torch.Tensor  # [m, K, d]
    bias: torch.Tensor  # [m, K]
    tower: torch.Tensor | None  # [m, f, d]
    users: torch.Tensor  # [m, d]
    loss: np.ndarray  # [m] mean loss of the last epoch
    n_examples: np.ndarray  # [m] pairs used this round


@dataclass
class _Schedule:
    """One device's random draws for a round: batches of pairs and warm-up negatives."""

    pos: list[np.ndarray]  # per step, catalogue indices of the positives
    neg: list[np.ndarray]  # per step, catalogue indices of the negatives
    warm: np.ndarray  # [user_warmup, n] warm-up negatives
    last_epoch_start: int  # first step of the last epoch


def _sample_negatives(
    rng: np.random.Generator, is_pos: np.ndarray, size: tuple[int, ...]
) -> np.ndarray:
    """Uniform negatives, re-drawn (up to 10 times) where they hit a positive."""
    neg = rng.integers(0, is_pos.size, size=size)
    for _ in range(10):
        hit = is_pos[neg]
        if not hit.any():
            break
        neg[hit] = rng.integers(0, is_pos.size, size=int(hit.sum()))
    return neg


def _device_schedule(
    positives: np.ndarray, n_items: int, config: LocalTrainConfig, seed: int
) -> _Schedule:
    """Draw one device's batches and warm-up negatives from its own generator."""
    rng = np.random.default_rng(seed)
    n = positives.size
    is_pos = np.zeros(n_items, dtype=bool)
    is_pos[positives] = True
    warm = _sample_negatives(rng, is_pos, (config.user_warmup, n))
    sched = _Schedule([], [], warm, 0)
    if n == 0:
        return sched
    k = config.negatives
    for _ in range(config.epochs):
        sched.last_epoch_start = len(sched.pos)
        pos = np.repeat(positives[rng.permutation(n)], k)
        neg = _sample_negatives(rng, is_pos, (n * k,))
        bs = pos.size if config.batch_size == 0 else config.batch_size
        for start in range(0, pos.size, bs):
            sched.pos.append(pos[start : start + bs])
            sched.neg.append(neg[start : start + bs])
    return sched


def _pad(rows: Sequence[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack ragged int arrays into ``[len(rows), width]`` with a validity mask."""
    out = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=bool)
    for i, r in enumerate(rows):
        out[i, : r.size] = r
        mask[i, : r.size] = True
    return out, mask


def _bpr_terms(
    users: torch.Tensor,
    vp: torch.Tensor,
    vn: torch.Tensor,
    bp: torch.Tensor,
    bn: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BPR loss per pair, its derivative ``g`` w.r.t. the margin, and ``v_p - v_n``."""
    diff = vp - vn
    x = (diff * users.unsqueeze(1)).sum(-1) + bp - bn
    loss = torch.nn.functional.softplus(-x) * mask
    g = -torch.sigmoid(-x) * mask
    return loss, g, diff


def _warmup(
    users: torch.Tensor,
    global_vecs: torch.Tensor,
    global_bias: torch.Tensor,
    train_items: Sequence[np.ndarray],
    schedules: Sequence[_Schedule],
    config: LocalTrainConfig,
) -> torch.Tensor:
    """Full-batch BPR steps on the user vectors against the frozen global item side."""
    width = max((p.size for p in train_items), default=0)
    if not width or not config.user_warmup:
        return users
    pos, mask = _pad(train_items, width)
    pos_t = torch.as_tensor(pos)
    mask_t = torch.as_tensor(mask, dtype=torch.float32)
    count = mask_t.sum(1).clamp(min=1.0).unsqueeze(1)
    vp, bp = global_vecs[pos_t], global_bias[pos_t]
    for step in range(config.user_warmup):
        neg_t = torch.as_tensor(_pad([sch.warm[step] for sch in schedules], width)[0])
        _, g, diff = _bpr_terms(users, vp, global_vecs[neg_t], bp, global_bias[neg_t], mask_t)
        grad = (g.unsqueeze(-1) * diff).sum(1) / count
        users = users - config.lr_user * (grad + config.l2 * users)
    return users


def _global_item_vectors(
    global_arrays: Sequence[np.ndarray], feats: torch.Tensor | None
) -> torch.Tensor:
    """The global effective item vectors ``E + A W`` (``E`` alone without a tower)."""
    emb = torch.as_tensor(np.asarray(global_arrays[0], dtype=np.float32))
    if feats is None or len(global_arrays) <= 2:
        return emb
    return emb + feats @ torch.as_tensor(np.asarray(global_arrays[2], dtype=np.float32))


def _train_chunk(
    global_arrays: Sequence[np.ndarray],
    feats: torch.Tensor | None,
    train_items: Sequence[np.ndarray],
    user_vectors: np.ndarray,
    config: LocalTrainConfig,
    seeds: Sequence[int],
) -> _Chunk:
    """Local training of one chunk of devices; see the module docstring."""
    m = len(train_items)
    n_items, dim = global_arrays[0].shape
    g_emb = torch.as_tensor(np.asarray(global_arrays[0], dtype=np.float32))
    g_bias = torch.as_tensor(np.asarray(global_arrays[1], dtype=np.float32))
    g_tower = (
        torch.as_tensor(np.asarray(global_arrays[2], dtype=np.float32))
        if len(global_arrays) > 2 and feats is not None
        else None
    )
    users = torch.as_tensor(np.asarray(user_vectors, dtype=np.float32)).clone()
    schedules = [
        _device_schedule(p, n_items, config, int(s))
        for p, s in zip(train_items, seeds, strict=True)
    ]

    # 1. user warm-up (fold-in) against the frozen global item side.
    g_vecs = _global_item_vectors(global_arrays, feats)
    users = _warmup(users, g_vecs, g_bias, train_items, schedules, config)

    # 2. the rows each device touches, and its sparse copy of them.
    row_sets = [
        np.unique(np.concatenate([p, *sch.neg])) if sch.pos else np.zeros(0, np.int64)
        for p, sch in zip(train_items, schedules, strict=True)
    ]
    n_rows = np.array([r.size for r in row_sets], dtype=np.int64)
    width_rows = max(1, int(n_rows.max(initial=0)))
    rows, _ = _pad(row_sets, width_rows)
    rows_t = torch.as_tensor(rows)
    emb = g_emb[rows_t]  # [m, K, d] (a copy)
    bias = g_bias[rows_t]
    tower = None if g_tower is None else g_tower.expand(m, -1, -1).clone()
    loc_feats = None if g_tower is None or feats is None else feats[rows_t]  # [m, K, f]

    # 3. joint epochs; every step is a few batched ops over the chunk.
    n_steps = max((len(sch.pos) for sch in schedules), default=0)
    empty = np.zeros(0, np.int64)
    last_loss = np.zeros(m, dtype=np.float64)
    last_count = np.zeros(m, dtype=np.float64)
    n_examples = np.array([sum(b.size for b in sch.pos) for sch in schedules], dtype=np.int64)
    flat_emb = emb.view(m * width_rows, dim)
    flat_bias = bias.view(m * width_rows)
    offsets = (torch.arange(m) * width_rows).unsqueeze(1)
    rows_idx = torch.arange(m).unsqueeze(1)
    for step in range(n_steps):
        live = [step < len(sch.pos) for sch in schedules]
        pos_l = [
            np.searchsorted(row_sets[i], sch.pos[step]) if live[i] else empty
            for i, sch in enumerate(schedules)
        ]
        neg_l = [
            np.searchsorted(row_sets[i], sch.neg[step]) if live[i] else empty
            for i, sch in enumerate(schedules)
        ]
        width = max(p.size for p in pos_l)
        pos, mask = _pad(pos_l, width)
        pos_t = torch.as_tensor(pos)
        neg_t = torch.as_tensor(_pad(neg_l, width)[0])
        mask_t = torch.as_tensor(mask, dtype=torch.float32)
        count = mask_t.sum(1)
        idx_p = (pos_t + offsets).reshape(-1)
        idx_n = (neg_t + offsets).reshape(-1)
        vp = flat_emb.index_select(0, idx_p).view(m, width, dim)
        vn = flat_emb.index_select(0, idx_n).view(m, width, dim)
        if tower is not None and loc_feats is not None:
            vp = vp + torch.matmul(loc_feats[rows_idx, pos_t], tower)
            vn = vn + torch.matmul(loc_feats[rows_idx, neg_t], tower)
        bp = flat_bias.index_select(0, idx_p).view(m, width)
        bn = flat_bias.index_select(0, idx_n).view(m, width)
        loss, g, diff = _bpr_terms(users, vp, vn, bp, bn, mask_t)
        in_last = np.array(
            [live[i] and step >= sch.last_epoch_start for i, sch in enumerate(schedules)]
        )
        last_loss += np.where(in_last, loss.sum(1).numpy(), 0.0)
        last_count += np.where(in_last, count.numpy(), 0.0)
        grad_u = (g.unsqueeze(-1) * diff).sum(1) / count.clamp(min=1.0).unsqueeze(1)
        grad_u = grad_u + config.l2 * users * (count > 0).unsqueeze(1)
        if config.train_items:
            gu = g.unsqueeze(-1) * users.unsqueeze(1)  # [m, B, d]
            m3 = mask_t.unsqueeze(-1)
            grad_vp = gu + config.l2 * vp * m3
            grad_vn = -gu + config.l2 * vn * m3
            flat_emb.index_add_(0, idx_p, grad_vp.reshape(-1, dim), alpha=-config.lr_item)
            flat_emb.index_add_(0, idx_n, grad_vn.reshape(-1, dim), alpha=-config.lr_item)
            flat_bias.index_add_(
                0, idx_p, (g + config.l2 * bp * mask_t).reshape(-1), alpha=-config.bias_lr
            )
            flat_bias.index_add_(
                0, idx_n, (-g + config.l2 * bn * mask_t).reshape(-1), alpha=-config.bias_lr
            )
            if tower is not None and loc_feats is not None:
                grad_w = torch.matmul(
                    loc_feats[rows_idx, pos_t].transpose(1, 2), grad_vp
                ) + torch.matmul(loc_feats[rows_idx, neg_t].transpose(1, 2), grad_vn)
                tower -= config.tower_lr * grad_w
        users = users - config.lr_user * grad_u
    loss_mean = np.where(last_count > 0, last_loss / np.maximum(last_count, 1.0), 0.0)
    return _Chunk(rows, n_rows, emb, bias, tower, users, loss_mean, n_examples)


def _check_inputs(
    model: GlobalParameters, cohort: Cohort, seeds: Sequence[int]
) -> torch.Tensor | None:
    """Validate shapes; return the item feature tensor (or ``None``)."""
    global_arrays, model_config, item_features = model.arrays, model.config, model.item_features
    train_items, user_vectors = cohort.items, cohort.user_vectors
    expected = 3 if model_config.n_item_features else 2
    if len(global_arrays) != expected:
        raise ConfigError(f"expected {expected} shared arrays, got {len(global_arrays)}")
    if tuple(global_arrays[0].shape) != (model_config.n_items, model_config.dim):
        raise ConfigError(f"item embedding has shape {global_arrays[0].shape}")
    if tuple(global_arrays[1].shape) != (model_config.n_items,):
        raise ConfigError(f"item bias has shape {global_arrays[1].shape}")
    m = len(train_items)
    if user_vectors.shape != (m, model_config.dim):
        raise ConfigError(
            f"user_vectors has shape {user_vectors.shape}, expected ({m}, {model_config.dim})"
        )
    if len(seeds) != m:
        raise ConfigError(f"{len(seeds)} seeds for {m} devices")
    for items in train_items:
        arr = np.asarray(items)
        if arr.size and (arr.min() < 0 or arr.max() >= model_config.n_items):
            raise ConfigError("a device's train items fall outside the catalogue")
    if not model_config.n_item_features:
        return None
    if item_features is None:
        raise ConfigError("the model has an attribute tower but no item_features were given")
    if item_features.shape != (model_config.n_items, model_config.n_item_features):
        raise ConfigError(f"item_features has shape {item_features.shape}")
    return torch.as_tensor(np.asarray(item_features, dtype=np.float32))


def _chunks(
    train_items: Sequence[np.ndarray], model_config: ModelConfig, config: LocalTrainConfig
) -> list[np.ndarray]:
    """Device index groups, sorted by history length, that fit the memory budget.

    A device touches at most ``n (1 + epochs * negatives)`` rows (capped at the catalogue);
    a chunk is padded to its largest device.
    """
    sizes = np.array([np.asarray(t).size for t in train_items], dtype=np.int64)
    order = np.argsort(sizes, kind="stable")
    per_row = 4 * (model_config.dim + 1 + model_config.n_item_features)
    per_device_fixed = 4 * model_config.n_item_features * model_config.dim
    groups: list[np.ndarray] = []
    start = 0
    for end in range(1, order.size + 1):
        n = int(sizes[order[end - 1]])
        rows = min(model_config.n_items, max(1, n * (1 + config.epochs * config.negatives)))
        full = (end - start) * (rows * per_row + per_device_fixed) > _CHUNK_BYTES
        if (full or end - start > _CHUNK_DEVICES) and end - 1 > start:
            groups.append(order[start : end - 1])
            start = end - 1
    if start < order.size:
        groups.append(order[start:])
    return groups


def _trained_chunks(
    model: GlobalParameters,
    feats: torch.Tensor | None,
    cohort: Cohort,
    config: LocalTrainConfig,
    seeds: Sequence[int],
) -> Iterator[tuple[np.ndarray, list[np.ndarray], _Chunk]]:
    """Local training of the cohort chunk by chunk (:func:`_chunks`).

    Yields:
        Per chunk, its devices' positions in the cohort, their histories and the trained
        chunk.
    """
    for idx in _chunks(cohort.items, model.config, config):
        histories = [np.asarray(cohort.items[i], dtype=np.int64) for i in idx]
        chunk = _train_chunk(
            model.arrays,
            feats,
            histories,
            cohort.user_vectors[idx],
            config,
            [int(seeds[i]) for i in idx],
        )
        yield idx, histories, chunk


def train_devices(
    model: GlobalParameters, cohort: Cohort, config: LocalTrainConfig, seeds: Sequence[int]
) -> list[LocalUpdate]:
    """Local training of a cohort of devices from the global shared parameters.

    Args:
        model: the global parameters the devices start from.
        cohort: the devices, their positives and their private user vectors (not
            modified).
        config: local training hyperparameters.
        seeds: per device seed of every random draw of its training.

    Returns:
        One :class:`LocalUpdate` per device, in cohort order: ``delta`` is the device's
        trained copy minus ``model.arrays`` (float32, wire order), ``user_vector`` its
        new private vector.

    Raises:
        ConfigError: when shapes or lengths do not match.
    """
    feats = _check_inputs(model, cohort, seeds)
    global_arrays = model.arrays
    out: list[LocalUpdate | None] = [None] * len(cohort)
    g_emb = np.asarray(global_arrays[0], dtype=np.float32)
    g_bias = np.asarray(global_arrays[1], dtype=np.float32)
    for idx, _, chunk in _trained_chunks(model, feats, cohort, config, seeds):
        emb = chunk.emb.numpy()
        bias = chunk.bias.numpy()
        users = chunk.users.numpy()
        for j, i in enumerate(idx):
            rows = chunk.rows[j, : chunk.n_rows[j]]
            d_emb = np.zeros_like(g_emb)
            d_bias = np.zeros_like(g_bias)
            d_emb[rows] = emb[j, : rows.size] - g_emb[rows]
            d_bias[rows] = bias[j, : rows.size] - g_bias[rows]
            delta = [d_emb, d_bias]
            if chunk.tower is not None:
                delta.append((chunk.tower[j].numpy() - global_arrays[2]).astype(np.float32))
            out[int(i)] = LocalUpdate(
                delta=delta,
                user_vector=users[j].astype(np.float32, copy=True),
                n_examples=int(chunk.n_examples[j]),
                loss=float(chunk.loss[j]),
            )
    return [u for u in out if u is not None]


def score_devices(
    model: GlobalParameters, cohort: Cohort, config: LocalTrainConfig, seeds: Sequence[int]
) -> np.ndarray:
    """Scores of every item on each device after local fine-tuning of the global model.

    Each device fine-tunes its copy of the shared side and its user vector on its own
    positives exactly as in :func:`train_devices` (same ``config`` and ``seeds`` give
    the same copy) and scores the catalogue with the fine-tuned copy. With
    ``config.session_weight > 0`` the query is the fine-tuned user vector shifted by the
    device's session vector over the global item vectors
    (:func:`fedpers.client.session.session_vector`; ``cohort.items`` in time order).

    Args:
        model: the round's global parameters (arrays, model shape, item attributes).
        cohort: the devices, their positives (fine-tuning data) and their private user
            vectors (not modified).
        config: the fine-tuning hyperparameters.
        seeds: per device seed of the fine-tuning draws.

    Returns:
        ``float64[m, n_items]`` scores (higher is better).

    Raises:
        ConfigError: when shapes or lengths do not match.
    """
    feats = _check_inputs(model, cohort, seeds)
    global_arrays = model.arrays
    out = np.empty((len(cohort), model.config.n_items), dtype=np.float64)
    g_emb = torch.as_tensor(np.asarray(global_arrays[0], dtype=np.float32))
    g_bias = torch.as_tensor(np.asarray(global_arrays[1], dtype=np.float32))
    # the session vectors average global item vectors (only needed when they are used)
    session_items = (
        _global_item_vectors(global_arrays, feats).numpy() if config.session_weight > 0 else None
    )
    for idx, histories, chunk in _trained_chunks(model, feats, cohort, config, seeds):
        users = chunk.users
        if session_items is not None:
            recent = session_vectors(
                session_items, histories, config.session_decay, config.session_window
            )
            users = users + config.session_weight * torch.as_tensor(recent, dtype=torch.float32)
        with torch.no_grad():
            scores = users @ g_emb.T + g_bias  # untouched rows: the global item side
            local_vecs = chunk.emb
            if chunk.tower is not None and feats is not None:
                personal = torch.matmul(chunk.tower, users.unsqueeze(-1)).squeeze(-1)  # [m, f]
                scores = scores + personal @ feats.T
                local_vecs = local_vecs + torch.matmul(
                    feats[torch.as_tensor(chunk.rows)], chunk.tower
                )
            local = torch.matmul(local_vecs, users.unsqueeze(-1)).squeeze(-1) + chunk.bias
        block = scores.numpy().astype(np.float64)
        local_np = local.numpy()
        for j in range(len(idx)):
            n = int(chunk.n_rows[j])
            block[j, chunk.rows[j, :n]] = local_np[j, :n]
        out[idx] = block
    return out


def evaluate_devices(
    model: GlobalParameters,
    cohort: Cohort,
    held_out: np.ndarray,
    negatives: np.ndarray,
    exclude: Sequence[np.ndarray],
    config: LocalTrainConfig,
    seeds: Sequence[int],
) -> dict[str, np.ndarray]:
    """Evaluate the global model plus local fine-tuning on each device.

    Scores come from :func:`score_devices`; the held-out item is ranked among
    ``negatives`` (sampled protocol) and among every item not in ``exclude`` (full
    protocol). Ranks and metrics come from :mod:`fedpers.client.metrics` (ties count
    against the held-out item), as in :mod:`fedpers.simulation.evaluation.protocol`.

    Args:
        model: the round's global parameters (arrays, model shape, item attributes).
        cohort: the devices, their positives (fine-tuning data) and their private user
            vectors.
        held_out: ``int[m]`` held-out item per device; ``-1`` skips the device (NaN).
        negatives: ``int[m, C]`` sampled competitors per device (99 in the protocol);
            ``-1`` entries are padding and never compete.
        exclude: per device, items removed from the full ranking (its train items and,
            e.g., its validation item); the held-out item itself is never excluded.
        config: the fine-tuning hyperparameters.
        seeds: per device seed of the fine-tuning draws.

    Returns:
        ``{"hr10_sampled", "ndcg10_sampled", "hr10_full", "ndcg10_full"}``, each a
        ``float64[m]`` (NaN for skipped devices), plus ``"rank_sampled"`` and
        ``"rank_full"`` (``int64[m]``, ``-1`` for skipped devices).

    Raises:
        ConfigError: when shapes or lengths do not match.
    """
    m = len(cohort)
    held = np.asarray(held_out, dtype=np.int64)
    negs = np.asarray(negatives, dtype=np.int64)
    if held.shape != (m,) or negs.ndim != 2 or negs.shape[0] != m or len(exclude) != m:
        raise ConfigError("held_out, negatives and exclude must have one row per device")
    if m and held.max() >= model.config.n_items:
        raise ConfigError("a held-out item falls outside the catalogue")
    scores = score_devices(model, cohort, config, seeds)
    rows = np.arange(m)
    target = np.maximum(held, 0)
    held_score = scores[rows, target]
    rank_s = ranks_of(held_score, scores[rows[:, None], np.maximum(negs, 0)], negs >= 0)
    competitors = np.ones(scores.shape, dtype=bool)
    for i, ex in enumerate(exclude):
        competitors[i, np.asarray(ex, dtype=np.int64)] = False
    competitors[rows, target] = False
    rank_f = ranks_of(held_score, scores, competitors)
    skipped = held < 0
    out: dict[str, np.ndarray] = {}
    for proto, ranks in (("sampled", rank_s), ("full", rank_f)):
        ranks = np.where(skipped, -1, ranks)
        hr = hits_at_k(np.maximum(ranks, 0), 10)
        nd = ndcgs_at_k(np.maximum(ranks, 0), 10)
        hr[skipped] = np.nan
        nd[skipped] = np.nan
        out[f"hr10_{proto}"] = hr
        out[f"ndcg10_{proto}"] = nd
        out[f"rank_{proto}"] = ranks
    return out
