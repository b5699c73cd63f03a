"""Pure statistics for privacy audits: ROC curves, binomial tails and Clopper-Pearson bounds.

Every function here is a pure function of numpy arrays and numbers; nothing reads files,
draws random numbers or keeps state. Binomial probabilities are computed exactly in log
space from a table of log-factorials, so no special-function library is needed.

A membership-inference *score* is larger when the attacker believes the target was a
member; *labels* are ``True`` for members. Thresholds predict "member" when
``score >= threshold``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from fedpers.privacy.errors import ConfigError, DataError

__all__ = [
    "binomial_log_pmf",
    "binomial_sf",
    "clopper_pearson",
    "clopper_pearson_upper",
    "epsilon_lower_bound_clopper_pearson",
    "roc_auc",
    "roc_curve",
    "scores_with_flags",
    "tpr_at_fpr",
]

_BISECTION_STEPS = 200


def scores_with_flags(
    scores: Sequence[float] | np.ndarray,
    flags: Sequence[bool] | np.ndarray,
    *,
    scores_of: str,
    flags_are: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Flat float64 scores and one boolean flag per score (membership, inclusion).

    Args:
        scores: one score per target.
        flags: one flag per target.
        scores_of: what scored, for messages (``"attack"``, ``"canary"``).
        flags_are: what the flags are, for messages (``"labels"``, ``"inclusion flags"``).

    Raises:
        DataError: when the lengths differ or a score is not finite.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(flags).reshape(-1).astype(bool)
    if s.shape != y.shape:
        raise DataError(f"{s.size} scores but {y.size} {flags_are}")
    if not np.all(np.isfinite(s)):
        raise DataError(f"{scores_of} scores must be finite")
    return s, y


def _scores_and_labels(
    scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert attack scores and membership labels.

    Raises:
        DataError: when the lengths differ, a score is not finite, or one class is empty.
    """
    s, y = scores_with_flags(scores, labels, scores_of="attack", flags_are="labels")
    if y.all() or not y.any():
        raise DataError("ROC statistics need at least one member and one non-member")
    return s, y


