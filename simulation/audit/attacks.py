"""The two attacks of the audit report: update inspection and the canary membership audit.

*Update inspection* (report section 6) trains one real device's update exactly as a
round of the audited run would (:func:`fedpers.client.training.local.train_devices` and
the privacy pipeline's :func:`~fedpers.privacy.dp.pipeline.privatize_device_update`) and
asks how well the L2 norm of each item's row reveals the device's items, for every view
of the update: raw, clipped, clipped plus the device's noise share, clipped plus noise at
the central scale ``sigma C`` (what local DP at this sigma would give).

The *canary audit* (report section 7) runs a separate federation with
:func:`fedpers.simulation.federation.fedsim.run_fedsim` and the audited run's privacy
configuration (sigma, C, sampling rate, rounds, delta) on the same data plus ``m`` canary
devices. Each canary holds ``k`` dedicated items appended to the catalogue (no other
device ever holds them) and is included in the federation independently with
probability 1/2. Membership-inference attacks score every canary on the published
models; the scores give ROC statistics and, through
:func:`~fedpers.privacy.audit.one_run.one_run_epsilon_lower_bound`, an empirical epsilon
lower bound at 95% from this single run (Steinke, Nasr and Jagielski 2023). Every canary
is a device with a fixed id whether or not it is included (an excluded canary holds no
data, so its update is zero), which makes everything the attacks derive from a canary's
identity independent of the coin flips. Each planted item appears ``repeats`` times in
the canary's history: a strong, distinctive pattern, whose update clipping still bounds.
Four attacks are scored; the two in :data:`BOUND_ATTACKS` (fixed in advance) feed the
bound, the confidence split between them (Bonferroni), so the headline bound, the larger
of the two, keeps its 95%.

Attacks (higher score means "included"):

``update_alignment``
    white-box on the first and the final published model: project the change of the
    canary's rows onto the update the canary would have sent in round 1 (computed from
    the first model, its items, and its user vector and training stream, which derive
    from its public device id and the run seed).
``bias_drift``
    the summed change of the bias of the canary's items (a member pushes them up).
``embedding_coherence``
    the summed pairwise inner products of the changes of the canary's item rows (a member
    moves all its items towards one user vector).
``loss``
    black-box on the final model: fold a user vector into the final model on the
    canary's items (:func:`~fedpers.client.training.local.fold_in`) and take the mean
    BPR log-likelihood of its items against every real item.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fedpers.client.device_round import initial_user_vectors, training_seed
from fedpers.client.model import ItemSide, ModelConfig, load_shared_arrays, shared_arrays
from fedpers.client.training.cohort import Cohort
from fedpers.client.training.global_parameters import GlobalParameters
from fedpers.client.training.local import LocalTrainConfig, fold_in, train_devices
from fedpers.privacy.audit.inspection import evaluate_item_scores, item_row_norms
from fedpers.privacy.audit.one_run import one_run_epsilon_lower_bound
from fedpers.privacy.audit.report import (
    AttackResult,
    ClopperPearsonResult,
    EmpiricalAuditSection,
    InspectionScenario,
    OneRunGuessResult,
    OneRunResult,
    UpdateInspectionSection,
)
from fedpers.privacy.audit.stats import (
    epsilon_lower_bound_clopper_pearson,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
)
from fedpers.privacy.dp.noise import device_rng
from fedpers.privacy.dp.pipeline import privatize_device_update
from fedpers.privacy.errors import ConfigError
from fedpers.simulation.evaluation.protocol import LeaveOneOutSplit
from fedpers.simulation.federation.fedsim import FedSimConfig, run_fedsim

__all__ = [
    "ATTACKS",
    "BOUND_ATTACKS",
    "CanaryAuditConfig",
    "CanaryRun",
    "canary_scores",
    "default_k_values",
    "evaluate_canary_scores",
    "inspect_update",
    "pick_inspection_device",
    "run_canary_audit",
    "run_canary_federation",
    "with_canaries",
]

ATTACKS: dict[str, str] = {
    "update_alignment": (
        "projection of the change of the canary's rows between the first and final model on "
        "the update the canary would have sent in round 1 (computed from public information)"
    ),
    "loss": (
        "black-box on the final model: mean BPR log-likelihood of the canary's items against "
        "every real item, for a user vector folded in on those items"
    ),
    "bias_drift": "summed change of the canary items' bias between the first and final model",
    "embedding_coherence": (
        "summed pairwise inner products of the changes of the canary items' embedding rows "
        "between the first and final model"
    ),
}
"""The membership-inference attacks of the canary audit and what each scores."""

BOUND_ATTACKS: tuple[str, ...] = ("update_alignment", "bias_drift")
"""The attacks whose scores feed the epsilon lower bounds, fixed before any audit.

