"""MovieLens-100K, read from the ``recbole`` 1.2.1 wheel on PyPI.

The wheel ships ``recbole/dataset_example/ml-100k/`` in RecBole's atomic-file format
(tab-separated, typed headers such as ``user_id:token``). :func:`fetch_movielens_100k`
downloads the wheel with ``pip download --no-deps`` (recbole is never installed),
extracts only the three data files, checks their SHA-256 digests and moves them into
the cache atomically. :func:`load_movielens_100k` parses them into an
:class:`~fedpers.simulation.data.interactions.InteractionData`.

Example:
    >>> from fedpers.simulation.data import load_movielens_100k
    >>> data = load_movielens_100k()  # doctest: +SKIP
    >>> data.n_users, data.n_items, data.n_interactions  # doctest: +SKIP
    (943, 1682, 100000)
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from fedpers.privacy.errors import DataError
from fedpers.simulation.data.cache import atomic_directory, resolve_cache_dir, sha256_file
from fedpers.simulation.data.interactions import InteractionData

__all__ = [
    "AGE_BANDS",
    "ML100K_FILES",
    "ML100K_GENRES",
    "age_band",
    "fetch_movielens_100k",
    "load_movielens_100k",
    "movielens_100k_dir",
    "parse_atomic_file",
    "parse_movielens_100k",
]

RECBOLE_REQUIREMENT = "recbole==1.2.1"
_WHEEL_DIR = "recbole/dataset_example/ml-100k/"

ML100K_FILES: dict[str, str] = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
}
"""The extracted files and their SHA-256 digests in the recbole 1.2.1 wheel."""

ML100K_GENRES: tuple[str, ...] = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
"""The 19 MovieLens-100K genre labels in the dataset's own order."""

AGE_BANDS: tuple[str, ...] = ("<25", "25-34", "35-44", "45+")
"""The age bands used for per-group (fairness) reporting."""

_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


def movielens_100k_dir(cache_dir: Path | None = None) -> Path:
    """Return the directory that holds (or will hold) the extracted ML-100K files.

    Args:
        cache_dir: the data cache; ``None`` means :func:`default_cache_dir`.

    Returns:
        ``<cache_dir>/ml-100k``.
    """
    base: Path = resolve_cache_dir(cache_dir)
    return base / "ml-100k"


def _verified(directory: Path) -> bool:
    """Return whether every ML-100K file exists in ``directory`` with its digest."""
    return all(
        (directory / name).is_file() and sha256_file(directory / name) == digest
        for name, digest in ML100K_FILES.items()
    )


def _download_wheel(dest: Path) -> Path:
    """Download the recbole wheel (no dependencies, binary only) into ``dest``."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        RECBOLE_REQUIREMENT,
        "-d",
        str(dest),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("recbole-*.whl"))
    if proc.returncode != 0 or not wheels:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit code {proc.returncode}"
        raise DataError(f"pip download {RECBOLE_REQUIREMENT} failed: {last}")
    return wheels[0]


def _extract_verified(wheel: Path, dest: Path) -> None:
    """Extract the three ML-100K files from ``wheel`` into ``dest`` and check digests."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            for name, digest in ML100K_FILES.items():
                try:
                    payload = archive.read(_WHEEL_DIR + name)
                except KeyError as exc:
                    raise DataError(f"{wheel.name}: {_WHEEL_DIR + name} not found") from exc
                (dest / name).write_bytes(payload)
                actual = sha256_file(dest / name)
                if actual != digest:
                    raise DataError(
                        f"{wheel.name}: {name}: sha256 {actual} does not match expected {digest}"
                    )
    except zipfile.BadZipFile as exc:
        raise DataError(f"{wheel.name}: not a valid wheel: {exc}") from exc


def fetch_movielens_100k(cache_dir: Path | None = None) -> Path:
    """Download MovieLens-100K into the cache (once) and return its directory.

    Runs ``python -m pip download --no-deps --only-binary=:all: recbole==1.2.1`` into a
    temporary directory, extracts only ``ml-100k.{inter,user,item}``, verifies their
    SHA-256 digests and moves them into ``<cache_dir>/ml-100k`` atomically. When the
    verified files are already there, nothing is downloaded.

    Args:
        cache_dir: the data cache; ``None`` means ``$FEDPERS_CACHE`` or
            ``~/.cache/fedpers``.

    Returns:
        The directory holding ``ml-100k.inter``, ``ml-100k.user`` and ``ml-100k.item``.

    Raises:
        DataError: the download failed or a file does not match its digest.
    """
    target = movielens_100k_dir(cache_dir)
    if _verified(target):
        return target
    with tempfile.TemporaryDirectory(prefix="fedpers-recbole-") as tmp:
        wheel = _download_wheel(Path(tmp))
        try:
            with atomic_directory(target) as staging:
                _extract_verified(wheel, staging)
        except OSError:
            # Another process may have moved a complete copy into place meanwhile.
            if not _verified(target):
                raise
    return target


