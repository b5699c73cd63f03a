"""Encrypt on devices, sum under the public context, decrypt only the sum."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tenseal as ts

from fedpers.privacy.errors import ConfigError, SecureAggregationError
from fedpers.privacy.secagg import (
    CiphertextAggregator,
    CkksParameters,
    DeviceEncryptor,
    EncryptedUpdate,
    KeyHolder,
    KeyMaterial,
    NormCheck,
    describe,
    generate_keys,
    presum,
    sum_norm_bound,
)

ML100K_SHARED = 1682 * 32 + 1682  # 55,506 values: item embeddings + item bias
SMALL = 9000  # three chunks: keeps the robustness tests fast


@pytest.fixture(scope="module")
def keys() -> KeyMaterial:
    return generate_keys()


@pytest.fixture(scope="module")
def other_keys() -> KeyMaterial:
    return generate_keys()


@pytest.fixture(scope="module")
def encryptor(keys: KeyMaterial) -> DeviceEncryptor:
    return DeviceEncryptor(keys.public_context)


def _updates(n: int, length: int, seed: int, clip: float = 1.0) -> list[np.ndarray]:
    """Clipped float32 updates (norm exactly ``clip``), like devices would send."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        u = rng.standard_normal(length)
        out.append((u * clip / np.linalg.norm(u)).astype(np.float32))
    return out


def _exact_sum(updates: list[np.ndarray]) -> np.ndarray:
    return np.sum(np.stack([u.astype(np.float64) for u in updates]), axis=0)


def test_decrypted_sum_matches_plaintext_sum(keys: KeyMaterial, encryptor: DeviceEncryptor) -> None:
    updates = _updates(20, ML100K_SHARED, seed=1, clip=5.0)
    agg = CiphertextAggregator(keys.public_context, expected_length=ML100K_SHARED)
    for i, u in enumerate(updates):
        payload = encryptor.encrypt(u)
        assert len(payload.chunks) == 14
        assert agg.add(f"dev-{i}", payload.to_bytes()).accepted
    aggregate = agg.sum()
    assert aggregate.count == 20
    assert aggregate.contributors == tuple(f"dev-{i}" for i in range(20))
    result = KeyHolder(keys.secret_context).decrypt_sum(aggregate)
    expected = _exact_sum(updates)
    assert result.values.shape == (ML100K_SHARED,)
    assert result.values.dtype == np.float64
    rel = np.linalg.norm(result.values - expected) / np.linalg.norm(expected)
    assert rel <= 1e-4
    assert np.max(np.abs(result.values - expected)) <= 1e-4 * np.max(np.abs(expected))
    assert result.count == 20
    assert result.key_id == keys.key_id


def test_coordinator_refuses_a_secret_context(keys: KeyMaterial) -> None:
    with pytest.raises(SecureAggregationError, match="secret key"):
        CiphertextAggregator(keys.secret_context, expected_length=SMALL)
    agg = CiphertextAggregator(keys.public_context, expected_length=SMALL)
    assert agg._ctx.is_private() is False


def test_nothing_the_coordinator_holds_decrypts_a_payload(
    keys: KeyMaterial, encryptor: DeviceEncryptor
) -> None:
    updates = _updates(3, SMALL, seed=2)
    payloads = [encryptor.encrypt(u) for u in updates]
    agg = CiphertextAggregator(keys.public_context, expected_length=SMALL)
    for i, p in enumerate(payloads):
        agg.add(f"d{i}", p)
    public = ts.context_from(keys.public_context)
    assert not public.is_private()
    for payload in [*payloads, agg.sum()]:
        for chunk in payload.chunks:
            vec = ts.ckks_vector_from(public, chunk)
            with pytest.raises(ValueError, match="secret"):
                vec.decrypt()
    # the encryptor itself (what devices hold) cannot decrypt either
    assert not encryptor.holds_secret_key


def _forged_slots(encryptor: DeviceEncryptor, length: int) -> EncryptedUpdate:
    """Same number of chunks, but the last one holds a different number of slots."""
    other_length = length - 1  # 9000 -> 8999: still three chunks
    payload = encryptor.encrypt(np.zeros(other_length, dtype=np.float32))
    return dataclasses.replace(payload, length=length)


def _flip_in_chunk(data: bytes, payload: EncryptedUpdate) -> bytes:
    """Flip one byte inside the first ciphertext chunk of the wire form."""
    pos = len(data) - payload.nbytes + 100
    damaged = bytearray(data)
    damaged[pos] ^= 0xFF
    return bytes(damaged)