The confidence is split between exactly these (Bonferroni); the other attacks are reported
for their ROC statistics only, so that weaker attacks do not dilute the bound.
"""

_ROC_POINTS = 201


# -- update inspection ---------------------------------------------------------------------


def pick_inspection_device(split: LeaveOneOutSplit, min_items: int = 10) -> int:
    """The device whose update is inspected: the median history among those with enough items.

    Deterministic, so two audits of one run inspect the same device.

    Raises:
        ConfigError: when no device has a training item.
    """
    counts = np.diff(split.train_indptr)
    candidates = np.flatnonzero(counts >= min_items)
    if candidates.size == 0:
        candidates = np.flatnonzero(counts > 0)
    if candidates.size == 0:
        raise ConfigError("no device has training items to inspect")
    order = candidates[np.argsort(counts[candidates], kind="stable")]
    return int(order[order.size // 2])


def inspect_update(
    items: np.ndarray,
    model_config: ModelConfig,
    global_arrays: list[np.ndarray],
    local: LocalTrainConfig,
    *,
    device_id: int,
    user_vector: np.ndarray,
    seed: int,
    server_round: int,
    clip_norm: float,
    noise_multiplier: float,
    noise_share_std: float,
    secure_aggregation: bool,
    item_features: np.ndarray | None = None,
) -> UpdateInspectionSection:
    """Run the update-inspection attack on one device's update, for every view of it.

    Args:
        items: the device's history (what it trains on in a round), catalogue indices.
        model_config: the run's model shape.
        global_arrays: the global model the device starts from (wire order).
        local: the run's local training configuration.
        device_id: the device to inspect.
        user_vector: its private user vector at the start of the round.
        seed: the run seed (derives the training and noise streams as in a real round).
        server_round: the round to simulate.
        clip_norm: ``C`` (0: the run does not clip).
        noise_multiplier: ``sigma`` of the run (0: non-private).
        noise_share_std: the device's noise share in this run (0 without secure aggregation).
        secure_aggregation: whether the coordinator only ever sees ciphertexts.
        item_features: item attributes for the attribute tower, else ``None``.

    Returns:
        The report section.
    """
    items = np.asarray(items, dtype=np.int64)
    train_seed = training_seed(seed, server_round, device_id)
    update = train_devices(
        GlobalParameters(global_arrays, model_config, item_features),
        Cohort([device_id], [items], np.asarray(user_vector, dtype=np.float32)[None, :]),
        local,
        [train_seed],
    )[0]
    views: list[tuple[str, list[np.ndarray], float | None, float | None, bool]] = []
    plain_visible = not secure_aggregation and clip_norm == 0
    views.append(("plain", update.delta, None, None, plain_visible))
    if clip_norm > 0:
        rng = device_rng(seed, server_round, device_id, "audit")
        clipped = privatize_device_update(update.delta, clip_norm, 0.0, rng).arrays
        visible = not secure_aggregation and noise_share_std == 0
        views.append(("clipped", clipped, clip_norm, None, visible))
        if noise_share_std > 0:
            shared = privatize_device_update(update.delta, clip_norm, noise_share_std, rng)
            views.append(
                ("clipped + noise share", shared.arrays, clip_norm, noise_share_std, False)
            )
        if noise_multiplier > 0:
            central = noise_multiplier * clip_norm
            local_dp = privatize_device_update(update.delta, clip_norm, central, rng)
            views.append(("clipped + noise sigma*C", local_dp.arrays, clip_norm, central, False))
    scenarios: list[InspectionScenario] = []
    for name, arrays, clip, noise, visible in views:
        result = evaluate_item_scores(item_row_norms(arrays[0], arrays[1]), items)
        scenarios.append(
            InspectionScenario(
                name=name,
                clip_norm=clip,
                noise_std=noise,
                auc=result.auc,
                tpr_at_1pct_fpr=result.tpr_at_1pct_fpr,
                recovered_in_top=result.recovered_in_top,
                visible_to_coordinator=visible,
            )
        )
    return UpdateInspectionSection(
        status="measured",
        device_id=device_id,
        n_items=model_config.n_items,
        n_true=int(np.unique(items).size),
        scenarios=scenarios,
        statement=_inspection_statement(scenarios, secure_aggregation, int(np.unique(items).size)),
    )


def _inspection_statement(
    scenarios: Sequence[InspectionScenario], secure: bool, n_true: int
) -> str:
    plain = scenarios[0]
    text = (
        "An unprotected update reveals the device's items: ranking items by the norm of "
        f"their row gives ROC AUC {plain['auc']:.3f} and puts {plain['recovered_in_top']} of "
        f"its {n_true} items among the {n_true} highest scores. "
    )
    seen = [s for s in scenarios if s["visible_to_coordinator"]]
    if secure:
        text += (
            "With secure aggregation on, the coordinator holds no individual update, only "
            "ciphertexts and the noised sum; the figures for the other views show what a "
            "coordinator colluding with the key holder could learn."
        )
    elif seen:
        s = seen[0]
        text += (
            f"In this run the coordinator sees the '{s['name']}' view of every update, on "
            f"which the attack reaches ROC AUC {s['auc']:.3f} (0.5 is chance): clipping alone "
            "does not hide which items a device trained on."
        )
    return text


# -- the canary audit ------------------------------------------------------------------------


@dataclass(frozen=True)
class CanaryAuditConfig:
    """Settings of the canary audit (the privacy configuration comes from the audited run).

    Attributes:
        canaries: number of canary devices ``m``.
        items_per_canary: dedicated items per canary ``k``.
        repeats: interactions a canary has with each of its items (a strong, distinctive
            pattern; clipping bounds what it can add to a private model all the same).
        seed: seed of the inclusion coin flips and of the attacks' own draws.
        confidence: joint confidence of the reported lower bound.
        fold_in_steps: user-vector steps of the ``loss`` attack.
        fold_in_lr: their step size.
    """

    canaries: int = 500
    items_per_canary: int = 4
    repeats: int = 8
    seed: int = 0
    confidence: float = 0.95
    fold_in_steps: int = 50
    fold_in_lr: float = 0.5

    def __post_init__(self) -> None:
        if self.canaries < 4:
            raise ConfigError(f"the canary audit needs at least 4 canaries, got {self.canaries}")
        if self.items_per_canary < 2:
            raise ConfigError("each canary needs at least 2 items")
        if self.repeats < 1:
            raise ConfigError(f"repeats must be >= 1, got {self.repeats}")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"confidence must be in (0, 1), got {self.confidence}")


def with_canaries(
    split: LeaveOneOutSplit, canary_items: np.ndarray, included: np.ndarray, repeats: int = 1
) -> LeaveOneOutSplit:
    """The split with the catalogue grown by the canary items and every canary as a device.

    Canary ``j`` is device ``split.n_users + j`` whatever the coin flips, so everything the
    auditor derives from a canary's identity (its private user vector, its random streams)
    is independent of which canaries were included. An included canary holds
    ``canary_items[j]`` (indices ``>= split.n_items``), each ``repeats`` times, as training
    data; an excluded one
    holds nothing, so its update is exactly zero and its presence changes no sum (it is
    the same as being absent from the federation). Canaries have no held-out item and are
    never evaluated.

    Args:
        split: the real data's split.
        canary_items: ``int[m, k]`` item indices of each canary.
        included: ``bool[m]`` which canaries take part.
        repeats: interactions per planted item.

    Returns:
        The augmented split.
    """
    inc = np.asarray(included, dtype=bool)
    m = int(canary_items.shape[0])
    if inc.shape != (m,):
        raise ConfigError(f"{inc.size} inclusion flags for {m} canaries")
    n_items = int(canary_items.max()) + 1 if canary_items.size else split.n_items
    new_rows = [
        np.tile(np.asarray(canary_items[j], dtype=np.int64), repeats)
        if inc[j]
        else np.zeros(0, dtype=np.int64)
        for j in range(m)
    ]
    lengths = np.array([r.size for r in new_rows], dtype=np.int64)
    new_users = np.repeat(np.arange(split.n_users, split.n_users + m, dtype=np.int64), lengths)
    new_items = np.concatenate(new_rows) if new_rows else np.zeros(0, dtype=np.int64)
    pad = np.full((m, split.sampled_negatives.shape[1]), -1, dtype=np.int64)
    none = np.full(m, -1, dtype=np.int64)
    return LeaveOneOutSplit.from_training(
        split.n_users + m,
        max(n_items, split.n_items),
        np.concatenate((split.train_users, new_users)),
        np.concatenate((split.train_items, new_items)),
        np.concatenate((split.train_timestamps, np.zeros(new_items.size, dtype=np.int64))),
        valid_items=np.concatenate((split.valid_items, none)),
        test_items=np.concatenate((split.test_items, none)),
        sampled_negatives=np.concatenate((split.sampled_negatives, pad)),
        seed=split.seed,
    )


def _fold_in_scores(
    final: Sequence[np.ndarray],
    model_config: ModelConfig,
    item_features: np.ndarray | None,
    canary_items: np.ndarray,
    n_real_items: int,
    audit: CanaryAuditConfig,
) -> np.ndarray:
    side = ItemSide(model_config, item_features=item_features)
    load_shared_arrays(side, list(final))
    vectors = side.item_vectors().detach().numpy().astype(np.float64)
    bias = side.biases().detach().numpy().astype(np.float64)
    real_vectors, real_bias = vectors[:n_real_items], bias[:n_real_items]
    out = np.empty(canary_items.shape[0], dtype=np.float64)
    for j, items in enumerate(canary_items):
        rng = np.random.default_rng([audit.seed, j, 7])
        u = fold_in(
            np.zeros(model_config.dim, dtype=np.float32),
            vectors.astype(np.float32),
            bias.astype(np.float32),
            items,
            audit.fold_in_steps,
            audit.fold_in_lr,
            rng,
        ).astype(np.float64)
        own = vectors[items] @ u + bias[items]
        others = real_vectors @ u + real_bias
        margin = own[:, None] - others[None, :]
        out[j] = float(-np.logaddexp(0.0, -margin).mean())  # mean log sigmoid(margin)
    return out


def _expected_updates(
    initial: Sequence[np.ndarray],
    model_config: ModelConfig,
    item_features: np.ndarray | None,
    canary_items: np.ndarray,
    first_device: int,
    local: LocalTrainConfig,
    seed: int,
    repeats: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Each canary's first-round update on its own rows, had it been included.

    Computed from public information only: the first published model, the canary's
    items, and its user vector and training stream, which derive from its fixed device id.
    """
    m = canary_items.shape[0]
    ids = [first_device + j for j in range(m)]
    updates = train_devices(
        GlobalParameters(
            [np.asarray(a, dtype=np.float32) for a in initial], model_config, item_features
        ),
        Cohort(
            ids,
            [np.tile(np.asarray(row, dtype=np.int64), repeats) for row in canary_items],
            initial_user_vectors(seed, ids, model_config.dim),
        ),
        local,
        [training_seed(seed, 1, d) for d in ids],
    )
    emb = np.stack([u.delta[0][row] for u, row in zip(updates, canary_items, strict=True)])
    bias = np.stack([u.delta[1][row] for u, row in zip(updates, canary_items, strict=True)])
    return emb.astype(np.float64), bias.astype(np.float64)


