"""Record-level DP-SGD on one device, with Opacus (ghost clipping and a registered norm sampler).

One round trains the device's copy of the shared item side (item embeddings ``E``, item
bias ``b`` and, optionally, the attribute tower ``W``) *and* its private user vector
``u`` with BPR on its own positives::

    x = u . (v_p - v_n) + b_p - b_n,   v_i = E_i + a_i W,   loss = -log sigmoid(x)

Each DP-SGD step:

1. **Poisson sampling** of the device's examples (each positive joins the batch with
   probability ``q``, one uniform negative per positive drawn from the whole catalogue,
   so an example's negative does not depend on the other examples);
2. **per-example gradient norms** without materialising per-example gradients: the model
   is one module, :class:`PairScorer`, for which this module registers an Opacus
   *norm sampler* (``opacus.grad_sample.register_norm_sampler``). The item embeddings and
   biases sit side by side in one table ``T = [E | b]``, so a BPR example touches exactly
   two rows of it and its gradient norms have closed forms (:func:`pair_norm_sample`).
   Ghost clipping turns them into clipping coefficients and one backward pass of the
   coefficient-weighted losses yields the sum of clipped gradients. By default the
   per-example backprops ``d loss / d x = -sigmoid(-x)`` are taken in closed form and
   handed to the registered norm sampler directly; ``engine="opacus"`` runs the same
   step through Opacus's ``GradSampleModuleFastGradientClipping`` hooks and a first
   backward pass instead (see :class:`DPSGDSession`; both give the same result);
3. **Gaussian noise** ``N(0, (sigma C)^2)`` on every coordinate of every parameter, the
   whole item table included (that is what hides which items the device touched), then
   division by the expected batch size and a plain SGD step, in a subclass of Opacus's
   ``DPOptimizerFastGradientClipping`` (:class:`DPSGDOptimizer`).

All parameters, the user vector included, go through the clipped, noised update: ``u``
steers every later item gradient, so a non-private ``u`` would leak the records into the
published delta. The guarantee covers the returned ``delta`` *and* the new user vector,
given the starting user vector; it is a record-level statement only if that starting
vector is itself the output of earlier DP-SGD rounds (their cost is in the history) or
independent of the data (a fresh random vector), not a vector folded in from the events
without DP.

Noise schedule. ``noise="dense"`` draws the table's noise at every step, as Opacus's
optimizer does; drawing 54k Gaussians costs about as much as a whole non-private step.
``noise="deferred"`` (default) produces the *same output distribution* more cheaply: with
plain SGD (constant step size, no momentum, no weight decay) the noise of step ``t``
enters a row additively and is only read when a later batch gathers that row, so the
sum of the ``k`` pending draws of a row, distributed as ``sqrt(k) N(0, 1)`` per
coordinate, is added just before the row is next read, and at the end of the round for
every row. Every value the algorithm reads and the final parameters have exactly the
distribution of the dense schedule; intermediate parameters are never released.

Accounting. A round of ``T`` steps is ``(sigma, q, T)``; the device persists one such
:class:`~fedpers.privacy.dp.RecordLevelRound` per round in its ledger
(:func:`round_entry` gives it) and the composed epsilon comes from the RDP accountant
over the whole history (:func:`~fedpers.privacy.dp.record_level_epsilon`).
:func:`dp_sgd_local_update` refuses to train (:class:`BudgetExhaustedError`) when the
next round would exceed the device's budget.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.grad_sample.utils import register_norm_sampler
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from torch import nn

from fedpers.client.model import ItemSide, ModelConfig, load_shared_arrays
from fedpers.client.training.update import LocalUpdate
from fedpers.privacy.dp import RecordLevelRound, record_level_epsilon
from fedpers.privacy.errors import BudgetExhaustedError, ConfigError, DataError

__all__ = [
    "BPRLoss",
    "DPSGDConfig",
    "DPSGDOptimizer",
    "DPSGDSession",
    "PairScorer",
    "dp_sgd_local_update",
    "pair_norm_sample",
    "round_entry",
    "sgd_groups",
]

_HOOK_WARNING = "Full backward hook is firing when gradients are computed with respect to"


@dataclass(frozen=True)
class DPSGDConfig:
    """Settings of one device's DP-SGD round.

    Attributes:
        noise_multiplier: ``sigma``: noise standard deviation over the clip norm (> 0).
        max_grad_norm: ``C``: per-example L2 clip norm.
        expected_batch_size: the Poisson rate is ``q = min(1, expected_batch_size / n)``
            for a device with ``n`` positives.
        epochs: expected passes over the data; the round has ``max(1, round(epochs / q))``
            steps.
        lr_item: SGD step size of the item table (embeddings and bias) and the tower.
        lr_user: SGD step size of the user vector.
        delta: the record-level delta of the device's guarantee.
        epsilon_budget: the device's record-level budget over all rounds (``None``: none).
        noise: ``"deferred"`` (default; same distribution, cheaper) or ``"dense"``.
        engine: ``"direct"`` (default) or ``"opacus"`` (see :class:`DPSGDSession`).
    """

    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    expected_batch_size: int = 32
    epochs: float = 1.0
    lr_item: float = 1.0
    lr_user: float = 1.0
    delta: float = 1e-5
    epsilon_budget: float | None = None
    noise: Literal["deferred", "dense"] = "deferred"
    engine: Literal["direct", "opacus"] = "direct"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ConfigError(
                f"DP-SGD needs a positive noise multiplier, got {self.noise_multiplier}"
            )
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ConfigError(f"max_grad_norm must be positive, got {self.max_grad_norm}")
        if self.expected_batch_size < 1:
            raise ConfigError(f"expected_batch_size must be >= 1, got {self.expected_batch_size}")
        if not (math.isfinite(self.epochs) and self.epochs > 0):
            raise ConfigError(f"epochs must be positive, got {self.epochs}")
        for name in ("lr_item", "lr_user"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0")
        if not 0 < self.delta < 1:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta}")
        if self.epsilon_budget is not None and not self.epsilon_budget > 0:
            raise ConfigError(f"epsilon_budget must be positive, got {self.epsilon_budget}")
        if self.noise not in ("deferred", "dense"):
            raise ConfigError(f"noise must be 'deferred' or 'dense', got {self.noise!r}")
        if self.engine not in ("direct", "opacus"):
            raise ConfigError(f"engine must be 'direct' or 'opacus', got {self.engine!r}")

    def sample_rate(self, n_examples: int) -> float:
        """Poisson rate ``q`` for a device with ``n_examples`` examples."""
        if n_examples < 1:
            raise DataError("DP-SGD needs at least one training example")
        return min(1.0, self.expected_batch_size / n_examples)

    def steps(self, n_examples: int) -> int:
        """Number of DP-SGD steps of a round for ``n_examples`` examples."""
        return max(1, round(self.epochs / self.sample_rate(n_examples)))


def round_entry(config: DPSGDConfig, n_examples: int) -> RecordLevelRound:
    """The ledger entry ``(sigma, q, steps)`` of a round on ``n_examples`` examples.

    The caller appends it to the device's persisted history after a successful round.
    """
    return RecordLevelRound(
        config.noise_multiplier, config.sample_rate(n_examples), config.steps(n_examples)
    )


class _PairScores(torch.autograd.Function):
    """Fused BPR pair scores with a hand-written backward (few autograd nodes).

    With the item table ``T = [E | b]`` and ``w = [u, 1]``, ``x = (T_p - T_n) . w`` (plus
    ``(a_p - a_n) W . u`` with a tower). The backward scatters ``+-s w`` into the two rows
    of each pair, ``sum_k s_k (v_p - v_n)`` into the user vector and ``(a_p - a_n)^T (s u)``
    into the tower. When the scorer's ``param_grads`` is off (ghost clipping's first pass,
    which only needs the per-example backprops) it returns no gradients at all.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        pairs: torch.Tensor,
        item_table: torch.Tensor,
        user_vector: torch.Tensor,
        feature_tower: torch.Tensor | None,
        scorer: PairScorer,
    ) -> torch.Tensor:
        rows = item_table[pairs]
        diff = rows[:, 0] - rows[:, 1]
        feats = scorer.item_features
        if feature_tower is not None and feats is not None:
            pair_feats = feats[pairs]
            diff[:, :-1] += (pair_feats[:, 0] - pair_feats[:, 1]) @ feature_tower
        weights = torch.cat([user_vector, user_vector.new_ones(1)])
        scorer.last_pair_vectors = (pairs, diff)
        ctx.scorer = scorer
        ctx.table_shape = item_table.shape
        ctx.save_for_backward(pairs, diff, weights)
        return diff @ weights

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        scorer: PairScorer = ctx.scorer
        if not scorer.param_grads:
            return None, None, None, None, None
        pairs, diff, weights = ctx.saved_tensors
        need = ctx.needs_input_grad
        grad_t = grad_u = grad_w = None
        if need[1]:
            row_grad = grad.unsqueeze(1) * weights
            grad_t = torch.zeros(ctx.table_shape, dtype=grad.dtype)
            grad_t.index_add_(0, pairs.t().reshape(-1), torch.cat([row_grad, row_grad.neg()]))
        if need[2]:
            grad_u = grad @ diff[:, :-1]
        if need[3] and scorer.item_features is not None:
            feats = scorer.item_features[pairs]
            grad_w = (feats[:, 0] - feats[:, 1]).t() @ (grad.unsqueeze(1) * weights[:-1])
        return None, grad_t, grad_u, grad_w, None