def test_bad_payloads_are_rejected_with_reasons_and_the_rest_summed(
    keys: KeyMaterial, other_keys: KeyMaterial, encryptor: DeviceEncryptor
) -> None:
    good = _updates(4, SMALL, seed=3)
    good_payloads = [encryptor.encrypt(u) for u in good]
    foreign = DeviceEncryptor(other_keys.public_context).encrypt(good[0])
    undecodable = dataclasses.replace(
        good_payloads[0], chunks=(good_payloads[0].chunks[0][:5000], *good_payloads[0].chunks[1:])
    )
    other_params = dataclasses.replace(
        good_payloads[0], params=CkksParameters(coeff_mod_bit_sizes=(60, 60))
    )
    too_long = encryptor.encrypt(np.zeros(SMALL + 4096, dtype=np.float32))
    wire = good_payloads[1].to_bytes()
    agg = CiphertextAggregator(keys.public_context, expected_length=SMALL)
    results = [
        agg.add("good-0", good_payloads[0]),
        agg.add("foreign", foreign),
        agg.add("corrupted", _flip_in_chunk(wire, good_payloads[1])),
        agg.add("garbage", b"\x00" * 64),
        agg.add("undecodable", undecodable),
        agg.add("slots", _forged_slots(encryptor, SMALL)),
        agg.add("params", other_params),
        agg.add("length", too_long),
        agg.add("good-1", wire),
        agg.add("good-2", good_payloads[2]),
        agg.add("good-2", good_payloads[3]),  # duplicate sender
        agg.add("good-3", good_payloads[3].to_bytes()),
        agg.add("", good_payloads[3]),
        agg.add(
            "oversized",
            dataclasses.replace(
                good_payloads[2],
                chunks=(good_payloads[2].chunks[0] * 3, *good_payloads[2].chunks[1:]),
            ),
        ),
    ]
    codes = {r.device_id: r.code for r in results if not r.accepted}
    assert codes == {
        "foreign": "wrong_key",
        "corrupted": "corrupted",
        "garbage": "malformed",
        "undecodable": "invalid_ciphertext",
        "slots": "wrong_slots",
        "params": "wrong_parameters",
        "length": "wrong_length",
        "good-2": "duplicate",
        "": "malformed",
        "oversized": "invalid_ciphertext",
    }
    assert all(r.reason for r in results if not r.accepted)
    report = agg.report
    assert report.accepted == ("good-0", "good-1", "good-2", "good-3")
    assert report.count == 4
    assert len(report.rejected) == 10
    assert report.to_dict()["rejected"][0]["code"] == "wrong_key"
    assert report.bytes_received == sum(p.nbytes for p in good_payloads)
    result = KeyHolder(keys.secret_context).decrypt_sum(agg.sum())
    np.testing.assert_allclose(result.values, _exact_sum(good), atol=1e-6)


def test_empty_round_cannot_be_summed(keys: KeyMaterial) -> None:
    agg = CiphertextAggregator(keys.public_context, expected_length=SMALL)
    agg.add("x", b"nonsense")
    with pytest.raises(SecureAggregationError, match="no payload accepted"):
        agg.sum()


def test_presummed_cohort_payloads_give_the_same_sum(
    keys: KeyMaterial, encryptor: DeviceEncryptor
) -> None:
    updates = _updates(10, SMALL, seed=4)
    payloads = {f"dev-{i}": encryptor.encrypt(u) for i, u in enumerate(updates)}
    flat = CiphertextAggregator(keys.public_context, expected_length=SMALL)
    for device_id, p in payloads.items():
        flat.add(device_id, p)
    nodes = [
        dict(list(payloads.items())[:4]),
        dict(list(payloads.items())[4:7]),
        dict(list(payloads.items())[7:]),
    ]
    top = CiphertextAggregator(keys.public_context, expected_length=SMALL)
    for n, members in enumerate(nodes):
        node_sum, node_report = presum(keys.public_context, members, expected_length=SMALL)
        assert node_sum.count == len(members)
        assert node_report.accepted == tuple(members)
        assert top.add(f"node-{n}", node_sum.to_bytes()).count == len(members)
    assert top.count == flat.count == 10
    holder = KeyHolder(keys.secret_context)
    hierarchical = holder.decrypt_sum(top.sum())
    direct = holder.decrypt_sum(flat.sum())
    # ciphertext addition is exact modular arithmetic: grouping changes nothing
    np.testing.assert_array_equal(hierarchical.values, direct.values)
    np.testing.assert_allclose(direct.values, _exact_sum(updates), atol=1e-6)
    # a device counted inside a node's pre-sum cannot also be counted directly
    result = top.add("dev-0", payloads["dev-0"])
    assert not result.accepted
    assert result.code == "duplicate"


