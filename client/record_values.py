"""Reading one typed value out of a decoded record, with the error every decoder raises.

A record is a flat ``str -> number | str | list`` mapping: a Flower record's entries
(:mod:`fedpers.client.protocol`), the round instructions of a ``ConfigRecord``
(:class:`~fedpers.client.device_round.RoundInstructions`) or the ``[local]`` table of a
run config (:class:`~fedpers.client.training.local.LocalTrainConfig`). Each reader takes
the entries, the entry's name and the record's name, and raises
:class:`~fedpers.privacy.errors.DataError` naming both when the entry is missing or not
of its type, never ``KeyError`` or ``TypeError``. This module imports no Flower.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from fedpers.privacy.errors import DataError

__all__ = [
    "UNSET",
    "Values",
    "boolean",
    "flag",
    "integer",
    "integers",
    "number",
    "number_or_unset",
    "optional_number",
    "present",
    "text",
    "unset_as_negative",
]

Values = Mapping[str, object]
"""A decoded record: entry name -> value."""

UNSET: Final = -1.0
"""How a record holds an optional non-negative number that is ``None`` (a record has no
``None``): any negative number reads back as ``None``."""


def present(values: Values, key: str, record: str) -> object:
    """A required entry, whatever its type."""
    if key not in values:
        raise DataError(f"record {record!r} lacks {key!r}")
    return values[key]


def number(values: Values, key: str, record: str) -> float:
    """A required numeric entry (an int or a float, not a bool or a list)."""
    value = present(values, key, record)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError(f"record {record!r}: {key!r} is not a number ({value!r})")
    return float(value)


def optional_number(values: Values, key: str, record: str) -> float | None:
    """A numeric entry that may be left out (``None``)."""
    return number(values, key, record) if key in values else None


def number_or_unset(values: Values, key: str, record: str) -> float | None:
    """An optional non-negative number: ``None`` when left out or negative (:data:`UNSET`)."""
    value = optional_number(values, key, record)
    return None if value is None or value < 0 else value


def unset_as_negative(value: float | None) -> float:
    """The entry :func:`number_or_unset` reads back as ``value`` (``None``: :data:`UNSET`)."""
    return UNSET if value is None else float(value)


def integer(values: Values, key: str, record: str) -> int:
    """A required integral entry (an int, kept exact, or a float holding a whole number)."""
    value = present(values, key, record)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    whole = number(values, key, record)
    if not whole.is_integer():
        raise DataError(f"record {record!r}: {key!r} is not an integer ({whole!r})")
    return int(whole)


def integers(values: Values, key: str, record: str) -> tuple[int, ...]:
    """A required list of ints."""
    value = present(values, key, record)
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise DataError(f"record {record!r}: {key!r} is not a list of integers")
    return tuple(int(v) for v in value)


def flag(values: Values, key: str, record: str) -> bool:
    """A required 0/1 entry (a metric record holds numbers, not bools)."""
    value = integer(values, key, record)
    if value not in (0, 1):
        raise DataError(f"record {record!r}: {key!r} must be 0 or 1, got {value}")
    return bool(value)


def boolean(values: Values, key: str, record: str) -> bool:
    """A required bool entry (a config record or a TOML table), or a 0/1 :func:`flag`."""
    value = present(values, key, record)
    return value if isinstance(value, bool) else flag(values, key, record)


def text(values: Values, key: str, record: str, default: str) -> str:
    """A string entry, ``default`` when left out."""
    value = values.get(key, default)
    if not isinstance(value, str):
        raise DataError(f"record {record!r}: {key!r} is not a string ({value!r})")
    return value
