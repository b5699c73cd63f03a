"""The typed readers every record decoder shares: exact values or a named DataError."""

from __future__ import annotations

import pytest

from fedpers.client.record_values import (
    UNSET,
    boolean,
    flag,
    integer,
    integers,
    number,
    number_or_unset,
    optional_number,
    text,
    unset_as_negative,
)
from fedpers.privacy.errors import DataError


def test_readers_return_typed_values() -> None:
    values = {"n": 3, "f": 2.0, "x": 0.5, "ids": [1, 2], "b": True, "z": 0, "s": "a"}
    assert integer(values, "n", "r") == 3 and integer(values, "f", "r") == 2
    assert integer({"big": 2**62 + 1}, "big", "r") == 2**62 + 1  # ints stay exact
    assert number(values, "n", "r") == 3.0 and isinstance(number(values, "n", "r"), float)
    assert optional_number(values, "missing", "r") is None
    assert integers(values, "ids", "r") == (1, 2)
    assert flag(values, "z", "r") is False
    assert boolean(values, "b", "r") is True and boolean(values, "z", "r") is False
    assert text(values, "s", "r", "d") == "a" and text(values, "missing", "r", "d") == "d"


def test_unset_round_trips_as_none() -> None:
    assert unset_as_negative(None) == UNSET and unset_as_negative(0.25) == 0.25
    assert number_or_unset({"v": UNSET}, "v", "r") is None
    assert number_or_unset({}, "v", "r") is None
    assert number_or_unset({"v": 0.25}, "v", "r") == 0.25


@pytest.mark.parametrize(
    ("read", "value"),
    [
        (number, "1.0"),
        (number, True),
        (number, None),
        (integer, 1.5),
        (integer, "1"),
        (integers, [1, "2"]),
        (flag, 2),
        (boolean, "false"),
    ],
)
def test_a_malformed_value_is_a_data_error_naming_record_and_entry(read, value) -> None:
    with pytest.raises(DataError, match="record 'r': 'k'"):
        read({"k": value}, "k", "r")


def test_a_missing_value_is_a_data_error() -> None:
    with pytest.raises(DataError, match="record 'r' lacks 'k'"):
        number({}, "k", "r")
