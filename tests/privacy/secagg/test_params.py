"""CKKS parameter validation and the HE-standard security table."""

from __future__ import annotations

import itertools

import pytest

from fedpers.privacy.errors import ConfigError
from fedpers.privacy.secagg import (
    HE_STANDARD_MAX_COEFF_BITS,
    CkksParameters,
    max_coeff_modulus_bits,
    security_level,
)


def test_defaults_are_128_bit_secure_with_4096_slots() -> None:
    p = CkksParameters()
    assert p.poly_modulus_degree == 8192
    assert p.coeff_mod_bit_sizes == (60, 40, 60)
    assert p.global_scale == 2**40
    assert p.slots == 4096
    assert p.total_coeff_bits == 160
    assert p.data_coeff_bits == 100
    assert p.scale_bits == 40
    assert p.security_bits == 128
    assert p.value_bound == 2.0**58
    assert p.max_ciphertext_bytes == 2 * 8192 * 2 * 8 + 4096


def test_compact_parameters_reach_192_bits() -> None:
    p = CkksParameters(coeff_mod_bit_sizes=(60, 60))
    assert p.security_bits == 192
    assert p.value_bound == 2.0**18


@pytest.mark.parametrize(
    ("n", "total", "expected"),
    [(8192, 218, 128), (8192, 219, 0), (8192, 152, 192), (8192, 118, 256), (4096, 110, 0)],
)
def test_security_level_follows_the_table(n: int, total: int, expected: int) -> None:
    assert security_level(n, total) == expected


def test_table_is_monotone_in_n_and_level() -> None:
    degrees = sorted(HE_STANDARD_MAX_COEFF_BITS)
    for small, large in itertools.pairwise(degrees):
        for level in (128, 192, 256):
            assert max_coeff_modulus_bits(small, level) < max_coeff_modulus_bits(large, level)
    for n in degrees:
        row = [max_coeff_modulus_bits(n, lvl) for lvl in (128, 192, 256)]
        assert row == sorted(row, reverse=True)


def test_insecure_combination_is_rejected_unless_flagged() -> None:
    with pytest.raises(ConfigError, match="128-bit security"):
        CkksParameters(poly_modulus_degree=4096, coeff_mod_bit_sizes=(60, 40, 40, 60))
    p = CkksParameters(
        poly_modulus_degree=4096,
        coeff_mod_bit_sizes=(60, 40, 40, 60),
        allow_insecure_for_tests=True,
    )
    assert p.security_bits == 0
    # the flag is not part of equality (it is not a property of the key set)
    assert p == CkksParameters(
        poly_modulus_degree=4096,
        coeff_mod_bit_sizes=(60, 40, 40, 60),
        allow_insecure_for_tests=True,
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"poly_modulus_degree": 5000},
        {"poly_modulus_degree": True},
        {"coeff_mod_bit_sizes": (60,)},
        {"coeff_mod_bit_sizes": (61, 40, 60)},
        {"coeff_mod_bit_sizes": (60, 10, 60)},
        {"global_scale": 3 * 2**40},
        {"global_scale": 2**10},
        {"global_scale": 2.0**40},
        {"coeff_mod_bit_sizes": (40, 60), "global_scale": 2**35},
    ],
)
def test_invalid_parameters_raise_config_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        CkksParameters(**kwargs)  # type: ignore[arg-type]


def test_dict_round_trip_and_bad_dicts() -> None:
    p = CkksParameters(coeff_mod_bit_sizes=(60, 40, 40, 60), global_scale=2**30)
    assert CkksParameters.from_dict(p.to_dict()) == p
    for bad in (
        None,
        {},
        {"poly_modulus_degree": 8192, "coeff_mod_bit_sizes": "60,40,60", "global_scale_bits": 40},
        {
            "poly_modulus_degree": 8192,
            "coeff_mod_bit_sizes": [60, 40, 60],
            "global_scale_bits": 10**9,
        },
    ):
        with pytest.raises(ConfigError):
            CkksParameters.from_dict(bad)