def canary_scores(
    initial: Sequence[np.ndarray],
    final: Sequence[np.ndarray],
    model_config: ModelConfig,
    canary_items: np.ndarray,
    n_real_items: int,
    audit: CanaryAuditConfig,
    item_features: np.ndarray | None = None,
    *,
    first_device: int,
    local: LocalTrainConfig,
    seed: int,
) -> dict[str, np.ndarray]:
    """Every attack's score of every canary from the first and the final published model.

    Args:
        initial: the global model before the first round (wire order).
        final: the published global model after the last round.
        model_config: the model shape (with the canary items).
        canary_items: ``int[m, k]`` item indices of each canary.
        n_real_items: items of the real catalogue (the canary items come after them).
        audit: the audit settings.
        item_features: item attributes (zero rows for canary items) or ``None``.
        first_device: device id of canary 0 (canary ``j`` is ``first_device + j``).
        local: the federation's local training configuration.
        seed: the federation's seed.

    Returns:
        ``{attack name: float64[m]}`` for every attack in :data:`ATTACKS`.
    """
    d_emb = np.asarray(final[0], dtype=np.float64) - np.asarray(initial[0], dtype=np.float64)
    d_bias = np.asarray(final[1], dtype=np.float64) - np.asarray(initial[1], dtype=np.float64)
    rows = d_emb[canary_items]  # [m, k, d]
    summed = rows.sum(axis=1)
    coherence = (np.square(summed).sum(axis=1) - np.square(rows).sum(axis=(1, 2))) / 2.0
    exp_emb, exp_bias = _expected_updates(
        initial, model_config, item_features, canary_items, first_device, local, seed, audit.repeats
    )
    dot = (rows * exp_emb).sum(axis=(1, 2)) + (d_bias[canary_items] * exp_bias).sum(axis=1)
    norm = np.sqrt(np.square(exp_emb).sum(axis=(1, 2)) + np.square(exp_bias).sum(axis=1))
    return {
        "update_alignment": dot / np.maximum(norm, 1e-30),
        "bias_drift": d_bias[canary_items].sum(axis=1),
        "embedding_coherence": coherence,
        "loss": _fold_in_scores(
            final, model_config, item_features, canary_items, n_real_items, audit
        ),
    }


