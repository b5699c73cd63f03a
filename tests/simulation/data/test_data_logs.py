"""Bring-your-own logs: happy paths in every format and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedpers.privacy.errors import DataError
from fedpers.simulation.data import (
    SyntheticConfig,
    generate_synthetic,
    read_interaction_log,
    write_interaction_log,
)
from fedpers.simulation.data.logs import parse_timestamp


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_every_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "events.csv",
        "user,item,rating,timestamp,event_type\n"
        "alice,m1,4,2024-05-01T10:00:00Z,rating\n"
        "bob,m2,1.5,1714557600,click\n"
        'alice,"m,3",2,1714557600.9,view\n',
    )
    data = read_interaction_log(path)
    assert data.name == "events.csv"
    assert (data.n_users, data.n_items, data.n_interactions) == (2, 3, 3)
    assert data.user_ids == ["alice", "bob"] and data.item_ids == ["m,3", "m1", "m2"]
    assert data.users.tolist() == [0, 1, 0] and data.items.tolist() == [1, 2, 0]
    assert data.ratings.tolist() == [4.0, 1.5, 2.0]
    assert data.timestamps.tolist() == [1714557600, 1714557600, 1714557600]
    assert data.event_types is not None and data.event_types.tolist() == ["rating", "click", "view"]


def test_tsv_minimal_defaults_and_numeric_id_order(tmp_path: Path) -> None:
    path = write(tmp_path, "log.tsv", "item\tuser\textra\n10\t2\tx\n9\t10\ty\n\n10\t10\tz\n")
    data = read_interaction_log(path)
    assert data.user_ids == ["2", "10"] and data.item_ids == ["9", "10"]
    assert data.users.tolist() == [0, 1, 1] and data.items.tolist() == [1, 0, 1]
    assert data.ratings.tolist() == [1.0, 1.0, 1.0]
    assert data.timestamps.tolist() == [0, 1, 2]
    assert data.event_types is None


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson"])
def test_jsonl(tmp_path: Path, suffix: str) -> None:
    lines = [
        {"user": 1, "item": "a", "rating": 5, "timestamp": "2024-01-01T00:00:00+01:00"},
        {"user": "2", "item": "b", "rating": "3", "timestamp": 1704063600, "note": "x"},
    ]
    path = write(tmp_path, "e" + suffix, "\n".join(json.dumps(r) for r in lines) + "\n\n")
    data = read_interaction_log(path)
    assert data.user_ids == ["1", "2"] and data.ratings.tolist() == [5.0, 3.0]
    assert data.timestamps.tolist() == [1704063600, 1704063600]


def test_utf8_bom_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffuser,item\nü,é\n".encode())
    data = read_interaction_log(path)
    assert data.user_ids == ["ü"] and data.item_ids == ["é"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1714557600", 1714557600),
        ("1714557600.75", 1714557600),
        ("2024-05-01T10:00:00Z", 1714557600),
        ("2024-05-01T12:00:00+02:00", 1714557600),
        ("2024-05-01 10:00:00", 1714557600),
        ("2024-05-01", 1714521600),
    ],
)
def test_parse_timestamp(text: str, expected: int) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "events.csv",
            "user,item,timestamp\na,b,1\na,c,yesterday\n",
            "events.csv:3: column 'timestamp': cannot parse 'yesterday' as a timestamp",
        ),
        (
            "events.csv",
            "user,rating\na,1\n",
            "events.csv:1: missing required column 'item' (found 'user', 'rating')",
        ),
        ("events.csv", "user,item\na,b\n,c\n", "events.csv:3: column 'user': empty value"),
        (
            "events.csv",
            "user,item,rating\na,b,1\na,b,five\n",
            "events.csv:3: column 'rating': cannot parse 'five' as a number",
        ),
        (
            "events.csv",
            "user,item,rating\na,b,nan\n",
            "events.csv:2: column 'rating': cannot parse 'nan' as a number",
        ),
        ("events.csv", "user,item\na,b\na,b,c\n", "events.csv:3: expected 2 fields, found 3"),
        ("events.csv", "user,item\na,b\nc\n", "events.csv:3: expected 2 fields, found 1"),
        ("events.csv", "user,item,user\na,b,c\n", "events.csv:1: column 'user' appears twice"),
        ("events.csv", 'user,item\na,"b\n', "events.csv:2: unexpected end of data"),
        ("events.csv", "", "events.csv:1: empty file, expected a header with 'user' and 'item'"),
        ("events.csv", "user,item\n", "events.csv: no interactions after the header"),
        ("events.tsv", "user\titem\na\t\n", "events.tsv:2: column 'item': empty value"),
        (
            "events.jsonl",
            '{"user": "a", "item": "b"}\n{"user": "a", "item": \n',
            "events.jsonl:2: invalid JSON: Expecting value at character 23",
        ),
        ("events.jsonl", "[1, 2]\n", "events.jsonl:1: expected a JSON object, found list"),
        (
            "events.jsonl",
            '{"user": "a"}\n',
            "events.jsonl:1: missing required column 'item' (found 'user')",
        ),
        (
            "events.jsonl",
            '{"user": "a", "item": "b", "rating": 1}\n{"user": "a", "item": "c"}\n',
            "events.jsonl:2: column 'rating': missing",
        ),
        (
            "events.jsonl",
            '{"user": "a", "item": "b"}\n{"user": "a", "item": "c", "timestamp": 5}\n',
            "events.jsonl:2: column 'timestamp': not in the first record, so not in the log",
        ),
        (
            "events.jsonl",
            '{"user": "a", "item": null}\n',
            "events.jsonl:1: column 'item': unexpected JSON null",
        ),
        (
            "events.jsonl",
            '{"user": "a", "item": "b", "rating": true}\n',
            "events.jsonl:1: column 'rating': unexpected JSON bool",
        ),
        (
            "events.jsonl",
            '{"user": "a", "item": "b", "timestamp": "soon"}\n',
            "events.jsonl:1: column 'timestamp': cannot parse 'soon' as a timestamp",
        ),
        (
            "events.ndjson",
            "\n\n",
            "events.ndjson:1: empty file, expected JSON objects with 'user' and 'item'",
        ),
    ],
)
def test_malformed_input_names_file_line_and_column(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(DataError) as info:
        read_interaction_log(path)
    text_of_error = str(info.value)
    assert "\n" not in text_of_error
    assert text_of_error.startswith(str(tmp_path / name)), text_of_error
    assert text_of_error.endswith(message.split(name, 1)[1]), text_of_error


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"user,item\na,b\n\xff\xfe,c\n")
    with pytest.raises(DataError, match=r"bad\.csv:\d+: not valid UTF-8"):
        read_interaction_log(path)


def test_unsupported_extension_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unsupported extension '\.parquet'"):
        read_interaction_log(tmp_path / "x.parquet")
    with pytest.raises(DataError, match=r"x\.csv: no such file"):
        read_interaction_log(tmp_path / "x.csv")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    data = generate_synthetic(SyntheticConfig(n_users=40, n_items=30, events_per_user=5, seed=2))
    path = write_interaction_log(data, tmp_path / f"synth{suffix}")
    back = read_interaction_log(path)
    assert back.n_interactions == data.n_interactions
    assert [back.user_ids[u] for u in back.users] == [data.user_ids[u] for u in data.users]
    assert [back.item_ids[i] for i in back.items] == [data.item_ids[i] for i in data.items]
    assert np.array_equal(back.timestamps, data.timestamps)
    assert np.array_equal(back.ratings, data.ratings)
    assert [p.name for p in tmp_path.iterdir()] == [f"synth{suffix}"]


def test_round_trip_keeps_event_types(tmp_path: Path) -> None:
    source = write(tmp_path, "in.csv", "user,item,rating,timestamp,event_type\na,b,2.5,7,click\n")
    data = read_interaction_log(source)
    back = read_interaction_log(write_interaction_log(data, tmp_path / "out.jsonl"))
    assert back.event_types is not None and back.event_types.tolist() == ["click"]
    assert back.ratings.tolist() == [2.5] and back.timestamps.tolist() == [7]


def test_write_refuses_ids_with_delimiters_and_leaves_nothing(tmp_path: Path) -> None:
    data = read_interaction_log(write(tmp_path, "in.jsonl", '{"user": "a\\tb", "item": "c"}\n'))
    with pytest.raises(DataError, match=r"user 'a\\tb' cannot be written as tsv"):
        write_interaction_log(data, tmp_path / "out.tsv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
    assert read_interaction_log(write_interaction_log(data, tmp_path / "o.csv")).user_ids == [
        "a\tb"
    ]


def test_jsonl_round_trip_escapes_any_id(tmp_path: Path) -> None:
    text = json.dumps({"user": 'say "hi"\n', "item": "é,\t", "rating": 0.5, "event_type": "a,b"})
    data = read_interaction_log(write(tmp_path, "in.jsonl", text + "\n"))
    back = read_interaction_log(write_interaction_log(data, tmp_path / "out.ndjson"))
    assert back.user_ids == ['say "hi"'] and back.item_ids == ["é,"]
    assert back.event_types is not None and back.event_types.tolist() == ["a,b"]
    assert back.ratings.tolist() == [0.5]
    with pytest.raises(DataError, match=r"cannot be written as csv"):
        write_interaction_log(data, tmp_path / "out.csv")


def test_write_refuses_non_finite_ratings(tmp_path: Path) -> None:
    data = read_interaction_log(write(tmp_path, "in.csv", "user,item\na,b\n"))
    data.ratings[0] = np.inf
    with pytest.raises(DataError, match=r"ratings must be finite"):
        write_interaction_log(data, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()
