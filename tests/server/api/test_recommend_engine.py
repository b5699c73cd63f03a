"""The recommendation use case without HTTP: the basis decision and the ranking."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedpers.privacy.consent import Purpose
from fedpers.privacy.errors import DataError
from fedpers.server.api.model_state import ModelHolder, ServedModel
from fedpers.server.api.recommender import (
    MAX_EVENTS,
    BasisDecision,
    PersonalState,
    RecommendationQuery,
    decide_basis,
    recommend,
)

ALL = frozenset(Purpose)
PERSONAL = BasisDecision("personalised", "test")


@dataclass(frozen=True)
class Consent:
    known: bool = True
    erased: bool = False
    granted: frozenset[Purpose] = ALL
    objection: bool = False


@pytest.fixture
def served(tiny_run: Path) -> ServedModel:
    holder = ModelHolder(tiny_run, reload_interval_s=0)
    holder.reload()
    model = holder.current()
    assert model is not None
    return model


@given(
    known=st.booleans(),
    erased=st.booleans(),
    granted=st.frozensets(st.sampled_from(list(Purpose))),
    objection=st.booleans(),
    gpc=st.booleans(),
    has_state=st.booleans(),
)
def test_personalised_only_when_every_condition_holds(
    known: bool,
    erased: bool,
    granted: frozenset[Purpose],
    objection: bool,
    gpc: bool,
    has_state: bool,
) -> None:
    consent = Consent(known, erased, granted, objection)
    d = decide_basis(consent, gpc, has_state)
    allowed = (
        known
        and not erased
        and {Purpose.STORE_ACCESS, Purpose.CREATE_PROFILES, Purpose.USE_PROFILES} <= granted
        and not objection
        and not gpc
        and has_state
    )
    assert d.personalised == allowed
    if not allowed:
        if erased:
            assert d.basis == "popular"
        elif not known or Purpose.LIMITED_DATA_SELECTION in granted:
            assert d.basis == "contextual"
        else:
            assert d.basis == "popular"
        if has_state:
            assert "not used" in d.reason


def test_reasons_say_why() -> None:
    assert "Art. 21" in decide_basis(Consent(objection=True), False, True).reason
    assert "Sec-GPC" in decide_basis(Consent(), True, True).reason
    assert (
        "P5 and P6 not granted"
        in decide_basis(Consent(granted=frozenset({Purpose.STORE_ACCESS})), False, True).reason
    )
    assert "unknown user" in decide_basis(Consent(known=False), False, False).reason
    assert "cold start" in decide_basis(Consent(), False, False).reason
    assert "erased" in decide_basis(Consent(erased=True), False, True).reason
    assert decide_basis(Consent(), False, True, "user vector").reason == (
        "P1, P5 and P6 granted and a local user vector was sent"
    )


def _items(result: object) -> list[int]:
    return [int(i.item[1:]) for i in result.items]  # type: ignore[attr-defined]


def test_user_vector_steers_the_ranking(served: ServedModel) -> None:
    q = RecommendationQuery("u", k=5, state=PersonalState(user_vector=[0.0, 5.0, 0.0, 0.0]))
    result = recommend(served, q, PERSONAL)
    assert all(20 <= i < 39 for i in _items(result)), _items(result)
    assert result.items[0].explanation == "matches your profile"
    assert result.items[0].title == f"Title {result.items[0].item}"
    assert [i.rank for i in result.items] == [1, 2, 3, 4, 5]
    assert result.version == 1 and result.sha256 == served.sha256
    q0 = RecommendationQuery("u", k=5, state=PersonalState(user_vector=[5.0, 0.0, 0.0, 0.0]))
    assert all(i < 20 for i in _items(recommend(served, q0, PERSONAL)))


def test_events_are_folded_in_excluded_and_explained(served: ServedModel) -> None:
    events = ["i1", "i2", "i3", "i4"]
    q = RecommendationQuery("u", k=5, state=PersonalState(events=events))
    result = recommend(served, q, PERSONAL)
    got = _items(result)
    assert all(i < 20 for i in got), got
    assert not set(got) & {1, 2, 3, 4}
    assert all(i.explanation.startswith("because you interacted with i") for i in result.items)


def test_non_personalised_bases_ignore_the_state(served: ServedModel) -> None:
    state = PersonalState(user_vector=[0.0, 5.0, 0.0, 0.0], events=["i1"])
    for basis in ("contextual", "popular"):
        decision = BasisDecision(basis, "x")  # type: ignore[arg-type]
        with_state = recommend(served, RecommendationQuery("u", k=8, state=state), decision)
        without = recommend(served, RecommendationQuery("u", k=8), decision)
        assert [i.item for i in with_state.items] == [i.item for i in without.items]
        assert [i.score for i in with_state.items] == [i.score for i in without.items]
    popular = recommend(served, RecommendationQuery("u", k=3), BasisDecision("popular", "x"))
    # i39 has the top bias but is cold: scored with the median bias, so i38 leads.
    assert _items(popular)[0] == 38
    assert "no personal data" in (popular.items[0].explanation or "")


def test_filters_and_categories(served: ServedModel) -> None:
    q = RecommendationQuery("u", k=20, categories=["Comedy"], exclude_items=["i9"])
    got = _items(recommend(served, q, BasisDecision("popular", "x")))
    assert sorted(got) == list(range(9))
    both = RecommendationQuery("u", k=40, categories=["Comedy", "Drama"])
    assert len(recommend(served, both, BasisDecision("popular", "x")).items) == 20
    with pytest.raises(DataError, match="unknown categories"):
        recommend(served, RecommendationQuery("u", categories=["Horror"]), PERSONAL)
    with pytest.raises(DataError, match="'nope'"):
        recommend(served, RecommendationQuery("u", exclude_items=["nope"]), PERSONAL)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (PersonalState(user_vector=[1.0, 2.0]), "has 2 values, the model needs 4"),
        (PersonalState(user_vector=[1.0, float("nan"), 0, 0]), "non-finite"),
        (PersonalState(user_vector=[1e6, 0, 0, 0]), "L2 norm"),
        (PersonalState(events=["i1", "zz", "yy"]), "unknown items in personal_state.events"),
        (PersonalState(events=["i1"] * (MAX_EVENTS + 1)), "events has"),
    ],
)
def test_bad_personal_state_is_refused(
    served: ServedModel, state: PersonalState, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        recommend(served, RecommendationQuery("u", state=state), PERSONAL)


def test_diversity_mixes_the_clusters(served: ServedModel) -> None:
    state = PersonalState(user_vector=[3.0, 2.5, 0.0, 0.0])
    plain = _items(recommend(served, RecommendationQuery("u", k=4, state=state), PERSONAL))
    diverse = _items(
        recommend(served, RecommendationQuery("u", k=4, diversity=0.9, state=state), PERSONAL)
    )
    assert all(i < 20 for i in plain)
    assert any(i >= 20 for i in diverse)


def test_exploration_fills_its_share_with_flagged_distinct_items(served: ServedModel) -> None:
    q = RecommendationQuery("u", k=10, exploration=0.3)
    seen: dict[str, tuple[int, int]] = {"i0": (1000, 900)}  # a known great item
    result = recommend(
        served,
        q,
        BasisDecision("popular", "x"),
        counters=lambda ids: {i: seen[i] for i in ids if i in seen},
        rng=np.random.default_rng(7),
    )
    flags = [i.explored for i in result.items]
    assert flags == [False] * 7 + [True] * 3
    assert len({i.item for i in result.items}) == 10
    assert "i0" in [i.item for i in result.items if i.explored]  # its posterior is ~0.9
    assert all("exploring" in (i.explanation or "") for i in result.items if i.explored)
    again = recommend(
        served,
        q,
        BasisDecision("popular", "x"),
        counters=lambda ids: {i: seen[i] for i in ids if i in seen},
        rng=np.random.default_rng(7),
    )
    assert [i.item for i in again.items] == [i.item for i in result.items]


def test_cold_items_are_explained_by_attributes(served: ServedModel) -> None:
    q = RecommendationQuery("u", k=40, state=PersonalState(user_vector=[0, 1.0, 0, 0]))
    cold = [i for i in recommend(served, q, PERSONAL).items if i.item == "i39"]
    assert cold and cold[0].explanation == "new item, scored from its attributes"


def test_context_boosts_reorder_only_the_contextual_basis(tiny_run: Path) -> None:
    boost = np.zeros(40)
    boost[5] = 10.0
    np.savez(tiny_run / "context_popularity.npz", **{"hour=21": boost})
    holder = ModelHolder(tiny_run, reload_interval_s=0)
    holder.reload()
    served = holder.current()
    assert served is not None
    q = RecommendationQuery("u", k=3, context={"hour": 21, "device": "tv"})
    contextual = recommend(served, q, BasisDecision("contextual", "x"))
    assert contextual.items[0].item == "i5"
    assert "hour=21" in (contextual.items[0].explanation or "")
    popular = recommend(served, q, BasisDecision("popular", "x"))
    assert popular.items[0].item != "i5"


@pytest.mark.parametrize("diversity", [0.0, 0.5])
def test_precomputed_popular_order_ranks_like_the_full_scan(
    served: ServedModel, diversity: float
) -> None:
    from dataclasses import replace

    full_scan = replace(served, popular_order=np.zeros(0, dtype=np.int64))
    for query in (
        RecommendationQuery("u", k=7, diversity=diversity),
        RecommendationQuery("u", k=5, diversity=diversity, exclude_items=["i38", "i37"]),
        RecommendationQuery("u", k=30, diversity=diversity, categories=["Drama"]),
    ):
        for basis in ("popular", "contextual"):
            decision = BasisDecision(basis, "x")  # type: ignore[arg-type]
            fast = recommend(served, query, decision)
            slow = recommend(full_scan, query, decision)
            assert [i.item for i in fast.items] == [i.item for i in slow.items]