def test_anonymous_presum_is_accepted_by_count(
    keys: KeyMaterial, encryptor: DeviceEncryptor
) -> None:
    updates = _updates(3, SMALL, seed=5)
    node_sum, _ = presum(
        keys.public_context,
        {f"d{i}": encryptor.encrypt(u) for i, u in enumerate(updates)},
        expected_length=SMALL,
    )
    anonymous = dataclasses.replace(node_sum, contributors=())
    agg = CiphertextAggregator(keys.public_context, expected_length=SMALL)
    assert agg.add("node", anonymous).count == 3
    assert agg.sum().contributors == ()


def test_a_node_may_encrypt_its_plaintext_cohort_sum_once(
    keys: KeyMaterial, encryptor: DeviceEncryptor
) -> None:
    updates = _updates(5, SMALL, seed=6)
    payload = encryptor.encrypt(_exact_sum(updates).astype(np.float32), count=5)
    agg = CiphertextAggregator(keys.public_context, expected_length=SMALL)
    assert agg.add("node", payload).count == 5
    result = KeyHolder(keys.secret_context).decrypt_sum(agg.sum())
    np.testing.assert_allclose(result.values, _exact_sum(updates), atol=1e-5)


def test_key_holder_decrypts_only_sums(keys: KeyMaterial, encryptor: DeviceEncryptor) -> None:
    holder = KeyHolder(keys.secret_context)
    single = encryptor.encrypt(_updates(1, SMALL, seed=7)[0])
    with pytest.raises(SecureAggregationError, match="decrypts only sums"):
        holder.decrypt_sum(single)
    with pytest.raises(SecureAggregationError, match="decrypts only sums"):
        holder.decrypt_sum(single.to_bytes())
    # a coordinator summing one device still yields count 1: refused
    agg = CiphertextAggregator(keys.public_context, expected_length=SMALL)
    agg.add("only", single)
    with pytest.raises(SecureAggregationError, match="1 contribution"):
        holder.decrypt_sum(agg.sum())
    strict = KeyHolder(keys.secret_context, min_contributions=5)
    agg.add("second", encryptor.encrypt(_updates(1, SMALL, seed=8)[0]))
    with pytest.raises(SecureAggregationError, match="minimum 5"):
        strict.decrypt_sum(agg.sum())
    with pytest.raises(ConfigError):
        KeyHolder(keys.secret_context, min_contributions=1)
    with pytest.raises(SecureAggregationError, match="no secret key"):
        KeyHolder(keys.public_context)


def test_key_holder_decrypts_a_round_once(keys: KeyMaterial, encryptor: DeviceEncryptor) -> None:
    updates = _updates(3, SMALL, seed=9)
    agg = CiphertextAggregator(keys.public_context, expected_length=SMALL)
    for i, u in enumerate(updates):
        agg.add(f"d{i}", encryptor.encrypt(u))
    holder = KeyHolder(keys.secret_context)
    first = holder.decrypt_sum(agg.sum(), round_id=7)
    assert first.round_id == "7"
    with pytest.raises(SecureAggregationError, match="already decrypted"):
        holder.decrypt_sum(agg.sum(), round_id="7")
    assert holder.decrypt_sum(agg.sum(), round_id=8).round_id == "8"


def test_key_holder_rejects_foreign_and_damaged_aggregates(
    keys: KeyMaterial, other_keys: KeyMaterial
) -> None:
    foreign_enc = DeviceEncryptor(other_keys.public_context)
    agg = CiphertextAggregator(other_keys.public_context, expected_length=SMALL)
    for i, u in enumerate(_updates(2, SMALL, seed=10)):
        agg.add(f"d{i}", foreign_enc.encrypt(u))
    holder = KeyHolder(keys.secret_context)
    with pytest.raises(SecureAggregationError, match="key id"):
        holder.decrypt_sum(agg.sum())
    forged = dataclasses.replace(agg.sum(), key_id=keys.key_id)
    damaged = _flip_in_chunk(forged.to_bytes(), forged)
    with pytest.raises(SecureAggregationError, match="CRC-32"):
        holder.decrypt_sum(damaged)


