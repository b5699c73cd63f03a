"""Prepare a federation for Flower's Deployment Engine and say how to start it.

:func:`prepare_deployment` turns the options of ``fedpers simulate`` into a run directory
that real processes can run:

* ``config.json``: the resolved :class:`~fedpers.server.config.FederationConfig`, which the
  ServerApp (``fedpers.server.app:app``) reads through its run config ``config``;
* ``devices/``: the device stores, the public catalogue and the held-out items;
* ``keys/`` with ``--secure-agg he``: the CKKS key set (``public.ctx`` for the SuperNodes
  and the coordinator, ``secret.ctx`` for the key holder the ServerApp spawns);
* ``tls/``: a CA and the SuperLink's certificate (:mod:`.deployment_credentials`);
* ``auth/``: one key pair per SuperNode for SuperNode authentication;
* ``flwr/``: one ``FLWR_HOME`` per process (SuperLink, each SuperNode, the ``flwr`` CLI,
  whose ``config.toml`` names the SuperLink connection ``fedpers``);
* ``deployment.json``: this :class:`DeploymentPlan`.

:func:`deployment_commands` gives the exact command lines, which ``fedpers deploy
prepare`` prints and ``fedpers deploy local`` runs.
"""

from __future__ import annotations

import json
import shlex
import socket
import sys
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedpers.privacy.errors import ConfigError, StoreError
from fedpers.privacy.secagg import PUBLIC_CONTEXT_FILE
from fedpers.server.config import FederationConfig
from fedpers.server.run_dir import RunDirectory
from fedpers.simulation.deploy.credentials import (
    CA_CERT,
    SERVER_CERT,
    SERVER_KEY,
    write_node_keys,
    write_tls,
)
from fedpers.simulation.federation.run import SimulateOptions, build_config

__all__ = [
    "CONNECTION",
    "Command",
    "DeploymentCommands",
    "DeploymentPlan",
    "deployment_commands",
    "flower_app_dir",
    "free_port",
    "load_plan",
    "node_config_arg",
    "prepare_deployment",
    "write_flower_config",
]

CONNECTION = "fedpers"
"""Name of the SuperLink connection in the ``flwr`` CLI's ``config.toml``."""
_APP_NAME = "fedpers"


@dataclass(frozen=True)
class DeploymentPlan:
    """Everything the processes of one deployed federation need (``deployment.json``).

    Attributes:
        run_dir: the run directory (absolute).
        app_dir: the Flower app ``flwr run`` bundles (a folder with the
            ``[tool.flwr.app]`` pyproject.toml).
        host: the SuperLink's address as SuperNodes and the CLI reach it.
        port: the SuperLink's port (Fleet, Control and Runtime APIs share it in flwr 1.42).
        node_ports: each SuperNode's local Runtime API port (ClientApp processes).
        tls: whether TLS is on (``tls/`` holds the CA and server certificate).
        auth: whether SuperNode authentication is on (``auth/`` holds the node keys).
        secure_agg: ``none`` or ``he``.
        nodes: each SuperNode's node config (``--node-config``).
    """

    run_dir: str
    app_dir: str
    host: str
    port: int
    node_ports: list[int]
    tls: bool
    auth: bool
    secure_agg: str
    nodes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def root(self) -> Path:
        """The run directory as a path."""
        return Path(self.run_dir)

    @property
    def directory(self) -> RunDirectory:
        """The run directory's files and folders."""
        return RunDirectory(self.root)

    @property
    def config_path(self) -> Path:
        """``RUN_DIR/config.json``."""
        return self.directory.config

    @property
    def ca_cert(self) -> Path:
        """The CA certificate SuperNodes and the CLI verify the SuperLink with."""
        return self.directory.tls / CA_CERT

    @property
    def server_cert(self) -> Path:
        """The SuperLink's certificate (signed by :attr:`ca_cert`)."""
        return self.directory.tls / SERVER_CERT

    @property
    def server_key(self) -> Path:
        """The SuperLink's private key (0600)."""
        return self.directory.tls / SERVER_KEY

    def node_key(self, index: int) -> Path:
        """SuperNode ``index``'s private key (OpenSSH, 0600)."""
        return self.directory.auth / f"supernode-{index}.key"

    def node_public_key(self, index: int) -> Path:
        """SuperNode ``index``'s public key (registered with the SuperLink)."""
        return self.directory.auth / f"supernode-{index}.pub"

    def flwr_home(self, process: str) -> Path:
        """The ``FLWR_HOME`` of ``process`` (``superlink``, ``supernode-<i>``, ``cli``)."""
        return self.directory.flwr / process

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``deployment.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeploymentPlan:
        """Inverse of :meth:`to_dict`.

        Raises:
            StoreError: when ``data`` is not a deployment plan.
        """
        try:
            return cls(**data)
        except TypeError as exc:
            raise StoreError(f"not a fedpers deployment plan: {exc}") from exc


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def flower_app_dir(fallback: Path, *, project_root: Path | None = None) -> Path:
    """The Flower app folder: this project's root, or a minimal app written to ``fallback``.

    A source checkout (editable install) has the ``[tool.flwr.app]`` pyproject.toml next
    to the packages; an installed wheel has not, and gets a pyproject.toml naming the same
    components, whose code the installed package provides on every machine.

    Args:
        fallback: where to write the minimal app when there is no project root.
        project_root: the folder to look in (default: the one above this package).
    """
    root = project_root or Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        data = tomllib.loads(pyproject.read_text())
        if data.get("project", {}).get("name") == _APP_NAME and "flwr" in data.get("tool", {}):
            return root
    from importlib.metadata import version

    fallback.mkdir(parents=True, exist_ok=True)
    (fallback / "pyproject.toml").write_text(
        "[project]\n"
        f'name = "{_APP_NAME}"\n'
        f'version = "{version(_APP_NAME)}"\n'
        'description = "fedpers federation (code from the installed fedpers package)"\n\n'
        '[tool.flwr.app]\npublisher = "fedpers"\n\n'
        "[tool.flwr.app.components]\n"
        'serverapp = "fedpers.server.app:app"\nclientapp = "fedpers.client.app:app"\n\n'
        '[tool.flwr.app.config]\nconfig = ""\nresume = false\n'
    )
    return fallback


