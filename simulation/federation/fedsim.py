"""An in-process driver of federated rounds: the reference mathematics of a fedpers run.

One round, exactly as the Flower ServerApp runs it (and built from the same functions)::

    cohort   = DeviceSampler(sampling, seed).sample()            # fedpers.server.sampling
    contribs = run_device_rounds(global, cohort, instr)           # train, clip, noise share
    total    = sum of the contributions' arrays                    # pipeline step 6
    noise    = round_noise(sigma, C, m, distributed=..., contributions=len(contribs))
    mean     = finalize_aggregate(total, central_noise_std=noise.sum_std, denominator=m, ...)
    global   = server_optimizer.step(global, mean)

and, every ``eval_every`` rounds and at the end, the shared evaluation protocol
(:func:`fedpers.simulation.evaluation.protocol.evaluate`) with a scorer that fine-tunes the global
model on each device (:func:`fedpers.client.training.local.score_devices`).

Noise: without secure aggregation (``distributed_noise=False``) the coordinator adds
``N(0, (sigma C)^2)`` to the sum; with it, each device adds its share
``sigma C / sqrt(m)`` and the coordinator tops up the variance of the shares missing from
the sum. Both are decided by :func:`fedpers.privacy.dp.pipeline.round_noise`, the same
function the Flower DP wrapper calls, from the number of contributions actually summed.
The noise multiplier is an input; calibrate it for a target epsilon with the project's
accountant.

This module is small on purpose: it is used for hyperparameter tuning, as the reference
the Flower runs are tested against, and by the benchmarks. The product path is the Flower
ServerApp.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedpers.client.device_round import (
    RoundInstructions,
    evaluation_seed,
    initial_user_vectors,
    run_device_rounds,
)
from fedpers.client.model import ItemSide, ModelConfig, shared_arrays
from fedpers.client.training.cohort import Cohort
from fedpers.client.training.global_parameters import GlobalParameters
from fedpers.client.training.local import LocalTrainConfig, score_devices
from fedpers.privacy.dp.noise import server_rng
from fedpers.privacy.dp.pipeline import finalize_aggregate, round_noise
from fedpers.privacy.errors import ConfigError
from fedpers.server.optimizers import create_server_optimizer
from fedpers.server.sampling import DeviceSampler, SamplingConfig
from fedpers.simulation.evaluation.protocol import (
    LeaveOneOutSplit,
    RankingMetrics,
    Target,
    evaluate,
)
from fedpers.simulation.federation.recipes import FederationRecipe
from fedpers.simulation.federation.round_observers import notify

__all__ = [
    "FedSimConfig",
    "FedSimResult",
    "device_histories",
    "federation",
    "fine_tuned_scorer",
    "run_fedsim",
]


@dataclass(frozen=True)
class FedSimConfig:
    """One simulated federation.

    Attributes:
        rounds: number of rounds.
        dim: embedding dimension.
        local: local training hyperparameters of a round.
        eval_local: fine-tuning hyperparameters at evaluation (``None``: ``local``).
        server_optimizer: ``fedavg``, ``fedavgm`` or ``fedadam``.
        server_lr: the server learning rate.
        optimizer_kwargs: further optimiser hyperparameters (``beta``, ``tau``, ...).
        clip_norm: ``C``; ``0`` disables clipping (non-private).
        noise_multiplier: ``sigma``; ``0`` adds no noise.
        sample_rate: Poisson rate ``q`` (``1.0``: every device every round).
        clients_per_round: fixed cohort size instead of Poisson sampling.
        distributed_noise: devices add noise shares (secure aggregation) instead of the
            coordinator adding central noise.
        use_item_features: train the attribute tower over the data's item features.
        seed: the run seed (model init, sampling, every device's streams, noise).
        eval_every: evaluate every this many rounds (``0``: only after the last).
        eval_target: ``"test"`` or ``"valid"`` (tune on ``valid``).
        chunk_size: devices per :func:`run_device_rounds` call (bounds memory).
        init_std: standard deviation of the item embedding initialisation.
        denoise: shrink the noisy mean update per item before the server step
            (:func:`fedpers.server.optimizers.shrink_rows` with the noise's known std
            ``sigma C / m``; post-processing, no privacy cost).
        absent: devices that are sampled but never report (no P10 consent, erased): they
            train nothing and send no update or noise share, as a refusing Flower device.
    """

    rounds: int = 10
    dim: int = 32
    local: LocalTrainConfig = field(default_factory=LocalTrainConfig)
    eval_local: LocalTrainConfig | None = None
    server_optimizer: str = "fedavg"
    server_lr: float = 1.0
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    clip_norm: float = 0.0
    noise_multiplier: float = 0.0
    sample_rate: float | None = None
    clients_per_round: int | None = None
    distributed_noise: bool = False
    use_item_features: bool = False
    seed: int = 0
    eval_every: int = 0
    eval_target: Target = "test"
    chunk_size: int = 256
    init_std: float = 0.1
    denoise: bool = False
    absent: frozenset[int] = frozenset()

    @classmethod
    def from_recipe(
        cls,
        recipe: FederationRecipe,
        noise_multiplier: float,
        num_devices: int,
        **overrides: Any,
    ) -> FedSimConfig:
        """The federation a tuned recipe describes, every device in every round.

        Args:
            recipe: the recipe (:func:`fedpers.simulation.federation.recipes.recommended_config`).
            noise_multiplier: ``sigma`` calibrated for the recipe's rounds (``0``: none).
            num_devices: the number of devices, the denominator of the mean.
            **overrides: further fields (``seed``, ``eval_target``, ...).
        """
        return cls(
            rounds=recipe.rounds,
            dim=recipe.dim,
            init_std=recipe.init_std,
            use_item_features=recipe.use_item_features,
            local=recipe.local,
            eval_local=recipe.eval_local,
            server_optimizer=recipe.server_optimizer,
            server_lr=recipe.server_lr,
            optimizer_kwargs=recipe.optimizer_kwargs(noise_multiplier, float(num_devices)),
            clip_norm=recipe.clip_norm,
            noise_multiplier=noise_multiplier,
            **overrides,
        )

    def __post_init__(self) -> None:
        if self.rounds < 0 or self.dim <= 0 or self.chunk_size <= 0 or self.eval_every < 0:
            raise ConfigError("rounds, eval_every >= 0; dim, chunk_size > 0")
        if self.noise_multiplier < 0 or self.clip_norm < 0:
            raise ConfigError("noise_multiplier and clip_norm must be >= 0")
        if self.noise_multiplier > 0 and self.clip_norm == 0:
            raise ConfigError("noise needs a clip norm (clip_norm > 0)")


@dataclass(frozen=True, eq=False)
class FedSimResult:
    """The outcome of :func:`run_fedsim`.

    Attributes:
        config: the configuration.
        global_arrays: the final global shared parameters (wire order).
        user_vectors: ``[n_users, dim]`` the devices' private vectors at the end.
        metrics: the final evaluation.
        history: one dict per round (``round``, ``participants`` (devices that
            reported), ``loss``,
            ``clipped_fraction``, ``norm_median``, ``local_seconds``, ``round_seconds``
            and, on evaluated rounds, the four metrics).
        seconds: wall time of the whole run.
    """

    config: FedSimConfig
    global_arrays: list[np.ndarray]
    user_vectors: np.ndarray
    metrics: RankingMetrics
    history: list[dict[str, Any]]
    seconds: float


def device_histories(split: LeaveOneOutSplit, target: Target = "test") -> list[np.ndarray]:
    """Each device's interactions before its ``target`` item (:meth:`LeaveOneOutSplit.history`).

    For ``"valid"`` the training items; for ``"test"`` the training items and the
    validation item, which a device has seen before its test interaction (the
    centralized reference is refit on the same history).
    """
    indptr, items = split.history(target)
    return [items[indptr[u] : indptr[u + 1]] for u in range(split.n_users)]


def federation(devices: Sequence[np.ndarray], user_vectors: np.ndarray) -> Cohort:
    """Every device of a simulated federation: device ``u`` holds ``devices[u]``.

    Args:
        devices: per user, its history (:func:`device_histories`).
        user_vectors: ``[n_users, dim]`` the devices' private user vectors.
    """
    return Cohort(list(range(len(devices))), devices, user_vectors)


def fine_tuned_scorer(
    model: GlobalParameters,
    devices: Cohort,
    config: LocalTrainConfig,
    seed: int,
    server_round: int,
) -> Callable[[np.ndarray], np.ndarray]:
    """A :data:`~fedpers.simulation.evaluation.protocol.Scorer`: global model, local fine-tuning.

    ``devices`` is every device of the federation (:func:`federation`), device ``u`` in
    row ``u``. Device ``u`` fine-tunes on its history from its user vector with seed
    :func:`~fedpers.client.device_round.evaluation_seed` ``(seed, server_round, u)``, so
    the scores of a device do not depend on the evaluation batch it falls into.
    """

    def scorer(users: np.ndarray) -> np.ndarray:
        batch = devices.select(users)
        scores: np.ndarray = score_devices(
            model,
            batch,
            config,
            [evaluation_seed(seed, server_round, int(u)) for u in batch.device_ids],
        )
        return scores

    return scorer


def run_fedsim(
    split: LeaveOneOutSplit,
    config: FedSimConfig,
    *,
    item_features: np.ndarray | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> FedSimResult:
    """Simulate a federation in-process on ``split`` (one device per user).

    Args:
        split: the leave-one-out split; device ``u`` holds its history before the
            evaluation target (:func:`device_histories` with ``config.eval_target``).
        config: the federation's configuration.
        item_features: ``[n_items, f]`` item attributes (needed with
            ``use_item_features``).
        on_round: called with each round's history entry.

    Returns:
        The final model, the private user vectors, metrics and the per-round history.

    Raises:
        ConfigError: on inconsistent options.
    """
    start = time.perf_counter()
    n_users, n_items = split.n_users, split.n_items
    devices = device_histories(split, config.eval_target)
    if config.use_item_features and item_features is None:
        raise ConfigError("use_item_features needs item_features")
    feats = item_features if config.use_item_features else None
    model_config = ModelConfig(
        n_items=n_items,
        dim=config.dim,
        n_item_features=0 if feats is None else int(feats.shape[1]),
        init_std=config.init_std,
    )
    global_arrays = shared_arrays(ItemSide(model_config, item_features=feats, seed=config.seed))
    users = initial_user_vectors(config.seed, list(range(n_users)), config.dim)
    sampling = SamplingConfig.from_options(
        n_users, sample_rate=config.sample_rate, clients_per_round=config.clients_per_round
    )
    sampler = DeviceSampler(sampling, seed=config.seed)
    m = sampling.expected_cohort
    sigma, clip = config.noise_multiplier, config.clip_norm
    kwargs: dict[str, Any] = dict(config.optimizer_kwargs)
    if config.denoise and sigma > 0:
        kwargs["denoise_std"] = sigma * clip / m
    optimizer = create_server_optimizer(config.server_optimizer, lr=config.server_lr, **kwargs)
    share = round_noise(sigma, clip, m, distributed=config.distributed_noise).share_std
    eval_local = config.eval_local or config.local
    history: list[dict[str, Any]] = []
    metrics: RankingMetrics | None = None
    notify(config.rounds, None)  # progress of commands that run this deep inside (audit)
    for rnd in range(1, config.rounds + 1):
        t_round = time.perf_counter()
        cohort = sampler.sample()
        instructions = RoundInstructions(
            server_round=rnd,
            seed=config.seed,
            clip_norm=clip,
            noise_share_std=share,
            local=config.local,
        )
        total = [np.zeros(a.shape, dtype=np.float64) for a in global_arrays]
        losses: list[float] = []
        norms: list[float] = []
        clipped = 0
        local_seconds = 0.0
        reporting = [u for u in cohort if int(u) not in config.absent]
        for lo in range(0, len(reporting), config.chunk_size):
            ids = np.asarray(reporting[lo : lo + config.chunk_size], dtype=np.int64)
            t_local = time.perf_counter()
            contribs = run_device_rounds(
                GlobalParameters(global_arrays, model_config, feats),
                federation(devices, users).select(ids),
                instructions,
            )
            local_seconds += time.perf_counter() - t_local
            for c in contribs:
                for t, a in zip(total, c.arrays, strict=True):
                    t += a
                users[int(c.device_id)] = c.user_vector
                losses.append(c.loss)
                norms.append(c.norm)
                clipped += int(c.clipped)
        if norms:  # as the Flower path, a round nobody reported to is skipped
            noise = round_noise(
                sigma, clip, m, distributed=config.distributed_noise, contributions=len(norms)
            )
            mean = finalize_aggregate(
                [t.astype(np.float32) for t in total],
                central_noise_std=noise.sum_std,
                denominator=m,
                rng=server_rng(config.seed, rnd),
            )
            global_arrays = optimizer.step(global_arrays, mean)
        entry: dict[str, Any] = {
            "round": rnd,
            "participants": len(norms),
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "clipped_fraction": clipped / len(norms) if norms else 0.0,
            "norm_median": float(np.median(norms)) if norms else 0.0,
            "local_seconds": local_seconds,
        }
        if rnd == config.rounds or (config.eval_every and rnd % config.eval_every == 0):
            scorer = fine_tuned_scorer(
                GlobalParameters(global_arrays, model_config, feats),
                federation(devices, users),
                eval_local,
                config.seed,
                rnd,
            )
            metrics = evaluate(scorer, split, target=config.eval_target, batch_size=n_users)
            entry.update(
                hr10_sampled=metrics.hr10_sampled,
                ndcg10_sampled=metrics.ndcg10_sampled,
                hr10_full=metrics.hr10_full,
                ndcg10_full=metrics.ndcg10_full,
            )
        entry["round_seconds"] = time.perf_counter() - t_round
        history.append(entry)
        notify(config.rounds, entry)
        if on_round is not None:
            on_round(entry)
    if metrics is None:
        scorer = fine_tuned_scorer(
            GlobalParameters(global_arrays, model_config, feats),
            federation(devices, users),
            eval_local,
            config.seed,
            0,
        )
        metrics = evaluate(scorer, split, target=config.eval_target, batch_size=n_users)
    return FedSimResult(
        config=config,
        global_arrays=global_arrays,
        user_vectors=users,
        metrics=metrics,
        history=history,
        seconds=time.perf_counter() - start,
    )