def test_norm_check_flags_a_device_that_skipped_clipping(
    keys: KeyMaterial, other_keys: KeyMaterial, encryptor: DeviceEncryptor
) -> None:
    clip, noise_std, n = 1.0, 0.5, 8
    rng = np.random.default_rng(11)
    honest = [
        u + rng.normal(0.0, noise_std / np.sqrt(n), SMALL).astype(np.float32)
        for u in _updates(n, SMALL, seed=12, clip=clip)
    ]
    check = NormCheck(clip_norm=clip, noise_std=noise_std)
    holder = KeyHolder(keys.secret_context)

    def round_norm(updates: list[np.ndarray], extra: EncryptedUpdate | None = None) -> bool | None:
        agg = CiphertextAggregator(keys.public_context, expected_length=SMALL)
        for i, u in enumerate(updates):
            agg.add(f"d{i}", encryptor.encrypt(u))
        if extra is not None:
            agg.add("sneaky", extra)
        result = holder.decrypt_sum(agg.sum(), norm_check=check)
        assert result.norm_bound == pytest.approx(sum_norm_bound(agg.count, SMALL, check))
        return result.within_bound

    assert round_norm(honest) is True
    unclipped = [*honest[:-1], _updates(1, SMALL, seed=13, clip=200.0)[0]]
    assert round_norm(unclipped) is False
    # a payload encrypted under another key but labelled with this key id passes the
    # coordinator's checks (single-key CKKS cannot tell) and decrypts to garbage
    forged = dataclasses.replace(
        DeviceEncryptor(other_keys.public_context).encrypt(honest[0]), key_id=keys.key_id
    )
    assert round_norm(honest[:-1], extra=forged) is False


def test_norm_bound_formula_and_validation() -> None:
    check = NormCheck(clip_norm=2.0, noise_std=0.0, slack=0.0)
    assert sum_norm_bound(10, 100, check) == pytest.approx(20.0)
    noisy = NormCheck(clip_norm=2.0, noise_std=1.0, slack=0.0, tail_probability=1e-6)
    assert sum_norm_bound(10, 100, noisy) == pytest.approx(20.0 + 10.0 + np.sqrt(2 * np.log(1e6)))
    for bad in (
        {"clip_norm": 0.0},
        {"clip_norm": 1.0, "noise_std": -1.0},
        {"clip_norm": 1.0, "tail_probability": 1.0},
        {"clip_norm": float("nan")},
    ):
        with pytest.raises(ConfigError):
            NormCheck(**bad)  # type: ignore[arg-type]


def test_device_encryptor_validates_updates(keys: KeyMaterial) -> None:
    compact = generate_keys(CkksParameters(coeff_mod_bit_sizes=(60, 60)))
    enc = DeviceEncryptor(compact.public_context)
    with pytest.raises(SecureAggregationError, match="value bound"):
        enc.encrypt(np.full(10, 2.0**19, dtype=np.float32))
    with pytest.raises(SecureAggregationError, match="NaN"):
        enc.encrypt(np.array([1.0, np.nan], dtype=np.float32))
    with pytest.raises(SecureAggregationError):
        DeviceEncryptor(b"not a context")
    assert DeviceEncryptor(keys.secret_context).holds_secret_key


def test_describe_reports_costs_and_custody(keys: KeyMaterial) -> None:
    info = describe(keys.public_context, update_length=ML100K_SHARED, min_contributions=2)
    assert info["scheme"] == "ckks"
    assert info["security_bits"] == 128
    assert info["slots"] == 4096
    assert info["chunks_per_update"] == 14
    assert info["public_context_is_private"] is False
    assert info["galois_keys"] is False and info["relin_keys"] is False
    assert 200_000 < info["bytes_per_ciphertext"] <= info["bytes_per_ciphertext_uncompressed"]
    assert info["expansion_vs_float32"] <= 15.0
    assert set(info["key_custody"]) == {"devices", "cohort_nodes", "coordinator", "key_holder"}
    assert info["key_id"] == keys.key_id
    assert "secret" not in str(info["params"])


def test_key_holder_adds_top_up_noise_before_release(
    keys: KeyMaterial, encryptor: DeviceEncryptor
) -> None:
    updates = _updates(3, SMALL, seed=14)
    agg = CiphertextAggregator(keys.public_context, expected_length=SMALL)
    for i, u in enumerate(updates):
        agg.add(f"d{i}", encryptor.encrypt(u))
    holder = KeyHolder(keys.secret_context)
    plain = holder.decrypt_sum(agg.sum())
    noisy = holder.decrypt_sum(agg.sum(), topup_noise_std=0.25, noise_seed=5)
    diff = noisy.values - plain.values
    assert noisy.topup_noise_std == 0.25
    assert abs(float(np.std(diff)) - 0.25) < 0.01
    again = holder.decrypt_sum(agg.sum(), topup_noise_std=0.25, noise_seed=5)
    np.testing.assert_allclose(again.values, noisy.values, atol=1e-6)
    fresh = [holder.decrypt_sum(agg.sum(), topup_noise_std=0.25).values for _ in range(2)]
    assert not np.allclose(fresh[0], fresh[1])
    with pytest.raises(ConfigError):
        holder.decrypt_sum(agg.sum(), topup_noise_std=-1.0)
