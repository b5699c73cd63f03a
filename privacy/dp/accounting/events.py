"""The vocabulary of privacy accounting: round events, results and their checks.

A :class:`RoundEvent` is what the coordinator records per round of DP-FedAvg; a
:class:`RecordLevelRound` what a device records per round of DP-SGD; an
:class:`EpsilonResult` what an accountant answers. Pure data, no accounting library.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

from fedpers.privacy.errors import ConfigError, PrivacyAccountingError

__all__ = [
    "AccountantName",
    "CrossCheck",
    "EpsilonResult",
    "RecordLevelRound",
    "RoundEvent",
    "Sampling",
    "default_delta",
]

Sampling = Literal["poisson", "fixed"]
AccountantName = Literal["rdp", "prv"]
ACCOUNTANT_NAMES: tuple[AccountantName, ...] = ("rdp", "prv")
"""The accountants :func:`~fedpers.privacy.dp.accounting.create_accountant` knows."""

ADD_OR_REMOVE = "add_or_remove_one"
REPLACE_ONE = "replace_one"


def default_delta(num_devices: int) -> float:
    """The default delta ``0.1 / N`` for ``N`` devices (well below ``1 / N``).

    Raises:
        ConfigError: when ``num_devices`` is not positive.
    """
    if num_devices <= 0:
        raise ConfigError(f"num_devices must be positive, got {num_devices}")
    return 0.1 / num_devices


def check_delta(delta: float) -> None:
    """Refuse a delta outside ``(0, 1)``.

    Raises:
        ConfigError: when ``delta`` is not in ``(0, 1)``.
    """
    if not (math.isfinite(delta) and 0 < delta < 1):
        raise ConfigError(f"delta must be in (0, 1), got {delta}")


def check_accountant_name(accountant: str) -> None:
    """Refuse an accountant name that is not ``"rdp"`` or ``"prv"``.

    Raises:
        ConfigError: for an unknown name.
    """
    if accountant not in ACCOUNTANT_NAMES:
        raise ConfigError(f"unknown accountant {accountant!r}; known: {sorted(ACCOUNTANT_NAMES)}")


@dataclass(frozen=True)
class RoundEvent:
    """One or more identical rounds of the (subsampled) Gaussian mechanism.

    Build with :meth:`poisson` or :meth:`fixed`.

    Attributes:
        noise_multiplier: ``sigma``, noise standard deviation over the clip norm
            (with adaptive clipping: the combined multiplier, see
            :func:`~fedpers.privacy.dp.adaptive.combined_noise_multiplier`). 0: non-private.
        sampling: ``"poisson"`` or ``"fixed"``.
        sample_rate: ``q`` (Poisson) or ``m / N`` (fixed), in ``[0, 1]``.
        population: ``N`` for fixed cohorts, else ``None``.
        cohort: ``m`` for fixed cohorts (the number of devices *drawn*, whether or not
            they all reported), else ``None``.
        count: how many such rounds.
    """

    noise_multiplier: float
    sampling: Sampling = "poisson"
    sample_rate: float = 1.0
    population: int | None = None
    cohort: int | None = None
    count: int = 1

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise ConfigError(
                f"noise_multiplier must be finite and >= 0, got {self.noise_multiplier}"
            )
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ConfigError(f"count must be a positive int, got {self.count!r}")
        if self.sampling == "poisson":
            if not (math.isfinite(self.sample_rate) and 0 <= self.sample_rate <= 1):
                raise ConfigError(f"sample_rate must be in [0, 1], got {self.sample_rate}")
            if self.population is not None or self.cohort is not None:
                raise ConfigError("population and cohort are only for fixed-size cohorts")
        elif self.sampling == "fixed":
            if self.population is None or self.cohort is None:
                raise ConfigError("fixed-size cohorts need population and cohort")
            if not 0 <= self.cohort <= self.population or self.population < 1:
                raise ConfigError(
                    f"need 0 <= cohort <= population, got {self.cohort} of {self.population}"
                )
            if not math.isclose(self.sample_rate, self.cohort / self.population, rel_tol=1e-9):
                raise ConfigError(
                    f"sample_rate {self.sample_rate} != cohort / population "
                    f"= {self.cohort / self.population}"
                )
        else:
            raise ConfigError(f"sampling must be 'poisson' or 'fixed', got {self.sampling!r}")

    @classmethod
    def poisson(cls, noise_multiplier: float, sample_rate: float, count: int = 1) -> RoundEvent:
        """Rounds in which each device joined independently with probability ``q``."""
        return cls(noise_multiplier, "poisson", float(sample_rate), None, None, count)

    @classmethod
    def fixed(
        cls, noise_multiplier: float, population: int, cohort: int, count: int = 1
    ) -> RoundEvent:
        """Rounds with ``cohort`` of ``population`` devices drawn without replacement."""
        if population < 1:
            raise ConfigError(f"population must be positive, got {population}")
        return cls(noise_multiplier, "fixed", cohort / population, population, cohort, count)

    @property
    def kind(self) -> Literal["none", "gaussian", "poisson", "wor"]:
        """How the event is accounted.

        ``"none"`` (nobody sampled: no privacy cost), ``"gaussian"`` (everyone, no
        sampling), ``"poisson"`` or ``"wor"`` (sampling without replacement).
        """
        if self.sample_rate == 0:
            return "none"
        if self.sample_rate == 1:
            return "gaussian"
        return "poisson" if self.sampling == "poisson" else "wor"

    def same_mechanism(self, other: RoundEvent) -> bool:
        """Whether ``other`` is the same mechanism (everything but ``count`` equal)."""
        return (
            self.noise_multiplier == other.noise_multiplier
            and self.sampling == other.sampling
            and self.sample_rate == other.sample_rate
            and self.population == other.population
            and self.cohort == other.cohort
        )

    def with_count(self, count: int) -> RoundEvent:
        """The same mechanism repeated ``count`` times."""
        return RoundEvent(
            self.noise_multiplier,
            self.sampling,
            self.sample_rate,
            self.population,
            self.cohort,
            count,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (see :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoundEvent:
        """Rebuild an event from :meth:`to_dict` output.

        Raises:
            PrivacyAccountingError: when the dict is not a valid event.
        """
        try:
            return cls(
                noise_multiplier=float(data["noise_multiplier"]),
                sampling=data["sampling"],
                sample_rate=float(data["sample_rate"]),
                population=None if data.get("population") is None else int(data["population"]),
                cohort=None if data.get("cohort") is None else int(data["cohort"]),
                count=int(data["count"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PrivacyAccountingError(f"invalid round event {dict(data)!r}: {exc}") from exc


class RecordLevelRound(NamedTuple):
    """One device round of DP-SGD, as persisted in the device's ledger.

    Attributes:
        noise_multiplier: ``sigma`` of DP-SGD (noise std over the per-example clip norm).
        sample_rate: Poisson rate of the device's examples per step.
        steps: number of DP-SGD steps in the round.
    """

    noise_multiplier: float
    sample_rate: float
    steps: int


@dataclass(frozen=True)
class EpsilonResult:
    """An accounted privacy guarantee.

    Attributes:
        epsilon: the epsilon spent; ``inf`` when not private.
        delta: the delta it holds for.
        private: ``False`` when any accounted round had no noise; never paired with a
            finite epsilon.
        accountant: which implementation computed it (``"opacus.rdp"``, ``"opacus.prv"``,
            ``"dp_accounting.rdp"`` or ``"none"`` for an empty or non-private history).
        adjacency: ``"add_or_remove_one"`` or ``"replace_one"`` (fixed-size cohorts).
        sampling: ``"poisson"``, ``"fixed"``, ``"none"`` (every device every round).
        rounds: number of rounds accounted.
        method: one sentence on how the figure was obtained.
    """

    epsilon: float
    delta: float
    private: bool
    accountant: str
    adjacency: str
    sampling: str
    rounds: int
    method: str

    def to_json(self) -> dict[str, Any]:
        """JSON view: ``epsilon`` is ``null`` when not private (never ``Infinity``)."""
        data = asdict(self)
        data["epsilon"] = self.epsilon if self.private else None
        return data


class CrossCheck(NamedTuple):
    """Epsilon from the reporting accountant next to an independent library's.

    Attributes:
        epsilon: the reported figure (as :func:`epsilon_from_history` computes it).
        reference_epsilon: Google dp-accounting's figure for the same history.
        relative_difference: ``|epsilon - reference| / reference`` (0 when both are inf).
        method: the reporting implementation.
        reference_method: the reference implementation.
    """

    epsilon: float
    reference_epsilon: float
    relative_difference: float
    method: str
    reference_method: str


def merge_events(events: Sequence[RoundEvent]) -> list[RoundEvent]:
    """Run-length compress ``events``: neighbours of the same mechanism add their counts."""
    merged: list[RoundEvent] = []
    for event in events:
        if merged and merged[-1].same_mechanism(event):
            merged[-1] = merged[-1].with_count(merged[-1].count + event.count)
        else:
            merged.append(event)
    return merged


def identical_rounds(
    noise_multiplier: float,
    sample_rate: float | None,
    rounds: int,
    sampling: Sampling,
    population: int | None,
    cohort: int | None,
) -> RoundEvent:
    """The event of ``rounds`` identical rounds, from the arguments of ``epsilon_for``.

    Raises:
        ConfigError: when the arguments do not describe one sampling scheme.
    """
    if sampling == "fixed":
        if population is None or cohort is None:
            raise ConfigError("sampling='fixed' needs population and cohort")
        if sample_rate is not None and not math.isclose(
            sample_rate, cohort / population, rel_tol=1e-9
        ):
            raise ConfigError(
                f"sample_rate {sample_rate} contradicts cohort / population = {cohort / population}"
            )
        return RoundEvent.fixed(noise_multiplier, population, cohort, rounds)
    if sampling != "poisson":
        raise ConfigError(f"sampling must be 'poisson' or 'fixed', got {sampling!r}")
    if sample_rate is None:
        raise ConfigError("sampling='poisson' needs sample_rate")
    if population is not None or cohort is not None:
        raise ConfigError("population and cohort are only for sampling='fixed'")
    return RoundEvent.poisson(noise_multiplier, sample_rate, rounds)
