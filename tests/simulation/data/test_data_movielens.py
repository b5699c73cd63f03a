"""MovieLens-100K from the recbole 1.2.1 wheel: real counts, attributes and features.

The first run downloads the wheel (about 2 MB from PyPI) into ``$FEDPERS_CACHE`` or
``~/.cache/fedpers``; later runs reuse the verified files.
"""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fedpers.privacy.errors import DataError
from fedpers.simulation.data import (
    InteractionData,
    fetch_movielens_100k,
    load_movielens_100k,
    movielens,
)
from fedpers.simulation.data.cache import atomic_directory, default_cache_dir
from fedpers.simulation.data.movielens import (
    ML100K_FILES,
    age_band,
    movielens_100k_dir,
    parse_atomic_file,
    parse_movielens_100k,
)


@pytest.fixture(scope="session")
def ml100k() -> InteractionData:
    return load_movielens_100k()


def test_real_counts(ml100k: InteractionData) -> None:
    assert ml100k.n_users == 943
    assert ml100k.n_items == 1682
    assert ml100k.n_interactions == 100_000
    assert len(np.unique(ml100k.users)) == 943
    assert len(np.unique(ml100k.items)) == 1682
    assert sorted(np.unique(ml100k.ratings).tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert ml100k.users.dtype == np.int64 and ml100k.timestamps.dtype == np.int64
    assert ml100k.ratings.dtype == np.float32


def test_known_rows(ml100k: InteractionData) -> None:
    # First line of ml-100k.inter: "196 242 3 881250949".
    assert ml100k.user_ids[ml100k.users[0]] == "196"
    assert ml100k.item_ids[ml100k.items[0]] == "242"
    assert ml100k.ratings[0] == 3.0
    assert ml100k.timestamps[0] == 881250949
    # Dense ids follow numeric order: user "1" is index 0, item "1" is Toy Story.
    assert ml100k.user_ids[:3] == ["1", "2", "3"]
    assert ml100k.item_titles is not None and ml100k.item_titles[0] == "Toy Story"
    assert int(ml100k.timestamps.min()) == 874724710
    assert int(ml100k.timestamps.max()) == 893286638


def test_user_attributes(ml100k: InteractionData) -> None:
    attrs = ml100k.user_attributes
    assert set(attrs) == {"gender", "age", "age_band", "occupation"}
    genders, counts = np.unique(attrs["gender"], return_counts=True)
    assert dict(zip(genders.tolist(), counts.tolist(), strict=True)) == {"F": 273, "M": 670}
    # User 1: 24, M, technician. User 2: 53, F, other.
    assert attrs["age"][0] == 24 and attrs["gender"][0] == "M"
    assert attrs["occupation"][0] == "technician" and attrs["age_band"][0] == "<25"
    assert attrs["age"][1] == 53 and attrs["gender"][1] == "F" and attrs["age_band"][1] == "45+"
    assert set(attrs["age_band"].tolist()) == {"<25", "25-34", "35-44", "45+"}
    assert all(len(col) == 943 for col in attrs.values())


def test_item_features(ml100k: InteractionData) -> None:
    feats = ml100k.item_features
    assert feats is not None and feats.dtype == np.float32
    names = ml100k.item_feature_names
    assert feats.shape == (1682, len(names)) and len(names) == 21
    toy_story = dict(zip(names, feats[0].tolist(), strict=True))
    assert {n for n, v in toy_story.items() if n.startswith("genre:") and v == 1.0} == {
        "genre:Animation",
        "genre:Children's",
        "genre:Comedy",
    }
    year = feats[:, names.index("year")]
    assert year.min() == 0.0 and year.max() == 1.0
    # Drama is the most frequent genre (725 movies).
    assert feats[:, names.index("genre:Drama")].sum() == 725
    # Item 267 has no year at all; item 1412's year comes from its title "(1995)".
    missing = feats[:, names.index("year_missing")]
    assert missing.sum() == 1 and ml100k.item_ids[int(np.argmax(missing))] == "267"


def test_fetch_is_idempotent_and_verified(ml100k: InteractionData) -> None:
    directory = fetch_movielens_100k()
    assert directory == movielens_100k_dir()
    before = {name: (directory / name).stat().st_mtime_ns for name in ML100K_FILES}
    assert fetch_movielens_100k() == directory
    after = {name: (directory / name).stat().st_mtime_ns for name in ML100K_FILES}
    assert before == after


def test_corrupted_cache_is_refetched(ml100k: InteractionData, tmp_path: Path) -> None:
    source = fetch_movielens_100k()
    target = movielens_100k_dir(tmp_path)
    with atomic_directory(target) as staging:
        for name in ML100K_FILES:
            (staging / name).write_bytes((source / name).read_bytes())
    (target / "ml-100k.user").write_text("tampered\n")
    assert fetch_movielens_100k(tmp_path) == target
    assert (target / "ml-100k.user").read_bytes() == (source / "ml-100k.user").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_default_cache_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEDPERS_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("FEDPERS_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "fedpers"


def test_atomic_directory_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "ds"
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "half").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_parse_atomic_file_rejects_ragged_rows() -> None:
    with pytest.raises(DataError, match=r"ml-100k.inter:3: expected 2 fields, found 3"):
        parse_atomic_file("a:token\tb:float\n1\t2\n1\t2\t3\n", "ml-100k.inter")


def test_parse_rejects_unknown_item() -> None:
    user = "user_id:token\tage:token\tgender:token\toccupation:token\n1\t30\tF\tother\n"
    item = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    item += "1\tA\t1990\tDrama\n"
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t9\t4\t100\n"
    with pytest.raises(DataError, match=r"ml-100k.inter:2: unknown id '9'"):
        parse_movielens_100k(inter, user, item)


@pytest.mark.parametrize(
    ("age", "band"),
    [(7, "<25"), (24, "<25"), (25, "25-34"), (35, "35-44"), (44, "35-44"), (45, "45+")],
)
def test_age_band(age: int, band: str) -> None:
    assert age_band(age) == band


def test_env_cache_is_used_when_set() -> None:
    expected = os.environ.get("FEDPERS_CACHE")
    if expected:
        assert movielens_100k_dir() == Path(expected) / "ml-100k"
    else:
        assert movielens_100k_dir() == Path.home() / ".cache" / "fedpers" / "ml-100k"


def test_failed_download_is_a_data_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def failing_run(cmd: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution\n")

    monkeypatch.setattr(movielens.subprocess, "run", failing_run)
    with pytest.raises(DataError, match=r"pip download recbole==1.2.1 failed: ERROR: No matching"):
        fetch_movielens_100k(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_tampered_wheel_leaves_nothing_in_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = fetch_movielens_100k()

    def fake_wheel(dest: Path) -> Path:
        wheel = dest / "recbole-1.2.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            for name in ML100K_FILES:
                payload = (source / name).read_bytes()
                if name == "ml-100k.item":
                    payload = payload.replace(b"Toy Story", b"Toy Storm")
                archive.writestr(f"recbole/dataset_example/ml-100k/{name}", payload)
        return wheel

    cache = tmp_path / "cache"
    monkeypatch.setattr(movielens, "_download_wheel", fake_wheel)
    with pytest.raises(DataError, match=r"ml-100k.item: sha256 [0-9a-f]{64} does not match"):
        fetch_movielens_100k(cache)
    assert list(cache.iterdir()) == []
