"""The key holder in its own process; the coordinator process never loads a secret key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tenseal as ts

from fedpers.privacy.errors import SecureAggregationError
from fedpers.privacy.secagg import (
    SECRET_CONTEXT_FILE,
    CiphertextAggregator,
    DeviceEncryptor,
    EncryptedUpdate,
    KeyHolderProcess,
    NormCheck,
    load_public_context,
    presum,
)

LENGTH = 9000


def _generate_in_another_process(directory: Path) -> None:
    """Key generation is an operator's command, not something the coordinator does."""
    code = (
        "import sys; from fedpers.privacy.secagg import generate_keys, write_keys; "
        "write_keys(sys.argv[1], generate_keys())"
    )
    subprocess.run([sys.executable, "-c", code, str(directory)], check=True, timeout=120)


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys") / "set"
    _generate_in_another_process(directory)
    return directory


def test_coordinator_process_only_ever_loads_public_contexts(
    keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[Any] = []
    real_from, real_new = ts.context_from, ts.context

    def spy_from(*args: Any, **kwargs: Any) -> Any:
        ctx = real_from(*args, **kwargs)
        loaded.append(ctx)
        return ctx

    def spy_new(*args: Any, **kwargs: Any) -> Any:
        ctx = real_new(*args, **kwargs)
        loaded.append(ctx)
        return ctx

    monkeypatch.setattr(ts, "context_from", spy_from)
    monkeypatch.setattr(ts, "context", spy_new)

    rng = np.random.default_rng(0)
    updates = [rng.standard_normal(LENGTH).astype(np.float32) * 0.01 for _ in range(6)]
    public = load_public_context(keys_dir)  # what the coordinator, nodes and devices hold
    captured: dict[str, bytes] = {}
    with KeyHolderProcess(keys_dir) as holder:
        assert holder.pid is not None and holder.pid != os.getpid()
        encryptor = DeviceEncryptor(public)
        for i, u in enumerate(updates):
            captured[f"d{i}"] = encryptor.encrypt(u).to_bytes()
        node_sum, _ = presum(
            public, {k: captured[k] for k in ("d0", "d1", "d2")}, expected_length=LENGTH
        )
        captured["node-0"] = node_sum.to_bytes()
        agg = CiphertextAggregator(public, expected_length=LENGTH)
        for sender in ("node-0", "d3", "d4", "d5"):
            assert agg.add(sender, captured[sender]).accepted
        aggregate = agg.sum()
        check = NormCheck(clip_norm=5.0, noise_std=1e-3)
        result = holder.decrypt_sum(aggregate, round_id=1, norm_check=check, topup_noise_std=1e-3)
        assert holder.key_id == agg.key_id
        # the key holder refuses a single device's payload and a second decryption
        with pytest.raises(SecureAggregationError, match="decrypts only sums"):
            holder.decrypt_sum(captured["d4"])
        with pytest.raises(SecureAggregationError, match="already decrypted"):
            holder.decrypt_sum(aggregate, round_id=1)
        # it keeps serving after a refusal
        assert holder.decrypt_sum(aggregate, round_id=2).count == 6

    np.testing.assert_allclose(
        result.values, np.sum(np.stack(updates).astype(np.float64), axis=0), atol=1e-2
    )
    assert result.count == 6
    assert result.within_bound is True
    assert result.topup_noise_std == 1e-3
    assert loaded, "the spy saw no context at all"
    assert all(not ctx.is_private() for ctx in loaded)
    # nothing the coordinator received can be decrypted with what it holds
    for payload in [*captured.values(), aggregate.to_bytes()]:
        for chunk in EncryptedUpdate.from_bytes(payload).chunks:
            with pytest.raises(ValueError):
                ts.ckks_vector_from(loaded[0], chunk).decrypt()


def test_key_holder_process_reports_start_up_failures(keys_dir: Path, tmp_path: Path) -> None:
    loose = tmp_path / SECRET_CONTEXT_FILE
    loose.write_bytes((keys_dir / SECRET_CONTEXT_FILE).read_bytes())
    loose.chmod(0o644)
    holder = KeyHolderProcess(loose, timeout_s=60)
    with pytest.raises(SecureAggregationError, match="chmod 600"):
        holder.start()
    assert holder.pid is None
    with pytest.raises(SecureAggregationError, match="not started"):
        holder.decrypt_sum(b"")
