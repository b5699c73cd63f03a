"""``fedpers simulate``: a whole federation on Flower's simulation engine (Ray backend).

:func:`simulate` loads the dataset, splits it (leave-one-out), enrols one device per user
(:mod:`fedpers.simulation.federation.population`), resolves the privacy parameters, and runs the
fedpers ServerApp (:mod:`fedpers.server.app`) against the fedpers ClientApp
(:mod:`fedpers.client.app`) with :func:`flwr.simulation.run_simulation`:

* ``mode="cohort"``: a few Flower nodes (one Ray actor per core), each hosting many
  virtual devices, so the per-message framework overhead is paid per node, not per
  device;
* ``mode="node"``: one Flower node per device.

With ``resume`` it continues a run directory from its last checkpoint. The result is the
flat dict ``fedpers simulate --json`` prints.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fedpers.client.app import ClientSettings, make_client_app
from fedpers.privacy.dp.accounting import default_delta, epsilon_for
from fedpers.privacy.errors import ConfigError, StoreError
from fedpers.server.app import FederationOutcome, RoundProgress, make_server_app
from fedpers.server.checkpoint import load_checkpoint
from fedpers.server.config import FederationConfig
from fedpers.server.optimizers import OPTIMIZERS
from fedpers.server.run_dir import RunDirectory
from fedpers.server.rundb import RunDB
from fedpers.server.sampling import SamplingConfig, SamplingMethod
from fedpers.simulation.data import load_dataset
from fedpers.simulation.evaluation.protocol import leave_one_out
from fedpers.simulation.federation.population import (
    population_is_lazy,
    prepare_devices,
    provision_device,
)
from fedpers.simulation.federation.ray_lifecycle import ray_guard
from fedpers.simulation.federation.recipes import FederationRecipe, recommended_config
from fedpers.simulation.out_dir import output_dir

__all__ = ["SimulateOptions", "build_config", "check_options", "run_flower_simulation", "simulate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulateOptions:
    """The options of ``fedpers simulate`` (see ``fedpers simulate --help``).

    ``None`` (and missing ``local`` keys) take the value of the recommended recipe for
    the requested budget (:func:`fedpers.simulation.federation.recipes.recommended_config`) when
    ``recipe == "auto"``, else the plain defaults (10 rounds, ``dim`` 32, FedAvg with
    server lr 1, the default local training).
    """

    dataset: str = "synthetic"
    rounds: int | None = None
    out: str = "runs/simulate"
    dp: str = "none"
    epsilon: float | None = None
    noise_multiplier: float | None = None
    clip: float | None = None
    adaptive_clip: bool = False
    clients_per_round: int | None = None
    sample_rate: float | None = None
    mode: str = "cohort"
    reply: str = "per-device"
    server_opt: str | None = None
    server_lr: float | None = None
    secure_agg: str = "none"
    monitoring_metrics: str = "off"
    keys: str | None = None
    seed: int = 0
    dim: int | None = None
    local: dict[str, Any] = field(default_factory=dict)
    recipe: str = "auto"
    eval_every: int = 0
    eval_devices: int | None = None
    num_nodes: int = 2
    no_p10_fraction: float = 0.0
    gpc_fraction: float = 0.0
    lazy_devices: bool = False
    delta: float | None = None
    item_features: bool = False
    min_participants: int = 1
    round_timeout: float = 600.0
    record_noise_multiplier: float = 1.0
    record_clip: float = 1.0
    record_epsilon_budget: float | None = None
    synthetic_users: int | None = None
    synthetic_items: int | None = None


def build_config(
    options: SimulateOptions, run_dir: Path
) -> tuple[FederationConfig, dict[str, Any]]:
    """Load and split the dataset, enrol the devices, and resolve the run's configuration.

    Returns:
        The resolved :class:`FederationConfig` and facts about the population.

    Raises:
        ConfigError: on inconsistent options.
        DataError: when the dataset cannot be loaded.
    """
    synthetic = None
    if options.dataset == "synthetic" and (options.synthetic_users or options.synthetic_items):
        from fedpers.simulation.data import SyntheticConfig

        synthetic = SyntheticConfig(
            n_users=options.synthetic_users or SyntheticConfig.n_users,
            n_items=options.synthetic_items or SyntheticConfig.n_items,
            seed=options.seed,
        )
    keys_dir = ""
    if options.secure_agg == "he":
        from fedpers.server.secure_aggregation import ensure_keys

        keys_dir = str(ensure_keys(Path(options.keys or RunDirectory(run_dir).keys)).resolve())
    data = load_dataset(options.dataset, seed=options.seed, synthetic=synthetic)
    split = leave_one_out(data, seed=options.seed)
    user_level = options.dp in ("user", "both")
    record = options.dp in ("record", "both")
    recipe = _recipe(options, split.n_users) if options.recipe == "auto" else None
    if options.recipe not in ("auto", "none"):
        raise ConfigError(f"--recipe must be auto or none, got {options.recipe!r}")
    clip = options.clip
    if clip is None:
        clip = (recipe.clip_norm if recipe and recipe.clip_norm > 0 else 1.0) if user_level else 0.0
    local = recipe.local.to_dict() if recipe else {}
    local.update(options.local)
    features = (
        options.item_features or bool(recipe and recipe.use_item_features)
    ) and data.item_features is not None
    num_nodes = split.n_users if options.mode == "node" else max(1, options.num_nodes)
    config = FederationConfig(
        run_dir=str(run_dir),
        devices_dir=str(RunDirectory(run_dir).devices.root),
        rounds=_pick(options.rounds, recipe.rounds if recipe else None, 10),
        num_devices=split.n_users,
        n_items=split.n_items,
        dim=_pick(options.dim, recipe.dim if recipe else None, 32),
        n_item_features=int(data.item_features.shape[1]) if features else 0,  # type: ignore[union-attr]
        init_std=recipe.init_std if recipe else 0.1,
        seed=options.seed,
        sample_rate=options.sample_rate,
        clients_per_round=options.clients_per_round,
        mode=options.mode,
        reply=options.reply,
        num_nodes=num_nodes,
        local=local,
        eval_local=recipe.eval_local.to_dict() if recipe and not options.local else None,
        server_opt=_pick(options.server_opt, recipe.server_optimizer if recipe else None, "fedavg"),
        server_lr=_pick(options.server_lr, recipe.server_lr if recipe else None, 1.0),
        dp=options.dp,
        noise_multiplier=options.noise_multiplier,
        target_epsilon=options.epsilon,
        delta=options.delta,
        clip_norm=clip if user_level else 0.0,
        adaptive_clip=options.adaptive_clip,
        secure_agg=options.secure_agg,
        monitoring_metrics=options.monitoring_metrics,
        secagg_keys=keys_dir,
        min_participants=options.min_participants,
        round_timeout=options.round_timeout,
        eval_every=options.eval_every,
        eval_devices=options.eval_devices,
        record_epsilon_budget=options.record_epsilon_budget if record else None,
        record_level=(
            {
                "noise_multiplier": options.record_noise_multiplier,
                "max_grad_norm": options.record_clip,
            }
            if record
            else None
        ),
    ).resolve_privacy()
    if recipe is not None and config.server_opt == recipe.server_optimizer:
        kwargs = recipe.optimizer_kwargs(
            config.noise_multiplier or 0.0, config.sampling.expected_cohort
        )
        config = replace(config, optimizer_kwargs={**kwargs, **config.optimizer_kwargs})
    population = prepare_devices(
        run_dir,
        data,
        split,
        seed=options.seed,
        no_p10_fraction=options.no_p10_fraction,
        gpc_fraction=options.gpc_fraction,
        lazy=options.lazy_devices,
        target=config.eval_split,  # type: ignore[arg-type]
    )
    facts = {
        "num_devices": population.num_devices,
        "devices_without_p10": len(population.no_p10),
        "devices_with_gpc": len(population.gpc),
        "stores_created": population.created,
        "lazy_devices": options.lazy_devices,
        "recipe": None if recipe is None else recipe.note,
    }
    return config, facts


def _pick(value: Any, recipe: Any, default: Any) -> Any:
    """The user's value, else the recipe's, else the default."""
    if value is not None:
        return value
    return recipe if recipe is not None else default


def _recipe(options: SimulateOptions, num_devices: int) -> FederationRecipe:
    """The recommended recipe for the budget the options ask for.

    ``--epsilon`` picks it directly; ``--noise-multiplier`` alone picks it by the epsilon
    that multiplier spends over the requested rounds (10 when not given); a run without
    user-level DP gets the non-private recipe.
    """
    if options.dp not in ("user", "both"):
        return recommended_config(None)
    if options.epsilon is not None:
        return recommended_config(options.epsilon)
    if options.noise_multiplier is None or options.noise_multiplier <= 0:
        return recommended_config(None)
    sampling = SamplingConfig.from_options(
        num_devices, sample_rate=options.sample_rate, clients_per_round=options.clients_per_round
    )
    delta = options.delta if options.delta is not None else default_delta(num_devices)
    fixed = sampling.method is SamplingMethod.FIXED
    spent = epsilon_for(
        options.noise_multiplier,
        None if fixed else sampling.rate,
        options.rounds or 10,
        delta,
        sampling="fixed" if fixed else "poisson",
        population=num_devices if fixed else None,
        cohort=sampling.cohort_size if fixed else None,
    ).epsilon
    return recommended_config(spent if math.isfinite(spent) else None)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send everything written to file descriptor 1 (Ray, Flower, C libraries) to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def run_flower_simulation(
    config: FederationConfig,
    *,
    resume: bool = False,
    progress: RoundProgress | None = None,
    lazy_devices: bool = False,
    verbose: bool = False,
) -> FederationOutcome:
    """Run ``config`` on Flower's simulation engine and return the coordinator's outcome.

    Raises:
        FedpersError: whatever the coordinator raised.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    provision = functools.partial(provision_device, config.devices_dir) if lazy_devices else None
    client_app = make_client_app(
        ClientSettings(
            devices_dir=config.devices_dir,
            mode=config.mode,
            provision=provision,
            record_epsilon_budget=config.record_epsilon_budget,
            secagg_context=config.secagg_keys if config.secure_agg == "he" else "",
        )
    )
    from fedpers.server.secure_aggregation import aggregation_backend  # loads TenSEAL

    with aggregation_backend(config) as factory:
        box: list[FederationOutcome] = []
        server_app = make_server_app(
            config,
            resume=resume,
            progress=progress,
            on_finish=box.append,
            aggregator_factory=factory,
        )
        _run_engine(server_app, client_app, config, verbose)
    if not box:
        raise StoreError(f"{config.run_dir}: the simulation ended without a result")
    return box[0]