def parse_atomic_file(text: str, source: str) -> tuple[list[str], list[list[str]]]:
    """Parse a RecBole atomic file: a typed tab-separated header, then rows.

    Args:
        text: the file content.
        source: the file name used in error messages.

    Returns:
        The column names without their ``:type`` suffix, and the rows as lists of fields.

    Raises:
        DataError: the file is empty or a row has the wrong number of fields.
    """
    lines = text.splitlines()
    if not lines:
        raise DataError(f"{source}:1: empty file, expected a header")
    columns = [field.split(":", 1)[0] for field in lines[0].split("\t")]
    rows: list[list[str]] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != len(columns):
            raise DataError(
                f"{source}:{number}: expected {len(columns)} fields, found {len(fields)}"
            )
        rows.append(fields)
    return columns, rows


def age_band(age: int) -> str:
    """Return the age band of an age in years: ``"<25"``, ``"25-34"``, ``"35-44"``, ``"45+"``.

    Args:
        age: the age in years.

    Returns:
        One of :data:`AGE_BANDS`.
    """
    if age < 25:
        return AGE_BANDS[0]
    if age < 35:
        return AGE_BANDS[1]
    if age < 45:
        return AGE_BANDS[2]
    return AGE_BANDS[3]


def _column(columns: list[str], name: str, source: str) -> int:
    """Return the position of a required column."""
    try:
        return columns.index(name)
    except ValueError as exc:
        raise DataError(f"{source}:1: missing column '{name}'") from exc


def _id_order(raw: list[str]) -> list[str]:
    """Sort raw identifiers numerically when they are all integers, else as strings."""
    unique = sorted(set(raw))
    if all(value.isdigit() for value in unique):
        unique.sort(key=int)
    return unique


def _dense_index(
    rows: list[list[str]], id_col: int, source: str, id_name: str
) -> tuple[list[str], dict[str, int], list[list[str]]]:
    """Index a file's rows densely by their raw id (in :func:`_id_order`).

    Returns:
        ``(ids, index of each raw id, the rows in that order)``.

    Raises:
        DataError: when two rows share an id.
    """
    ids = _id_order([row[id_col] for row in rows])
    if len(ids) != len(rows):
        raise DataError(f"{source}: duplicate {id_name}")
    by_id = {row[id_col]: row for row in rows}
    return ids, {raw: k for k, raw in enumerate(ids)}, [by_id[raw] for raw in ids]


def _release_year(year_field: str, title: str) -> int | None:
    """Return the release year from its column, else from a trailing ``(YYYY)`` in the title."""
    if len(year_field) == 4 and year_field.isdigit():
        return int(year_field)
    match = _YEAR_IN_TITLE.search(title)
    return int(match.group(1)) if match else None