class PairScorer(nn.Module):
    """BPR pair scores ``u . (v_p - v_n) + b_p - b_n`` as one Opacus-visible module.

    All trainable state lives in this one module, so that the registered norm sampler
    (:func:`pair_norm_sample`) sees the whole per-example gradient: the item table
    ``[E | b]`` (``[items, dim + 1]``, embeddings and bias side by side, so that a pair
    touches one row per item), the user vector and the optional attribute tower. Item
    attributes are a plain tensor attribute (not a buffer: Opacus refuses buffers), never
    trained. The forward pass is one fused autograd function.

    Args:
        item_embedding: ``[items, dim]`` initial values (copied).
        item_bias: ``[items]`` initial values (copied).
        user_vector: ``[dim]`` initial values (copied).
        feature_tower: ``[features, dim]`` initial values, or ``None``.
        item_features: ``[items, features]`` attributes (needed with a tower).

    Attributes:
        param_grads: whether backward produces parameter gradients (on by default).
        last_pair_vectors: ``(pairs, T_p - T_n)`` of the last forward pass (no autograd).
    """

    def __init__(
        self,
        item_embedding: torch.Tensor,
        item_bias: torch.Tensor,
        user_vector: torch.Tensor,
        feature_tower: torch.Tensor | None = None,
        item_features: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        table = torch.cat([item_embedding.detach().float(), item_bias.detach().float()[:, None]], 1)
        self.item_table = nn.Parameter(table)
        self.user_vector = nn.Parameter(user_vector.detach().clone().float())
        self.feature_tower: nn.Parameter | None = None
        self.item_features: torch.Tensor | None = None
        self.param_grads = True
        self.last_pair_vectors: tuple[torch.Tensor, torch.Tensor] | None = None
        if feature_tower is not None:
            if item_features is None:
                raise ConfigError("a feature tower needs the item_features matrix")
            self.feature_tower = nn.Parameter(feature_tower.detach().clone().float())
            object.__setattr__(self, "item_features", item_features.detach().float())

    @property
    def item_embedding(self) -> torch.Tensor:
        """The item embeddings ``E`` (a view of the table)."""
        return self.item_table[:, :-1]

    @property
    def item_bias(self) -> torch.Tensor:
        """The item bias ``b`` (a view of the table)."""
        return self.item_table[:, -1]

    def pair_vectors(self, pairs: torch.Tensor) -> torch.Tensor:
        """``v_p - v_n`` for ``pairs[B, 2]`` (``[B, dim]``), without autograd."""
        cached = self.last_pair_vectors
        if (
            cached is not None
            and cached[0].data_ptr() == pairs.data_ptr()
            and cached[0].shape == pairs.shape
        ):
            return cached[1][:, :-1]
        with torch.no_grad():
            vectors = self.item_embedding[pairs]
            if self.feature_tower is not None and self.item_features is not None:
                vectors = vectors + self.item_features[pairs] @ self.feature_tower
            return vectors[:, 0] - vectors[:, 1]

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """Scores ``x[B]`` of ``pairs[B, 2]`` (positive, negative item indices)."""
        scores: torch.Tensor = _PairScores.apply(
            pairs, self.item_table, self.user_vector, self.feature_tower, self
        )
        return scores


@register_norm_sampler(PairScorer)
def pair_norm_sample(
    layer: PairScorer, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Opacus norm sampler: per-example gradient norms of :class:`PairScorer`'s parameters.

    With ``s = d loss / d x`` of an example ``(p, n)``, ``p != n``: the table gradient is
    ``+-s [u, 1]`` in rows ``p`` and ``n`` (norm ``|s| sqrt(2 (|u|^2 + 1))``), the user
    vector's is ``s (v_p - v_n)``, the tower's ``s (a_p - a_n)^T u``
    (norm ``|s| |a_p - a_n| |u|``). An example with ``p == n`` has zero gradient.

    Args:
        layer: the module.
        activations: ``[pairs[B, 2]]``, its captured input.
        backprops: ``d loss_k / d x_k``, ``[B]``.

    Returns:
        ``{parameter: norms[B]}`` for every trainable parameter.
    """
    pairs = activations[0]
    with torch.no_grad():
        s = backprops.reshape(-1).abs()
        u_norm = float(torch.linalg.vector_norm(layer.user_vector))
        out: dict[nn.Parameter, torch.Tensor] = {}
        if layer.item_table.requires_grad:
            row_norm = math.sqrt(2.0 * (u_norm * u_norm + 1.0))
            out[layer.item_table] = s * (pairs[:, 0] != pairs[:, 1]) * row_norm
        if layer.user_vector.requires_grad:
            out[layer.user_vector] = s * torch.linalg.vector_norm(layer.pair_vectors(pairs), dim=1)
        layer.last_pair_vectors = None
        tower = layer.feature_tower
        if tower is not None and tower.requires_grad and layer.item_features is not None:
            feats = layer.item_features[pairs]
            a_norm = torch.linalg.vector_norm(feats[:, 0] - feats[:, 1], dim=1)
            out[tower] = s * a_norm * u_norm
    return out


class BPRLoss(nn.Module):
    """``-log sigmoid(x)`` per pair, reduced by :attr:`reduction` (Opacus criterion)."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        """The BPR loss of ``scores``."""
        losses = nn.functional.softplus(-scores)
        if self.reduction == "mean":
            return losses.mean()
        if self.reduction == "sum":
            return losses.sum()
        return losses


class DPSGDOptimizer(DPOptimizerFastGradientClipping):
    """Opacus's fast-gradient-clipping DP optimizer, with the noise schedule of this module.

    ``deferred`` parameters (the item table) receive their noise lazily through
    :meth:`materialize` (see the module docstring); the others get dense noise at every
    step as in Opacus. The underlying optimizer must be plain SGD (no momentum, weight
    decay or dampening), which the deferred schedule's exactness relies on. Gradients are
    accumulated without copies (the summed gradient of a step is the gradient the second
    backward pass produced), and the ``1 / B`` of the average is folded into the SGD step
    sizes (the wrapped optimizer's ``lr`` values are divided by ``expected_batch_size``).

    Args:
        optimizer: a ``torch.optim.SGD`` over the module's parameters.
        noise_multiplier: ``sigma``.
        max_grad_norm: ``C``.
        expected_batch_size: the denominator of the averaged gradient.
        generator: the noise generator.
        deferred: parameters whose noise is deferred (row-wise, along dimension 0).
    """

    def __init__(
        self,
        optimizer: torch.optim.SGD,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: float,
        generator: torch.Generator,
        deferred: Sequence[nn.Parameter] = (),
    ) -> None:
        for group in optimizer.param_groups:
            if group.get("momentum", 0) or group.get("weight_decay", 0) or group.get("nesterov"):
                raise ConfigError("DP-SGD here runs plain SGD (no momentum or weight decay)")
        super().__init__(
            optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=expected_batch_size,  # type: ignore[arg-type]
            loss_reduction="mean",
            generator=generator,
        )
        self._deferred_ids = {id(p) for p in deferred}
        self._lr = {id(p): float(g["lr"]) for g in optimizer.param_groups for p in g["params"]}
        # fold the 1/B of the averaged gradient into the step sizes (see scale_grad)
        for group in optimizer.param_groups:
            group["lr"] = float(group["lr"]) / expected_batch_size
        self.noise_steps = 0
        self._applied = {id(p): torch.zeros(p.shape[0], dtype=torch.int64) for p in deferred}
        self._deferred = list(deferred)
        self._sqrt_table = torch.zeros(0)

    def accumulate(self) -> None:
        """Take the clipped sum from ``p.grad`` (no copy: it is fresh every step)."""
        for p in self.params:
            if p.summed_grad is not None:
                p.summed_grad.add_(p.grad)
            else:
                p.summed_grad = p.grad.detach()

    def add_noise(self) -> None:
        """Dense noise on non-deferred parameters; count a pending step for the others."""
        std = self.noise_multiplier * self.max_grad_norm
        for p in self.params:
            _check_processed_flag(p.summed_grad)
            if id(p) in self._deferred_ids:
                p.grad = p.summed_grad.view_as(p)
            else:
                noise = torch.randn(p.shape, generator=self.generator, dtype=p.dtype)
                p.grad = noise.mul_(std).add_(p.summed_grad.view_as(p))
            _mark_as_processed(p.summed_grad)
        self.noise_steps += 1

    def _noise_scale(self, p: nn.Parameter) -> float:
        if self.expected_batch_size is None:
            raise ConfigError("the DP optimizer has no expected batch size to scale its noise by")
        scale = self.noise_multiplier * self.max_grad_norm / self.expected_batch_size
        return float(self._lr[id(p)] * scale)

    def scale_grad(self) -> None:
        """No-op: the division by the expected batch size is folded into the step sizes.

        ``p -= (lr / B) * (sum + noise)`` equals Opacus's ``p -= lr * ((sum + noise) / B)``
        and saves one pass over the item table per step.
        """

    def _sqrt_steps(self) -> torch.Tensor:
        """``sqrt(k)`` for ``k = 0 .. noise_steps`` (grown by doubling, cached)."""
        if self._sqrt_table.shape[0] <= self.noise_steps:
            size = max(2 * self._sqrt_table.shape[0], self.noise_steps + 1)
            self._sqrt_table = torch.arange(size, dtype=torch.float32).sqrt_()
        return self._sqrt_table

    @torch.no_grad()
    def materialize(self, rows: torch.Tensor | None = None) -> None:
        """Add the pending noise of ``rows`` (unique indices; ``None``: all rows).

        Each row receives ``sqrt(k) * lr * sigma * C / B`` times a fresh standard normal
        per coordinate, ``k`` being the number of steps since its noise was last added
        (rows with ``k = 0`` receive exactly zero).
        """
        table = self._sqrt_steps()
        for p in self._deferred:
            applied = self._applied[id(p)]
            alpha = self._noise_scale(p)
            if rows is None:  # every row: no gathers, no scatters
                noise = torch.randn(p.shape, generator=self.generator, dtype=p.dtype)
                pending = torch.rsub(applied, self.noise_steps)
                noise.mul_(table.index_select(0, pending).reshape(-1, *([1] * (p.dim() - 1))))
                p.add_(noise, alpha=alpha)
                applied.fill_(self.noise_steps)
                continue
            pending = torch.rsub(applied.index_select(0, rows), self.noise_steps)
            noise = torch.randn(
                (rows.shape[0], *p.shape[1:]), generator=self.generator, dtype=p.dtype
            )
            noise.mul_(table.index_select(0, pending).reshape(-1, *([1] * (p.dim() - 1))))
            p.index_add_(0, rows, noise, alpha=alpha)
            applied.index_fill_(0, rows, self.noise_steps)

    def pending_rows(self) -> int:
        """Rows of deferred parameters whose noise is not yet added (for tests)."""
        return sum(int((self.noise_steps - a > 0).sum()) for a in self._applied.values())


def sgd_groups(scorer: PairScorer, config: DPSGDConfig) -> list[dict[str, Any]]:
    """SGD parameter groups of ``scorer``, one per distinct step size (fewer kernel calls)."""
    pairs: list[tuple[nn.Parameter, float]] = [
        (scorer.item_table, config.lr_item),
        (scorer.user_vector, config.lr_user),
    ]
    if scorer.feature_tower is not None:
        pairs.append((scorer.feature_tower, config.lr_item))
    by_lr: dict[float, list[nn.Parameter]] = {}
    for param, lr in pairs:
        by_lr.setdefault(lr, []).append(param)
    return [{"params": params, "lr": lr} for lr, params in by_lr.items()]


class DPSGDSession:
    """The Opacus machinery of one DP-SGD round: norm sampler, clipping and DP optimizer.

    A thin stateful wrapper; :func:`dp_sgd_local_update` drives it. Exposed so that
    benchmarks time exactly the step the device runs. Two engines compute the same step
    (a test checks they agree):

    - ``"opacus"``: the scorer is wrapped in Opacus's
      ``GradSampleModuleFastGradientClipping``; its module hooks capture the activations
      and, during a first backward pass, the per-example backprops, call the registered
      norm sampler and give the clipping coefficients;
    - ``"direct"`` (default): no module hooks. The BPR backprops ``d loss_k / d x_k =
      -sigmoid(-x_k)`` are known in closed form, so the step hands them to the same
      registered norm sampler (looked up in Opacus's registry) and forms Opacus's
      coefficients ``min(1, C / (norm + 1e-6))`` itself. This skips the first backward
      pass and PyTorch's full-backward-hook wrapping, which cost about as much as a whole
      non-private step.

    Both then back-propagate the per-example losses weighted by their coefficients
    (the sum of clipped gradients) and let the DP optimizer add the noise and step.

    Args:
        scorer: the module holding the parameters.
        config: the DP-SGD settings.
        n_examples: the device's number of examples (sets the expected batch size).
        generator: the noise generator.
    """

    def __init__(
        self,
        scorer: PairScorer,
        config: DPSGDConfig,
        n_examples: int,
        generator: torch.Generator,
    ) -> None:
        self.scorer = scorer
        self.config = config
        self.sample_rate = config.sample_rate(n_examples)
        self.expected_batch_size = self.sample_rate * n_examples
        self.module: GradSampleModuleFastGradientClipping | None = None
        if config.engine == "opacus":
            self.module = GradSampleModuleFastGradientClipping(
                scorer,
                max_grad_norm=config.max_grad_norm,
                use_ghost_clipping=True,
                loss_reduction="mean",
            )
        self._norm_sampler = GradSampleModuleFastGradientClipping.NORM_SAMPLERS[type(scorer)]
        self.optimizer = DPSGDOptimizer(
            torch.optim.SGD(sgd_groups(scorer, config), lr=config.lr_item, foreach=True),
            noise_multiplier=config.noise_multiplier,
            max_grad_norm=config.max_grad_norm,
            expected_batch_size=self.expected_batch_size,
            generator=generator,
            deferred=[scorer.item_table] if config.noise == "deferred" else (),
        )

    def clipping_coefficients(
        self, pairs: torch.Tensor, scores: torch.Tensor, losses: torch.Tensor
    ) -> torch.Tensor:
        """Per-example clipping coefficients ``min(1, C / (||g_k|| + 1e-6))``.

        Args:
            pairs: the batch (the scorer's last forward input).
            scores: the scores ``x`` of that forward pass.
            losses: the per-example losses ``softplus(-x)``.

        Returns:
            ``[B]`` coefficients.
        """
        module = self.module
        if module is not None:  # Opacus's hooks: a first backward pass
            self.scorer.param_grads = False
            try:
                losses.mean().backward(retain_graph=True)
            finally:
                self.scorer.param_grads = True
            coefficients: torch.Tensor = module.get_clipping_coef()
            return coefficients
        with torch.no_grad():
            backprops = torch.sigmoid(scores.neg()).neg_()  # d softplus(-x) / dx
            norms: dict[nn.Parameter, torch.Tensor] = self._norm_sampler(
                self.scorer, [pairs], backprops
            )
            parts = list(norms.values())
            total = (
                torch.hypot(parts[0], parts[1])
                if len(parts) == 2
                else torch.stack(parts).norm(2, dim=0)
            )
            coefficients = torch.clamp(self.config.max_grad_norm / total.add_(1e-6), max=1.0)
        return coefficients

    def step(self, pairs: torch.Tensor) -> float:
        """One DP-SGD step on the (Poisson-sampled) ``pairs[B, 2]``; returns the mean loss.

        An empty batch still takes a step: zero clipped sum plus the full noise.
        """
        optimizer = self.optimizer
        optimizer.zero_grad(set_to_none=True)
        if pairs.shape[0] == 0:
            for p in optimizer.params:
                p.grad = torch.zeros_like(p)
            optimizer.step()
            return math.nan
        if self.config.noise == "deferred":
            optimizer.materialize(torch.unique(pairs))
        forward = self.scorer if self.module is None else self.module
        scores = forward(pairs)
        losses = nn.functional.softplus(-scores)
        coefficients = self.clipping_coefficients(pairs, scores, losses)
        if self.module is not None:
            self.module.disable_hooks()
        try:
            (coefficients * losses).sum().backward()
        finally:
            if self.module is not None:
                self.module.enable_hooks()
        optimizer.step()
        return float(losses.detach().mean())

    def finish(self) -> None:
        """Add every pending deferred noise draw and detach Opacus's hooks."""
        self.optimizer.materialize(None)
        if self.module is not None:
            self.module.remove_hooks()


def _seeds(rng_seed: int) -> tuple[np.random.Generator, torch.Generator]:
    sampling, noise = np.random.SeedSequence(rng_seed).spawn(2)
    generator = torch.Generator().manual_seed(int(noise.generate_state(1, np.uint64)[0] >> 1))
    return np.random.default_rng(sampling), generator


def dp_sgd_local_update(
    item_arrays: Sequence[np.ndarray],
    model_config: ModelConfig,
    item_features: np.ndarray | None,
    user_vector: np.ndarray,
    train_items: np.ndarray,
    dp_config: DPSGDConfig,
    rng_seed: int,
    history: Sequence[RecordLevelRound | tuple[float, float, int]],
) -> LocalUpdate:
    """One device round of record-level DP-SGD from the global shared parameters.

    Args:
        item_arrays: the global shared parameters, wire order
            (see :meth:`~fedpers.client.model.ItemSide.shared_names`).
        model_config: the model family's shape.
        item_features: ``[items, features]`` attributes when the model has a tower.
        user_vector: the device's private user vector (see the module docstring on where
            it should come from).
        train_items: the device's positives (item indices), one example each.
        dp_config: the DP-SGD settings, including the device's budget.
        rng_seed: seed of the round's sampling and noise streams (derive it from
            ``(seed, round, device_id)``).
        history: the device's persisted record-level ledger, one
            ``(noise_multiplier, sample_rate, steps)`` per earlier DP-SGD round.

    Returns:
        The :class:`LocalUpdate`: ``delta`` of the shared parameters (wire order), the
        new private user vector, ``n_examples``, the mean loss over the round's steps
        (a non-private metric) and ``record_epsilon``, the increase of the device's
        composed record-level epsilon caused by this round (the composed total is
        :func:`~fedpers.privacy.dp.record_level_epsilon` over the history plus
        :func:`round_entry`, which the caller appends to the ledger).

    Raises:
        BudgetExhaustedError: when the round would push the device's composed epsilon
            above ``dp_config.epsilon_budget``; nothing is trained.
        DataError: when the device has no training examples or an item index is out of
            range.
        ConfigError: when the arrays do not match ``model_config``.
    """
    positives = np.asarray(train_items, dtype=np.int64).ravel()
    n = int(positives.size)
    if n == 0:
        raise DataError("DP-SGD needs at least one training example")
    if positives.min() < 0 or positives.max() >= model_config.n_items:
        raise DataError(f"train_items must be in [0, {model_config.n_items})")
    entry = round_entry(dp_config, n)
    before = record_level_epsilon(history, dp_config.delta)
    after = record_level_epsilon([*history, entry], dp_config.delta)
    if dp_config.epsilon_budget is not None and after > dp_config.epsilon_budget:
        raise BudgetExhaustedError(
            f"this DP-SGD round would raise the device's record-level epsilon from "
            f"{before:.4g} to {after:.4g}, above its budget {dp_config.epsilon_budget:.4g}"
        )

    side = ItemSide(model_config, item_features)
    load_shared_arrays(side, item_arrays)
    user = np.asarray(user_vector, dtype=np.float32)
    if user.shape != (model_config.dim,):
        raise ConfigError(f"user_vector has shape {user.shape}, expected ({model_config.dim},)")
    tower = side.feature_tower
    scorer = PairScorer(
        side.item_embedding.data,
        side.item_bias.data,
        torch.from_numpy(user.copy()),
        None if tower is None else tower.data,
        None if tower is None else side.item_features,  # type: ignore[arg-type]
    )
    sampler, generator = _seeds(rng_seed)
    session = DPSGDSession(scorer, dp_config, n, generator)
    losses: list[float] = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_HOOK_WARNING)
        for _ in range(entry.steps):
            chosen = positives[sampler.random(n) < entry.sample_rate]
            negatives = sampler.integers(0, model_config.n_items, size=chosen.size)
            pairs = torch.from_numpy(np.stack([chosen, negatives], axis=1))
            loss = session.step(pairs)
            if not math.isnan(loss):
                losses.append(loss)
        session.finish()

    new_arrays = [scorer.item_embedding, scorer.item_bias]
    if scorer.feature_tower is not None:
        new_arrays.append(scorer.feature_tower)
    delta = [
        (p.detach().numpy().astype(np.float32) - np.asarray(g, dtype=np.float32))
        for p, g in zip(new_arrays, item_arrays, strict=True)
    ]
    return LocalUpdate(
        delta=delta,
        user_vector=scorer.user_vector.detach().numpy().astype(np.float32, copy=True),
        n_examples=n,
        loss=float(np.mean(losses)) if losses else math.nan,
        record_epsilon=after - before,
    )