def _quoted(value: str, what: str) -> str:
    """``value`` as a TOML string for Flower's ``key="value"`` arguments."""
    if '"' in value or "\\" in value or "'" in value:
        raise ConfigError(
            f"{what} {value!r} contains a quote or backslash, which Flower's config cannot carry"
        )
    return f'"{value}"'


def _node_configs(config: FederationConfig) -> list[dict[str, Any]]:
    """One node config per SuperNode (cohort: ``num_nodes``; node mode: one per device).

    Deployed devices draw their noise shares from their own entropy
    (``noise-entropy = "device"``): the coordinator chooses the run seed, so with seeded
    shares it could recompute them and see the un-noised sum under secure aggregation.
    """
    common: dict[str, Any] = {
        "devices-dir": config.devices_dir,
        "mode": config.mode,
        "noise-entropy": "device",
    }
    if config.secure_agg == "he":
        common["secagg-context"] = str(Path(config.secagg_keys) / PUBLIC_CONTEXT_FILE)
    if config.record_epsilon_budget is not None:
        common["record-epsilon-budget"] = float(config.record_epsilon_budget)
    count = config.num_devices if config.mode == "node" else config.num_nodes
    nodes = []
    for i in range(count):
        node = {**common, "partition-id": i, "num-partitions": count}
        if config.mode == "node":
            node["device-id"] = i
        nodes.append(node)
    return nodes


