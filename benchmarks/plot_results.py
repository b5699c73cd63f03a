"""Turn benchmark JSON results into the plots of ``docs/benchmarks.md``.

Reads ``benchmarks/results/federated_accuracy.json`` (written by
``python benchmarks/run_all.py federated_accuracy``) and draws the epsilon curve under
both ranking protocols, with the centralized reference and the popularity baseline, into
``docs/img/epsilon-curve.png``.

Usage::

    python benchmarks/run_all.py federated_accuracy && python benchmarks/plot_results.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
IMG = HERE.parent / "docs" / "img"


def plot_epsilon_curve(result: dict, out: Path) -> Path:
    """Draw HR@10 (sampled and full) against epsilon; non-private at the right edge."""
    curve = result["curve"]
    private = [p for p in curve if p["epsilon"] is not None]
    public = [p for p in curve if p["epsilon"] is None]
    eps = [p["epsilon"] for p in private]
    right = max(eps) * 2 if eps else 1.0
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, metric, title in (
        (axes[0], "hr10_sampled", "HR@10 vs 99 sampled negatives"),
        (axes[1], "hr10_full", "HR@10, full ranking"),
    ):
        xs = eps + ([right] if public else [])
        ys = [p[metric] for p in private] + ([public[0][metric]] if public else [])
        ax.plot(xs, ys, "o-", label="federated (global model + on-device personalization)")
        ax.axhline(result["centralized"][metric], color="green", ls="--", label="centralized BPR")
        if "centralized_with_session" in result:
            ax.axhline(
                result["centralized_with_session"][metric],
                color="green",
                ls="-.",
                alpha=0.6,
                label="centralized BPR, session-shifted ranking",
            )
        ax.axhline(result["popularity"][metric], color="gray", ls=":", label="popularity")
        ax.set_xscale("log", base=2)
        ticks = [*eps, right] if public else eps
        ax.set_xticks(ticks, [f"{e:g}" for e in eps] + (["inf"] if public else []))
        ax.set_xlabel("user-level epsilon (delta = 0.1/N)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        low, high = ax.get_ylim()
        ax.set_ylim(low, high + 0.06 * (high - low))
    axes[1].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"MovieLens-100K, {result['num_devices']} devices, all devices every round")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> int:
    """Draw every plot whose results exist."""
    source = RESULTS / "federated_accuracy.json"
    if not source.is_file():
        print(f"missing {source}: run `python benchmarks/run_all.py federated_accuracy` first")
        return 2
    print(plot_epsilon_curve(json.loads(source.read_text()), IMG / "epsilon-curve.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
