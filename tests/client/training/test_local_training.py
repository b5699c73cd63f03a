from __future__ import annotations

import numpy as np
import pytest
import torch

from fedpers.client.metrics import ranks_of
from fedpers.client.model import ItemSide, ModelConfig, shared_arrays
from fedpers.client.training.cohort import Cohort
from fedpers.client.training.global_parameters import GlobalParameters
from fedpers.client.training.local import (
    LocalTrainConfig,
    evaluate_devices,
    fold_in,
    init_user_vector,
    score_devices,
    train_devices,
)
from fedpers.privacy.errors import ConfigError, DataError

torch.set_num_threads(1)

N_ITEMS = 60
DIM = 8


def _cohort(m: int, seed: int = 0) -> list[np.ndarray]:
    """Two taste clusters: even users like items 0-19, odd users items 20-39."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(m):
        base = 0 if u % 2 == 0 else 20
        n = int(rng.integers(3, 15))
        out.append(np.sort(rng.choice(np.arange(base, base + 20), size=n, replace=False)))
    return out


def _model(cfg: ModelConfig, features: np.ndarray | None = None) -> GlobalParameters:
    return GlobalParameters(
        shared_arrays(ItemSide(cfg, item_features=features, seed=3)), cfg, features
    )


def _users(m: int, dim: int = DIM) -> np.ndarray:
    return np.stack([init_user_vector(dim, 100 + i) for i in range(m)])


def _devices(items: list[np.ndarray], users: np.ndarray) -> Cohort:
    """A cohort of these histories and user vectors (local training reads seeds, not ids)."""
    return Cohort(list(range(len(items))), items, users)


def test_init_user_vector_is_seeded_float32() -> None:
    a, b = init_user_vector(16, 7), init_user_vector(16, 7)
    assert a.dtype == np.float32 and a.shape == (16,)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, init_user_vector(16, 8))
    with pytest.raises(ConfigError):
        init_user_vector(0, 1)


def test_config_round_trips_and_rejects_bad_values() -> None:
    cfg = LocalTrainConfig(epochs=3, lr_item=0.2, lr_bias=0.05, batch_size=16, l2=1e-3)
    assert LocalTrainConfig.from_dict(cfg.to_dict()) == cfg
    default = LocalTrainConfig()
    assert LocalTrainConfig.from_dict(default.to_dict()) == default
    with pytest.raises(ConfigError):
        LocalTrainConfig(negatives=0)
    with pytest.raises(ConfigError):
        LocalTrainConfig(lr_item=-1.0)
    with pytest.raises(ConfigError):
        LocalTrainConfig.from_dict({"nope": 1})
    # a TOML table: ints for float fields, a 0/1 or bool flag, a negative step size unset
    toml = {"epochs": 3, "lr_item": 1, "train_items": 0, "lr_bias": -1, "l2": 0}
    read = LocalTrainConfig.from_dict(toml)
    assert read == LocalTrainConfig(epochs=3, lr_item=1.0, train_items=False, l2=0.0)
    assert isinstance(read.lr_item, float) and read.lr_bias is None
    for name, malformed in [
        ("epochs", 2.5),
        ("epochs", "2"),
        ("lr_item", "0.1"),
        ("train_items", 2),
    ]:
        with pytest.raises(DataError, match=f"'local': '{name}'"):
            LocalTrainConfig.from_dict({name: malformed})
    ranking = LocalTrainConfig(session_weight=2.0, session_decay=0.5, session_window=4)
    assert LocalTrainConfig.from_dict(ranking.to_dict()) == ranking
    assert ranking.session.weight == 2.0 and ranking.session.window == 4
    with pytest.raises(ConfigError):
        LocalTrainConfig(session_decay=0.0)


def test_delta_is_sparse_in_touched_rows_and_inputs_untouched() -> None:
    cfg = ModelConfig(n_items=N_ITEMS, dim=DIM)
    model = _model(cfg)
    g_copy = [a.copy() for a in model.arrays]
    items = _cohort(4)
    users = _users(4)
    users_copy = users.copy()
    local = LocalTrainConfig(epochs=2, negatives=1, user_warmup=2)
    ups = train_devices(model, _devices(items, users), local, seeds=[1, 2, 3, 4])
    for a, b in zip(model.arrays, g_copy, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(users, users_copy)
    assert len(ups) == 4
    for up, pos in zip(ups, items, strict=True):
        assert [d.shape for d in up.delta] == [(N_ITEMS, DIM), (N_ITEMS,)]
        assert all(d.dtype == np.float32 for d in up.delta)
        touched = np.flatnonzero(np.abs(up.delta[0]).sum(1) > 0)
        assert set(pos.tolist()) <= set(touched.tolist())
        # each positive is paired with one negative per epoch: at most 2 extra rows each
        assert len(touched) <= len(pos) * 3
        assert up.n_examples == 2 * len(pos)
        assert np.isfinite(up.loss) and up.loss > 0
        assert not np.array_equal(up.user_vector, users[0])


def test_device_result_does_not_depend_on_its_cohort() -> None:
    cfg = ModelConfig(n_items=N_ITEMS, dim=DIM)
    model = _model(cfg)
    items = _cohort(9)
    users = _users(9)
    for local in (
        LocalTrainConfig(epochs=3, user_warmup=3),
        LocalTrainConfig(epochs=2, batch_size=4, negatives=2, l2=0.01, user_warmup=0),
    ):
        seeds = [50 + i for i in range(9)]
        together = train_devices(model, _devices(items, users), local, seeds)
        for i in (0, 4, 8):
            one = _devices([items[i]], users[i : i + 1])
            alone = train_devices(model, one, local, [seeds[i]])[0]
            for a, b in zip(alone.delta, together[i].delta, strict=True):
                np.testing.assert_allclose(a, b, atol=1e-5)
            np.testing.assert_allclose(alone.user_vector, together[i].user_vector, atol=1e-5)
            assert alone.n_examples == together[i].n_examples
            assert alone.loss == pytest.approx(together[i].loss, abs=1e-5)


def test_seed_changes_the_draws() -> None:
    cfg = ModelConfig(n_items=N_ITEMS, dim=DIM)
    model = _model(cfg)
    items = _cohort(1)
    local = LocalTrainConfig(epochs=2)
    a = train_devices(model, _devices(items, _users(1)), local, [1])[0]
    b = train_devices(model, _devices(items, _users(1)), local, [2])[0]
    assert not np.array_equal(a.delta[0], b.delta[0])


def test_training_learns_the_clusters() -> None:
    cfg = ModelConfig(n_items=N_ITEMS, dim=DIM)
    g = _model(cfg).arrays
    items = _cohort(40)
    users = _users(40)
    local = LocalTrainConfig(epochs=3, lr_item=0.1, lr_user=0.5, user_warmup=5)
    for r in range(15):
        ups = train_devices(
            GlobalParameters(g, cfg, None),
            _devices(items, users),
            local,
            [r * 100 + i for i in range(40)],
        )
        mean = [np.mean([u.delta[k] for u in ups], axis=0) for k in range(2)]
        g = [a + 5.0 * d for a, d in zip(g, mean, strict=True)]
        users = np.stack([u.user_vector for u in ups])
    scores = users @ g[0].T + g[1]
    in_cluster = np.array(
        [
            scores[u, (0 if u % 2 == 0 else 20) : (20 if u % 2 == 0 else 40)].mean()
            for u in range(40)
        ]
    )
    out_cluster = np.array(
        [
            scores[u, (20 if u % 2 == 0 else 0) : (40 if u % 2 == 0 else 20)].mean()
            for u in range(40)
        ]
    )
    assert (in_cluster > out_cluster).mean() > 0.9


def test_frozen_items_give_zero_delta_but_move_the_user() -> None:
    cfg = ModelConfig(n_items=N_ITEMS, dim=DIM)
    model = _model(cfg)
    users = _users(3)
    local = LocalTrainConfig(epochs=2, train_items=False)
    ups = train_devices(model, _devices(_cohort(3), users), local, [1, 2, 3])
    for i, up in enumerate(ups):
        assert all(not d.any() for d in up.delta)
        assert not np.allclose(up.user_vector, users[i])


def test_empty_history_gives_zero_delta() -> None:
    cfg = ModelConfig(n_items=N_ITEMS, dim=DIM)
    model = _model(cfg)
    items = [np.zeros(0, dtype=np.int64), *_cohort(2)]
    ups = train_devices(model, _devices(items, _users(3)), LocalTrainConfig(), [1, 2, 3])
    assert all(not d.any() for d in ups[0].delta)
    assert ups[0].n_examples == 0 and ups[0].loss == 0.0


def test_attribute_tower_is_trained() -> None:
    rng = np.random.default_rng(0)
    features = (rng.random((N_ITEMS, 5)) < 0.3).astype(np.float32)
    cfg = ModelConfig(n_items=N_ITEMS, dim=DIM, n_item_features=5)
    model = _model(cfg, features)
    ups = train_devices(model, _devices(_cohort(3), _users(3)), LocalTrainConfig(), [1, 2, 3])
    assert [d.shape for d in ups[0].delta] == [(N_ITEMS, DIM), (N_ITEMS,), (5, DIM)]
    assert np.abs(ups[0].delta[2]).sum() > 0
    alone = train_devices(model, _devices(_cohort(3)[1:2], _users(3)[1:2]), LocalTrainConfig(), [2])
    np.testing.assert_allclose(alone[0].delta[2], ups[1].delta[2], atol=1e-5)
    with pytest.raises(ConfigError):
        train_devices(
            GlobalParameters(model.arrays, cfg, None),
            _devices(_cohort(3), _users(3)),
            LocalTrainConfig(),
            [1, 2, 3],
        )


def test_shape_errors() -> None:
    cfg = ModelConfig(n_items=N_ITEMS, dim=DIM)
    model = _model(cfg)
    with pytest.raises(ConfigError):
        train_devices(model, _devices(_cohort(2), _users(3)), LocalTrainConfig(), [1, 2])
    with pytest.raises(ConfigError):
        train_devices(model, _devices(_cohort(2), _users(2)), LocalTrainConfig(), [1])
    with pytest.raises(ConfigError):
        train_devices(
            GlobalParameters(model.arrays[:1], cfg, None),
            _devices(_cohort(2), _users(2)),
            LocalTrainConfig(),
            [1, 2],
        )
    with pytest.raises(ConfigError):
        bad = [np.array([N_ITEMS + 1])]
        train_devices(model, _devices(bad, _users(1)), LocalTrainConfig(), [1])


def test_evaluate_without_fine_tuning_matches_the_global_ranking() -> None:
    cfg = ModelConfig(n_items=N_ITEMS, dim=DIM)
    model = _model(cfg)
    items = _cohort(6)
    users = _users(6)
    held = np.array([45, 46, 47, -1, 48, 49])
    rng = np.random.default_rng(1)
    negs = np.stack([rng.choice(np.arange(50, 60), size=5, replace=False) for _ in range(6)])
    negs[0, -1] = -1  # padding never competes
    frozen = LocalTrainConfig(epochs=0, user_warmup=0)
    out = evaluate_devices(model, _devices(items, users), held, negs, items, frozen, list(range(6)))
    emb, bias = model.arrays
    scores = users @ emb.T + bias
    for i in (0, 1, 2, 4, 5):
        valid = negs[i] >= 0
        expected_s = ranks_of(scores[i, [held[i]]], scores[i, negs[i][valid]][None, :])[0]
        assert out["rank_sampled"][i] == expected_s
        comp = np.ones(N_ITEMS, dtype=bool)
        comp[items[i]] = False
        comp[held[i]] = False
        assert out["rank_full"][i] == int((scores[i, comp] >= scores[i, held[i]]).sum())
        assert out["hr10_sampled"][i] == float(expected_s < 10)
    assert np.isnan(out["hr10_full"][3]) and out["rank_full"][3] == -1
    # the same scores come out of score_devices
    np.testing.assert_allclose(
        score_devices(model, _devices(items, users), frozen, list(range(6))),
        scores,
        atol=1e-6,
    )


def test_fine_tuning_helps_a_user_with_a_clear_taste() -> None:
    # items 0-19 share a direction in the global model; the users' vectors do not know it
    rng = np.random.default_rng(0)
    cfg = ModelConfig(n_items=N_ITEMS, dim=DIM)
    emb = (rng.standard_normal((N_ITEMS, DIM)) * 0.1).astype(np.float32)
    emb[:20, 0] += 1.0
    g = [emb, np.zeros(N_ITEMS, np.float32)]
    model = GlobalParameters(g, cfg, None)
    items = [np.arange(0, 15)] * 4
    held = np.array([15, 16, 17, 18])
    negs = np.tile(np.arange(20, 60), (4, 1))
    users = _users(4)
    users[:, 0] = -0.5
    tuned = LocalTrainConfig(epochs=5, lr_item=0.1, user_warmup=20)
    frozen = LocalTrainConfig(epochs=0, user_warmup=0)
    a = evaluate_devices(model, _devices(items, users), held, negs, items, frozen, [1, 2, 3, 4])
    b = evaluate_devices(model, _devices(items, users), held, negs, items, tuned, [1, 2, 3, 4])
    assert a["hr10_sampled"].mean() == 0.0
    assert b["hr10_sampled"].mean() == 1.0
    assert (b["rank_full"] < 5).all()
    assert set(b) >= {"hr10_sampled", "ndcg10_sampled", "hr10_full", "ndcg10_full"}


def test_fold_in_is_pure_and_raises_positive_scores() -> None:
    rng = np.random.default_rng(0)
    items = rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)
    bias = np.zeros(N_ITEMS, dtype=np.float32)
    u0 = np.zeros(DIM, dtype=np.float32)
    pos = np.array([1, 2, 3])
    items_copy = items.copy()
    u = fold_in(u0, items, bias, pos, steps=20, lr=0.5, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(items, items_copy)
    assert not u0.any()
    scores = items @ u
    assert scores[pos].mean() > scores.mean()
    same = fold_in(u0, items, bias, pos, steps=20, lr=0.5, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(u, same)
    np.testing.assert_array_equal(
        fold_in(u0, items, bias, np.zeros(0, np.int64), 5, 0.5, np.random.default_rng(1)), u0
    )


def test_session_weight_shifts_the_query_by_the_latest_items() -> None:
    """Scores with a session weight are ``(u + w s) . v + b``, s over the history's tail."""
    cfg = ModelConfig(n_items=N_ITEMS, dim=DIM)
    model = _model(cfg)
    items = _cohort(4)
    users = _users(4)
    frozen = LocalTrainConfig(epochs=0, user_warmup=0)
    plain = score_devices(model, _devices(items, users), frozen, list(range(4)))
    ranked = LocalTrainConfig(
        epochs=0, user_warmup=0, session_weight=1.5, session_decay=0.5, session_window=3
    )
    shifted = score_devices(model, _devices(items, users), ranked, list(range(4)))
    emb, bias = model.arrays
    for i, history in enumerate(items):
        tail = history[-3:]
        weights = 0.5 ** np.arange(len(tail) - 1, -1, -1)
        s = (weights / weights.sum()) @ emb[tail]
        np.testing.assert_allclose(shifted[i], (users[i] + 1.5 * s) @ emb.T + bias, atol=1e-5)
        assert not np.allclose(shifted[i], plain[i])
    # training ignores the ranking setting: the same deltas and user vectors
    a = train_devices(model, _devices(items, users), LocalTrainConfig(epochs=1), [1, 2, 3, 4])
    b = train_devices(
        model,
        _devices(items, users),
        LocalTrainConfig(epochs=1, session_weight=3.0),
        [1, 2, 3, 4],
    )
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.user_vector, y.user_vector)
        for dx, dy in zip(x.delta, y.delta, strict=True):
            np.testing.assert_array_equal(dx, dy)
