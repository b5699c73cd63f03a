"""`fedpers deploy prepare` and `fedpers deploy local` argument checks (no process started)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key
from flwr.common.config import parse_config_args
from typer.testing import CliRunner

from fedpers.client.hosted_devices import ClientSettings
from fedpers.privacy.secagg import load_public_context
from fedpers.server.config import FederationConfig
from fedpers.simulation.cli.deploy import deploy_app
from fedpers.simulation.data import SyntheticConfig, generate_synthetic, write_interaction_log

runner = CliRunner()
FEDPERS = str(Path(sys.executable).parent / "fedpers")


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = generate_synthetic(SyntheticConfig(n_users=12, n_items=30, events_per_user=6, seed=4))
    return write_interaction_log(data, tmp_path_factory.mktemp("data") / "tiny.csv")


def _prepare(log: Path, out: Path, *extra: str) -> dict[str, Any]:
    args = ["prepare", "--dataset", str(log), "--rounds", "2", "--recipe", "none"]
    result = runner.invoke(deploy_app, [*args, "--out", str(out), "--json", *extra])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _fedpers(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FEDPERS, *args], capture_output=True, text=True, timeout=120)


def _mode(path: str | Path) -> int:
    return stat.S_IMODE(Path(path).stat().st_mode)


def test_help_teaches() -> None:
    group = runner.invoke(deploy_app, ["--help"])
    assert group.exit_code == 0
    text = " ".join(group.output.split())
    for word in ("SuperLink", "SuperNode", "flwr run", "prepare", "local", "TLS"):
        assert word in text
    prepare = runner.invoke(deploy_app, ["prepare", "--help"])
    for flag in ("--secure-agg", "--dp", "--dataset", "--out", "--insecure", "--no-auth"):
        assert flag in prepare.output


def test_prepare_writes_config_keys_tls_and_node_keys(tiny_log: Path, tmp_path: Path) -> None:
    out = _prepare(tiny_log, tmp_path / "run", "--secure-agg", "he", "--reply", "sum")
    files = out["files"]
    config = FederationConfig.from_dict(json.loads(Path(files["config"]).read_text()))
    assert config.secure_agg == "he" and config.rounds == 2 and config.num_devices == 12
    assert config.run_dir == str((tmp_path / "run").resolve())
    keys = Path(config.secagg_keys)
    assert _mode(keys / "secret.ctx") == 0o600 and _mode(keys) == 0o700
    assert files["public_context"] == str(keys / "public.ctx")
    load_public_context(files["public_context"])  # refuses a context with a secret key
    assert _mode(files["server_key"]) == 0o600
    ca = x509.load_pem_x509_certificate(Path(files["ca_cert"]).read_bytes())
    server = x509.load_pem_x509_certificate(Path(files["server_cert"]).read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    assert len(files["supernode_keys"]) == out["supernodes"] == 2
    for private in files["supernode_keys"]:
        assert _mode(private) == 0o600
        key = load_ssh_private_key(Path(private).read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
        public = load_ssh_public_key(Path(private).with_suffix(".pub").read_bytes())
        assert public.public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    assert len(list(Path(files["devices"]).glob("device-*.db"))) == 12


def test_prepare_prints_the_commands_in_order(tiny_log: Path, tmp_path: Path) -> None:
    out = _prepare(tiny_log, tmp_path / "run", "--secure-agg", "he")
    commands = out["commands"]
    run_dir = out["run_dir"]
    superlink = commands["superlink"]
    for flag in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile", "--enable-supernode-auth"):
        assert flag in superlink
    assert "--insecure" not in superlink and "--host 127.0.0.1" in superlink
    assert f"FLWR_HOME={run_dir}/flwr/superlink flower-superlink" in superlink
    assert [c.split()[-1] for c in commands["register"]] == ["fedpers", "fedpers"]
    assert len(commands["supernodes"]) == 2
    for i, line in enumerate(commands["supernodes"]):
        assert f"--auth-supernode-private-key {run_dir}/auth/supernode-{i}.key" in line
        assert f"--root-certificates {run_dir}/tls/ca.crt" in line
        node_config = line.split("--node-config ", 1)[1].strip("'")
        parsed = parse_config_args([node_config])  # exactly as flower-supernode reads it
        assert parsed["secagg-context"] == f"{run_dir}/keys/public.ctx"
        assert parsed["devices-dir"] == f"{run_dir}/devices"
        assert parsed["partition-id"] == i and parsed["mode"] == "cohort"
        # deployed devices draw their noise shares from their own entropy, not the seed
        assert parsed["noise-entropy"] == "device"
        assert ClientSettings().resolve(parsed).noise_entropy == "device"
    assert f"""--run-config 'config="{run_dir}/config.json"'""" in commands["run"]
    toml = Path(out["files"]["flwr_config"]).read_text()
    assert out["superlink_address"] in toml and f"{run_dir}/tls/ca.crt" in toml
    text = runner.invoke(
        deploy_app,
        ["prepare", "--dataset", str(tiny_log), "--rounds", "1", "--out", str(tmp_path / "t")],
    )
    assert text.exit_code == 0, text.output
    positions = [text.output.index(word) for word in ("flower-superlink", "register", "flwr run")]
    assert positions == sorted(positions)
    assert "fedpers deploy local" in text.output


def test_the_flwr_cli_reads_the_connection(tiny_log: Path, tmp_path: Path) -> None:
    out = _prepare(tiny_log, tmp_path / "run")
    code = (
        "from flwr.cli.flower_config import read_superlink_connection as r; "
        "c = r('fedpers'); print(c.address, c.root_certificates, c.insecure)"
    )
    env = {**os.environ, "FLWR_HOME": str(Path(out["files"]["flwr_config"]).parent)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    address, root, insecure = proc.stdout.split()
    assert address == out["superlink_address"] and root == out["files"]["ca_cert"]
    assert insecure == "False"


def test_node_mode_gets_one_supernode_per_device(tiny_log: Path, tmp_path: Path) -> None:
    out = _prepare(tiny_log, tmp_path / "run", "--mode", "node", "--no-auth")
    assert out["supernodes"] == 12 and out["commands"]["register"] == []
    assert "--enable-supernode-auth" not in out["commands"]["superlink"]
    configs = [
        parse_config_args([line.split("--node-config ", 1)[1].strip("'")])
        for line in out["commands"]["supernodes"]
    ]
    assert [c["device-id"] for c in configs] == list(range(12))
    assert {c["mode"] for c in configs} == {"node"}


def test_insecure_prepare_has_no_tls_material(tiny_log: Path, tmp_path: Path) -> None:
    out = _prepare(tiny_log, tmp_path / "run", "--insecure", "--no-auth")
    assert not out["tls"] and "ca_cert" not in out["files"]
    assert "--insecure" in out["commands"]["superlink"]
    assert all("--insecure" in line for line in out["commands"]["supernodes"])
    assert not (tmp_path / "run" / "tls").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--insecure"], "SuperNode authentication needs TLS"),
        (["--dataset", "no-such-dataset"], "no-such-dataset"),
        (["--secure-agg", "rsa"], "--secure-agg must be none or he"),
        (["--dp", "user"], "user-level DP needs --epsilon or --noise-multiplier"),
    ],
)
def test_bad_options_are_one_line_errors(
    tiny_log: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    base = ["deploy", "prepare", "--dataset", str(tiny_log), "--out", str(tmp_path / "r")]
    proc = _fedpers(*base, *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert proc.stdout == ""


def test_prepare_refuses_a_prepared_run_dir(tiny_log: Path, tmp_path: Path) -> None:
    _prepare(tiny_log, tmp_path / "run")
    proc = _fedpers("deploy", "prepare", "--dataset", str(tiny_log), "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and "already holds a run" in proc.stderr


def test_local_refuses_a_folder_that_was_not_prepared(tmp_path: Path) -> None:
    proc = _fedpers("deploy", "local", str(tmp_path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "fedpers deploy prepare" in lines[0]


def test_local_refuses_a_plan_for_another_host(tiny_log: Path, tmp_path: Path) -> None:
    out = _prepare(tiny_log, tmp_path / "run", "--host", "10.1.2.3")
    assert out["superlink_address"].startswith("10.1.2.3:")
    cert = x509.load_pem_x509_certificate(Path(out["files"]["server_cert"]).read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.1.2.3" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    proc = _fedpers("deploy", "local", out["run_dir"])
    assert proc.returncode == 2 and "127.0.0.1 only" in proc.stderr


def test_an_installed_package_gets_a_minimal_flower_app(tmp_path: Path) -> None:
    import tomllib

    from flwr.common.config import validate_config

    from fedpers.simulation.deploy.plan import flower_app_dir

    root = Path(__file__).resolve().parents[3]
    assert flower_app_dir(tmp_path / "unused", project_root=root) == root
    app = flower_app_dir(tmp_path / "app", project_root=tmp_path / "site-packages")
    assert app == tmp_path / "app"
    for folder in (root, app):
        config = tomllib.loads((folder / "pyproject.toml").read_text())
        valid, errors, _ = validate_config(config, check_module=True, project_dir=folder)
        assert valid, errors
        flwr = config["tool"]["flwr"]["app"]
        assert flwr["components"] == {
            "serverapp": "fedpers.server.app:app",
            "clientapp": "fedpers.client.app:app",
        }
        assert flwr["config"] == {"config": "", "resume": False}