def parse_movielens_100k(inter: str, user: str, item: str) -> InteractionData:
    """Build the ML-100K :class:`InteractionData` from the three files' contents.

    Users and items are indexed densely in increasing order of their numeric ids, so
    user ``"1"`` is index 0. ``item_features`` holds the 19 genre indicators
    (``genre:<name>``), the release year scaled to [0, 1] over the catalogue
    (``year``; 0 when unknown) and ``year_missing``.

    Args:
        inter: content of ``ml-100k.inter``.
        user: content of ``ml-100k.user``.
        item: content of ``ml-100k.item``.

    Returns:
        The interaction log with user attributes ``gender``, ``age``, ``age_band``,
        ``occupation`` and item features, titles and raw ids.

    Raises:
        DataError: a file is malformed or refers to an unknown user, item or genre.
    """
    u_cols, u_rows = parse_atomic_file(user, "ml-100k.user")
    i_cols, i_rows = parse_atomic_file(item, "ml-100k.item")
    x_cols, x_rows = parse_atomic_file(inter, "ml-100k.inter")

    u_id = _column(u_cols, "user_id", "ml-100k.user")
    u_age = _column(u_cols, "age", "ml-100k.user")
    u_gender = _column(u_cols, "gender", "ml-100k.user")
    u_occ = _column(u_cols, "occupation", "ml-100k.user")
    user_ids, user_index, ordered_users = _dense_index(u_rows, u_id, "ml-100k.user", "user_id")
    try:
        ages = np.array([int(row[u_age]) for row in ordered_users], dtype=np.int64)
    except ValueError as exc:
        raise DataError(f"ml-100k.user: column 'age': {exc}") from exc

    i_id = _column(i_cols, "item_id", "ml-100k.item")
    i_title = _column(i_cols, "movie_title", "ml-100k.item")
    i_year = _column(i_cols, "release_year", "ml-100k.item")
    i_class = _column(i_cols, "class", "ml-100k.item")
    item_ids, item_index, ordered_items = _dense_index(i_rows, i_id, "ml-100k.item", "item_id")

    genre_col = {name: k for k, name in enumerate(ML100K_GENRES)}
    n_items = len(item_ids)
    genres = np.zeros((n_items, len(ML100K_GENRES)), dtype=np.float32)
    years: list[int | None] = []
    for k, row in enumerate(ordered_items):
        for label in row[i_class].split():
            if label not in genre_col:
                raise DataError(f"ml-100k.item: item {row[i_id]}: unknown genre '{label}'")
            genres[k, genre_col[label]] = 1.0
        years.append(_release_year(row[i_year], row[i_title]))
    known = [y for y in years if y is not None]
    lo, hi = (min(known), max(known)) if known else (0, 0)
    span = max(hi - lo, 1)
    year_scaled = np.array([0.0 if y is None else (y - lo) / span for y in years], dtype=np.float32)
    year_missing = np.array([y is None for y in years], dtype=np.float32)
    item_features = np.column_stack([genres, year_scaled, year_missing]).astype(np.float32)
    feature_names = [f"genre:{g}" for g in ML100K_GENRES] + ["year", "year_missing"]

    x_user = _column(x_cols, "user_id", "ml-100k.inter")
    x_item = _column(x_cols, "item_id", "ml-100k.inter")
    x_rating = _column(x_cols, "rating", "ml-100k.inter")
    x_time = _column(x_cols, "timestamp", "ml-100k.inter")
    n = len(x_rows)
    users = np.empty(n, dtype=np.int64)
    items = np.empty(n, dtype=np.int64)
    ratings = np.empty(n, dtype=np.float32)
    timestamps = np.empty(n, dtype=np.int64)
    for k, row in enumerate(x_rows):
        try:
            users[k] = user_index[row[x_user]]
            items[k] = item_index[row[x_item]]
        except KeyError as exc:
            raise DataError(f"ml-100k.inter:{k + 2}: unknown id {exc.args[0]!r}") from exc
        try:
            ratings[k] = float(row[x_rating])
            timestamps[k] = int(float(row[x_time]))
        except ValueError as exc:
            raise DataError(f"ml-100k.inter:{k + 2}: {exc}") from exc

    return InteractionData(
        name="ml-100k",
        users=users,
        items=items,
        ratings=ratings,
        timestamps=timestamps,
        n_users=len(user_ids),
        n_items=n_items,
        user_ids=user_ids,
        item_ids=item_ids,
        event_types=None,
        user_attributes={
            "gender": np.array([row[u_gender] for row in ordered_users], dtype=str),
            "age": ages,
            "age_band": np.array([age_band(int(a)) for a in ages], dtype=str),
            "occupation": np.array([row[u_occ] for row in ordered_users], dtype=str),
        },
        item_features=item_features,
        item_feature_names=feature_names,
        item_titles=[row[i_title] for row in ordered_items],
    )


def load_movielens_100k(cache_dir: Path | None = None) -> InteractionData:
    """Load MovieLens-100K, fetching it into the cache first if needed.

    Args:
        cache_dir: the data cache; ``None`` means ``$FEDPERS_CACHE`` or
            ``~/.cache/fedpers``.

    Returns:
        943 users, 1,682 items and 100,000 ratings (1-5) with timestamps, user
        attributes and item features; see :func:`parse_movielens_100k`.

    Raises:
        DataError: the data cannot be fetched or parsed.
    """
    directory = fetch_movielens_100k(cache_dir)

    def read(name: str) -> str:
        return (directory / name).read_text(encoding="utf-8")

    return parse_movielens_100k(read("ml-100k.inter"), read("ml-100k.user"), read("ml-100k.item"))