def _run_engine(server_app: Any, client_app: Any, config: FederationConfig, verbose: bool) -> None:
    """Run the ServerApp against the ClientApp on Flower's simulation engine (Ray)."""
    from flwr.simulation import run_simulation

    cpus = max(1, min(2, os.cpu_count() or 1))
    backend_config: dict[str, Any] = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": cpus,
            "num_gpus": 0,
            "log_to_driver": verbose,
            "logging_level": "WARNING" if verbose else "ERROR",
            "include_dashboard": False,
        },
    }
    flwr_logger = logging.getLogger("flwr")
    level, propagate = flwr_logger.level, flwr_logger.propagate
    handler_levels = [(h, h.level) for h in flwr_logger.handlers]
    if not verbose:
        flwr_logger.propagate = False
        for h, _ in handler_levels:
            h.setLevel(logging.ERROR)
    try:
        with ray_guard(Path(config.run_dir)), _stdout_to_stderr():
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=config.num_nodes,
                backend_config=backend_config,  # type: ignore[arg-type]
            )
    finally:
        flwr_logger.setLevel(level)
        flwr_logger.propagate = propagate
        for h, lvl in handler_levels:
            h.setLevel(lvl)


def _result(
    config: FederationConfig, outcome: FederationOutcome, seconds: float, facts: dict[str, Any]
) -> dict[str, Any]:
    sampling = config.sampling
    metrics = {
        k: outcome.metrics.get(k)
        for k in ("hr10_sampled", "ndcg10_sampled", "hr10_full", "ndcg10_full")
    }
    return {
        **metrics,
        "epsilon": outcome.epsilon,
        "delta": outcome.delta,
        "noise_multiplier": outcome.noise_multiplier,
        "clip_norm": outcome.clip_norm,
        "private": outcome.epsilon is not None,
        "sample_rate": sampling.rate,
        "sampling": sampling.method.value,
        "num_devices": config.num_devices,
        "rounds": outcome.rounds_completed,
        "last_round": outcome.last_round,
        "stopped_reason": outcome.stopped_reason,
        "mode": config.mode,
        "server_opt": config.server_opt,
        "secure_agg": config.secure_agg,
        "eval_devices": outcome.metrics.get("eval_devices"),
        "record_level": config.dp in ("record", "both"),
        "record_epsilon_max": max(
            (
                h["record_epsilon_max"]
                for h in outcome.history
                if h.get("record_epsilon_max") is not None
            ),
            default=None,
        ),
        "seconds": seconds,
        "run_dir": config.run_dir,
        **facts,
    }


