"""Server optimisers: how the coordinator turns the mean device update into a new model.

Every optimiser treats the (privatised) mean of the devices' deltas as a pseudo-gradient
``-Δ`` (Reddi et al., "Adaptive Federated Optimization", ICLR 2021):

* :class:`FedAvg`: ``x <- x + lr * Δ`` (``lr = 1`` is plain FedAvg; a larger server
  learning rate scales up small local steps);
* :class:`FedAvgM`: server momentum, ``m <- beta * m + Δ``, ``x <- x + lr * m``;
* :class:`FedAdam`: ``m <- b1 m + (1 - b1) Δ``, ``v <- b2 v + (1 - b2) Δ²``,
  ``x <- x + lr * m / (sqrt(v) + tau)`` (no bias correction, as in the paper).

The optimisers only see the aggregate, never an individual device's update, so they are
post-processing of a differentially private sum and cost no privacy.

Denoising (``denoise_std > 0``, FedAvg and FedAvgM): the DP mean carries Gaussian noise
of a known standard deviation ``s = sigma C / m`` per coordinate. :func:`shrink_rows`
applies positive-part James-Stein shrinkage towards the median item update, per item (an
item's embedding update and its bias update together; a row of the attribute tower on its
own, towards zero): a deviation ``x`` of ``k`` coordinates is scaled by
``max(0, 1 - (k - 2) s^2 / ||x||^2)``. Items that few devices
touched carry an update that is mostly noise and are left (nearly) unchanged instead of
drifting with the noise round after round, while popular items keep their update. Like
the optimiser itself, this is post-processing of the DP release and costs no privacy.

State: :meth:`ServerOptimizer.state_dict` returns a JSON-able dict. Moment arrays are
encoded as ``{"dtype": "float32", "shape": [...], "data": [...]}`` (nested Python
floats; :func:`encode_array` / :func:`decode_array`). For large models a caller may
instead save :meth:`ServerOptimizer.arrays` with its checkpoint format and store
only :meth:`ServerOptimizer.state_dict` with ``include_arrays=False``; then it passes
the arrays back with ``load_state_dict(state, arrays=...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from fedpers.privacy.errors import ConfigError

__all__ = [
    "OPTIMIZERS",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "ServerOptimizer",
    "create_server_optimizer",
    "decode_array",
    "encode_array",
    "shrink_rows",
]


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """A JSON-able encoding of a numpy array (dtype, shape, flat list of numbers)."""
    arr = np.asarray(array)
    return {"dtype": str(arr.dtype), "shape": list(arr.shape), "data": arr.ravel().tolist()}


def decode_array(obj: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_array`.

    Raises:
        ConfigError: when the object is not an encoded array.
    """
    try:
        return np.asarray(obj["data"], dtype=np.dtype(obj["dtype"])).reshape(obj["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"not an encoded array: {exc}") from exc


def shrink_rows(mean_delta: Sequence[np.ndarray], noise_std: float) -> list[np.ndarray]:
    """Positive-part James-Stein shrinkage of a noisy mean update, per item.

    The arrays whose leading dimension equals that of the first array (the item
    embeddings and the item bias: one row per item) are shrunk *jointly* towards their
    median row: item ``i``'s coordinates in all of them, minus the per-column median over
    items, form one vector ``x`` of ``k`` coordinates, and ``x`` is scaled by
    ``max(0, 1 - (k - 2) s^2 / ||x||^2)`` (James-Stein towards a robust centre). An item
    whose update is mostly noise thus gets the typical item's update (e.g. the common
    push-down of items sampled as negatives), not its own noise. Other arrays with at least two
    dimensions (the attribute tower) are shrunk row by row towards zero; other 1-D arrays
    are left unchanged.

    Args:
        mean_delta: the noisy mean update in wire order.
        noise_std: standard deviation ``s`` of the noise on each coordinate (``0``: no-op).

    Returns:
        New float32 arrays.

    Raises:
        ConfigError: when ``noise_std`` is negative or not finite.

    Example:
        >>> x = np.array([[3.0, 4.0, 0.0], [0.1, 0.0, 0.0], [-0.1, 0.0, 0.0]])
        >>> [round(float(v), 2) for v in shrink_rows([x], 1.0)[0][:, 0]]
        [2.88, 0.1, 0.1]
    """
    if not (np.isfinite(noise_std) and noise_std >= 0):
        raise ConfigError(f"noise_std must be finite and >= 0, got {noise_std}")
    arrays = [np.asarray(a, dtype=np.float64) for a in mean_delta]
    if noise_std == 0 or not arrays or arrays[0].ndim == 0:
        return [a.astype(np.float32) for a in arrays]
    var = noise_std**2

    def factors(sq: np.ndarray, k: int) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.clip(1.0 - max(k - 2, 0) * var / sq, 0.0, 1.0)
        return np.where(sq > 0, f, 0.0)

    lead = arrays[0].shape[0]
    grouped = [i for i, a in enumerate(arrays) if a.ndim >= 1 and a.shape[0] == lead]
    rows = {i: arrays[i].reshape(lead, -1) for i in grouped}
    centres = {i: np.median(r, axis=0, keepdims=True) for i, r in rows.items()}
    f_items = factors(
        sum(((r - centres[i]) ** 2).sum(1) for i, r in rows.items()),
        sum(r.shape[1] for r in rows.values()),
    )
    out: list[np.ndarray] = []
    for i, a in enumerate(arrays):
        if i in rows:
            shrunk = centres[i] + (rows[i] - centres[i]) * f_items[:, None]
            out.append(shrunk.reshape(a.shape))
        elif a.ndim >= 2 and a.size:
            r = a.reshape(a.shape[0], -1)
            out.append((r * factors((r**2).sum(1), r.shape[1])[:, None]).reshape(a.shape))
        else:
            out.append(a)
    return [a.astype(np.float32) for a in out]


def _lr_scales(scales: Sequence[float], n: int) -> list[float]:
    """Per-array multipliers of the server learning rate (empty: all ``1``).

    Raises:
        ConfigError: when given for a different number of arrays, or negative.
    """
    if not scales:
        return [1.0] * n
    if len(scales) != n:
        raise ConfigError(f"{len(scales)} lr_scales for {n} parameter arrays")
    return [float(x) for x in scales]


def _check_scales(scales: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(x) for x in scales)
    if any(not (np.isfinite(x) and x >= 0) for x in out):
        raise ConfigError(f"lr_scales must be finite and >= 0, got {out}")
    return out


def _check_step(global_arrays: Sequence[np.ndarray], mean_delta: Sequence[np.ndarray]) -> None:
    if len(global_arrays) != len(mean_delta):
        raise ConfigError(f"{len(mean_delta)} delta arrays for {len(global_arrays)} parameters")
    for g, d in zip(global_arrays, mean_delta, strict=True):
        if g.shape != d.shape:
            raise ConfigError(f"delta shape {d.shape} does not match parameter {g.shape}")
        if not np.all(np.isfinite(d)):
            raise ConfigError("the aggregated delta is not finite")


def _check_lr(lr: float) -> None:
    if not lr > 0:
        raise ConfigError(f"server lr must be positive, got {lr}")


def _check_denoised_options(
    lr: float, denoise_std: float, lr_scales: Sequence[float]
) -> tuple[float, ...]:
    """Validate the options FedAvg and FedAvgM share; return the checked ``lr_scales``."""
    _check_lr(lr)
    if not (np.isfinite(denoise_std) and denoise_std >= 0):
        raise ConfigError(f"denoise_std must be >= 0, got {denoise_std}")
    return _check_scales(lr_scales)


def _prepare_denoised_step(
    global_arrays: Sequence[np.ndarray],
    mean_delta: Sequence[np.ndarray],
    lr_scales: Sequence[float],
    denoise_std: float,
) -> tuple[list[float], list[np.ndarray]]:
    """Check a step's inputs, then return its per-array lr scales and the denoised delta."""
    _check_step(global_arrays, mean_delta)
    return _lr_scales(lr_scales, len(global_arrays)), shrink_rows(mean_delta, denoise_std)


@runtime_checkable
class ServerOptimizer(Protocol):
    """What the coordinator needs from a server optimiser."""

    def step(
        self, global_arrays: list[np.ndarray], mean_delta: list[np.ndarray]
    ) -> list[np.ndarray]:
        """The new global parameters (new arrays; the inputs are not modified)."""
        ...

    def state_dict(self, include_arrays: bool = True) -> dict[str, Any]:
        """A JSON-able snapshot of the hyperparameters and state."""
        ...

    def load_state_dict(
        self, state: dict[str, Any], arrays: list[np.ndarray] | None = None
    ) -> None:
        """Restore a snapshot taken by :meth:`state_dict`."""
        ...

    def arrays(self) -> list[np.ndarray]:
        """The state arrays (moments), for callers that store them themselves."""
        ...


_READ_HYPERPARAMETER: dict[str, Callable[[Any], Any]] = {"lr_scales": _check_scales}
"""How a snapshot's hyperparameter is read back, where it is not a float."""

_ABSENT_FROM_OLDER_SNAPSHOTS: dict[str, Any] = {"denoise_std": 0.0, "lr_scales": ()}
"""Hyperparameters that snapshots of older versions lack, and the value they ran with."""


class _Snapshot:
    """The hyperparameter part of an optimiser's state dict, written once for all three.

    The snapshot is ``{"name": NAME, <each of HYPERPARAMETERS>, "steps": ...}``; the
    stateful optimisers add their ``"moments"``.
    """

    NAME: ClassVar[str]
    HYPERPARAMETERS: ClassVar[tuple[str, ...]]
    steps: int

    def _hyperparameter_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"name": self.NAME}
        for key in self.HYPERPARAMETERS:
            value = getattr(self, key)
            state[key] = list(value) if isinstance(value, tuple) else value
        state["steps"] = self.steps
        return state

    def _load_hyperparameters(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`_hyperparameter_state` wrote.

        Raises:
            ConfigError: when the state is for another optimiser.
        """
        if state.get("name") != self.NAME:
            raise ConfigError(f"optimizer state is for {state.get('name')!r}, not {self.NAME!r}")
        for key in self.HYPERPARAMETERS:
            if key in _ABSENT_FROM_OLDER_SNAPSHOTS:
                raw = state.get(key, _ABSENT_FROM_OLDER_SNAPSHOTS[key])
            else:
                raw = state[key]
            setattr(self, key, _READ_HYPERPARAMETER.get(key, float)(raw))
        self.steps = int(state["steps"])


@dataclass
class FedAvg(_Snapshot):
    """FedAvg with a server learning rate: ``x <- x + lr * mean_delta``.

    Attributes:
        lr: the server learning rate (``1.0``: plain FedAvg).
        denoise_std: per-coordinate noise std of the mean delta for :func:`shrink_rows`
            (``0``: no shrinkage).
        lr_scales: per-array multipliers of ``lr`` in wire order (empty: all ``1``;
            ``0`` freezes an array, e.g. item embeddings that a recipe does not train,
            so that the noise on them is discarded).
        steps: number of steps taken.
    """

    NAME: ClassVar[str] = "fedavg"
    HYPERPARAMETERS: ClassVar[tuple[str, ...]] = ("lr", "denoise_std", "lr_scales")

    lr: float = 1.0
    denoise_std: float = 0.0
    lr_scales: tuple[float, ...] = ()
    steps: int = 0

    def __post_init__(self) -> None:
        self.lr_scales = _check_denoised_options(self.lr, self.denoise_std, self.lr_scales)

    def step(
        self, global_arrays: list[np.ndarray], mean_delta: list[np.ndarray]
    ) -> list[np.ndarray]:
        """``x + lr * Δ`` per array, float32.

        Raises:
            ConfigError: on mismatched shapes or a non-finite delta.
        """
        scales, mean_delta = _prepare_denoised_step(
            global_arrays, mean_delta, self.lr_scales, self.denoise_std
        )
        self.steps += 1
        return [
            (g + self.lr * k * d).astype(np.float32)
            for g, d, k in zip(global_arrays, mean_delta, scales, strict=True)
        ]

    def state_dict(self, include_arrays: bool = True) -> dict[str, Any]:
        """``{"name": "fedavg", "lr", "denoise_std", "lr_scales", "steps"}``."""
        return self._hyperparameter_state()

    def load_state_dict(
        self, state: dict[str, Any], arrays: list[np.ndarray] | None = None
    ) -> None:
        """Restore the hyperparameters and ``steps``.

        Raises:
            ConfigError: when the state is for another optimiser.
        """
        self._load_hyperparameters(state)

    def arrays(self) -> list[np.ndarray]:
        """FedAvg has no state arrays."""
        return []


class _Moments(_Snapshot):
    """Moment bookkeeping and state of the stateful optimisers (``self.moments``).

    The snapshot adds ``"moments"`` to the hyperparameters: the encoded arrays, or with
    ``include_arrays=False`` only their keys and counts (the caller saves
    :meth:`arrays` itself and passes them back to :meth:`load_state_dict`).
    """

    MOMENT_KEYS: ClassVar[tuple[str, ...]]
    moments: dict[str, list[np.ndarray]]

    def state_dict(self, include_arrays: bool = True) -> dict[str, Any]:
        """Hyperparameters, step count and (optionally encoded) moments."""
        return {**self._hyperparameter_state(), "moments": self._encode(include_arrays)}

    def load_state_dict(
        self, state: dict[str, Any], arrays: list[np.ndarray] | None = None
    ) -> None:
        """Restore a snapshot (``arrays``: the moments saved by the caller).

        Raises:
            ConfigError: when the state is for another optimiser or malformed.
        """
        self._load_hyperparameters(state)
        self._decode(state, arrays)

    def arrays(self) -> list[np.ndarray]:
        """The moment arrays in key order (``m``, then ``v``); empty before the first step."""
        return [a for k in sorted(self.moments) for a in self.moments[k]]

    def _ensure(self, key: str, like: Sequence[np.ndarray]) -> list[np.ndarray]:
        if key not in self.moments:
            self.moments[key] = [np.zeros_like(a, dtype=np.float32) for a in like]
        return self.moments[key]

    def _encode(self, include_arrays: bool) -> dict[str, Any]:
        if not include_arrays:
            return {"keys": sorted(self.moments), "n": {k: len(v) for k, v in self.moments.items()}}
        return {k: [encode_array(a) for a in v] for k, v in self.moments.items()}

    def _decode(self, state: dict[str, Any], arrays: list[np.ndarray] | None) -> None:
        self.moments = {}
        stored = state.get("moments", {})
        if arrays is not None:
            names = stored.get("keys", [])
            counts = stored.get("n", {})
            pos = 0
            for k in names:
                n = int(counts[k])
                self.moments[k] = [np.asarray(a, dtype=np.float32) for a in arrays[pos : pos + n]]
                pos += n
            if pos != len(arrays):
                raise ConfigError(f"{len(arrays)} state arrays given, {pos} expected")
            return
        for k in self.MOMENT_KEYS:
            if k in stored:
                self.moments[k] = [decode_array(o).astype(np.float32) for o in stored[k]]


@dataclass
class FedAvgM(_Moments):
    """FedAvg with server momentum: ``m <- beta m + Δ``, ``x <- x + lr m``.

    Attributes:
        lr: the server learning rate.
        beta: the momentum coefficient in ``[0, 1)``.
        denoise_std: as in :class:`FedAvg`.
        lr_scales: as in :class:`FedAvg`.
        steps: number of steps taken.
    """

    NAME: ClassVar[str] = "fedavgm"
    HYPERPARAMETERS: ClassVar[tuple[str, ...]] = ("lr", "beta", "denoise_std", "lr_scales")
    MOMENT_KEYS: ClassVar[tuple[str, ...]] = ("m",)

    lr: float = 1.0
    beta: float = 0.9
    denoise_std: float = 0.0
    lr_scales: tuple[float, ...] = ()
    steps: int = 0
    moments: dict[str, list[np.ndarray]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.lr_scales = _check_denoised_options(self.lr, self.denoise_std, self.lr_scales)
        if not 0.0 <= self.beta < 1.0:
            raise ConfigError(f"beta must be in [0, 1), got {self.beta}")

    def step(
        self, global_arrays: list[np.ndarray], mean_delta: list[np.ndarray]
    ) -> list[np.ndarray]:
        """One momentum step (new arrays).

        Raises:
            ConfigError: on mismatched shapes or a non-finite delta.
        """
        scales, mean_delta = _prepare_denoised_step(
            global_arrays, mean_delta, self.lr_scales, self.denoise_std
        )
        m = self._ensure("m", global_arrays)
        out = []
        for i, (g, d) in enumerate(zip(global_arrays, mean_delta, strict=True)):
            m[i] = (self.beta * m[i] + d).astype(np.float32)
            out.append((g + self.lr * scales[i] * m[i]).astype(np.float32))
        self.steps += 1
        return out


@dataclass
class FedAdam(_Moments):
    """FedAdam (Reddi et al., 2021): adaptive server steps on the mean delta.

    Attributes:
        lr: the server learning rate.
        beta1: first-moment decay.
        beta2: second-moment decay.
        tau: adaptivity (added to ``sqrt(v)``).
        steps: number of steps taken.
    """

    NAME: ClassVar[str] = "fedadam"
    HYPERPARAMETERS: ClassVar[tuple[str, ...]] = ("lr", "beta1", "beta2", "tau")
    MOMENT_KEYS: ClassVar[tuple[str, ...]] = ("m", "v")

    lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    steps: int = 0
    moments: dict[str, list[np.ndarray]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        _check_lr(self.lr)
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise ConfigError("beta1 and beta2 must be in [0, 1)")
        if not self.tau > 0:
            raise ConfigError(f"tau must be positive, got {self.tau}")

    def step(
        self, global_arrays: list[np.ndarray], mean_delta: list[np.ndarray]
    ) -> list[np.ndarray]:
        """One FedAdam step (new arrays).

        Raises:
            ConfigError: on mismatched shapes or a non-finite delta.
        """
        _check_step(global_arrays, mean_delta)
        m = self._ensure("m", global_arrays)
        v = self._ensure("v", global_arrays)
        out = []
        for i, (g, d) in enumerate(zip(global_arrays, mean_delta, strict=True)):
            m[i] = (self.beta1 * m[i] + (1.0 - self.beta1) * d).astype(np.float32)
            v[i] = (self.beta2 * v[i] + (1.0 - self.beta2) * np.square(d)).astype(np.float32)
            out.append((g + self.lr * m[i] / (np.sqrt(v[i]) + self.tau)).astype(np.float32))
        self.steps += 1
        return out


OPTIMIZERS: dict[str, Callable[..., ServerOptimizer]] = {
    "fedavg": FedAvg,
    "fedavgm": FedAvgM,
    "fedadam": FedAdam,
}
"""The optimisers :func:`create_server_optimizer` knows, by name."""


def create_server_optimizer(name: str, **kwargs: Any) -> ServerOptimizer:
    """Create a server optimiser by name (``fedavg``, ``fedavgm``, ``fedadam``).

    Args:
        name: the optimiser's name (case-insensitive).
        **kwargs: its hyperparameters (``lr``, ``beta``, ``beta1``, ``beta2``, ``tau``).

    Returns:
        A fresh optimiser.

    Raises:
        ConfigError: on an unknown name or hyperparameter.

    Example:
        >>> opt = create_server_optimizer("fedavg", lr=2.0)
        >>> opt.step([np.zeros(2, np.float32)], [np.ones(2, np.float32)])[0].tolist()
        [2.0, 2.0]
    """
    factory = OPTIMIZERS.get(name.lower())
    if factory is None:
        raise ConfigError(f"unknown server optimizer {name!r}; known: {sorted(OPTIMIZERS)}")
    if "steps" in kwargs or "moments" in kwargs:
        raise ConfigError("steps and moments are state, not hyperparameters")
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad hyperparameters for {name!r}: {exc}") from exc
