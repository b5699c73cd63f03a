"""Contextual popularity learned from feedback: the lift rule, the counters and the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlite_utils
from hypothesis import given
from hypothesis import strategies as st

from fedpers.server.api.context_lifts import (
    MAX_LIFT,
    ContextLifts,
    add_boosts,
    context_keys,
    context_lift,
)
from fedpers.server.api.experiments import migrations, record_feedback

INDEX = {f"i{k}": k for k in range(10)}


@pytest.fixture
def db(tmp_path: Path) -> sqlite_utils.Database:
    database = sqlite_utils.Database(tmp_path / "api.db")
    migrations.apply(database)
    return database


def test_context_keys_use_the_rankings_key_value_format() -> None:
    assert context_keys({"device": "tv", "hour": 21, "locale": None}) == ["device=tv", "hour=21"]
    assert context_keys(None) == [] and context_keys({}) == []


def test_lift_is_zero_without_data_and_signed_by_the_items_rate() -> None:
    shown = np.array([0, 40, 40, 40])
    clicked = np.array([0, 30, 4, 0])  # the context's rate is 34 / 120
    lift = context_lift(shown, clicked, int(shown.sum()), int(clicked.sum()))
    assert lift[0] == 0.0
    assert lift[1] > 0 > lift[3]
    assert abs(lift[2]) < lift[1]  # near the context's average: a small lift


def test_few_impressions_are_shrunk_towards_zero() -> None:
    # the same click rate, 10 times the evidence: a larger lift
    few = context_lift(np.array([4]), np.array([3]), 400, 40)[0]
    many = context_lift(np.array([40]), np.array([30]), 400, 40)[0]
    assert 0 < few < many


@given(
    shown=st.lists(st.integers(0, 10_000), min_size=1, max_size=20),
    data=st.data(),
)
def test_lift_is_bounded_and_finite(shown: list[int], data: st.DataObject) -> None:
    clicked = [data.draw(st.integers(0, 2 * s + 3)) for s in shown]  # clicks may exceed
    extra_shown = data.draw(st.integers(0, 10_000))
    extra_clicks = data.draw(st.integers(0, 10_000))
    lift = context_lift(
        np.array(shown), np.array(clicked), sum(shown) + extra_shown, sum(clicked) + extra_clicks
    )
    assert np.all(np.isfinite(lift))
    assert np.all(np.abs(lift) <= MAX_LIFT)


def test_feedback_with_context_counts_per_key_value_and_no_user(
    db: sqlite_utils.Database,
) -> None:
    for _ in range(3):
        record_feedback(db, "t", "i1", "impression", context={"hour": 21, "device": "tv"})
    record_feedback(db, "t", "i1", "click", context={"hour": 21})
    record_feedback(db, "t", "i2", "impression")  # no context: no context row
    rows = db.execute(
        "SELECT context, item, impressions, clicks FROM engine_context_counters "
        "ORDER BY context, item"
    ).fetchall()
    assert rows == [("device=tv", "i1", 3, 0), ("hour=21", "i1", 3, 1)]
    assert not {"user", "user_id", "request_id"} & set(
        db.table("engine_context_counters").columns_dict
    )


def _feed(db: sqlite_utils.Database, tenant: str, item: str, shown: int, clicked: int) -> None:
    for _ in range(shown):
        record_feedback(db, tenant, item, "impression", context={"hour": 21})
    for _ in range(clicked):
        record_feedback(db, tenant, item, "click", context={"hour": 21})


def test_cache_reads_a_context_once_per_ttl_and_never_another_tenants(
    db: sqlite_utils.Database,
) -> None:
    now = [0.0]
    lifts = ContextLifts(ttl_s=5.0, clock=lambda: now[0])
    assert lifts.boosts(db, "t", {"hour": 21}, INDEX, "sha-1") == []
    _feed(db, "t", "i3", shown=20, clicked=15)
    _feed(db, "t", "i4", shown=20, clicked=0)
    _feed(db, "other", "i5", shown=50, clicked=50)
    record_feedback(db, "t", "not-in-model", "click", context={"hour": 21})
    assert lifts.boosts(db, "t", {"hour": 21}, INDEX, "sha-1") == []  # cached: still empty
    now[0] = 5.0
    [(positions, values)] = lifts.boosts(db, "t", {"hour": 21, "device": "tv"}, INDEX, "sha-1")
    assert sorted(positions.tolist()) == [3, 4]  # other tenant's i5, unknown items left out
    by_item = dict(zip(positions.tolist(), values.tolist(), strict=True))
    assert by_item[3] > 0 > by_item[4]
    # another model version maps ids afresh at once
    shifted = {item: k + 1 for item, k in INDEX.items()}
    [(moved, _)] = lifts.boosts(db, "t", {"hour": 21}, shifted, "sha-2")
    assert sorted(moved.tolist()) == [4, 5]
    scores = add_boosts(np.zeros(10), [(positions, values)])
    assert scores[3] == by_item[3] and scores[4] == by_item[4] and scores[5] == 0.0


def test_the_cache_stays_bounded_whatever_contexts_are_sent(
    db: sqlite_utils.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedpers.server.api import context_lifts

    monkeypatch.setattr(context_lifts, "MAX_CACHED", 8)
    lifts = ContextLifts(ttl_s=60.0, clock=lambda: 0.0)
    for n in range(50):  # a client inventing device names
        lifts.boosts(db, "t", {"device": f"d{n}"}, INDEX, "sha-1")
    assert len(lifts._entries) == 8
    assert ("t", "device=d49", "sha-1") in lifts._entries  # the newest are kept
