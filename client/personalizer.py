"""Real-time, consent-aware personalization on the device.

:class:`Personalizer` ties a device's :class:`~fedpers.client.store.EventStore` to the
published :class:`~fedpers.client.global_model.GlobalModel`:

- :meth:`Personalizer.record` appends the event (the store enforces P1 + P5) and then
  folds it into the private user vector with a few gradient steps on that vector alone
  (the shared item side stays frozen), so the very next :meth:`Personalizer.recommend`
  reflects it.
- :meth:`Personalizer.recommend` ranks items for the device. What it may use depends on
  consent, checked on every call:

  ============  =====================================================================
  basis         when and what
  ============  =====================================================================
  personalised  P1 + P6 and a profile exists: ``q . v_i + b_i`` with ``q`` the private
                vector shifted by the session vector of the latest events
                (:mod:`fedpers.client.session`; ``q = u`` when the session weight is 0)
  contextual    otherwise, with P11: public popularity re-ranked by the request context
  popular       otherwise: public popularity only; no device data is read at all
  ============  =====================================================================

  Only the ``personalised`` basis reads the device's history (to exclude seen items and
  to explain). Items the published model never saw trained are scored from their
  attributes (the tower) and explained as such.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedpers.client.global_model import GlobalModel
from fedpers.client.inference.fold_in import fold_in
from fedpers.client.inference.ranking import (
    Basis,
    ItemFilter,
    candidate_mask,
    check_request,
    contextual_scores,
    explain_items,
    profile_scores,
    select_items,
)
from fedpers.client.session import SessionConfig, session_query
from fedpers.client.store import Event, EventStore
from fedpers.privacy.consent import (
    ConsentState,
    may_personalise,
    may_record_for_profiling,
    may_use_limited_data,
)
from fedpers.privacy.errors import ConfigError

__all__ = ["Basis", "ItemFilter", "Personalizer", "Recommendation"]

#: How many of the most recent history items a fold-in step uses (bounds its latency).
FOLD_IN_WINDOW = 256


@dataclass(frozen=True)
class Recommendation:
    """One recommended item.

    Attributes:
        item: catalogue item id.
        score: ranking score on the basis's own scale.
        basis: what the ranking used (see the module docstring).
        explanation: a short, human-readable reason.
    """

    item: str
    score: float
    basis: Basis
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "item": self.item,
            "score": self.score,
            "basis": self.basis,
            "explanation": self.explanation,
        }


class Personalizer:
    """Real-time personalization over one device store and one global model.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from fedpers.client.consent import ConsentManager
        >>> from fedpers.client.model_layout import ModelConfig
        >>> items = ["a1", "a2", "b1", "b2"]  # the a items point one way, the b items another
        >>> vectors = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32)
        >>> config = ModelConfig(n_items=4, dim=2)
        >>> model = GlobalModel.from_arrays(config, [vectors, np.zeros(4, np.float32)], items)
        >>> folder = tempfile.TemporaryDirectory()
        >>> store = EventStore.create(Path(folder.name) / "device.db", items)
        >>> _ = ConsentManager(store).grant("P1", "P5", "P6")
        >>> p = Personalizer(store, model)
        >>> [r.basis for r in p.recommend(2)]  # no profile yet
        ['popular', 'popular']
        >>> p.record(Event("b1", "click", 1.0, 1.7e9))
        >>> [(r.item, r.basis, r.explanation) for r in p.recommend(1)]
        [('b2', 'personalised', 'because you interacted with b1')]
        >>> store.close()
        >>> folder.cleanup()
    """

    def __init__(
        self,
        store: EventStore,
        model: GlobalModel,
        *,
        fold_in_steps: int = 5,
        bootstrap_steps: int = 50,
        fold_in_lr: float = 0.05,
        l2: float = 0.01,
        seed: int = 0,
        item_feature_names: Sequence[str] = (),
        context_popularity: Mapping[str, np.ndarray] | None = None,
        session: SessionConfig | None = None,
    ) -> None:
        """Bind a store to a global model.

        Args:
            store: the device's event store (its catalogue must match the model's).
            model: the published global model.
            fold_in_steps: user-vector steps per recorded event.
            bootstrap_steps: steps when a profile is first built from a bulk history.
            fold_in_lr: step size of the fold-in.
            l2: weight decay of the fold-in.
            seed: seed of the fold-in's negatives.
            item_feature_names: attribute names, for ``ItemFilter.require_features``.
            context_popularity: per ``"key=value"`` context, a popularity boost (P11).
            session: how the latest events shift the ranking query; ``None`` uses the
                setting published with the model (``model.meta["session"]``), or none.

        Raises:
            ConfigError: the store's catalogue differs from the model's, or the session
                settings are invalid.
        """
        if store.catalogue() != model.item_ids:
            raise ConfigError(
                f"{store.path}: the store's catalogue does not match the global model's "
                "catalogue; update the store with set_catalogue() first"
            )
        self._store = store
        self._model = model
        self._index = model.index
        self._steps = fold_in_steps
        self._bootstrap_steps = bootstrap_steps
        self._lr = fold_in_lr
        self._l2 = l2
        self._rng = np.random.default_rng([seed, store.count()])
        self._feature_names = list(item_feature_names)
        self._context_popularity = dict(context_popularity or {})
        self._popularity = model.item_bias
        self._session = session or SessionConfig.from_meta(model.meta.get("session"))
        self._history: list[int] | None = None
        self._vector: np.ndarray | None = None

    # -- state ---------------------------------------------------------------------------

    def _consent(self) -> ConsentState:
        return self._store.load_consent()

    def _history_indices(self) -> list[int]:
        if self._history is None:
            self._history = [int(i) for i in self._store.history_indices()]
        return self._history

    def _user_vector(self) -> np.ndarray | None:
        if self._vector is None:
            self._vector = self._store.load_user_vector()
        if self._vector is None:
            # Events ingested in bulk (e.g. `fedpers client ingest`) have no profile yet:
            # build it once from the history, with more steps than a single event needs.
            self._vector = self.refresh_profile(steps=self._bootstrap_steps)
        return self._vector

    # -- record --------------------------------------------------------------------------

    def record(self, event: Event) -> None:
        """Append ``event`` and fold it into the private user vector.

        Raises:
            ConsentError: P1 + P5 are not both granted; nothing is stored or learned.
            DataError: the event is invalid or its item is unknown; nothing is stored.
        """
        self._store.append(event)
        history = self._history_indices()
        index = self._index.get(event.item)
        if index is not None:
            history.append(index)
        self.refresh_profile()

    def refresh_profile(self, steps: int | None = None) -> np.ndarray | None:
        """Re-fold the recent history into the user vector and persist it.

        Args:
            steps: gradient steps (default: the per-event ``fold_in_steps``).

        Returns:
            The new vector, or ``None`` when profiling is not permitted or the history
            is empty.
        """
        if not may_record_for_profiling(self._consent()):
            return None
        history = self._history_indices()
        if not history:
            return None
        current = self._vector if self._vector is not None else self._store.load_user_vector()
        if current is None:
            current = np.zeros(self._model.config.dim, dtype=np.float32)
        recent = np.asarray(history[-FOLD_IN_WINDOW:], dtype=np.int64)
        vector: np.ndarray = fold_in(
            current,
            self._model.item_vectors,
            self._model.item_bias,
            recent,
            self._steps if steps is None else steps,
            self._lr,
            self._rng,
            l2=self._l2,
        )
        self._store.save_user_vector(vector)
        self._vector = vector
        return vector

    # -- recommend -----------------------------------------------------------------------

    def recommend(
        self,
        k: int = 10,
        context: Mapping[str, Any] | None = None,
        *,
        exclude_seen: bool = True,
        filters: ItemFilter | None = None,
        diversity: float = 0.0,
    ) -> list[Recommendation]:
        """The top ``k`` items for this device, as far as consent allows.

        Args:
            k: how many items.
            context: the request's context (e.g. ``{"hour": 21, "device": "tv"}``);
                used only for the ``contextual`` basis (P11).
            exclude_seen: drop items already in the history (personalised basis only).
            filters: which items may be recommended.
            diversity: 0 (pure relevance) to 1 (maximal diversity): maximal marginal
                relevance over item-vector cosine similarity.

        Raises:
            ConfigError: ``k`` < 1 or ``diversity`` outside [0, 1].
        """
        check_request(k, diversity)
        consent = self._consent()
        vector = self._user_vector() if may_personalise(consent) else None
        history: list[int] = []
        if vector is not None:
            basis: Basis = "personalised"
            history = self._history_indices()
            recent = np.asarray(history[-self._session.window :], dtype=np.int64)
            query = session_query(vector, self._model.item_vectors, recent, self._session)
            scores = profile_scores(self._model.item_vectors, self._model.item_bias, query)
        elif may_use_limited_data(consent):
            basis = "contextual"
            scores = contextual_scores(self._popularity, self._context_popularity, context)
        else:
            basis = "popular"
            scores = self._popularity.astype(np.float64, copy=True)
        mask = candidate_mask(
            self._model.item_ids,
            self._index,
            filters,
            item_features=self._model.item_features,
            feature_names=self._feature_names,
        )
        if exclude_seen and history:
            mask[np.asarray(history, dtype=np.int64)] = False
        chosen = select_items(
            np.asarray(scores, dtype=np.float64), mask, k, diversity, self._model.item_vectors
        )
        explanations = explain_items(
            chosen,
            basis,
            item_ids=self._model.item_ids,
            item_vectors=self._model.item_vectors,
            cold_items=self._model.cold_items,
            history=history,
            context=context,
        )
        return [
            Recommendation(
                item=self._model.item_ids[i],
                score=float(scores[i]),
                basis=basis,
                explanation=text,
            )
            for i, text in zip(chosen, explanations, strict=True)
        ]
