"""Privacy accounting: pure epsilon maths, thin stateful accountants and ledgers.

Two guarantees are accounted here (see docs/privacy-model.md):

- **user-level DP** of the published global models: one :class:`RoundEvent` per round
  of DP-FedAvg (noise multiplier ``sigma`` on the sum of updates clipped to ``C``, and how
  the round's devices were sampled);
- **record-level DP** of a device's DP-SGD: one :class:`RecordLevelRound`
  ``(noise_multiplier, sample_rate, steps)`` per local round, composed by
  :func:`record_level_epsilon`.

How each sampling scheme is accounted (the result says which, in
:attr:`EpsilonResult.method`):

- **Poisson sampling** with rate ``q < 1`` (each device joins independently): the
  Poisson-subsampled Gaussian mechanism under add/remove-one-user adjacency, accounted
  with Opacus's RDP accountant (``accountant="rdp"``, the reported figure) or PRV
  accountant (``"prv"``, tighter). Amplification by subsampling applies.
- **No sampling** (``q = 1``, or a fixed cohort of all ``N`` devices): every device is in
  every round, so the round is the plain Gaussian mechanism with sensitivity ``C``
  (add/remove adjacency); composition over rounds, no amplification.
- **Fixed-size cohorts** of ``m < N`` devices drawn without replacement: accounted the way
  they were drawn, with Google's dp-accounting RDP accountant and its
  ``SampledWithoutReplacementDpEvent`` (Wang, Balle, Kasiviswanathan 2019). That analysis
  holds under *replace-one* adjacency (``N`` is public, one user's data is swapped for
  another's); replacing one device's update moves the sum by up to ``2C``, so the
  Gaussian event's noise multiplier is ``sigma / 2``. A history that contains such
  rounds is accounted entirely under replace-one (its unsampled rounds as Gaussian
  events with ``sigma / 2``). This is markedly more expensive than Poisson sampling at the
  same rate; prefer Poisson sampling when epsilon matters. Only the RDP accountant
  supports it; mixing Poisson rounds (``q < 1``) with fixed-cohort rounds is refused.

A round with ``sigma = 0`` is not private: any history containing one has
``epsilon = inf`` and ``private = False``; it is never reported with a finite epsilon.

Opacus's accountants only record history; here too the stateful classes
(:class:`UserLevelAccountant`, :class:`PrivacyLedger`) only record events and call the pure
functions (:func:`epsilon_from_history`, :func:`epsilon_for`,
:func:`solve_noise_multiplier`, :func:`cross_check_epsilon`).

The modules, one idea each: :mod:`.events` (round events and results), :mod:`.backends`
(Opacus and dp-accounting behind one call each), :mod:`.analysis` (the pure functions),
:mod:`.record_level` (a device's DP-SGD), :mod:`.accountants` (stateful accountants and
their registry), :mod:`.ledger` (a run's ledger with budget checks).
"""

from fedpers.privacy.dp.accounting.accountants import (
    ACCOUNTANTS,
    PRVUserLevelAccountant,
    RDPUserLevelAccountant,
    UserLevelAccountant,
    create_accountant,
)
from fedpers.privacy.dp.accounting.analysis import (
    cross_check_epsilon,
    cross_check_history,
    epsilon_for,
    epsilon_from_history,
    solve_noise_multiplier,
)
from fedpers.privacy.dp.accounting.events import (
    AccountantName,
    CrossCheck,
    EpsilonResult,
    RecordLevelRound,
    RoundEvent,
    Sampling,
    default_delta,
)
from fedpers.privacy.dp.accounting.ledger import PrivacyLedger
from fedpers.privacy.dp.accounting.record_level import (
    record_level_epsilon,
    record_level_would_exceed,
)

__all__ = [
    "ACCOUNTANTS",
    "AccountantName",
    "CrossCheck",
    "EpsilonResult",
    "PRVUserLevelAccountant",
    "PrivacyLedger",
    "RDPUserLevelAccountant",
    "RecordLevelRound",
    "RoundEvent",
    "Sampling",
    "UserLevelAccountant",
    "create_accountant",
    "cross_check_epsilon",
    "cross_check_history",
    "default_delta",
    "epsilon_for",
    "epsilon_from_history",
    "record_level_epsilon",
    "record_level_would_exceed",
    "solve_noise_multiplier",
]