def node_config_arg(node: dict[str, Any]) -> str:
    """A node config as the ``--node-config`` argument (``key='value' key=1``)."""
    parts = []
    for key, value in node.items():
        text = _quoted(value, key) if isinstance(value, str) else json.dumps(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def prepare_deployment(
    options: SimulateOptions,
    run_dir: Path,
    *,
    host: str = "127.0.0.1",
    tls: bool = True,
    auth: bool = True,
) -> DeploymentPlan:
    """Write a run directory for the Deployment Engine (see the module docstring).

    Args:
        options: the federation's options (those of ``fedpers simulate``).
        run_dir: the run directory to create.
        host: the SuperLink's address as the other processes reach it.
        tls: create TLS material (else every process runs with ``--insecure``).
        auth: SuperNode authentication (needs ``tls``).

    Returns:
        The plan, also written to ``RUN_DIR/deployment.json``.

    Raises:
        ConfigError: on invalid options, authentication without TLS, or a run directory
            that already holds a run.
        DataError: when the dataset cannot be loaded.
    """
    if auth and not tls:
        raise ConfigError("SuperNode authentication needs TLS: drop --no-tls or add --no-auth")
    if options.lazy_devices:
        raise ConfigError("a deployment creates every device store up front (no lazy devices)")
    run_dir = Path(run_dir).resolve()
    run = RunDirectory(run_dir)
    if run.config.exists() or run.run_db.exists():
        raise ConfigError(f"{run_dir} already holds a run; choose another --out")
    _quoted(str(run_dir), "the run directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    config, _ = build_config(options, run_dir)
    nodes = _node_configs(config)
    run.config.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    if tls:
        write_tls(run.tls, host)
    if auth:
        write_node_keys(run.auth, len(nodes))
    plan = DeploymentPlan(
        run_dir=str(run_dir),
        app_dir=str(flower_app_dir(run.flwr / "app")),
        host=host,
        port=free_port(),
        node_ports=[free_port() for _ in nodes],
        tls=tls,
        auth=auth,
        secure_agg=config.secure_agg,
        nodes=nodes,
    )
    run.deployment_plan.write_text(json.dumps(plan.to_dict(), indent=2) + "\n")
    write_flower_config(plan)
    return plan


def load_plan(run_dir: Path | str) -> DeploymentPlan:
    """Read ``RUN_DIR/deployment.json``.

    Raises:
        ConfigError: when the folder was not prepared with ``fedpers deploy prepare``.
    """
    path = RunDirectory(Path(run_dir)).deployment_plan
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no {path.name}; run `fedpers deploy prepare` first")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from exc
    return DeploymentPlan.from_dict(data)


def write_flower_config(plan: DeploymentPlan) -> Path:
    """Write the ``flwr`` CLI's ``config.toml`` with the SuperLink connection ``fedpers``."""
    home = plan.flwr_home("cli")
    home.mkdir(parents=True, exist_ok=True)
    lines = [
        "[superlink]",
        f'default = "{CONNECTION}"',
        "",
        f"[superlink.{CONNECTION}]",
        f'address = "{plan.host}:{plan.port}"',
    ]
    if plan.tls:
        lines.append(f"root-certificates = {_quoted(str(plan.ca_cert), 'the CA path')}")
    else:
        lines.append("insecure = true")
    path = home / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class Command:
    """One process to start: its arguments and the environment it needs.

    Attributes:
        argv: the command line (the executable first).
        env: environment variables to set (``FLWR_HOME``).
    """

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def shell(self) -> str:
        """The command as one shell line (``FLWR_HOME=... flwr ...``)."""
        prefix = [f"{k}={shlex.quote(v)}" for k, v in self.env.items()]
        return " ".join([*prefix, *(shlex.quote(a) for a in self.argv)])


@dataclass(frozen=True)
class DeploymentCommands:
    """The command lines of a deployed federation, in the order to run them.

    Attributes:
        superlink: ``flower-superlink`` (coordinator side: the ServerApp runs under it).
        register: ``flwr supernode register`` per SuperNode (with authentication).
        supernodes: ``flower-supernode`` per node.
        run: ``flwr run`` (submits the app; returns once the run started).
    """

    superlink: Command
    register: list[Command]
    supernodes: list[Command]
    run: Command

    def to_dict(self) -> dict[str, Any]:
        """Shell lines, for printing and ``--json``."""
        return {
            "superlink": self.superlink.shell(),
            "register": [c.shell() for c in self.register],
            "supernodes": [c.shell() for c in self.supernodes],
            "run": self.run.shell(),
        }


def _tool(name: str) -> str:
    """``name`` from this interpreter's bin folder when it is there, else from ``PATH``."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def deployment_commands(plan: DeploymentPlan, *, full_paths: bool = False) -> DeploymentCommands:
    """The exact command lines of ``plan`` (see :class:`DeploymentCommands`).

    Args:
        plan: the prepared deployment.
        full_paths: name the executables by their path in this interpreter's bin folder.
    """
    exe = _tool if full_paths else (lambda name: name)
    server_tls = (
        [
            "--ssl-ca-certfile",
            str(plan.ca_cert),
            "--ssl-certfile",
            str(plan.server_cert),
            "--ssl-keyfile",
            str(plan.server_key),
        ]
        if plan.tls
        else ["--insecure"]
    )
    superlink = Command(
        [
            exe("flower-superlink"),
            *server_tls,
            *(["--enable-supernode-auth"] if plan.auth else []),
            "--disable-runtime-dependency-installation",
            "--host",
            plan.host,
            "--port",
            str(plan.port),
        ],
        {"FLWR_HOME": str(plan.flwr_home("superlink"))},
    )
    cli_env = {"FLWR_HOME": str(plan.flwr_home("cli"))}
    register = [
        Command(
            [exe("flwr"), "supernode", "register", str(plan.node_public_key(i)), CONNECTION],
            cli_env,
        )
        for i in range(len(plan.nodes))
        if plan.auth
    ]
    client_tls = ["--root-certificates", str(plan.ca_cert)] if plan.tls else ["--insecure"]
    supernodes = [
        Command(
            [
                exe("flower-supernode"),
                *client_tls,
                *(["--auth-supernode-private-key", str(plan.node_key(i))] if plan.auth else []),
                "--superlink",
                f"{plan.host}:{plan.port}",
                "--host",
                "127.0.0.1",
                "--port",
                str(plan.node_ports[i]),
                "--node-config",
                node_config_arg(node),
            ],
            {"FLWR_HOME": str(plan.flwr_home(f"supernode-{i}"))},
        )
        for i, node in enumerate(plan.nodes)
    ]
    run = Command(
        [
            exe("flwr"),
            "run",
            plan.app_dir,
            CONNECTION,
            "--run-config",
            f"config={_quoted(str(plan.config_path), 'the config path')}",
            "--format",
            "json",
        ],
        cli_env,
    )
    return DeploymentCommands(superlink, register, supernodes, run)