def simulate(
    options: SimulateOptions,
    *,
    resume_dir: Path | None = None,
    progress: RoundProgress | None = None,
    on_start: Callable[[FederationConfig], None] | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run ``fedpers simulate`` and return its result (the ``--json`` object).

    Args:
        options: the command's options (ignored except ``verbose`` when resuming: a
            resumed run keeps the configuration in its ``config.json``).
        resume_dir: a run directory to continue from its last checkpoint.
        progress: per-round callback.
        on_start: receives the resolved configuration before the federation starts.
        verbose: show Flower and Ray logs.

    Raises:
        ConfigError: on invalid options or an existing run directory without ``resume``.
        StoreError: when the run directory cannot be resumed.
    """
    start = time.perf_counter()
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        _check_resumable(run_dir)  # before anything opens (and so creates) a file in it
        with RunDB.open(run_dir) as db:
            stored = db.read_config()
        if not stored:
            raise StoreError(f"{run_dir}: no run to resume (config missing)")
        config = FederationConfig.from_dict(stored)
        load_checkpoint(run_dir)  # fails early and clearly when the file is damaged
        facts: dict[str, Any] = {"resumed": True}
        lazy = population_is_lazy(config.devices_dir)
        return _run(config, facts, start, lazy, True, progress, on_start, verbose)
    run_dir = Path(options.out)
    if RunDirectory(run_dir).run_db.exists():
        raise ConfigError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
    check_options(options)
    # a failure before the first checkpoint removes what this call created in run_dir
    with output_dir(run_dir, keep_if=lambda d: RunDirectory(d).checkpoint.is_file()):
        config, facts = build_config(options, run_dir.resolve())
        return _run(config, facts, start, options.lazy_devices, False, progress, on_start, verbose)


def check_options(options: SimulateOptions) -> None:
    """Reject options that cannot make a run, before anything is written.

    Raises:
        ConfigError: on a round count, node count or fraction out of range, or an
            unknown server optimizer.
    """
    if options.rounds is not None and options.rounds < 1:
        raise ConfigError(f"--rounds must be at least 1, got {options.rounds}")
    if options.server_opt is not None and options.server_opt.lower() not in OPTIMIZERS:
        raise ConfigError(
            f"unknown server optimizer {options.server_opt!r}; known: {sorted(OPTIMIZERS)}"
        )
    if options.num_nodes < 1:
        raise ConfigError(f"--nodes must be at least 1, got {options.num_nodes}")
    for name, value in (
        ("--no-p10-fraction", options.no_p10_fraction),
        ("--gpc-fraction", options.gpc_fraction),
    ):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], got {value}")


def _check_resumable(run_dir: Path) -> None:
    """Refuse a ``--resume`` directory that holds no run, without writing into it."""
    try:
        run = RunDirectory.open(run_dir)
    except StoreError as exc:
        raise StoreError(f"{exc}; nothing to resume") from exc
    if not run.checkpoint.is_file():
        raise StoreError(f"{run.checkpoint}: no checkpoint to resume from")


def _run(
    config: FederationConfig,
    facts: dict[str, Any],
    start: float,
    lazy: bool,
    resume: bool,
    progress: RoundProgress | None,
    on_start: Callable[[FederationConfig], None] | None,
    verbose: bool,
) -> dict[str, Any]:
    if on_start is not None:
        on_start(config)
    outcome = run_flower_simulation(
        config, resume=resume, progress=progress, lazy_devices=lazy, verbose=verbose
    )
    return _result(config, outcome, time.perf_counter() - start, facts)
