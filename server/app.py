"""The Flower ServerApp: handshake, rounds, run database, model registry, checkpoints.

:func:`run_federation` is the coordinator's main loop (the ``@app.main()`` of the
ServerApp). It

1. waits for the expected nodes and asks each, with a ``query`` message, which partition
   (node mode: which device) it is, to build the :class:`~fedpers.server.node_layout.NodeLayout`;
2. builds the strategy (:class:`~fedpers.server.strategy.FedPersStrategy`, wrapped in
   :class:`~fedpers.server.dp_wrapper.UserLevelDP` for user-level DP) and, with
   ``resume``, restores model, optimiser, sampler, ledger and clip norm from the last
   checkpoint, forgetting anything the run database holds after it;
3. per round: stops before a round that would exceed the privacy budget; sends, waits at
   most ``round_timeout``, aggregates; evaluates when due; then writes the model file,
   the registry entry, the round (participants, egress catalogue) and the checkpoint;
4. evaluates the final model on the test split and returns a :class:`FederationOutcome`.

The order in step 3 makes resuming after SIGKILL safe: a round is only ever counted by
the ledger in the checkpoint that also holds the model it produced, and rounds the run
database holds beyond the checkpoint are deleted before the run continues.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedpers.client.devices_folder import DevicesFolder
from fedpers.client.global_model import GlobalModel
from fedpers.client.model import ItemSide, ModelConfig, shared_arrays
from fedpers.client.protocol import ReplyMode
from fedpers.client.wire import array_record, arrays_of
from fedpers.privacy.dp.accounting import PrivacyLedger
from fedpers.privacy.errors import ConfigError
from fedpers.server.aggregation import PlaintextAggregator, UpdateAggregator
from fedpers.server.checkpoint import (
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
    sha256_file,
)
from fedpers.server.config import MONITORING_WARNING, FederationConfig
from fedpers.server.dp_wrapper import UserDPConfig, UserLevelDP
from fedpers.server.node_layout import NodeLayout
from fedpers.server.optimizers import create_server_optimizer
from fedpers.server.run_dir import RunDirectory
from fedpers.server.rundb import RoundRecord, RoundReport, RunDB
from fedpers.server.secure_aggregation import CkksAggregator, aggregation_backend
from fedpers.server.strategy import FedPersStrategy
from fedpers.server.tombstone_sampler import ErasureAwareSampler, with_exclusions

__all__ = [
    "SECAGG_SETUP_KEY",
    "FederationOutcome",
    "RoundProgress",
    "app",
    "deployment_config",
    "handshake",
    "initial_arrays",
    "make_server_app",
    "run_federation",
]

logger = logging.getLogger(__name__)

RoundProgress = Callable[[dict[str, Any]], None]
"""Called after every round with its flat summary (the ``metrics.jsonl`` object)."""

AggregatorFactory = Callable[[FederationConfig, list[str], list[tuple[int, ...]]], UpdateAggregator]


@dataclass
class FederationOutcome:
    """What a finished (or stopped) run produced.

    Attributes:
        rounds_completed: rounds whose update was applied.
        last_round: the last round run (completed or skipped).
        stopped_reason: why the run ended before ``rounds`` (``None``: it did not).
        metrics: the final test-split evaluation (the four metric names).
        epsilon: user-level epsilon spent (``None`` when not private).
        delta: its delta (``None`` when not private).
        noise_multiplier: ``sigma`` (``None`` when not private).
        clip_norm: the final clip norm (``None`` when not private).
        arrays: the final global shared parameters.
        history: one summary dict per round.
    """

    rounds_completed: int = 0
    last_round: int = 0
    stopped_reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    epsilon: float | None = None
    delta: float | None = None
    noise_multiplier: float | None = None
    clip_norm: float | None = None
    arrays: list[np.ndarray] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)


def _catalogue(config: FederationConfig) -> tuple[list[str], np.ndarray | None]:
    path = DevicesFolder(Path(config.devices_dir)).catalogue
    if not path.is_file():
        return [str(i) for i in range(config.n_items)], None
    with np.load(path, allow_pickle=False) as data:
        ids = [str(x) for x in data["item_ids"]] if "item_ids" in data else None
        feats = np.asarray(data["item_features"], np.float32) if "item_features" in data else None
    return ids or [str(i) for i in range(config.n_items)], feats


def model_config(config: FederationConfig) -> ModelConfig:
    """The model shape of a run."""
    return ModelConfig(
        n_items=config.n_items,
        dim=config.dim,
        n_item_features=config.n_item_features,
        init_std=config.init_std,
    )


def initial_arrays(config: FederationConfig) -> tuple[list[str], list[np.ndarray]]:
    """The initial global shared parameters (seeded) and their names."""
    _, feats = _catalogue(config)
    mc = model_config(config)
    side = ItemSide(mc, item_features=feats if mc.n_item_features else None, seed=config.seed)
    return list(ItemSide.shared_names(mc)), shared_arrays(side)


def handshake(grid: Grid, config: FederationConfig, timeout: float = 120.0) -> NodeLayout:
    """Wait for the expected nodes and learn which partition (or device) each one is.

    Raises:
        ConfigError: when no node connects within ``timeout`` seconds.
    """
    deadline = time.time() + timeout
    nodes = list(grid.get_node_ids())
    while len(nodes) < config.num_nodes and time.time() < deadline:
        time.sleep(0.05)
        nodes = list(grid.get_node_ids())
    if not nodes:
        raise ConfigError(f"no Flower node connected within {timeout:.0f} s")
    messages = [Message(RecordDict(), dst_node_id=n, message_type="query") for n in nodes]
    replies = grid.send_and_receive(messages, timeout=timeout)
    return NodeLayout.from_hello(config.mode, replies)


def _build(
    config: FederationConfig,
    layout: NodeLayout,
    names: list[str],
    shapes: list[tuple[int, ...]],
    aggregator_factory: AggregatorFactory | None,
) -> tuple[FedPersStrategy, UserLevelDP | None]:
    aggregator = (
        aggregator_factory(config, names, shapes)
        if aggregator_factory is not None
        else PlaintextAggregator(names, shapes)
    )
    if config.secure_agg != "none" and aggregator.scheme == "plaintext":
        raise ConfigError(
            f"--secure-agg {config.secure_agg} needs its aggregation backend; none is installed"
        )
    strategy = FedPersStrategy(
        names=names,
        shapes=shapes,
        sampler=ErasureAwareSampler.for_run(config.sampling, config.seed, Path(config.run_dir)),
        layout=layout,
        aggregator=aggregator,
        optimizer=create_server_optimizer(
            config.server_opt, lr=config.server_lr, **config.optimizer_kwargs
        ),
        seed=config.seed,
        local=config.local_config,
        eval_local=config.eval_local_config,
        reply_mode=ReplyMode(config.reply),
        min_participants=config.min_participants,
        max_update_norm=config.max_update_norm,
        eval_devices=config.evaluated_devices(),
        record_level=config.record_level,
        monitoring=config.monitoring,
    )
    if config.monitoring:
        logger.warning("%s (--monitoring-metrics plaintext)", MONITORING_WARNING)
    if not config.user_level:
        return strategy, None
    dp_config = UserDPConfig.from_run(config)
    ledger = PrivacyLedger(delta=dp_config.delta, accountant=config.accountant)  # type: ignore[arg-type]
    return strategy, UserLevelDP(strategy, dp_config, ledger)


SECAGG_SETUP_KEY = "secure_aggregation_setup"
"""Privacy-table key of the secure-aggregation description (scheme, parameters, custody)."""


def _secagg_setup(config: FederationConfig, aggregator: CkksAggregator) -> dict[str, Any]:
    """The run database's description of the secure-aggregation set-up (never a secret).

    ``public_context_is_private`` is checked on the context this coordinator loaded.
    In cohort mode with sum replies a simulation node encrypts its virtual devices'
    plaintext sum once, which the key-custody table says.
    """
    desc = aggregator.describe()
    custody = dict(desc.get("key_custody") or {})
    if config.mode == "cohort" and config.reply == ReplyMode.SUM.value:
        custody["cohort_nodes"] = (
            "public context (public key only); simulation artefact: a node trains its "
            "virtual devices, so it sees their plaintext updates and encrypts their sum once"
        )
    elif config.mode == "node":
        custody.pop("cohort_nodes", None)
    desc["key_custody"] = custody
    node_sum = config.mode == "cohort" and config.reply == ReplyMode.SUM.value
    desc["devices_encrypt"] = "node_sum_once" if node_sum else "per_device"
    return desc


def _save_model(
    config: FederationConfig, arrays: list[np.ndarray], server_round: int, meta: dict[str, Any]
) -> Path:
    ids, feats = _catalogue(config)
    mc = model_config(config)
    model = GlobalModel.from_arrays(
        mc, arrays, ids, item_features=feats if mc.n_item_features else None, meta=meta
    )
    run = RunDirectory(Path(config.run_dir))
    run.models.mkdir(parents=True, exist_ok=True)
    path: Path = model.save(run.model_file(server_round))
    return path


def _round_record(rep: RoundReport, metrics: dict[str, float], wall: float) -> RoundRecord:
    """The report's summary row with the round's evaluation metrics and wall time."""
    return replace(rep.record, metrics={**rep.record.metrics, **metrics}, wall_seconds=wall)


def _evaluate(
    grid: Grid,
    strategy: FedPersStrategy | UserLevelDP,
    server_round: int,
    arrays: ArrayRecord,
    split: str,
    timeout: float,
) -> dict[str, float]:
    messages = strategy.configure_evaluate(
        server_round, arrays, ConfigRecord({"split": split}), grid
    )
    replies = grid.send_and_receive(messages, timeout=timeout)
    result = strategy.aggregate_evaluate(server_round, replies)
    return {} if result is None else {k: float(v) for k, v in result.items()}  # type: ignore[arg-type]


def run_federation(
    grid: Grid,
    config: FederationConfig,
    *,
    resume: bool = False,
    progress: RoundProgress | None = None,
    aggregator_factory: AggregatorFactory | None = None,
) -> FederationOutcome:
    """Run (or resume) a federation on ``grid`` (see the module docstring).

    Args:
        grid: the Flower grid (simulation or deployment).
        config: the run's configuration, privacy already resolved
            (:meth:`FederationConfig.resolve_privacy`).
        resume: continue from ``run_dir``'s checkpoint instead of starting afresh.
        progress: called after each round with its summary.
        aggregator_factory: the aggregation backend (default: plaintext).

    Returns:
        The :class:`FederationOutcome`.

    Raises:
        ConfigError: on an inconsistent configuration or when no node connects.
        StoreError: when resuming without a checkpoint.
    """
    run_dir = Path(config.run_dir)
    layout = handshake(grid, config)
    names, arrays = initial_arrays(config)
    shapes = [tuple(a.shape) for a in arrays]
    strategy, dp = _build(config, layout, names, shapes, aggregator_factory)
    top: FedPersStrategy | UserLevelDP = dp if dp is not None else strategy
    db = RunDB.open(run_dir)
    start = 0
    try:
        if resume:
            ckpt = load_checkpoint(run_dir)
            arrays, start = ckpt.arrays, ckpt.round
            top.load_state_dict(ckpt.state)
            db.truncate_after(start)
            logger.info("resuming after round %d", start)
        else:
            db.write_config(config.to_dict())
            db.write_privacy(config.privacy_parameters())
            if isinstance(strategy.aggregator, CkksAggregator):
                db.write_privacy({SECAGG_SETUP_KEY: _secagg_setup(config, strategy.aggregator)})
            save_checkpoint(run_dir, Checkpoint(0, arrays, top.state_dict()))
        outcome = _loop(grid, config, strategy, dp, db, names, arrays, start, progress)
    finally:
        db.close()
    return outcome


def _loop(
    grid: Grid,
    config: FederationConfig,
    strategy: FedPersStrategy,
    dp: UserLevelDP | None,
    db: RunDB,
    names: list[str],
    arrays: list[np.ndarray],
    start: int,
    progress: RoundProgress | None,
) -> FederationOutcome:
    run_dir = Path(config.run_dir)
    top: FedPersStrategy | UserLevelDP = dp if dp is not None else strategy
    outcome = FederationOutcome(last_round=start)
    outcome.rounds_completed = sum(1 for r in db.rounds() if r["status"] == "completed")
    current = array_record(names, arrays)
    for server_round in range(start + 1, config.rounds + 1):
        t0 = time.perf_counter()
        if dp is not None and not dp.budget_allows():
            outcome.stopped_reason = (
                f"privacy budget: round {server_round} would exceed epsilon {config.target_epsilon}"
            )
            logger.warning("stopping: %s", outcome.stopped_reason)
            break
        messages = top.configure_train(server_round, current, ConfigRecord(), grid)
        replies = grid.send_and_receive(messages, timeout=config.round_timeout)
        new, _ = top.aggregate_train(server_round, replies)
        rep = strategy.reports.pop(server_round)
        if isinstance(strategy.sampler, ErasureAwareSampler):  # erased users (Art. 17)
            rep = with_exclusions(rep, strategy.sampler.pop_excluded())
        if new is not None:
            current = new
            outcome.rounds_completed += 1
        metrics: dict[str, float] = {}
        due = config.eval_every and server_round % config.eval_every == 0
        if due:
            metrics = _evaluate(
                grid, top, server_round, current, config.eval_split, config.round_timeout
            )
        egress = rep.egress + strategy.pop_eval_egress(server_round)
        wall = time.perf_counter() - t0
        record = _round_record(rep, metrics, wall)
        db.record_round(record, rep.participants, egress)
        current_arrays = arrays_of(current)
        if new is not None:
            meta = {
                "round": server_round,
                "epsilon": record.epsilon,
                "delta": record.delta,
                "run_dir": str(run_dir),
                "session": config.eval_local_config.session.to_meta(),
            }
            path = _save_model(config, current_arrays, server_round, meta)
            db.register_model(server_round, path, sha256_file(path), record.metrics)
        save_checkpoint(run_dir, Checkpoint(server_round, current_arrays, top.state_dict()))
        outcome.last_round = server_round
        summary = record.to_json()
        outcome.history.append(summary)
        if progress is not None:
            progress(summary)
    final_round = outcome.last_round
    outcome.metrics = _evaluate(grid, top, final_round, current, "test", config.round_timeout)
    outcome.arrays = arrays_of(current)
    if dp is not None:
        result = dp.epsilon()
        outcome.epsilon = result.epsilon if result.private else None
        outcome.delta = config.resolved_delta
        outcome.noise_multiplier = config.noise_multiplier
        outcome.clip_norm = dp.clip_norm
        db.write_privacy(
            {
                "epsilon": outcome.epsilon,
                "accountant_method": result.method,
                "rounds_accounted": result.rounds,
                "final_clip_norm": dp.clip_norm,
            }
        )
    else:
        db.write_privacy({"epsilon": None})
    db.write_final(outcome.metrics, outcome.stopped_reason)
    return outcome


def make_server_app(
    config: FederationConfig,
    *,
    resume: bool = False,
    progress: RoundProgress | None = None,
    on_finish: Callable[[FederationOutcome], None] | None = None,
    aggregator_factory: AggregatorFactory | None = None,
) -> ServerApp:
    """A ServerApp running :func:`run_federation` with ``config``.

    Args:
        config: the run's configuration (privacy resolved).
        resume: continue the run in ``config.run_dir``.
        progress: per-round callback.
        on_finish: receives the :class:`FederationOutcome` when the run ends.
        aggregator_factory: the aggregation backend (default: plaintext).
    """
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        import torch

        torch.set_num_threads(1)
        outcome = run_federation(
            grid, config, resume=resume, progress=progress, aggregator_factory=aggregator_factory
        )
        if on_finish is not None:
            on_finish(outcome)

    return server_app


def deployment_config(run_config: dict[str, Any]) -> FederationConfig:
    """The run's configuration from the Deployment Engine's run config (``config = PATH``).

    Raises:
        ConfigError: no ``config`` entry, a file that is missing or not a fedpers config.
    """
    import json

    path = run_config.get("config")
    if not path:
        raise ConfigError(
            "the run config needs config = the path of a fedpers config.json "
            "(flwr run . CONNECTION --run-config \"config='RUN_DIR/config.json'\")"
        )
    file = Path(str(path))
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such config file on the SuperLink's machine") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{file}: not a readable fedpers config.json ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: not a fedpers config.json (a JSON object)")
    return FederationConfig.from_dict(data).resolve_privacy()


def _log_round(summary: dict[str, Any]) -> None:
    """Per-round progress in the ServerApp's log (``flwr log``, ``flwr run --stream``)."""
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.info(
        "fedpers round %s: %s, %s devices%s",
        summary.get("round"),
        summary.get("status"),
        summary.get("participants"),
        "" if summary.get("epsilon") is None else f", epsilon {summary['epsilon']:.4g}",
    )


app = ServerApp()
"""The ServerApp for the Deployment Engine (``flwr run``).

Its run config names the run's configuration file: ``config = "RUN_DIR/config.json"``
(a :class:`~fedpers.server.config.FederationConfig` as JSON, written by ``fedpers deploy
prepare``) and optionally ``resume = true``. With ``secure_agg = "he"`` it starts the key
holder (a spawned process, the only one that loads ``secret.ctx``) for the run and stops
it when the run ends or fails; this process loads only ``public.ctx``.
"""


@app.main()
def _deployment_main(grid: Grid, context: Context) -> None:
    import torch

    torch.set_num_threads(1)
    run_config = dict(context.run_config)
    config = deployment_config(run_config)
    with aggregation_backend(config) as factory:
        outcome = run_federation(
            grid,
            config,
            resume=bool(run_config.get("resume")),
            progress=_log_round,
            aggregator_factory=factory,
        )
    logging.getLogger("flwr").info(
        "fedpers run finished: %d rounds completed, metrics %s%s",
        outcome.rounds_completed,
        outcome.metrics,
        "" if outcome.stopped_reason is None else f", stopped: {outcome.stopped_reason}",
    )
