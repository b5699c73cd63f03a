"""``fedpers deploy``: run a federation on Flower's Deployment Engine (real processes).

Register with ``app.add_typer(deploy_app, name="deploy")`` on the root typer app.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from fedpers.simulation.cli.options import FederationOptions, Json, with_federation_options

if TYPE_CHECKING:  # flwr and torch load with the deployment modules: only in the commands
    from fedpers.simulation.deploy.plan import DeploymentCommands, DeploymentPlan

__all__ = ["deploy_app", "local_command", "prepare_command"]

deploy_app = typer.Typer(
    help=(
        "Run a federation on Flower's Deployment Engine: a SuperLink (the coordinator; "
        "the fedpers ServerApp runs under it), SuperNodes (the devices' side) and "
        "`flwr run`, as separate processes talking TLS, with SuperNode authentication.\n\n"
        "`fedpers deploy prepare --out RUN_DIR` writes the run directory (config, device "
        "stores, CKKS keys with --secure-agg he, TLS certificates, node keys) and prints "
        "the commands that start each process; `fedpers deploy local RUN_DIR` runs them "
        "all on 127.0.0.1 and stops them when the run ends. See docs/deployment.md."
    ),
    no_args_is_help=True,
)

_STEPS = (
    ("superlink", "1. SuperLink (coordinator machine; keeps running)"),
    ("register", "2. Register each SuperNode's public key with the SuperLink"),
    ("supernodes", "3. One SuperNode per node (each keeps running)"),
    ("run", "4. Submit the run (returns at once; `flwr ls` shows its status)"),
)


def _print_commands(console: Console, plan: DeploymentPlan, commands: DeploymentCommands) -> None:
    lines = commands.to_dict()
    console.print(f"[bold]Prepared[/bold] {plan.run_dir}: {len(plan.nodes)} SuperNodes, ", end="")
    console.print(
        f"secure aggregation {plan.secure_agg}, TLS {'on' if plan.tls else 'OFF'}, "
        f"SuperNode authentication {'on' if plan.auth else 'OFF'}"
    )
    for key, title in _STEPS:
        entries = lines[key] if isinstance(lines[key], list) else [lines[key]]
        if not entries:
            continue
        console.print(f"\n[bold]{title}[/bold]")
        for entry in entries:
            console.print(entry, soft_wrap=True, highlight=False, markup=False)
    console.print(
        "\nOr run everything on this machine: "
        f"fedpers deploy local {plan.run_dir}  (picks free ports again)",
        highlight=False,
    )


@with_federation_options
def prepare_command(
    *,
    out: Annotated[
        Path, typer.Option("--out", help="Run directory to create (config.json, devices, keys).")
    ],
    federation: FederationOptions,
    host: Annotated[
        str,
        typer.Option(
            "--host", help="Address SuperNodes and the flwr CLI use to reach the SuperLink."
        ),
    ] = "127.0.0.1",
    tls: Annotated[
        bool,
        typer.Option(
            "--tls/--insecure",
            help="TLS with a CA and server certificate written to RUN_DIR/tls; --insecure "
            "runs every connection in plaintext (and needs --no-auth).",
        ),
    ] = True,
    auth: Annotated[
        bool,
        typer.Option(
            "--auth/--no-auth",
            help="SuperNode authentication: one key pair per SuperNode in RUN_DIR/auth, "
            "registered with the SuperLink before the nodes connect.",
        ),
    ] = True,
    as_json: Json = False,
) -> None:
    """Write a run directory for the Deployment Engine and print how to start it.

    Takes the federation options of `fedpers simulate` and writes RUN_DIR/config.json
    (the resolved configuration the ServerApp reads), the device stores in
    RUN_DIR/devices, with --secure-agg he the CKKS key set in RUN_DIR/keys (public.ctx
    for the nodes, secret.ctx for the key holder the ServerApp spawns), TLS material in
    RUN_DIR/tls, SuperNode keys in RUN_DIR/auth (private keys 0600), one FLWR_HOME per
    process in RUN_DIR/flwr and the plan in RUN_DIR/deployment.json. Then it prints the
    flower-superlink, flwr supernode register, flower-supernode and flwr run commands,
    in order (with --json: one object with the files and the commands).

    In cohort mode (default) --nodes SuperNodes host all devices; with --mode node every
    device is its own SuperNode.

    Examples:
      $ fedpers deploy prepare --dataset ml-100k --rounds 10 --out runs/dep
      $ fedpers deploy prepare --dataset synthetic --secure-agg he --reply sum --out runs/he
      $ fedpers deploy prepare --dataset ml-100k --dp user --epsilon 8 --out runs/eps8 --json
    """
    options = federation.simulate_options(out)
    from fedpers.simulation.deploy.plan import deployment_commands, prepare_deployment
    from fedpers.simulation.federation.run import check_options
    from fedpers.simulation.out_dir import output_dir

    check_options(options)
    with output_dir(out):  # a failed prepare leaves no (partial) run directory behind
        plan = prepare_deployment(options, out, host=host, tls=tls, auth=auth)
        commands = deployment_commands(plan)
    if as_json:
        typer.echo(json.dumps(_prepared(plan, commands)))
    else:
        _print_commands(Console(stderr=False), plan, commands)


def _prepared(plan: DeploymentPlan, commands: DeploymentCommands) -> dict[str, Any]:
    files: dict[str, Any] = {
        "config": str(plan.config_path),
        "plan": str(plan.directory.deployment_plan),
        "devices": str(plan.directory.devices.root),
        "flwr_config": str(plan.flwr_home("cli") / "config.toml"),
    }
    if plan.secure_agg == "he":
        files["public_context"] = str(plan.nodes[0]["secagg-context"])
    if plan.tls:
        files["ca_cert"] = str(plan.ca_cert)
        files["server_cert"] = str(plan.server_cert)
        files["server_key"] = str(plan.server_key)
    if plan.auth:
        files["supernode_keys"] = [str(plan.node_key(i)) for i in range(len(plan.nodes))]
    return {
        "run_dir": plan.run_dir,
        "supernodes": len(plan.nodes),
        "secure_agg": plan.secure_agg,
        "tls": plan.tls,
        "supernode_auth": plan.auth,
        "superlink_address": f"{plan.host}:{plan.port}",
        "files": files,
        "commands": commands.to_dict(),
    }


def local_command(
    run_dir: Annotated[
        Path, typer.Argument(help="A run directory written by `fedpers deploy prepare`.")
    ],
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds the whole run may take.")
    ] = 1800.0,
    as_json: Json = False,
) -> None:
    """Start a prepared federation on this machine (127.0.0.1) and wait for it.

    Starts flower-superlink, registers the SuperNodes' keys, starts the SuperNodes and
    submits the app with flwr run, on ports chosen free now; polls `flwr ls` until the
    run finishes; then stops every process it started and every process those started
    (also on an error or Ctrl-C). Logs are in RUN_DIR/logs; the run's results are in
    RUN_DIR (run.db, metrics.jsonl, models, checkpoint), as after `fedpers simulate`.

    Examples:
      $ fedpers deploy prepare --dataset synthetic --rounds 2 --secure-agg he --out runs/he
      $ fedpers deploy local runs/he --json
    """
    from fedpers.simulation.deploy.launcher import run_local

    console = Console(stderr=True)
    try:
        result = run_local(run_dir, timeout=timeout, on_status=console.print)
    except KeyboardInterrupt:
        typer.echo("interrupted: every process of the deployment was stopped", err=True)
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps(result))
        return
    for key in ("hr10_sampled", "ndcg10_sampled", "hr10_full", "ndcg10_full"):
        value = result.get(key)
        console.print(f"{key:16} {'-' if value is None else f'{value:.4f}'}")
    console.print(f"{'epsilon':16} {result['epsilon'] or 'NON-PRIVATE (no user-level noise)'}")
    console.print(f"{'rounds':16} {result['rounds']}")
    console.print(f"{'aggregation':16} {result['scheme']}")
    console.print(f"{'seconds':16} {result['seconds']:.1f}")


deploy_app.command("prepare")(prepare_command)
deploy_app.command("local")(local_command)
