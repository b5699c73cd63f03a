"""Render an audit report as one self-contained HTML page.

Everything the page needs is inside it: CSS inline, plots as base64 PNG ``data:`` URIs
drawn with matplotlib's Agg canvas (no pyplot global state, no display), no scripts,
fonts, links or images fetched from anywhere. The page reads top-down the way a privacy
officer would: the verdicts in plain language first, then one section per topic with
the figures behind each verdict.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedpers.privacy.audit.report import AuditReport, Verdict

__all__ = ["render_html"]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0;
       color: #1d232a; background: #f6f7f9; line-height: 1.45; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
h1 { font-size: 1.7em; margin: 0.2em 0; }
h2 { font-size: 1.3em; border-bottom: 2px solid #e3e6ea; padding-bottom: 4px; margin-top: 2em; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
.meta { color: #5b6570; font-size: 0.9em; }
.banner { padding: 14px 18px; border-radius: 6px; font-size: 1.15em; font-weight: 600;
          margin: 16px 0; }
.banner.pass { background: #e6f4ea; color: #1e6b34; border: 1px solid #9fd3ad; }
.banner.fail { background: #fdecea; color: #a4231a; border: 1px solid #f1a8a1; }
.plain { background: #f3f6fb; border-left: 4px solid #3d6fb6; padding: 10px 16px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.92em; }
th, td { border: 1px solid #dde1e6; padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: #f0f2f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.status { font-weight: 700; white-space: nowrap; }
.status.pass { color: #1e6b34; } .status.fail { color: #a4231a; }
.status.not_applicable { color: #6b7580; }
.figs { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; } figure img { max-width: 100%; border: 1px solid #e3e6ea; }
figcaption { font-size: 0.85em; color: #5b6570; }
.note { color: #5b6570; font-size: 0.9em; }
code { background: #f0f2f5; padding: 0 3px; border-radius: 3px; }
"""

