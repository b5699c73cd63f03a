"""Experiments without HTTP: Wilson intervals, bucketing, counters, the engine tables."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import sqlite_utils
from hypothesis import given
from hypothesis import strategies as st

from fedpers.privacy.errors import ConfigError, DataError
from fedpers.server.api.experiments import (
    Experiment,
    Variant,
    assign_variant,
    bucket,
    create_experiment,
    experiment_report,
    item_counters,
    load_experiment,
    migrations,
    record_feedback,
    wilson_interval,
)
from fedpers.server.api.exploration import explore_slots, thompson_pick


@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_wilson_interval_is_a_valid_interval_around_the_rate(s: int, n: int) -> None:
    lo, hi = wilson_interval(s, n)
    assert 0.0 <= lo <= hi <= 1.0
    if n > 0:
        p = min(s, n) / n
        assert lo - 1e-12 <= p <= hi + 1e-12
        assert hi - lo <= 2 * 1.96 / math.sqrt(n) + 1e-9  # never wider than the Wald bound
    else:
        assert (lo, hi) == (0.0, 1.0)


@given(st.integers(1, 200), st.floats(0.01, 0.99))
def test_wilson_interval_narrows_with_more_trials(n: int, p: float) -> None:
    lo1, hi1 = wilson_interval(round(p * n), n)
    lo4, hi4 = wilson_interval(round(p * 4 * n), 4 * n)
    assert hi4 - lo4 < hi1 - lo1


def test_wilson_reference_value() -> None:
    # Wilson (1927) score interval of 5/10 at z = 1.96: 0.2366 to 0.7634.
    lo, hi = wilson_interval(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)


def test_assignment_is_deterministic_weighted_and_tenant_specific() -> None:
    exp = Experiment("t1", "e", (Variant("control", 3.0), Variant("treatment", 1.0)))
    users = [f"u{i}" for i in range(4000)]
    first = [assign_variant(exp, u).name for u in users]
    assert first == [assign_variant(exp, u).name for u in users]
    share = first.count("control") / len(users)
    assert 0.72 < share < 0.78  # weights 3:1
    other = Experiment("t2", "e", exp.variants)
    moved = sum(a != assign_variant(other, u).name for a, u in zip(first, users, strict=True))
    assert moved > 400  # another tenant's buckets are independent
    assert 0.0 <= bucket("t", "e", "u") < 1.0


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ((), "at least one"),
        ((Variant("a"), Variant("a")), "unique"),
        ((Variant("a", 0.0),), "weight"),
        ((Variant("a", exploration=2.0),), "exploration"),
    ],
)
def test_invalid_experiments_are_refused(variants: tuple[Variant, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Experiment("t", "e", variants)


@pytest.fixture
def db(tmp_path: Path) -> sqlite_utils.Database:
    database = sqlite_utils.Database(tmp_path / "api.db")
    migrations.apply(database)
    return database


def test_feedback_counters_and_report(db: sqlite_utils.Database) -> None:
    exp = create_experiment(db, Experiment("t", "e1", (Variant("a"), Variant("b", 2.0, 0.2))))
    assert exp.created_at > 0
    with pytest.raises(DataError, match="already exists"):
        create_experiment(db, exp)
    loaded = load_experiment(db, "t", "e1")
    assert loaded is not None and loaded.variants == exp.variants
    assert load_experiment(db, "other", "e1") is None  # tenant isolation
    for _ in range(10):
        record_feedback(db, "t", "i1", "impression", experiment="e1", variant="a")
    for _ in range(4):
        record_feedback(db, "t", "i1", "click", experiment="e1", variant="a")
    record_feedback(db, "t", "i1", "conversion", experiment="e1", variant="a")
    record_feedback(db, "t", "i2", "impression")
    record_feedback(db, "other", "i1", "click")
    assert item_counters(db, "t", ["i1", "i2", "i3"]) == {"i1": (10, 4), "i2": (1, 0)}
    assert item_counters(db, "other", ["i1"]) == {"i1": (0, 1)}
    report = experiment_report(db, exp)
    a, b = report["variants"]
    assert (a["impressions"], a["clicks"], a["conversions"]) == (10, 4, 1)
    assert a["ctr"]["value"] == 0.4
    assert a["ctr"]["ci95"] == list(wilson_interval(4, 10))
    assert a["conversion_rate"]["value"] == 0.1
    assert b["impressions"] == 0 and b["ctr"] == {"value": None, "ci95": [0.0, 1.0]}
    # Only aggregate counters: no column of any engine table can hold a user id.
    for table in ("engine_experiments", "engine_item_counters", "engine_variant_counters"):
        assert not {"user", "user_id", "request_id"} & set(db.table(table).columns_dict)


def test_explore_slots() -> None:
    assert [explore_slots(10, s) for s in (0.0, 0.04, 0.2, 0.25, 1.0)] == [0, 1, 2, 2, 9]
    assert explore_slots(1, 0.5) == 1
    with pytest.raises(ConfigError):
        explore_slots(10, 1.5)


def test_thompson_prefers_high_ctr_and_unseen_items() -> None:
    import numpy as np

    pool = np.array([0, 1, 2])
    shown = np.array([10_000, 10_000, 0])
    clicks = np.array([9_000, 10, 0])
    rng = np.random.default_rng(0)
    picks = [thompson_pick(pool, shown, clicks, 1, rng)[0] for _ in range(400)]
    assert picks.count(1) == 0  # a 0.1 % item essentially never beats 90 %
    assert picks.count(2) > 20  # the unseen item still gets its chances
    assert picks.count(0) > picks.count(2)
