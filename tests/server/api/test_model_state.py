from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedpers.privacy.errors import DataError
from fedpers.server.api.catalogue import Catalogue, load_catalogue
from fedpers.server.api.model_state import ModelHolder, privacy_guarantee
from fedpers.server.checkpoint import sha256_file
from fedpers.server.rundb import RunDB

ITEMS = [f"i{k}" for k in range(40)]
Publish = Callable[[Path, int, float], object]


def test_holder_loads_the_latest_version_with_catalogue_and_guarantee(tiny_run: Path) -> None:
    holder = ModelHolder(tiny_run, reload_interval_s=0)
    assert holder.current() is None and not holder.ready
    assert holder.reload()
    served = holder.current()
    assert served is not None
    assert (served.version, served.round, served.n_items, served.dim) == (1, 1, 40, 4)
    assert served.sha256 == sha256_file(served.path)
    norms = np.linalg.norm(served.unit_vectors, axis=1)
    np.testing.assert_allclose(norms[:39], 1.0, rtol=1e-5)  # i39 is cold: W a = 0 here
    assert norms[39] == 0.0
    assert served.catalogue.titles[0] == "Title i0"
    assert served.catalogue.categories[0] == ("Comedy",)
    assert served.catalogue.category_names == ["Comedy", "Drama"]
    assert served.privacy["epsilon"] == 1.5
    assert served.privacy["unit"] == "user"
    assert served.privacy["accountant"] == "rdp"
    assert not holder.reload()  # same version: nothing to do
    assert holder.current() is served


def test_new_version_is_swapped_in_and_old_reference_stays_intact(
    tiny_run: Path, publish: Publish
) -> None:
    holder = ModelHolder(tiny_run, reload_interval_s=0)
    holder.reload()
    old = holder.current()
    assert old is not None
    publish(tiny_run, 2, 0.5)
    assert holder.reload()
    new = holder.current()
    assert new is not None and new.version == 2 and new.privacy["epsilon"] == 3.0
    # A request that took the old reference still sees the old, unchanged arrays.
    assert old.version == 1
    assert float(old.model.item_vectors[:, 2].max()) == 0.0
    assert float(new.model.item_vectors[:5, 2].min()) == pytest.approx(0.5)


def test_partial_or_corrupt_file_never_replaces_a_good_model(
    tiny_run: Path, publish: Publish
) -> None:
    holder = ModelHolder(tiny_run, reload_interval_s=0)
    holder.reload()
    publish(tiny_run, 2, 0.5)
    path = tiny_run / "models" / "round-0002.npz"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # a half-copied file
    assert not holder.reload()
    served = holder.current()
    assert served is not None and served.version == 1
    assert holder.last_error is not None and "SHA-256" in holder.last_error
    # A file with the right hash registered but unreadable content is also refused.
    path.write_bytes(b"not an npz")
    with RunDB.open(tiny_run) as db:
        db.register_model(2, path, sha256_file(path), {})
    assert not holder.reload()
    assert holder.current() is served
    path.unlink()
    assert not holder.reload()
    assert "missing" in (holder.last_error or "")
    path.write_bytes(good)  # the complete file arrives later: the next poll takes it
    with RunDB.open(tiny_run) as db:
        db.register_model(2, path, sha256_file(path), {})
    assert holder.reload()
    assert holder.current().version == 2  # type: ignore[union-attr]


def test_not_a_run_directory_is_not_ready(tmp_path: Path) -> None:
    holder = ModelHolder(tmp_path, reload_interval_s=0)
    assert not holder.reload()
    assert not holder.ready
    assert "run.db" in (holder.last_error or "")


def test_polling_thread_picks_up_a_new_version(tiny_run: Path, publish: Publish) -> None:
    holder = ModelHolder(tiny_run, reload_interval_s=0.05)
    holder.start()
    try:
        assert holder.current().version == 1  # type: ignore[union-attr]
        publish(tiny_run, 3, 0.1)
        swapped = threading.Event()
        for _ in range(200):
            if holder.current().version == 3:  # type: ignore[union-attr]
                swapped.set()
                break
            threading.Event().wait(0.02)
        assert swapped.is_set()
    finally:
        holder.stop()


def test_catalogue_falls_back_to_ids_without_a_catalogue_file(tmp_path: Path) -> None:
    cat = load_catalogue(tmp_path, ITEMS[:3], None)
    assert cat.titles == ("i0", "i1", "i2")
    assert cat.categories == ((), (), ())
    with pytest.raises(DataError, match="unknown categories"):
        cat.category_mask(["Comedy"])


def test_catalogue_ignores_titles_of_another_catalogue(tiny_run: Path) -> None:
    cat = load_catalogue(tiny_run, [f"x{k}" for k in range(40)], None)
    assert cat.titles[0] == "x0"


def test_category_mask_is_the_union_of_categories() -> None:
    feats = np.array([[1, 0, 5], [0, 1, 5], [0, 0, 5]], dtype=np.float32)
    cat = Catalogue.build(
        ["a", "b", "c"], item_features=feats, feature_names=["genre:X", "genre:Y", "year"]
    )
    assert cat.category_mask(["X"]).tolist() == [True, False, False]
    assert cat.category_mask(["X", "Y"]).tolist() == [True, True, False]
    assert cat.entry(1) == {"item": "b", "title": "b", "categories": ["Y"]}


def test_privacy_guarantee_of_a_non_private_run() -> None:
    g = privacy_guarantee({"unit": None, "epsilon": None, "mechanism": None}, {"round": 3})
    assert g["epsilon"] is None and g["unit"] is None


def test_context_popularity_is_read_from_the_run_and_validated(tiny_run: Path) -> None:
    boost = np.zeros(40)
    boost[5] = 10.0
    np.savez(
        tiny_run / "context_popularity.npz",
        **{"hour=21": boost, "device=tv": np.zeros(3), "locale=xx": np.full(40, np.nan)},
    )
    holder = ModelHolder(tiny_run, reload_interval_s=0)
    holder.reload()
    served = holder.current()
    assert served is not None
    assert set(served.context_popularity) == {"hour=21"}  # wrong length and NaN refused
    assert served.context_popularity["hour=21"][5] == 10.0


def test_categories_come_from_the_catalogue_file_when_the_model_has_no_tower(
    tiny_run: Path,
) -> None:
    cat = load_catalogue(tiny_run, ITEMS, None)
    assert cat.category_names == ["Comedy", "Drama"]
    assert cat.titles[3] == "Title i3"
    assert int(cat.category_mask(["Drama"]).sum()) == 10
