"""Record-level DP-SGD: exact per-example norms, clipping, noise schedules, budget, ledger."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from fedpers.client.model import ItemSide, ModelConfig, shared_arrays
from fedpers.client.training.dpsgd import (
    DPSGDConfig,
    DPSGDSession,
    PairScorer,
    dp_sgd_local_update,
    pair_norm_sample,
    round_entry,
)
from fedpers.privacy.dp import record_level_epsilon
from fedpers.privacy.errors import BudgetExhaustedError, ConfigError, DataError

N_ITEMS, DIM, FEATS = 40, 6, 3


def _params(seed: int = 0, tower: bool = False):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(N_ITEMS, DIM, generator=g)
    bias = torch.randn(N_ITEMS, generator=g)
    user = torch.randn(DIM, generator=g)
    w = torch.randn(FEATS, DIM, generator=g) if tower else None
    feats = torch.rand(N_ITEMS, FEATS, generator=g) if tower else None
    return emb, bias, user, w, feats


def _reference_losses(emb, bias, user, w, feats, pairs):
    """Unfused plain-autograd BPR losses per pair."""
    vec = emb[pairs]
    if w is not None:
        vec = vec + feats[pairs] @ w
    x = (vec[:, 0] - vec[:, 1]) @ user + bias[pairs[:, 0]] - bias[pairs[:, 1]]
    return nn.functional.softplus(-x)


def _per_example_grads(emb, bias, user, w, feats, pairs):
    leaves = [
        t.clone().requires_grad_(True) for t in (emb, bias, user) + ((w,) if w is not None else ())
    ]
    out = []
    for k in range(pairs.shape[0]):
        loss = _reference_losses(
            *leaves[:3], leaves[3] if w is not None else None, feats, pairs[k : k + 1]
        )
        grads = torch.autograd.grad(loss.sum(), leaves)
        out.append(grads)
    return out


@pytest.mark.parametrize("tower", [False, True])
def test_fused_forward_backward_matches_plain_autograd(tower: bool) -> None:
    emb, bias, user, w, feats = _params(1, tower)
    pairs = torch.randint(0, N_ITEMS, (16, 2), generator=torch.Generator().manual_seed(2))
    pairs[3, 1] = pairs[3, 0]  # a degenerate pair
    scorer = PairScorer(emb, bias, user, w, feats)
    loss = nn.functional.softplus(-scorer(pairs)).sum()
    loss.backward()
    leaves = [t.clone().requires_grad_(True) for t in (emb, bias, user) + ((w,) if tower else ())]
    ref = _reference_losses(*leaves[:3], leaves[3] if tower else None, feats, pairs).sum()
    grads = torch.autograd.grad(ref, leaves)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    table_grad = scorer.item_table.grad
    got = [table_grad[:, :-1], table_grad[:, -1], scorer.user_vector.grad]
    if tower:
        got.append(scorer.feature_tower.grad)
    for g_got, g in zip(got, grads, strict=True):
        torch.testing.assert_close(g_got, g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tower", [False, True])
def test_norm_sampler_gives_exact_per_example_norms(tower: bool) -> None:
    emb, bias, user, w, feats = _params(3, tower)
    pairs = torch.randint(0, N_ITEMS, (12, 2), generator=torch.Generator().manual_seed(4))
    pairs[5, 1] = pairs[5, 0]
    scorer = PairScorer(emb, bias, user, w, feats)
    with torch.no_grad():
        x = scorer(pairs)
    backprops = -torch.sigmoid(-x)  # d softplus(-x) / dx per example
    norms = pair_norm_sample(scorer, [pairs], backprops)
    params = [scorer.item_table, scorer.user_vector]
    if tower:
        params.append(scorer.feature_tower)
    assert set(norms) == set(params)
    for k, grads in enumerate(_per_example_grads(emb, bias, user, w, feats, pairs)):
        table_norm = math.sqrt(float(grads[0].pow(2).sum() + grads[1].pow(2).sum()))
        expected = [table_norm, *(float(g.norm()) for g in grads[2:])]
        for p, e in zip(params, expected, strict=True):
            assert norms[p][k].item() == pytest.approx(e, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("engine", ["direct", "opacus"])
def test_one_step_equals_mean_of_clipped_gradients_without_noise(engine: str) -> None:
    emb, bias, user, _, _ = _params(5)
    pairs = torch.randint(0, N_ITEMS, (10, 2), generator=torch.Generator().manual_seed(6))
    clip, lr = 0.3, 0.5
    config = DPSGDConfig(
        noise_multiplier=1e-12,
        max_grad_norm=clip,
        expected_batch_size=10,
        lr_item=lr,
        lr_user=lr,
        noise="dense",
    )
    session = DPSGDSession(
        PairScorer(emb, bias, user), config, 10, torch.Generator().manual_seed(0)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session.step(pairs)
    session.finish()
    expected = [emb.clone(), bias.clone(), user.clone()]
    total = [torch.zeros_like(t) for t in expected]
    for grads in _per_example_grads(emb, bias, user, None, None, pairs):
        norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
        factor = min(1.0, clip / (norm + 1e-6))
        for t, g in zip(total, grads, strict=True):
            t += factor * g
    for e, t in zip(expected, total, strict=True):
        e -= lr * t / 10
    got = [
        session.scorer.item_embedding,
        session.scorer.item_bias,
        session.scorer.user_vector,
    ]  # views
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g.detach(), e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tower", [False, True])
@pytest.mark.parametrize("noise", ["deferred", "dense"])
def test_direct_engine_equals_opacus_hooks_engine(noise: str, tower: bool) -> None:
    """The closed-form backprops path gives exactly Opacus's ghost-clipping step."""
    emb, bias, user, w, feats = _params(8, tower)
    batches = [
        torch.randint(0, N_ITEMS, (k, 2), generator=torch.Generator().manual_seed(k))
        for k in (7, 0, 12, 5)
    ]
    results = []
    for engine in ("direct", "opacus"):
        config = DPSGDConfig(
            noise_multiplier=0.7,
            max_grad_norm=0.4,
            expected_batch_size=6,
            lr_item=0.3,
            lr_user=0.2,
            noise=noise,
            engine=engine,  # type: ignore[arg-type]
        )
        scorer = PairScorer(emb, bias, user, w, feats)
        session = DPSGDSession(scorer, config, 20, torch.Generator().manual_seed(3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for pairs in batches:
                session.step(pairs)
        session.finish()
        results.append([p.detach().clone() for p in scorer.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("noise", ["deferred", "dense"])
def test_noise_is_dense_over_the_whole_table_with_the_right_scale(noise: str) -> None:
    n_items, dim, steps, batch = 300, 8, 9, 4
    sigma, clip, lr = 2.0, 0.5, 0.3
    emb = torch.zeros(n_items, dim)
    config = DPSGDConfig(
        noise_multiplier=sigma,
        max_grad_norm=clip,
        expected_batch_size=batch,
        lr_item=lr,
        lr_user=0.0,
        noise=noise,  # type: ignore[arg-type]
    )
    scorer = PairScorer(emb, torch.zeros(n_items), torch.zeros(dim))
    session = DPSGDSession(scorer, config, batch, torch.Generator().manual_seed(7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(steps):
            # the same two rows every step: their noise is materialised before each read
            session.step(torch.tensor([[0, 1]] * (step % 2 + 1)))
    session.finish()
    assert session.optimizer.pending_rows() == 0
    table = scorer.item_table.detach()
    # user vector zero: the only gradient is the bias's (rows 0 and 1); elsewhere only noise
    expected_std = math.sqrt(steps) * lr * sigma * clip / batch
    untouched = table[2:].reshape(-1).numpy()
    assert np.all(untouched != 0)  # dense: every row of the table is noised
    assert np.std(untouched) == pytest.approx(expected_std, rel=0.05)
    assert abs(np.mean(untouched)) < 4 * expected_std / math.sqrt(untouched.size)


def test_deferred_and_dense_have_the_same_distribution_on_read_rows() -> None:
    """Rows read at every step: per-step draws summed equal deferred draws in law."""
    finals = {"deferred": [], "dense": []}
    for noise in finals:
        for seed in range(60):
            scorer = PairScorer(torch.zeros(4, 2), torch.zeros(4), torch.zeros(2))
            config = DPSGDConfig(
                noise_multiplier=1.0,
                max_grad_norm=1.0,
                expected_batch_size=1,
                lr_item=1.0,
                lr_user=0.0,
                noise=noise,  # type: ignore[arg-type]
            )
            session = DPSGDSession(scorer, config, 1, torch.Generator().manual_seed(seed))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for step in range(6):
                    session.step(
                        torch.tensor([[0, 1]])
                        if step % 3 == 0
                        else torch.zeros((0, 2), dtype=torch.int64)
                    )
            session.finish()
            finals[noise].append(scorer.item_embedding.detach().numpy().ravel())  # bias excluded
    for noise, values in finals.items():
        std = np.std(np.concatenate(values))
        assert std == pytest.approx(math.sqrt(6), rel=0.12), noise


def test_deferred_noise_without_an_expected_batch_size_is_a_config_error() -> None:
    scorer = PairScorer(torch.zeros(4, 2), torch.zeros(4), torch.zeros(2))
    session = DPSGDSession(scorer, DPSGDConfig(), 4, torch.Generator().manual_seed(0))
    session.optimizer.expected_batch_size = None
    with pytest.raises(ConfigError, match="expected batch size"):
        session.optimizer.materialize()


def _setup(n_items: int = 200, dim: int = 8, n_pos: int = 30, seed: int = 0):
    config = ModelConfig(n_items=n_items, dim=dim)
    arrays = shared_arrays(ItemSide(config, seed=seed))
    rng = np.random.default_rng(seed)
    items = rng.choice(n_items, n_pos, replace=False)
    user = (rng.standard_normal(dim) * 0.1).astype(np.float32)
    return config, arrays, items, user


def test_local_update_returns_only_the_shared_delta_and_is_reproducible() -> None:
    model, arrays, items, user = _setup()
    dp = DPSGDConfig(noise_multiplier=1.0, expected_batch_size=8, epochs=2)
    a = dp_sgd_local_update(arrays, model, None, user, items, dp, 11, [])
    b = dp_sgd_local_update(arrays, model, None, user, items, dp, 11, [])
    c = dp_sgd_local_update(arrays, model, None, user, items, dp, 12, [])
    assert [d.shape for d in a.delta] == [x.shape for x in arrays]
    assert all(d.dtype == np.float32 for d in a.delta)
    for x, y, z in zip(a.delta, b.delta, c.delta, strict=True):
        np.testing.assert_array_equal(x, y)
        assert not np.array_equal(x, z)
    assert np.count_nonzero(a.delta[0]) == a.delta[0].size  # dense noise on every row
    assert a.user_vector.shape == (8,) and not np.array_equal(a.user_vector, user)
    assert a.n_examples == 30 and math.isfinite(a.loss)
    entry = round_entry(dp, 30)
    assert entry.steps == dp.steps(30) == round(2 / (8 / 30))
    assert a.record_epsilon == pytest.approx(record_level_epsilon([entry], dp.delta))


@pytest.mark.parametrize("engine", ["direct", "opacus"])
def test_local_update_with_feature_tower(engine: str) -> None:
    config = ModelConfig(n_items=50, dim=4, n_item_features=3)
    feats = np.random.default_rng(0).random((50, 3)).astype(np.float32)
    arrays = shared_arrays(ItemSide(config, feats, seed=0))
    dp = DPSGDConfig(engine=engine)  # type: ignore[arg-type]
    update = dp_sgd_local_update(
        arrays, config, feats, np.full(4, 0.1, np.float32), np.arange(10), dp, 0, []
    )
    assert [d.shape for d in update.delta] == [(50, 4), (50,), (3, 4)]
    assert all(np.isfinite(d).all() for d in update.delta)


def test_budget_composes_across_rounds_and_stops_before_exceeding() -> None:
    model, arrays, items, user = _setup()
    dp = DPSGDConfig(noise_multiplier=2.0, expected_batch_size=10, epochs=1, epsilon_budget=3.0)
    history: list[tuple[float, float, int]] = []
    spent = 0.0
    rounds = 0
    while True:
        try:
            update = dp_sgd_local_update(arrays, model, None, user, items, dp, rounds, history)
        except BudgetExhaustedError:
            break
        assert update.record_epsilon is not None and update.record_epsilon > 0
        spent += update.record_epsilon
        history.append(tuple(round_entry(dp, items.size)))  # type: ignore[arg-type]
        rounds += 1
        assert rounds < 100
    total = record_level_epsilon(history, dp.delta)
    assert rounds >= 1 and total <= 3.0
    assert spent == pytest.approx(total)
    assert record_level_epsilon([*history, round_entry(dp, items.size)], dp.delta) > 3.0


def test_bad_inputs() -> None:
    model, arrays, _, user = _setup()
    dp = DPSGDConfig()
    with pytest.raises(DataError):
        dp_sgd_local_update(arrays, model, None, user, np.array([], np.int64), dp, 0, [])
    with pytest.raises(DataError):
        dp_sgd_local_update(arrays, model, None, user, np.array([500]), dp, 0, [])
    with pytest.raises(ConfigError):
        dp_sgd_local_update(arrays, model, None, user[:3], np.array([1, 2]), dp, 0, [])
    with pytest.raises(ConfigError):
        DPSGDConfig(noise_multiplier=0.0)
    with pytest.raises(ConfigError):
        DPSGDConfig(noise="sparse")  # type: ignore[arg-type]
