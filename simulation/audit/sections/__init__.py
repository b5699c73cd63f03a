"""Report sections 1-5 and 8 from what a run recorded, and the verdicts they carry.

Each ``*_section`` function turns :class:`~fedpers.simulation.audit.sources.RunSources`
(or plain rows) into one TypedDict of :mod:`fedpers.privacy.audit.report`; each
``*_verdict`` function turns a section into one plain-language :class:`Verdict`. Nothing
here trains a model or reads a file: the attacks live in
:mod:`fedpers.simulation.audit.attacks`, reading in :mod:`fedpers.simulation.audit.sources`.

One module per section: :mod:`.guarantee` (1), :mod:`.devices` (2),
:mod:`.secure_aggregation` (3), :mod:`.egress` (4), :mod:`.consent` (5) and
:mod:`.utility` (8); :mod:`.common` holds what they share (:func:`verdict_of`,
:func:`summary_stats`). Every public name is importable from this package.
"""

from fedpers.simulation.audit.sections.common import summary_stats, verdict_of
from fedpers.simulation.audit.sections.consent import (
    consent_section,
    consent_verdict,
    erasure_verdict,
)
from fedpers.simulation.audit.sections.devices import devices_section
from fedpers.simulation.audit.sections.egress import (
    SHARED_ARRAY_NAMES,
    classify_egress,
    egress_section,
    egress_verdict,
    shared_array_shapes,
)
from fedpers.simulation.audit.sections.guarantee import (
    ACCOUNTANT_TOLERANCE,
    accountants_verdict,
    budget_verdict,
    guarantee_section,
    round_events,
)
from fedpers.simulation.audit.sections.secure_aggregation import (
    secure_aggregation_section,
    secure_aggregation_verdict,
)
from fedpers.simulation.audit.sections.utility import utility_points

__all__ = [
    "ACCOUNTANT_TOLERANCE",
    "SHARED_ARRAY_NAMES",
    "accountants_verdict",
    "budget_verdict",
    "classify_egress",
    "consent_section",
    "consent_verdict",
    "devices_section",
    "egress_section",
    "egress_verdict",
    "erasure_verdict",
    "guarantee_section",
    "round_events",
    "secure_aggregation_section",
    "secure_aggregation_verdict",
    "shared_array_shapes",
    "summary_stats",
    "utility_points",
    "verdict_of",
]