def default_k_values(m: int) -> list[int]:
    """Guesses per side tried by the one-run bound: 2%, 5%, 10%, 25% and 50% of ``m``."""
    ks = sorted({max(1, int(m * f)) for f in (0.02, 0.05, 0.1, 0.25, 0.5)})
    return [k for k in ks if 2 * k <= m]


def _roc_points(scores: np.ndarray, included: np.ndarray) -> list[list[float]]:
    fpr, tpr, _ = roc_curve(scores, included)
    if fpr.size > _ROC_POINTS:
        keep = np.unique(np.linspace(0, fpr.size - 1, _ROC_POINTS).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return [[float(f), float(t)] for f, t in zip(fpr, tpr, strict=True)]


def _smoothed_epsilon(tp: int, fp: int, tn: int, fn: int) -> float:
    """Point estimate of the epsilon a threshold achieves (add-one smoothed rates)."""
    fpr = (fp + 1) / (fp + tn + 2)
    fnr = (fn + 1) / (fn + tp + 2)
    return max(math.log((1 - fpr) / fnr), math.log((1 - fnr) / fpr))


def _clopper_pearson(
    name: str, scores: np.ndarray, included: np.ndarray, delta: float, confidence: float
) -> ClopperPearsonResult:
    """Pick the threshold on the even-indexed canaries, count on the odd-indexed ones.

    The threshold maximises the smoothed point estimate of epsilon on the first half; the
    bound is computed on the second half only, so choosing the threshold does not bias it.
    """
    first, second = np.arange(0, scores.size, 2), np.arange(1, scores.size, 2)
    s1, y1 = scores[first], included[first]
    best_t, best_eps = float(np.max(scores)), -math.inf
    for t in np.unique(s1):
        eps = _smoothed_epsilon(*_confusion(s1 >= t, y1))
        if eps > best_eps:
            best_t, best_eps = float(t), eps
    s2, y2 = scores[second], included[second]
    tp, fp, tn, fn = _confusion(s2 >= best_t, y2)
    eps = (
        epsilon_lower_bound_clopper_pearson(tp, fp, tn, fn, delta, confidence)
        if tp + fn > 0 and fp + tn > 0
        else 0.0
    )
    return ClopperPearsonResult(
        attack=name,
        epsilon=eps,
        confidence=confidence,
        threshold=best_t,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
    )


def _confusion(guess: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int]:
    tp = int((guess & truth).sum())
    fp = int((guess & ~truth).sum())
    tn = int((~guess & ~truth).sum())
    fn = int((~guess & truth).sum())
    return tp, fp, tn, fn


def evaluate_canary_scores(
    scores: dict[str, np.ndarray],
    included: np.ndarray,
    delta: float,
    confidence: float = 0.95,
    k_values: Sequence[int] | None = None,
    bound_attacks: Sequence[str] | None = None,
) -> tuple[list[AttackResult], OneRunResult, ClopperPearsonResult]:
    """ROC statistics of every attack and the two epsilon lower bounds.

    The one-run bound is computed for every attack in ``bound_attacks`` at level
    ``1 - (1 - confidence) / len(bound_attacks)`` and the largest is reported, so the
    reported bound holds with probability ``confidence``. The Clopper-Pearson bound uses
    the attack with the highest one-run bound.

    Args:
        scores: ``{attack name: score per canary}``.
        included: ``bool[m]`` which canaries took part.
        delta: delta of the audited guarantee.
        confidence: joint confidence.
        k_values: guesses per side to try (default :func:`default_k_values`).
        bound_attacks: the attacks that feed the bounds (default :data:`BOUND_ATTACKS`
            where present, else every attack).

    Returns:
        ``(attacks, one_run, clopper_pearson)``.
    """
    inc = np.asarray(included, dtype=bool)
    ks = list(k_values) if k_values is not None else default_k_values(inc.size)
    if bound_attacks is None:
        bound_attacks = [a for a in BOUND_ATTACKS if a in scores] or list(scores)
    unknown = set(bound_attacks) - set(scores)
    if unknown:
        raise ConfigError(f"no scores for attacks {sorted(unknown)}")
    per_attack = 1.0 - (1.0 - confidence) / max(1, len(bound_attacks))
    attacks: list[AttackResult] = []
    best: OneRunResult | None = None
    for name, values in scores.items():
        s = np.asarray(values, dtype=np.float64)
        attacks.append(
            AttackResult(
                name=name,
                description=ATTACKS.get(name, name),
                auc=roc_auc(s, inc),
                tpr_at_1pct_fpr=tpr_at_fpr(s, inc, 0.01),
                tpr_at_0_1pct_fpr=tpr_at_fpr(s, inc, 0.001),
                roc=_roc_points(s, inc),
            )
        )
        if name not in bound_attacks:
            continue
        audit = one_run_epsilon_lower_bound(s, inc, delta, ks, per_attack)
        guesses = [
            OneRunGuessResult(k=g.k, guesses=g.guesses, correct=g.correct, epsilon=g.epsilon)
            for g in audit.per_k
        ]
        result = OneRunResult(
            attack=name,
            epsilon=audit.epsilon,
            confidence=confidence,
            delta=delta,
            best=OneRunGuessResult(
                k=audit.best.k,
                guesses=audit.best.guesses,
                correct=audit.best.correct,
                epsilon=audit.best.epsilon,
            ),
            per_k=guesses,
        )
        if best is None or result["epsilon"] > best["epsilon"]:
            best = result
    if best is None:
        raise ConfigError("no attack scores to evaluate")
    cp = _clopper_pearson(
        best["attack"], np.asarray(scores[best["attack"]], dtype=np.float64), inc, delta, confidence
    )
    return attacks, best, cp


@dataclass(frozen=True, eq=False)
class CanaryRun:
    """The raw outcome of a canary federation (for tests and the report builder).

    Attributes:
        scores: every attack's score per canary.
        included: which canaries took part.
        config: the federation's configuration (with the canary devices counted).
        seconds: wall time of the federation and the attacks.
    """

    scores: dict[str, np.ndarray]
    included: np.ndarray
    config: FedSimConfig
    seconds: float


def run_canary_federation(
    split: LeaveOneOutSplit,
    config: FedSimConfig,
    audit: CanaryAuditConfig,
    *,
    item_features: np.ndarray | None = None,
) -> CanaryRun:
    """Run one federation with canaries and score every canary with every attack.

    The federation keeps ``config``'s privacy parameters. With fixed-size cohorts the
    cohort grows with the population so that the sampling rate stays the same.

    Args:
        split: the real data's split.
        config: the audited run's federation configuration.
        audit: the audit settings.
        item_features: item attributes (needed when ``config.use_item_features``).

    Returns:
        The scores and the inclusion flags.
    """
    start = time.perf_counter()
    m, k = audit.canaries, audit.items_per_canary
    rng = np.random.default_rng([audit.seed, 1])
    included = rng.random(m) < 0.5
    canary_items = split.n_items + np.arange(m * k, dtype=np.int64).reshape(m, k)
    augmented = with_canaries(split, canary_items, included, audit.repeats)
    feats = None
    if config.use_item_features:
        if item_features is None:
            raise ConfigError("use_item_features needs item_features")
        feats = np.concatenate(
            (item_features, np.zeros((m * k, item_features.shape[1]), dtype=item_features.dtype))
        ).astype(np.float32)
    run_config = config
    if config.clients_per_round is not None:
        rate = config.clients_per_round / split.n_users
        run_config = replace(config, clients_per_round=max(1, round(rate * augmented.n_users)))
    model_config = ModelConfig(
        n_items=augmented.n_items,
        dim=config.dim,
        n_item_features=0 if feats is None else int(feats.shape[1]),
        init_std=config.init_std,
    )
    initial = shared_arrays(ItemSide(model_config, item_features=feats, seed=config.seed))
    result = run_fedsim(augmented, run_config, item_features=feats)
    scores = canary_scores(
        initial,
        result.global_arrays,
        model_config,
        canary_items,
        split.n_items,
        audit,
        feats,
        first_device=split.n_users,
        local=config.local,
        seed=config.seed,
    )
    return CanaryRun(
        scores=scores,
        included=included,
        config=run_config,
        seconds=time.perf_counter() - start,
    )


def run_canary_audit(
    split: LeaveOneOutSplit,
    config: FedSimConfig,
    audit: CanaryAuditConfig,
    *,
    delta: float,
    claimed_epsilon: float | None,
    audit_run_epsilon: float | None,
    item_features: np.ndarray | None = None,
    extra_configuration: dict[str, Any] | None = None,
) -> EmpiricalAuditSection:
    """The report's empirical-audit section: run the canary federation and evaluate it.

    Args:
        split: the real data's split.
        config: the audited run's federation configuration.
        audit: the audit settings.
        delta: delta of the audited guarantee.
        claimed_epsilon: the audited run's epsilon (``None`` when non-private).
        audit_run_epsilon: the accountant's epsilon for the audit run's own configuration.
        item_features: item attributes (needed when ``config.use_item_features``).
        extra_configuration: more settings to list in the section (e.g. how sampling was
            replicated).

    Returns:
        The report section.
    """
    run = run_canary_federation(split, config, audit, item_features=item_features)
    attacks, one_run, cp = evaluate_canary_scores(run.scores, run.included, delta, audit.confidence)
    configuration: dict[str, Any] = {
        "noise_multiplier": run.config.noise_multiplier,
        "clip_norm": run.config.clip_norm,
        "sample_rate": run.config.sample_rate,
        "clients_per_round": run.config.clients_per_round,
        "rounds": run.config.rounds,
        "delta": delta,
        "distributed_noise": run.config.distributed_noise,
        "server_optimizer": run.config.server_optimizer,
        "server_lr": run.config.server_lr,
        "server_optimizer_options": dict(run.config.optimizer_kwargs),
        "seed": run.config.seed,
        "audit_seed": audit.seed,
        "devices": split.n_users + audit.canaries,
        "canary_devices_without_data": audit.canaries - int(run.included.sum()),
        **(extra_configuration or {}),
    }
    private = claimed_epsilon is not None
    verdict = (
        "below" if not private or one_run["epsilon"] <= float(claimed_epsilon or 0.0) else "ABOVE"
    )
    statement = (
        "This is a separate audit run that replicates the audited run's privacy "
        f"configuration (sigma {run.config.noise_multiplier:g}, clip norm "
        f"{run.config.clip_norm:g}, the same sampling rate, {run.config.rounds} rounds, "
        f"delta {delta:.3g}) on the same data (only devices that consented to training hold "
        f"data), plus {audit.canaries} canary devices with "
        f"{audit.items_per_canary} dedicated items each ({audit.repeats} interactions per item), "
        "each included with probability 1/2 "
        f"({int(run.included.sum())} included). The strongest attack gives an empirical "
        f"epsilon lower bound of {one_run['epsilon']:.3f} at {audit.confidence:.0%} "
        f"confidence ({one_run['attack']}), {verdict} the claimed epsilon"
        + (f" of {claimed_epsilon:.3f}." if private else " (the run claims none).")
        + " Why this bound is far below the claim, and why that is expected: it comes from "
        "one training run with a few hundred canaries, so even an attack that guessed "
        "every canary right could certify only a few units of epsilon; each canary is a "
        "device with data, whose clipped update is one of hundreds in every noisy sum and "
        "is then reshaped by the server optimiser and its denoising; and the attacks see "
        "only the published models, not each round's sum. It measures what an attacker on "
        "the published models learns here, not how tight the accountant is; section 8 "
        "(crafted-update audit) gives the attack the mechanism allows at its strongest. A "
        "bound above the claim would prove a bug."
    )
    bias = run.scores.get("bias_drift")
    if bias is not None and bias.size and float(np.mean(bias == 0.0)) > 0.5:
        statement += (
            f" The published models left the items of {float(np.mean(bias == 0.0)):.0%} of "
            "the canaries exactly unchanged (the server optimiser's denoising shrinks rows "
            "that carry mostly noise to zero), so the attacks had little to observe."
        )
    return EmpiricalAuditSection(
        status="measured",
        statement=statement,
        configuration=configuration,
        audit_run_epsilon=audit_run_epsilon,
        canaries=audit.canaries,
        canaries_included=int(run.included.sum()),
        items_per_canary=audit.items_per_canary,
        attacks=attacks,
        one_run=one_run,
        clopper_pearson=cp,
        claimed_epsilon=claimed_epsilon,
        seconds=run.seconds,
    )
