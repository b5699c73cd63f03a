"""The two accounting libraries behind one call each: Opacus and Google's dp-accounting.

Opacus's RDP and PRV accountants report Poisson-sampled and unsampled histories;
dp-accounting reports fixed-size cohorts (sampling without replacement) and is the
independent reference of the cross-checks. Both are imported lazily (they are heavy).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np

from fedpers.privacy.dp.accounting.events import REPLACE_ONE, RoundEvent
from fedpers.privacy.errors import PrivacyAccountingError

__all__ = ["dp_accounting_epsilon", "opacus_epsilon"]

_PRV_EPS_ERROR = 0.01
_PLD_DISCRETIZATION = 1e-3


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    """Silence dp-accounting's convergence warnings (it drops the affected orders)."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def opacus_epsilon(events: Sequence[RoundEvent], delta: float, accountant: str) -> float:
    """Epsilon of ``events`` (add/remove adjacency) from Opacus's ``"rdp"`` or ``"prv"`` accountant.

    Raises:
        PrivacyAccountingError: when Opacus fails.
    """
    from opacus.accountants import PRVAccountant, RDPAccountant

    history = [(e.noise_multiplier, e.sample_rate, e.count) for e in events]
    try:
        if accountant == "rdp":
            rdp = RDPAccountant()
            rdp.history = history
            return float(rdp.get_epsilon(delta=delta))
        prv = PRVAccountant()
        prv.history = history
        with np.errstate(divide="ignore", invalid="ignore"):  # log(1 - q) at q = 1
            return float(prv.get_epsilon(delta=delta, eps_error=_PRV_EPS_ERROR))
    except (ValueError, ArithmeticError, RuntimeError) as exc:
        raise PrivacyAccountingError(f"Opacus {accountant} accountant failed: {exc}") from exc


def _dp_accounting_events(events: Sequence[RoundEvent], adjacency: str) -> list[Any]:
    import dp_accounting

    out: list[Any] = []
    for e in events:
        if adjacency == REPLACE_ONE:
            gaussian = dp_accounting.GaussianDpEvent(e.noise_multiplier / 2)
            if e.kind == "wor":
                if e.population is None or e.cohort is None:
                    raise PrivacyAccountingError(f"fixed-cohort event {e} has no population")
                event = dp_accounting.SampledWithoutReplacementDpEvent(
                    e.population, e.cohort, gaussian
                )
            else:
                event = gaussian
        else:
            gaussian = dp_accounting.GaussianDpEvent(e.noise_multiplier)
            event = (
                gaussian
                if e.kind == "gaussian"
                else dp_accounting.PoissonSampledDpEvent(e.sample_rate, gaussian)
            )
        out.append(dp_accounting.SelfComposedDpEvent(event, e.count))
    return out


def dp_accounting_epsilon(
    events: Sequence[RoundEvent], delta: float, adjacency: str, kind: Literal["rdp", "pld"]
) -> float:
    """Epsilon of ``events`` from dp-accounting's RDP or PLD accountant under ``adjacency``.

    Raises:
        PrivacyAccountingError: when dp-accounting fails.
    """
    import dp_accounting
    from dp_accounting.pld import PLDAccountant
    from dp_accounting.rdp import RdpAccountant

    relation = (
        dp_accounting.NeighboringRelation.REPLACE_ONE
        if adjacency == REPLACE_ONE
        else dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    )
    composed = dp_accounting.ComposedDpEvent(_dp_accounting_events(events, adjacency))
    try:
        with _quiet_absl():
            if kind == "rdp":
                rdp = RdpAccountant(neighboring_relation=relation)
                rdp.compose(composed)
                return float(rdp.get_epsilon(delta))
            pld = PLDAccountant(relation, value_discretization_interval=_PLD_DISCRETIZATION)
            pld.compose(composed)
            return float(pld.get_epsilon(delta))
    except (ValueError, ArithmeticError, RuntimeError, TypeError) as exc:
        raise PrivacyAccountingError(f"dp-accounting {kind} failed: {exc}") from exc