def roc_curve(
    scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The empirical ROC curve of a score, one point per distinct threshold.

    Args:
        scores: attack score per target (higher means "member").
        labels: ``True`` for members.

    Returns:
        ``(fpr, tpr, thresholds)``: increasing false and true positive rates, starting at
        ``(0, 0)`` (threshold ``+inf``) and ending at ``(1, 1)``.

    Raises:
        DataError: see :func:`roc_auc`.

    Example:
        >>> fpr, tpr, _ = roc_curve([0.9, 0.1], [True, False])
        >>> fpr.tolist(), tpr.tolist()
        ([0.0, 0.0, 1.0], [0.0, 1.0, 1.0])
    """
    s, y = _scores_and_labels(scores, labels)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    # keep only the last index of each run of tied scores: a threshold admits all ties
    last_of_run = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tpr = np.r_[0.0, tp[last_of_run] / y.sum()]
    fpr = np.r_[0.0, fp[last_of_run] / (~y).sum()]
    thresholds = np.r_[np.inf, s_sorted[last_of_run]]
    return fpr, tpr, thresholds


def roc_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve: P(score of a member > score of a non-member), ties count 1/2.

    Computed as the Mann-Whitney U statistic with average ranks for ties.

    Args:
        scores: attack score per target (higher means "member").
        labels: ``True`` for members.

    Returns:
        The AUC in ``[0, 1]``; 0.5 is chance.

    Raises:
        DataError: when lengths differ, a score is not finite, or a class is empty.

    Example:
        >>> roc_auc([0.9, 0.8, 0.3, 0.1], [True, False, True, False])
        0.75
    """
    s, y = _scores_and_labels(scores, labels)
    # average rank (1-based) of each distinct score, shared by all its ties
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1
    ranks = (first_rank + (counts - 1) / 2.0)[inverse]
    n_pos = int(y.sum())
    n_neg = s.size - n_pos
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def tpr_at_fpr(
    scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray, fpr: float
) -> float:
    """The largest true positive rate of any threshold whose false positive rate is <= ``fpr``.

    Args:
        scores: attack score per target (higher means "member").
        labels: ``True`` for members.
        fpr: the false positive rate allowed, in ``[0, 1]``.

    Returns:
        The TPR in ``[0, 1]`` (0 when no threshold admits a member at that FPR).

    Raises:
        ConfigError: when ``fpr`` is outside ``[0, 1]``.
        DataError: see :func:`roc_auc`.

    Example:
        >>> tpr_at_fpr([0.9, 0.8, 0.3, 0.1], [True, False, True, False], 0.0)
        0.5
    """
    if not 0.0 <= fpr <= 1.0:
        raise ConfigError(f"fpr must be in [0, 1], got {fpr}")
    fprs, tprs, _ = roc_curve(scores, labels)
    return float(tprs[fprs <= fpr + 1e-12].max())


def _log_factorials(n: int) -> np.ndarray:
    """``log(k!)`` for ``k = 0..n``."""
    logs = np.log(np.arange(1, n + 1, dtype=np.float64))
    return np.concatenate(([0.0], np.cumsum(logs)))


def binomial_log_pmf(n: int, log_p: float, log_q: float) -> np.ndarray:
    """``log P[Binomial(n, p) = k]`` for ``k = 0..n``, given ``log p`` and ``log(1 - p)``.

    Passing both logarithms keeps the computation exact when ``p`` is within rounding of
    0 or 1 (as it is for randomized response at large epsilon).

    Args:
        n: number of trials, >= 0.
        log_p: ``log p`` (``-inf`` for ``p = 0``).
        log_q: ``log(1 - p)`` (``-inf`` for ``p = 1``).

    Returns:
        ``float64[n + 1]`` log-probabilities.
    """
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    lf = _log_factorials(n)
    k = np.arange(n + 1, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        a = np.where(k > 0, k * log_p, 0.0)
        b = np.where(n - k > 0, (n - k) * log_q, 0.0)
    return np.asarray(lf[n] - lf - lf[::-1] + a + b, dtype=np.float64)


def _log_p_pair(p: float) -> tuple[float, float]:
    """``(log p, log(1 - p))`` with the conventions ``log 0 = -inf``."""
    log_p = math.log(p) if p > 0.0 else -math.inf
    log_q = math.log1p(-p) if p < 1.0 else -math.inf
    return log_p, log_q


def binomial_sf(k: int, n: int, p: float) -> float:
    """``P[Binomial(n, p) >= k]``.

    Args:
        k: the threshold (any integer; ``k <= 0`` gives 1, ``k > n`` gives 0).
        n: number of trials, >= 0.
        p: success probability in ``[0, 1]``.

    Returns:
        The upper tail probability.

    Example:
        >>> round(binomial_sf(2, 2, 0.5), 6)
        0.25
    """
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"p must be in [0, 1], got {p}")
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    log_pmf = binomial_log_pmf(n, *_log_p_pair(p))
    return float(min(1.0, np.exp(log_pmf[k:]).sum()))


def _check_counts(successes: int, trials: int) -> None:
    if trials <= 0:
        raise ConfigError(f"trials must be positive, got {trials}")
    if not 0 <= successes <= trials:
        raise ConfigError(f"successes must be in [0, {trials}], got {successes}")


def _bisect_increasing(f: Callable[[float], float], target: float) -> float:
    """The ``p`` in ``[0, 1]`` where the increasing function ``f(p)`` crosses ``target``."""
    lo, hi = 0.0, 1.0
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2.0
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-16 * max(hi, 1e-300):
            break
    return (lo + hi) / 2.0


def clopper_pearson_upper(successes: int, trials: int, alpha: float) -> float:
    """One-sided Clopper-Pearson upper bound: the ``p`` with ``P[Bin(n, p) <= k] = alpha``.

    Args:
        successes: observed successes ``k``.
        trials: number of trials ``n``.
        alpha: one-sided error probability in ``(0, 1)``.

    Returns:
        The upper confidence bound on the success probability (1 when ``k = n``).
    """
    _check_counts(successes, trials)
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    if successes == trials:
        return 1.0
    # P[Bin(n, p) <= k] = 1 - P[Bin(n, p) >= k + 1] decreases in p: bisect on its complement
    return _bisect_increasing(lambda p: binomial_sf(successes + 1, trials, p), 1.0 - alpha)


def _clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided lower bound: the ``p`` with ``P[Bin(n, p) >= k] = alpha`` (0 when ``k = 0``)."""
    if successes == 0:
        return 0.0
    return _bisect_increasing(lambda p: binomial_sf(successes, trials, p), alpha)


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson ("exact") confidence interval for a binomial proportion.

    Args:
        successes: observed successes ``k``.
        trials: number of trials ``n``.
        confidence: coverage of the interval, in ``(0, 1)``.

    Returns:
        ``(lower, upper)`` with ``P[lower <= p <= upper] >= confidence``.

    Raises:
        ConfigError: when the counts or the confidence are invalid.

    Example:
        >>> lo, hi = clopper_pearson(0, 10)
        >>> lo, round(hi, 4)
        (0.0, 0.3085)
    """
    _check_counts(successes, trials)
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    alpha = (1.0 - confidence) / 2.0
    lower = _clopper_pearson_lower(successes, trials, alpha)
    upper = clopper_pearson_upper(successes, trials, alpha)
    return lower, upper


def epsilon_lower_bound_clopper_pearson(
    tp: int, fp: int, tn: int, fn: int, delta: float, confidence: float = 0.95
) -> float:
    """An (epsilon, delta)-DP lower bound from one membership test's confusion matrix.

    An (epsilon, delta)-DP mechanism forces every test to satisfy
    ``FPR + e^epsilon * FNR >= 1 - delta`` and ``FNR + e^epsilon * FPR >= 1 - delta``
    (Kairouz et al. 2015). The rates are replaced by one-sided Clopper-Pearson upper
    bounds, each at level ``(1 - confidence) / 2``, so the returned epsilon is a lower bound
    with probability at least ``confidence`` *when the trials are independent* (as in
    Jagielski et al. 2020 and Nasr et al. 2021, which train one model per trial).

    Args:
        tp: members guessed "member".
        fp: non-members guessed "member".
        tn: non-members guessed "non-member".
        fn: members guessed "non-member".
        delta: the delta of the audited guarantee, in ``[0, 1)``.
        confidence: joint confidence of the two rate bounds.

    Returns:
        The empirical epsilon lower bound, >= 0.

    Raises:
        ConfigError: when a count is negative, a class is empty, or delta/confidence is
            out of range.

    Example:
        >>> round(epsilon_lower_bound_clopper_pearson(50, 0, 50, 0, 0.0), 2)
        2.57
    """
    if min(tp, fp, tn, fn) < 0:
        raise ConfigError("confusion-matrix counts must be >= 0")
    if tp + fn == 0 or fp + tn == 0:
        raise ConfigError("need at least one member and one non-member")
    if not 0.0 <= delta < 1.0:
        raise ConfigError(f"delta must be in [0, 1), got {delta}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    alpha = (1.0 - confidence) / 2.0
    fpr_hi = clopper_pearson_upper(fp, fp + tn, alpha)
    fnr_hi = clopper_pearson_upper(fn, fn + tp, alpha)
    candidates = [0.0]
    for num, den in ((1.0 - delta - fpr_hi, fnr_hi), (1.0 - delta - fnr_hi, fpr_hi)):
        if num > 0.0 and den > 0.0:
            candidates.append(math.log(num / den))
    return max(candidates)
