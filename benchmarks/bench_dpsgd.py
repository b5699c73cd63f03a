"""DP-SGD local step versus the non-private step on the same batch (MF, 1,682 items, d=32).

Target (issue 3): a DP-SGD local step costs at most 3x the non-private step on the same
batch. Measured, per batch size, as the median over repeats of one step of:

- ``nonprivate``: the same :class:`PairScorer` module, plain ``torch.optim.SGD``, BPR loss,
  forward + backward + step;
- ``dp_deferred``: fedpers' DP-SGD step as devices run it (ghost clipping with the
  registered :func:`pair_norm_sample` norm sampler fed closed-form backprops, Opacus's
  DP optimizer with the deferred, distribution-identical dense noise), and
  ``dp_deferred_amortized``: the same plus the end-of-round noise flush divided by the
  steps of a typical round (the figure held against the target);
- ``dp_dense``: the same with the table's noise drawn at every step (Opacus's schedule);
- ``dp_opacus_engine``: the same step through Opacus's
  ``GradSampleModuleFastGradientClipping`` hooks and a first backward pass
  (``engine="opacus"``, deferred noise, amortized like ``dp_deferred_amortized``);
- ``opacus_ghost_embedding``: Opacus ghost clipping on a model of ``nn.Embedding`` layers
  with Opacus's own embedding norm sampler;
- ``opacus_hooks``: Opacus's default hooks mode on the ``nn.Embedding`` model, which builds
  dense per-example gradients ``[batch, items, dim]``.

Each variant is timed in ``--blocks`` interleaved blocks of ``--repeats`` steps (median
per block); times are the median over blocks, ratios the median over blocks of the
within-block ratio, which keeps a shared, busy machine's load drifts out of the ratios.

Usage: ``python benchmarks/bench_dpsgd.py [--json] [--repeats N] [--batch-sizes 32 64]``.
With ``--json`` exactly one JSON object goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import TypeVar

import torch
from opacus import GradSampleModule
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
from torch import nn

from fedpers.client.training.dpsgd import BPRLoss, DPSGDConfig, DPSGDSession, PairScorer

N_ITEMS, DIM = 1682, 32
TARGET_RATIO = 3.0
TYPICAL_EXAMPLES = 100  # positives of a typical ML-100K device (median ~65, mean ~106)

_Optimizer = TypeVar("_Optimizer", bound=DPOptimizer)


class EmbeddingMF(nn.Module):
    """The same BPR score from ``nn.Embedding`` layers (what Opacus supports out of the box)."""

    def __init__(self, item_embedding: torch.Tensor, user_vector: torch.Tensor) -> None:
        super().__init__()
        self.items = nn.Embedding(N_ITEMS, DIM)
        self.bias = nn.Embedding(N_ITEMS, 1)
        self.user = nn.Embedding(1, DIM)
        with torch.no_grad():
            self.items.weight.copy_(item_embedding)
            self.bias.weight.zero_()
            self.user.weight.copy_(user_vector.reshape(1, -1))

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        vectors = self.items(pairs)
        bias = self.bias(pairs).squeeze(-1)
        user = self.user(torch.zeros(pairs.shape[0], dtype=torch.int64))
        return ((vectors[:, 0] - vectors[:, 1]) * user).sum(-1) + bias[:, 0] - bias[:, 1]


def _median_us(step: Callable[[], object], repeats: int, warmup: int = 10) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def _initial() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return (
        torch.randn(N_ITEMS, DIM, generator=gen) * 0.1,
        torch.zeros(N_ITEMS),
        torch.randn(DIM, generator=gen) * 0.1,
    )


def _train_step(
    optimizer: torch.optim.Optimizer,
    loss: Callable[[torch.Tensor], torch.Tensor],
    model: Callable[[torch.Tensor], torch.Tensor],
    pairs: torch.Tensor,
) -> Callable[[], None]:
    """One timed step of a variant: zero the gradients, forward, backward, optimizer step."""

    def step() -> None:
        optimizer.zero_grad()
        loss(model(pairs)).backward()
        optimizer.step()

    return step


def _opacus_optimizer(
    kind: type[_Optimizer], model: nn.Module, lr: float, batch: int
) -> _Optimizer:
    """Opacus's DP optimizer of ``kind`` over plain SGD, with the DP-SGD variants' settings."""
    return kind(
        torch.optim.SGD(model.parameters(), lr=lr),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=batch,
        loss_reduction="mean",
    )


def measure(batch: int, repeats: int, blocks: int) -> dict[str, float]:
    """Median step times (microseconds) of every variant on one fixed batch."""
    emb, bias, user = _initial()
    pairs = torch.randint(0, N_ITEMS, (batch, 2), generator=torch.Generator().manual_seed(1))
    n_examples = max(batch, 1)
    lr = 0.05

    plain = PairScorer(emb, bias, user)
    nonprivate = _train_step(
        torch.optim.SGD(plain.parameters(), lr=lr), BPRLoss("mean"), plain, pairs
    )

    sessions = {}
    for name, engine, noise in [
        ("deferred", "direct", "deferred"),
        ("dense", "direct", "dense"),
        ("opacus_engine", "opacus", "deferred"),
    ]:
        config = DPSGDConfig(
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            expected_batch_size=batch,
            lr_item=lr,
            lr_user=lr,
            noise=noise,  # type: ignore[arg-type]
            engine=engine,  # type: ignore[arg-type]
        )
        sessions[name] = DPSGDSession(
            PairScorer(emb, bias, user), config, n_examples, torch.Generator().manual_seed(2)
        )

    ghost_model = EmbeddingMF(emb, user)
    ghost_module = GradSampleModuleFastGradientClipping(
        ghost_model, max_grad_norm=1.0, use_ghost_clipping=True, loss_reduction="mean"
    )
    ghost_opt = _opacus_optimizer(DPOptimizerFastGradientClipping, ghost_model, lr, batch)
    ghost_loss = DPLossFastGradientClipping(ghost_module, ghost_opt, BPRLoss("mean"), "mean")
    opacus_ghost = _train_step(ghost_opt, ghost_loss, ghost_module, pairs)

    hooks_model = EmbeddingMF(emb, user)
    opacus_hooks = _train_step(
        _opacus_optimizer(DPOptimizer, hooks_model, lr, batch),
        BPRLoss("mean"),
        GradSampleModule(hooks_model, loss_reduction="mean"),
        pairs,
    )

    variants: dict[str, Callable[[], object]] = {
        "nonprivate": nonprivate,
        "dp_deferred": lambda: sessions["deferred"].step(pairs),
        "dp_dense": lambda: sessions["dense"].step(pairs),
        "dp_opacus_engine": lambda: sessions["opacus_engine"].step(pairs),
        "opacus_ghost_embedding": opacus_ghost,
        "opacus_hooks": opacus_hooks,
    }
    per_block: dict[str, list[float]] = {name: [] for name in variants}
    flush_session = sessions["deferred"]

    def flush() -> None:  # the deferred schedule's end-of-round flush: every row's draw
        flush_session.optimizer.noise_steps += 1
        flush_session.optimizer.materialize(None)

    per_block["deferred_flush"] = []
    for _ in range(blocks):  # interleave variants so that machine load hits them alike
        for name, step in variants.items():
            reps = max(3, repeats // 10) if name == "opacus_hooks" else repeats
            per_block[name].append(_median_us(step, reps))
        per_block["deferred_flush"].append(_median_us(flush, repeats))
    steps_per_round = DPSGDConfig(expected_batch_size=batch).steps(max(TYPICAL_EXAMPLES, batch))
    for name in ("dp_deferred", "dp_opacus_engine"):  # both use the deferred noise schedule
        per_block[f"{name}_amortized"] = [
            step + flush / steps_per_round
            for step, flush in zip(per_block[name], per_block["deferred_flush"], strict=True)
        ]
    result = {f"{name}_us": statistics.median(v) for name, v in per_block.items()}
    result["steps_per_round"] = float(steps_per_round)
    base = per_block["nonprivate"]
    for name in (
        "dp_deferred",
        "dp_deferred_amortized",
        "dp_dense",
        "dp_opacus_engine_amortized",
        "opacus_ghost_embedding",
        "opacus_hooks",
    ):
        # the median over blocks of the ratio within each block (robust to load drifts)
        ratios = [v / b for v, b in zip(per_block[name], base, strict=True)]
        result[f"{name}_ratio"] = statistics.median(ratios)
    return result


def main() -> int:
    """Run the benchmark; print a table or one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=100, help="timed steps per block")
    parser.add_argument("--blocks", type=int, default=9, help="interleaved blocks")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64])
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    warnings.filterwarnings("ignore", message=".*Secure RNG turned off.*")
    results = {}
    for batch in args.batch_sizes:
        print(f"[bench_dpsgd] batch {batch} ...", file=sys.stderr, flush=True)
        results[str(batch)] = measure(batch, args.repeats, args.blocks)
    worst = max(r["dp_deferred_amortized_ratio"] for r in results.values())
    summary = {
        "benchmark": "dpsgd",
        "n_items": N_ITEMS,
        "dim": DIM,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "target_ratio": TARGET_RATIO,
        "ratio": worst,
        "meets_target": bool(worst <= TARGET_RATIO),
        "by_batch_size": {
            b: {k: (round(v, 2) if math.isfinite(v) else None) for k, v in r.items()}
            for b, r in results.items()
        },
    }
    if args.json:
        print(json.dumps(summary))
    else:
        for batch, r in results.items():
            print(f"batch {batch}:")
            for key, value in r.items():
                print(f"  {key:32s} {value:12.1f}")
        print(f"worst amortized DP/non-private ratio: {worst:.2f} (target <= {TARGET_RATIO})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