_STATUS_TEXT = {"pass": "PASS", "fail": "FAIL", "not_applicable": "n/a"}
_METRICS = ("hr10_sampled", "ndcg10_sampled", "hr10_full", "ndcg10_full")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: object, digits: int = 4) -> str:
    """A number for a table cell: ``-`` for missing, scientific for tiny values."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.2e}"
        return f"{value:.{digits}g}"
    return str(value)


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            is_num = isinstance(cell, int | float) and not isinstance(cell, bool)
            cls = ' class="num"' if is_num else ""
            cells.append(f"<td{cls}>{_e(_fmt(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _kv(rows: Iterable[tuple[str, object]]) -> str:
    return _table(("item", "value"), rows)


def _figure(
    draw: Callable[[Axes], None], caption: str, width: float = 5.0, integer_x: bool = True
) -> str:
    """Draw on a fresh Agg figure and embed it as a base64 PNG."""
    fig = Figure(figsize=(width, 3.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    draw(ax)
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (
        f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _status(status: str) -> str:
    return f'<span class="status {_e(status)}">{_STATUS_TEXT.get(status, status)}</span>'


def _verdicts(verdicts: Sequence[Verdict]) -> str:
    rows = "".join(
        f"<tr><td>{_status(v['status'])}</td><td>{_e(v['title'])}</td>"
        f"<td>{_e(v['summary'])}</td></tr>"
        for v in verdicts
    )
    return f"<table><tr><th>verdict</th><th>check</th><th>finding</th></tr>{rows}</table>"


def _plain_words(report: AuditReport) -> str:
    g = report["guarantee"]
    if g["private"] and g["epsilon"] is not None:
        unit = {"user": "each user's whole history", "record": "each single event"}.get(
            g["unit_of_privacy"], "each user's history and each event"
        )
        claim = (
            f"The published model is differentially private: it protects {unit} with "
            f"epsilon = {_fmt(g['epsilon'], 3)} at delta = {_fmt(g['delta'], 3)} "
            f"(accountant: {_e(g['accountant'])}). Smaller epsilon means stronger protection; "
            "at this level an observer of the model can gain at most a bounded amount of "
            "certainty about whether any one person took part."
        )
    else:
        claim = (
            "This run is NOT differentially private: no epsilon applies, and the published "
            "model may reveal which items individual users interacted with."
        )
    failed = [v for v in report["verdicts"] if v["status"] == "fail"]
    tail = (
        "Every check that applies to this run passed."
        if not failed
        else f"{len(failed)} check(s) failed: " + "; ".join(v["title"] for v in failed) + "."
    )
    return f'<p class="plain">{_e(claim)} {_e(tail)}</p>'


def _guarantee(report: AuditReport) -> str:
    g = report["guarantee"]
    parts = [
        _kv(
            [
                ("differentially private", g["private"]),
                ("unit of privacy", g["unit_of_privacy"]),
                ("epsilon", g["epsilon"]),
                ("delta", g["delta"]),
                ("epsilon budget", g["epsilon_budget"]),
                ("accountant", g["accountant"]),
                ("noise multiplier (sigma)", g["noise_multiplier"]),
                ("clipping", g["clipping"]["mode"]),
                ("clip norm: first / last round", _pair(g["clipping"])),
                ("mean fraction of updates clipped", g["clipping"]["mean_clipped_fraction"]),
                ("sampling", g["sampling"]["method"]),
                ("sampling rate q", g["sampling"]["rate"]),
                ("mean devices sampled per round", g["sampling"]["mean_sampled"]),
                ("rounds accounted", g["rounds"]),
            ]
        )
    ]
    if g["cross_checks"]:
        parts.append("<h3>Cross-check by a second accountant</h3>")
        parts.append(
            _table(
                ("accountant", "epsilon", "reported", "relative difference", "agrees", "how"),
                [
                    (
                        c["accountant"],
                        c["epsilon"],
                        c["reported_epsilon"],
                        c["relative_difference"],
                        c["agrees"],
                        c["detail"],
                    )
                    for c in g["cross_checks"]
                ],
            )
        )
    points = g["epsilon_by_round"]
    if points:
        budget = g["epsilon_budget"]

        def draw(ax: Axes) -> None:
            ax.plot([p["round"] for p in points], [p["epsilon"] for p in points], marker=".")
            if budget is not None:
                ax.axhline(budget, color="#a4231a", linestyle="--", label="budget")
                ax.legend()
            ax.set_xlabel("round")
            ax.set_ylabel("epsilon")

        parts.append(_figure(draw, "Epsilon spent after each round"))
    parts.extend(f'<p class="note">{_e(n)}</p>' for n in g["notes"])
    return "".join(parts)


def _pair(clipping: Any) -> str:
    return f"{_fmt(clipping['initial_norm'])} / {_fmt(clipping['final_norm'])}"


def _devices(report: AuditReport) -> str:
    d = report["devices"]
    parts = [
        _kv(
            [
                ("devices in the federation", d["num_devices"]),
                ("devices that took part at least once", d["devices_participated"]),
                ("refusals for missing consent (device-rounds)", len(d["consent_refusals"])),
                ("budget exhaustion events", len(d["budget_exhaustion_events"])),
                ("record-level epsilon source", d["ledger_source"]),
            ]
        )
    ]
    hist = d["participation_histogram"]
    if hist:

        def draw(ax: Axes) -> None:
            ax.bar([h["rounds_participated"] for h in hist], [h["devices"] for h in hist])
            ax.set_xlabel("rounds a device took part in")
            ax.set_ylabel("devices")

        parts.append(_figure(draw, "Participation histogram"))
    if d["drop_reasons"]:
        parts.append("<h3>Devices that sent no update, by reason</h3>")
        parts.append(_table(("reason", "device-rounds"), sorted(d["drop_reasons"].items())))
    eps = d["record_level_epsilon"]
    if eps is not None:
        parts.append("<h3>Record-level epsilon in the device ledgers</h3>")
        parts.append(
            _table(
                ("devices", "min", "median", "mean", "p90", "max"),
                [(eps["count"], eps["min"], eps["median"], eps["mean"], eps["p90"], eps["max"])],
            )
        )
    events = d["budget_exhaustion_events"][:20] + d["consent_refusals"][:20]
    if events:
        parts.append("<h3>Refusals and budget events (first 20 of each)</h3>")
        parts.append(
            _table(
                ("round", "device", "status", "reason"),
                [(e["round"], e["device_id"], e["status"], e["reason"]) for e in events],
            )
        )
    return "".join(parts)


def _secagg(report: AuditReport) -> str:
    s = report["secure_aggregation"]
    if not s["enabled"]:
        return (
            "<p>Secure aggregation was <b>off</b>: the coordinator saw each device's update "
            "(clipped, when the run clips) in plaintext. Any differential-privacy guarantee "
            f"covers the published model, not what the coordinator saw. {_e(s['evidence'])}</p>"
        )
    parts = [
        _kv(
            [
                ("scheme", s["scheme"]),
                ("security level (bits)", s["security_bits"]),
                ("bytes per device per round", s["bytes_per_device"]),
                ("coordinator held a secret key", s["coordinator_held_secret_key"]),
            ]
        ),
        "<h3>Key custody</h3>",
        _table(
            ("component", "keys"),
            [(k["component"], ", ".join(k["keys"])) for k in s["key_custody"]],
        ),
        "<h3>Parameters</h3>",
        _kv(sorted((k, _short(v)) for k, v in s["parameters"].items())),
        f"<p>{_e(s['evidence'])}</p>",
    ]
    return "".join(parts)


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _egress(report: AuditReport) -> str:
    e = report["egress"]
    parts = [
        _kv(
            [
                ("payload entries recorded", e["payload_entries"]),
                ("bytes sent by devices", e["total_bytes"]),
                ("violations", len(e["violations"])),
            ]
        ),
        "<h3>Rules applied</h3><ul>",
        "".join(f"<li>{_e(c)}</li>" for c in e["checks"]),
        "</ul><h3>Catalogue</h3>",
        _table(
            (
                "message",
                "record",
                "entry",
                "kind",
                "shape",
                "dtype",
                "payloads",
                "bytes",
                "allowed",
            ),
            [
                (
                    c["message_type"],
                    c["record"],
                    c["name"],
                    c["kind"],
                    "x".join(map(str, c["shape"])) or "scalar",
                    c["dtype"],
                    c["count"],
                    c["bytes_total"],
                    c["allowed"],
                )
                for c in e["catalogue"]
            ],
        ),
    ]
    if e["violations"]:
        parts.append("<h3>Violations (first 50)</h3>")
        parts.append(
            _table(
                ("round", "device", "record", "entry", "shape", "dtype", "reason"),
                [
                    (
                        v["round"],
                        v["device_id"],
                        v["record"],
                        v["name"],
                        str(v["shape"]),
                        v["dtype"],
                        v["reason"],
                    )
                    for v in e["violations"][:50]
                ],
            )
        )
    return "".join(parts)


def _consent(report: AuditReport) -> str:
    c = report["consent"]
    rounds = c["rounds"]
    parts = [
        _kv(
            [
                ("consent source", c["source"]),
                ("device-rounds aggregated without P10", c["non_consenting_participations"]),
                ("erased devices", len(c["erasures"])),
            ]
        )
    ]
    if rounds:

        def draw(ax: Axes) -> None:
            xs = [r["round"] for r in rounds]
            if any(r["consenting"] is not None for r in rounds):
                ax.plot(
                    xs,
                    [r["consenting"] or 0 for r in rounds],
                    linestyle="--",
                    linewidth=2.5,
                    label="consenting (P10)",
                )
            ax.plot(xs, [r["participating"] for r in rounds], label="participating")
            ax.set_xlabel("round")
            ax.set_ylabel("devices")
            ax.legend()

        parts.append(_figure(draw, "Consenting vs participating devices per round"))
    if c["erasures"]:
        parts.append(
            _table(
                ("device", "erased after round", "rounds taken part in after erasure"),
                [
                    (
                        r["device_id"],
                        r["erased_after_round"],
                        ", ".join(map(str, r["rounds_after_erasure"])) or "none",
                    )
                    for r in c["erasures"]
                ],
            )
        )
    return "".join(parts)


def _inspection(report: AuditReport) -> str:
    u = report["update_inspection"]
    parts = [f"<p>{_e(u['statement'])}</p>"]
    if u["status"] == "measured" and u["scenarios"]:
        parts.append(
            _table(
                (
                    "view of the update",
                    "clip norm",
                    "noise std",
                    "ROC AUC",
                    "TPR @ 1% FPR",
                    "true items in top n",
                    "coordinator sees it",
                ),
                [
                    (
                        s["name"],
                        s["clip_norm"],
                        s["noise_std"],
                        s["auc"],
                        s["tpr_at_1pct_fpr"],
                        f"{s['recovered_in_top']} / {u['n_true']}",
                        s["visible_to_coordinator"],
                    )
                    for s in u["scenarios"]
                ],
            )
        )
        scenarios = u["scenarios"]

        def draw(ax: Axes) -> None:
            ax.bar([s["name"] for s in scenarios], [s["auc"] for s in scenarios], color="#3d6fb6")
            ax.axhline(0.5, color="#6b7580", linestyle="--", label="chance")
            ax.set_ylim(0, 1.05)
            ax.set_ylabel("ROC AUC")
            ax.legend()

        parts.append(
            _figure(draw, "How well item row norms reveal the device's items", integer_x=False)
        )
    return "".join(parts)


def _crafted(report: AuditReport) -> str:
    a = report["crafted_update_audit"]
    parts = [f'<p class="plain">{_e(a["statement"])}</p>']
    if a["status"] != "measured":
        return "".join(parts)
    parts.append(
        _kv(
            [
                ("crafted canary devices", a["canaries"]),
                ("canaries included (each with probability 1/2)", a["canaries_included"]),
                ("noise multiplier sigma", a["noise_multiplier"]),
                ("clip norm C", a["clip_norm"]),
                ("sampling rate", a["sample_rate"]),
                ("rounds", a["rounds"]),
                ("delta", a["delta"]),
                ("wall time (s)", a["seconds"]),
            ]
        )
    )
    parts.append(
        _table(
            (
                "variant",
                "accountant epsilon",
                "exact Gaussian epsilon",
                "estimated epsilon (measured mu)",
                "Clopper-Pearson lower bound",
                "one-run lower bound",
                "ROC AUC",
            ),
            [
                (
                    v["name"],
                    v["accountant_epsilon"],
                    v["exact_gaussian_epsilon"],
                    "n/a"
                    if v["estimated_epsilon"] is None
                    else f"{_fmt(v['estimated_epsilon'])} ({_fmt(v['measured_mu'])})",
                    v["clopper_pearson_epsilon"],
                    f"{_fmt(v['one_run_epsilon'])} ({v['one_run_canaries']} canaries)",
                    v["auc"],
                )
                for v in a["variants"]
            ],
        )
    )
    return "".join(parts)


def _empirical(report: AuditReport) -> str:
    a = report["empirical_audit"]
    parts = [f'<p class="plain">{_e(a["statement"])}</p>']
    if a["status"] != "measured":
        return "".join(parts)
    parts.append(
        _kv(
            [
                ("canary devices", a["canaries"]),
                ("canaries included (each with probability 1/2)", a["canaries_included"]),
                ("planted items per canary", a["items_per_canary"]),
                ("claimed epsilon", a["claimed_epsilon"]),
                ("epsilon of the audit run (accountant)", a["audit_run_epsilon"]),
                ("wall time (s)", a["seconds"]),
                *sorted(
                    (f"configuration: {k}", _fmt(v) if isinstance(v, float) else _short(v))
                    for k, v in a["configuration"].items()
                ),
            ]
        )
    )
    parts.append("<h3>Membership-inference attacks on the published models</h3>")
    parts.append(
        _table(
            ("attack", "what it scores", "ROC AUC", "TPR @ 1% FPR", "TPR @ 0.1% FPR"),
            [
                (
                    t["name"],
                    t["description"],
                    t["auc"],
                    t["tpr_at_1pct_fpr"],
                    t["tpr_at_0_1pct_fpr"],
                )
                for t in a["attacks"]
            ],
        )
    )
    one = a["one_run"]
    if one is not None:
        parts.append("<h3>Empirical epsilon lower bound (one-run auditing)</h3>")
        parts.append(
            _kv(
                [
                    ("attack used", one["attack"]),
                    ("empirical epsilon lower bound", one["epsilon"]),
                    ("confidence", one["confidence"]),
                    ("delta", one["delta"]),
                    ("best k (guesses per side)", one["best"]["k"]),
                    ("correct guesses", f"{one['best']['correct']} / {one['best']['guesses']}"),
                ]
            )
        )
    cp = a["clopper_pearson"]
    if cp is not None:
        parts.append("<h3>Simple bound (Clopper-Pearson, one threshold)</h3>")
        parts.append(
            _kv(
                [
                    ("attack used", cp["attack"]),
                    ("epsilon lower bound", cp["epsilon"]),
                    ("threshold (chosen on the first half)", cp["threshold"]),
                    (
                        "TP / FP / TN / FN (second half)",
                        f"{cp['tp']} / {cp['fp']} / {cp['tn']} / {cp['fn']}",
                    ),
                ]
            )
        )
    attacks = a["attacks"]
    if attacks:

        def draw(ax: Axes) -> None:
            for t in attacks:
                pts = t["roc"]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=t["name"])
            ax.plot([0, 1], [0, 1], color="#6b7580", linestyle="--", label="chance")
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
            ax.legend()

        parts.append(_figure(draw, "ROC curves of the canary membership attacks", integer_x=False))
    return "".join(parts)


def _utility(report: AuditReport) -> str:
    u = report["utility"]
    parts = [
        "<h3>Final metrics of the published model</h3>",
        _table(
            ("metric", "private run", "non-private reference"),
            [
                (m, u["final"].get(m), u["non_private_reference"]["metrics"].get(m))
                for m in _METRICS
            ],
        ),
        f'<p class="note">Non-private reference: {_e(u["non_private_reference"]["status"])}: '
        f"{_e(u['non_private_reference']['source'])}</p>",
    ]
    points = u["by_round"]
    if points:

        def draw(ax: Axes) -> None:
            xs = [p["round"] for p in points]
            for m in _METRICS:
                ys = [p[m] for p in points]  # type: ignore[literal-required]
                if any(y is not None for y in ys):
                    ax.plot(xs, [math.nan if y is None else y for y in ys], marker=".", label=m)
            ax.set_xlabel("round")
            ax.legend(fontsize=8)

        parts.append(_figure(draw, "Recommendation quality after each round"))
    if u["groups"]:
        parts.append("<h3>Per-group metrics (fairness)</h3>")
        parts.append(
            _table(
                ("attribute", "group", "users", *_METRICS),
                [
                    (
                        g["attribute"],
                        g["group"],
                        g["users"],
                        g["hr10_sampled"],
                        g["ndcg10_sampled"],
                        g["hr10_full"],
                        g["ndcg10_full"],
                    )
                    for g in u["groups"]
                ],
            )
        )
        parts.append(
            _table(
                ("attribute", "metric", "best group", "worst group", "gap"),
                [
                    (g["attribute"], g["metric"], g["best_group"], g["worst_group"], g["gap"])
                    for g in u["gaps"]
                ],
            )
        )
    parts.append(f'<p class="note">{_e(u["group_source"])}</p>')
    return "".join(parts)


_LIMITS = (
    "What this report does not measure: the empirical audit gives a lower bound from one "
    "attack; a low value does not prove privacy, only a value above the claim proves a bug. "
    "Participation itself, update norms and the metrics devices report are visible to the "
    "coordinator and are not protected by differential privacy. Secure aggregation relies on "
    "the key holder not colluding with the coordinator. See docs/audit.md."
)


def render_html(report: AuditReport) -> str:
    """The report as a self-contained HTML page (no external resources).

    Args:
        report: a complete audit report.

    Returns:
        The HTML text.
    """
    run = report["run"]
    overall = report["overall"]
    banner = (
        "All applicable privacy checks passed."
        if overall == "pass"
        else "At least one privacy check FAILED: see the verdicts below."
    )
    sections = [
        ("1. Privacy guarantee", _guarantee(report)),
        ("2. Devices", _devices(report)),
        ("3. Secure aggregation", _secagg(report)),
        ("4. Data egress", _egress(report)),
        ("5. Consent and erasure", _consent(report)),
        ("6. Update-inspection attack", _inspection(report)),
        ("7. Empirical audit with canaries", _empirical(report)),
        ("8. Crafted-update audit of the mechanism", _crafted(report)),
        ("9. Utility and fairness", _utility(report)),
    ]
    body = "".join(
        f"<section><h2>{_e(title)}</h2>{content}</section>" for title, content in sections
    )
    dataset = f"dataset {_e(run['dataset'])} · " if run["dataset"] else ""
    meta = (
        f'<p class="meta">Run <code>{_e(run["run_dir"])}</code> · {dataset}'
        f"{_e(_fmt(run['num_devices']))} devices · {run['rounds_completed']} rounds completed · "
        f"{_e(run['label'])}<br>Generated {_e(report['generated_at'])} by fedpers "
        f"{_e(report['fedpers_version'])} · report format {_e(report['schema_version'])}</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Privacy audit: {_e(run['run_dir'])}</title><style>{_CSS}</style></head>"
        "<body><main>"
        "<h1>Privacy audit report</h1>"
        f"{meta}"
        f'<div class="banner {_e(overall)}">{_e(banner)}</div>'
        f"{_plain_words(report)}"
        "<h2>Verdicts</h2>"
        f"{_verdicts(report['verdicts'])}"
        f"{body}"
        f'<h2>Limits of this audit</h2><p class="note">{_e(_LIMITS)}</p>'
        "</main></body></html>\n"
    )
