"""Real-time personalization: fold-in per event, consent-aware ranking, cold start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedpers.client.consent import ConsentManager
from fedpers.client.global_model import GlobalModel
from fedpers.client.model import ModelConfig
from fedpers.client.personalizer import ItemFilter, Personalizer
from fedpers.client.session import SessionConfig
from fedpers.client.store import Event, EventStore
from fedpers.privacy.consent import Purpose
from fedpers.privacy.errors import ConfigError, ConsentError, StoreError

N_ITEMS = 40
DIM = 4
ITEMS = [f"i{k}" for k in range(N_ITEMS)]
ALL = (Purpose.STORE_ACCESS, Purpose.CREATE_PROFILES, Purpose.USE_PROFILES)


def clustered_model(cold: np.ndarray | None = None) -> GlobalModel:
    """Items 0-19 point along axis 0, items 20-39 along axis 1; bias favours item 39."""
    emb = np.zeros((N_ITEMS, DIM), dtype=np.float32)
    emb[:20, 0] = 1.0 + np.linspace(0, 0.1, 20)
    emb[20:, 1] = 1.0 + np.linspace(0, 0.1, 20)
    bias = np.linspace(0.0, 0.5, N_ITEMS).astype(np.float32)
    return GlobalModel.from_arrays(
        ModelConfig(n_items=N_ITEMS, dim=DIM), [emb, bias], ITEMS, cold_items=cold
    )


def make_store(tmp_path: Path, name: str, *purposes: Purpose) -> EventStore:
    store = EventStore.create(tmp_path / f"{name}.db", ITEMS)
    if purposes:
        ConsentManager(store).grant(*purposes)
    return store


def click(item: str, ts: float) -> Event:
    return Event(item, "click", 1.0, ts)


def assert_p6_hides_the_history(
    tmp_path: Path,
    histories: tuple[list[Event], list[Event]],
    session: SessionConfig | None = None,
) -> None:
    """Two devices that withdrew P6 after different histories get the same, popular, top 10."""
    model = clustered_model()
    outputs = []
    for name, events in zip(("a", "b"), histories, strict=True):
        store = make_store(tmp_path, name, *ALL)
        p = Personalizer(store, model, fold_in_steps=20, fold_in_lr=0.5, session=session)
        for event in events:
            p.record(event)
        ConsentManager(store).withdraw(Purpose.USE_PROFILES)
        outputs.append([(r.item, r.basis) for r in p.recommend(10)])
    assert outputs[0] == outputs[1]
    assert {basis for _, basis in outputs[0]} == {"popular"}


def test_next_recommendation_reflects_the_recorded_event(tmp_path: Path) -> None:
    store = make_store(tmp_path, "a", *ALL)
    p = Personalizer(store, clustered_model(), fold_in_steps=20, fold_in_lr=0.5)
    for t, item in enumerate(["i1", "i2", "i3"]):
        p.record(click(item, 1e9 + t))
    recs = p.recommend(5)
    assert all(r.basis == "personalised" for r in recs)
    assert all(int(r.item[1:]) < 20 for r in recs), [r.item for r in recs]
    # Enough events from the other cluster move the very next ranking.
    for t in range(12):
        p.record(click(f"i{20 + t}", 2e9 + t))
    recs = p.recommend(5)
    assert all(int(r.item[1:]) >= 20 for r in recs), [r.item for r in recs]
    assert store.load_user_vector() is not None


def _long_a_then_one_b(tmp_path: Path, name: str, session: SessionConfig | None) -> Personalizer:
    """A device with a long history in cluster A (items 0-19) and one latest event in B."""
    model = clustered_model()
    store = make_store(tmp_path, name, *ALL)
    p = Personalizer(store, model, fold_in_steps=20, fold_in_lr=0.5, session=session)
    for t in range(15):
        p.record(click(f"i{t}", 1e9 + t))
    p.record(click("i25", 2e9))
    return p


def test_session_weight_brings_the_latest_event_forward(tmp_path: Path) -> None:
    plain = [int(r.item[1:]) for r in _long_a_then_one_b(tmp_path, "a", None).recommend(5)]
    assert all(i < 20 for i in plain), plain  # the long-term profile wins without a session
    session = SessionConfig(weight=10.0, decay=0.3, window=3)
    shifted = _long_a_then_one_b(tmp_path, "b", session).recommend(5)
    assert all(int(r.item[1:]) >= 20 for r in shifted), [r.item for r in shifted]
    assert all(r.basis == "personalised" for r in shifted)


def test_session_setting_comes_from_the_published_model(tmp_path: Path) -> None:
    base = clustered_model()
    published = GlobalModel.from_arrays(
        base.config,
        base.arrays,
        ITEMS,
        meta={"session": SessionConfig(weight=10.0, decay=0.3, window=3).to_meta()},
    )
    store = make_store(tmp_path, "a", *ALL)
    p = Personalizer(store, published, fold_in_steps=20, fold_in_lr=0.5)
    for t in range(15):
        p.record(click(f"i{t}", 1e9 + t))
    p.record(click("i25", 2e9))
    assert all(int(r.item[1:]) >= 20 for r in p.recommend(5))


def test_without_p6_the_session_is_not_read_either(tmp_path: Path) -> None:
    """Try to get past the P6 gate through the session: different latest events, same ranking."""
    session = SessionConfig(weight=5.0, decay=0.5, window=3)
    assert_p6_hides_the_history(
        tmp_path,
        ([click("i10", 1e9), click("i2", 2e9)], [click("i10", 1e9), click("i33", 2e9)]),
        session,
    )


def test_seen_items_are_excluded_and_explained(tmp_path: Path) -> None:
    store = make_store(tmp_path, "a", *ALL)
    p = Personalizer(store, clustered_model(), fold_in_steps=20, fold_in_lr=0.5)
    p.record(click("i5", 1e9))
    items = [r.item for r in p.recommend(10)]
    assert "i5" not in items
    assert "i5" in [r.item for r in p.recommend(20, exclude_seen=False)]
    assert p.recommend(1)[0].explanation == "because you interacted with i5"


def test_no_history_falls_back_to_popularity(tmp_path: Path) -> None:
    store = make_store(tmp_path, "a", *ALL)
    recs = Personalizer(store, clustered_model()).recommend(3)
    assert [r.item for r in recs] == ["i39", "i38", "i37"]
    assert {r.basis for r in recs} == {"popular"}


def test_contextual_fallback_uses_only_the_request_context(tmp_path: Path) -> None:
    store = make_store(tmp_path, "a", Purpose.LIMITED_DATA_SELECTION)
    boost = np.zeros(N_ITEMS)
    boost[3] = 10.0
    p = Personalizer(store, clustered_model(), context_popularity={"hour=21": boost})
    recs = p.recommend(2, context={"hour": 21})
    assert recs[0].item == "i3" and recs[0].basis == "contextual"
    assert "hour=21" in recs[0].explanation
    assert p.recommend(1, context={"hour": 8})[0].item == "i39"


def test_without_p6_ranking_ignores_the_profile(tmp_path: Path) -> None:
    """Try to get past the P6 gate: two different histories must rank identically."""
    assert_p6_hides_the_history(
        tmp_path,
        ([click("i1", 1e9), click("i2", 1e9 + 1)], [click("i30", 1e9), click("i31", 1e9 + 1)]),
    )


def test_withdrawal_takes_effect_on_the_next_call(tmp_path: Path) -> None:
    store = make_store(tmp_path, "a", *ALL)
    p = Personalizer(store, clustered_model(), fold_in_steps=20, fold_in_lr=0.5)
    p.record(click("i1", 1e9))
    assert p.recommend(1)[0].basis == "personalised"
    ConsentManager(store).withdraw_all()
    assert p.recommend(1)[0].basis == "popular"
    with pytest.raises(ConsentError):
        p.record(click("i2", 1e9 + 1))
    assert store.count() == 1


def test_record_without_p5_stores_and_learns_nothing(tmp_path: Path) -> None:
    store = make_store(tmp_path, "a", Purpose.STORE_ACCESS, Purpose.USE_PROFILES)
    p = Personalizer(store, clustered_model())
    with pytest.raises(ConsentError):
        p.record(click("i1", 1e9))
    assert store.count() == 0
    assert store.load_user_vector() is None


def test_filters_and_diversity(tmp_path: Path) -> None:
    store = make_store(tmp_path, "a", *ALL)
    p = Personalizer(store, clustered_model(), fold_in_steps=20, fold_in_lr=0.5)
    p.record(click("i1", 1e9))
    blocked = p.recommend(3, filters=ItemFilter(block=frozenset({"i19", "i18"})))
    assert not {"i19", "i18"} & {r.item for r in blocked}
    allowed = p.recommend(5, filters=ItemFilter(allow=frozenset({"i25", "i7"})))
    assert sorted(r.item for r in allowed) == ["i25", "i7"]
    odd = p.recommend(4, filters=ItemFilter(predicate=lambda i: int(i[1:]) % 2 == 1))
    assert all(int(r.item[1:]) % 2 == 1 for r in odd)
    plain = [r.item for r in p.recommend(6)]
    diverse = [r.item for r in p.recommend(6, diversity=0.9)]
    assert len(set(diverse)) == 6
    assert sum(int(i[1:]) >= 20 for i in diverse) > sum(int(i[1:]) >= 20 for i in plain)


def test_cold_items_are_explained_by_attributes(tmp_path: Path) -> None:
    cold = np.zeros(N_ITEMS, dtype=bool)
    cold[39] = True
    store = make_store(tmp_path, "a", *ALL)
    recs = Personalizer(store, clustered_model(cold)).recommend(N_ITEMS)
    by_item = {r.item: r for r in recs}
    assert by_item["i39"].explanation == "new item, scored from its attributes"
    assert recs[0].item == "i38"  # the cold item no longer rides on its untrained bias


def test_bad_arguments_are_named_errors(tmp_path: Path) -> None:
    store = make_store(tmp_path, "a", *ALL)
    p = Personalizer(store, clustered_model())
    with pytest.raises(ConfigError):
        p.recommend(0)
    with pytest.raises(ConfigError):
        p.recommend(3, diversity=2.0)
    with pytest.raises(ConfigError):
        p.recommend(3, filters=ItemFilter(require_features=("Comedy",)))
    other = EventStore.create(tmp_path / "other.db", ["x", "y"])
    with pytest.raises(ConfigError):
        Personalizer(other, clustered_model())


def test_global_model_round_trips_through_its_file(tmp_path: Path) -> None:
    model = clustered_model()
    path = model.save(tmp_path / "m.npz")
    loaded = GlobalModel.load(path)
    assert loaded.item_ids == model.item_ids
    np.testing.assert_array_equal(loaded.item_vectors, model.item_vectors)
    (tmp_path / "bad.npz").write_bytes(b"not a model")
    with pytest.raises(StoreError, match=r"bad\.npz"):
        GlobalModel.load(tmp_path / "bad.npz")
    with pytest.raises(StoreError, match=r"missing\.npz"):
        GlobalModel.load(tmp_path / "missing.npz")


def test_recommend_command_builds_the_profile_from_ingested_events(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from fedpers.client.cli import client_app

    store = make_store(tmp_path, "cli", *ALL)
    store.append_many(click(f"i{k}", 1e9 + k) for k in range(20, 26))
    store.close()
    model_path = clustered_model().save(tmp_path / "model.npz")
    runner = CliRunner()
    result = runner.invoke(
        client_app,
        ["recommend", str(tmp_path / "cli.db"), "--model", str(model_path), "-k", "3", "--json"],
    )
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)["items"]
    assert len(items) == 3
    assert all(it["basis"] == "personalised" and int(it["item"][1:]) >= 26 for it in items)
    run_dir = tmp_path / "run"
    (run_dir / "models").mkdir(parents=True)
    clustered_model().save(run_dir / "models" / "round-0002.npz")
    latest = runner.invoke(
        client_app, ["recommend", str(tmp_path / "cli.db"), "--model", str(run_dir), "--json"]
    )
    assert latest.exit_code == 0, latest.output
    empty = runner.invoke(
        client_app, ["recommend", str(tmp_path / "cli.db"), "--model", str(tmp_path / "run" / "x")]
    )
    assert empty.exit_code == 2
    bad = runner.invoke(
        client_app,
        ["recommend", str(tmp_path / "cli.db"), "--model", str(tmp_path / "nope.npz")],
    )
    assert bad.exit_code == 2 and "nope.npz" in bad.output


def test_cold_items_are_scored_from_their_attributes_alone() -> None:
    n, dim = 6, 2
    features = np.eye(n, 2, dtype=np.float32)  # items 0 and 1 carry one attribute each
    emb = np.full((n, dim), 5.0, dtype=np.float32)  # untrained rows: meaningless
    bias = np.arange(n, dtype=np.float32)
    tower = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    cold = np.array([True, True, False, False, False, False])
    model = GlobalModel.from_arrays(
        ModelConfig(n_items=n, dim=dim, n_item_features=2),
        [emb, bias, tower],
        [f"c{k}" for k in range(n)],
        item_features=features,
        cold_items=cold,
    )
    np.testing.assert_allclose(model.item_vectors[0], [1.0, 0.0])
    np.testing.assert_allclose(model.item_vectors[1], [0.0, 1.0])
    np.testing.assert_allclose(model.item_vectors[2], [5.0, 5.0])
    assert model.item_bias[0] == model.item_bias[1] == np.median(bias[2:])
    no_tower = GlobalModel.from_arrays(
        ModelConfig(n_items=n, dim=dim), [emb, bias], [f"c{k}" for k in range(n)], cold_items=cold
    )
    np.testing.assert_allclose(no_tower.item_vectors[:2], 0.0)
