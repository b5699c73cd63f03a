"""fedpers.privacy.audit: the statistics and the data model of privacy audit reports.

Pure functions only: ROC statistics, Clopper-Pearson bounds, the one-run epsilon lower
bound of Steinke, Nasr and Jagielski (2023) and the update-inspection score. Building a
report from a run directory lives in :mod:`fedpers.simulation.audit.build`.
"""

from fedpers.privacy.audit.inspection import (
    InspectionResult,
    evaluate_item_scores,
    item_row_norms,
)
from fedpers.privacy.audit.one_run import (
    OneRunAudit,
    OneRunGuess,
    one_run_epsilon_from_counts,
    one_run_epsilon_lower_bound,
    one_run_p_value,
)
from fedpers.privacy.audit.report import SCHEMA_VERSION, VERDICT_IDS, AuditReport, Verdict
from fedpers.privacy.audit.schema import report_schema, schema_text, write_schema
from fedpers.privacy.audit.stats import (
    binomial_sf,
    clopper_pearson,
    clopper_pearson_upper,
    epsilon_lower_bound_clopper_pearson,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
)

__all__ = [
    "SCHEMA_VERSION",
    "VERDICT_IDS",
    "AuditReport",
    "InspectionResult",
    "OneRunAudit",
    "OneRunGuess",
    "Verdict",
    "binomial_sf",
    "clopper_pearson",
    "clopper_pearson_upper",
    "epsilon_lower_bound_clopper_pearson",
    "evaluate_item_scores",
    "item_row_norms",
    "one_run_epsilon_from_counts",
    "one_run_epsilon_lower_bound",
    "one_run_p_value",
    "report_schema",
    "roc_auc",
    "roc_curve",
    "schema_text",
    "tpr_at_fpr",
    "write_schema",
]
