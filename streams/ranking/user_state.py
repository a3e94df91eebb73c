"""Per-user taste state and the single function that updates it on an interaction.

The taste vector is a decayed, weighted sum of the vectors of the items the
user interacted with. At reference time ``updated_ts`` it equals

    sum_vec = Σ_i  w_i · v_i · 0.5 ** ((updated_ts - t_i) / half_life_s)

and it is kept un-normalised so one more event is an O(D) update. Because the
decay of an event only depends on its own timestamp, the result does not depend
on the order events arrive in (up to float rounding): a late event older than
``updated_ts`` is added with its own decay factor instead of rewinding the
clock, which would wrongly grow ("un-decay") everything that came after it.
"""

from __future__ import annotations

import base64
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from streams.ranking.config import EVENT_TYPES, WATCH_RATIO_EVENTS, RankingSettings
from streams.ranking.exceptions import RankingError, StateFormatError

STATE_VERSION = 1
# Below this norm the sum carries no usable direction (e.g. a like cancelled by a dislike).
MIN_NORM = 1e-6


@dataclass
class KeptImpression:
    """A list the user was shown, kept so their later interactions can be attributed to it.

    Only the online metrics read it (``streams/services/impressions.py``); ranking never does.
    """

    event_id: str
    model_version: str
    ts: float
    items: list[str]  # as shown, in order
    list_event_id: str | None = None
    clicked: list[str] = field(default_factory=list)  # shown items already counted as clicks, in click order

    def to_list(self) -> list[Any]:
        return [self.event_id, self.model_version, float(self.ts), list(self.items), self.list_event_id,
                list(self.clicked)]

    @classmethod
    def from_list(cls, row: list[Any]) -> "KeptImpression":
        event_id, model_version, ts, items, list_event_id, clicked = row
        return cls(str(event_id), str(model_version), float(ts), [str(i) for i in items],
                   None if list_event_id is None else str(list_event_id), [str(i) for i in clicked])


class HistoryEntry(NamedTuple):
    """One recent positive interaction: which item, when, and the strongest type seen for it."""

    item_id: str
    ts: float
    event_type: str


@dataclass
class UserState:
    """Everything the recommender remembers about one user (a Faust table value).

    The bounded collections are ``OrderedDict``s used as ordered sets (values
    are ``None``) so membership is O(1) and evicting the oldest is O(1).
    """

    sum_vec: np.ndarray | None = None  # float32 [D]; None until the first event with a vector
    updated_ts: float = 0.0  # reference time of sum_vec (latest event ts applied)
    n_events: int = 0  # events applied (duplicates excluded)
    recent_event_ids: OrderedDict[str, None] = field(default_factory=OrderedDict)
    history: list[HistoryEntry] = field(default_factory=list)  # positive items, one per item, newest last
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)  # LRU, most recent last
    hidden: OrderedDict[str, None] = field(default_factory=OrderedDict)  # LRU, most recent last
    # Forget-me: the user's events at offsets below this one (in their interactions partition) were
    # erased and are dropped if they still arrive (-1: never forgotten). All else starts empty again.
    forgotten_below: int = -1
    # Online metrics (impressions): the user's last shown lists, oldest first, and the impression
    # event ids already applied (dedupe, like recent_event_ids). Both empty until a first impression,
    # and then left out of to_dict, so states of users never shown a list are what they always were.
    impressions: list[KeptImpression] = field(default_factory=list)
    impression_ids: OrderedDict[str, None] = field(default_factory=OrderedDict)

    # -- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; the vector is base64 of little-endian float32 bytes (exact, ~4/3 x 4 B per dim)."""
        vec = None
        if self.sum_vec is not None:
            vec = base64.b64encode(np.ascontiguousarray(self.sum_vec, dtype="<f4").tobytes()).decode("ascii")
        return {
            "v": STATE_VERSION,
            "sum_vec": vec,
            "updated_ts": float(self.updated_ts),
            "n_events": int(self.n_events),
            "recent_event_ids": list(self.recent_event_ids),
            "history": [[h.item_id, float(h.ts), h.event_type] for h in self.history],
            "seen": list(self.seen),
            "hidden": list(self.hidden),
            **({"forgotten_below": self.forgotten_below} if self.forgotten_below >= 0 else {}),
            **({"impressions": [imp.to_list() for imp in self.impressions],
                "impression_ids": list(self.impression_ids)} if self.impressions or self.impression_ids else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "UserState":
        """Inverse of :meth:`to_dict`; raises :class:`StateFormatError` on anything unexpected."""
        try:
            if data.get("v") != STATE_VERSION:
                raise StateFormatError(f"user state version {data.get('v')!r}, expected {STATE_VERSION}")
            vec = None
            if data["sum_vec"] is not None:
                vec = np.frombuffer(base64.b64decode(data["sum_vec"]), dtype="<f4").astype(np.float32)
            return cls(
                sum_vec=vec,
                updated_ts=float(data["updated_ts"]),
                n_events=int(data["n_events"]),
                recent_event_ids=OrderedDict.fromkeys(data["recent_event_ids"]),
                history=[HistoryEntry(str(i), float(t), str(e)) for i, t, e in data["history"]],
                seen=OrderedDict.fromkeys(data["seen"]),
                hidden=OrderedDict.fromkeys(data["hidden"]),
                forgotten_below=int(data.get("forgotten_below", -1)),
                # Optional: states written before impressions existed have neither.
                impressions=[KeptImpression.from_list(row) for row in data.get("impressions", [])],
                impression_ids=OrderedDict.fromkeys(data.get("impression_ids", [])),
            )
        except StateFormatError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFormatError(f"cannot read user state: {exc!r}") from exc


def _remember(od: OrderedDict[str, None], key: str, maxlen: int) -> None:
    """Insert or refresh ``key`` as most recent, evicting the oldest beyond ``maxlen``."""
    if key in od:
        od.move_to_end(key)
    else:
        od[key] = None
        while len(od) > maxlen:
            od.popitem(last=False)


def event_weight(event_type: str, watch_ratio: float | None, cfg: RankingSettings) -> float:
    """Effective weight ``w`` of one event.

    ``w = event_weights[type]``, times ``clamp(watch_ratio, watch_ratio_floor, 1)``
    for view/complete when a watch ratio is given.
    """
    if event_type not in EVENT_TYPES:
        raise RankingError(f"unknown event type {event_type!r}; expected one of {', '.join(EVENT_TYPES)}")
    w = cfg.event_weight(event_type)
    if event_type in WATCH_RATIO_EVENTS and watch_ratio is not None:
        wr = float(watch_ratio)
        if not math.isfinite(wr):
            raise RankingError(f"watch_ratio must be finite, got {watch_ratio!r}")
        w *= min(1.0, max(cfg.watch_ratio_floor, wr))
    return w


def _as_item_vec(item_vec: Any, dim: int | None) -> np.ndarray | None:
    if item_vec is None:
        return None
    v = np.asarray(item_vec, dtype=np.float32).reshape(-1)
    if dim is not None and v.shape[0] != dim:
        raise RankingError(f"item vector has {v.shape[0]} dims, the user's taste vector has {dim}")
    if not np.all(np.isfinite(v)):
        raise RankingError("item vector contains NaN or inf")
    n = float(np.linalg.norm(v))
    if n == 0.0:
        return None  # no direction: contributes nothing
    # Items are unit norm by contract; renormalising makes the weights mean what they say anyway.
    return v / np.float32(n)


def apply_interaction(
    state: UserState,
    event_id: str,
    item_id: str,
    item_vec: Any,
    event_type: str,
    watch_ratio: float | None,
    ts: float,
    cfg: RankingSettings,
) -> bool:
    """Apply one interaction to ``state`` in place; False (and no change) for a duplicate ``event_id``.

    With ``w = event_weight(...)`` and ``d = ts - updated_ts``:

    * ``d >= 0``: ``sum_vec = 0.5**(d/h) * sum_vec + w * v`` and ``updated_ts = ts``;
    * ``d < 0`` (late event): ``sum_vec += 0.5**(-d/h) * w * v`` (its own decay, the clock stays).

    Besides the vector: every event marks the item seen; dislike/hide (see
    ``cfg.hide_event_types``) mark it hidden; a positive ``w`` puts the item at the
    end of ``history`` (one entry per item, keeping the strongest type seen, so a
    later view does not turn "you shared" into "you watched"); a negative ``w``
    removes it from ``history``. ``item_vec`` may be None (item not indexed yet):
    everything but the vector is still updated.
    """
    if event_id in state.recent_event_ids:
        return False
    ts = float(ts)
    if not math.isfinite(ts):
        raise RankingError(f"event timestamp must be finite, got {ts!r}")
    w = event_weight(event_type, watch_ratio, cfg)
    dim = None if state.sum_vec is None else state.sum_vec.shape[0]
    v = _as_item_vec(item_vec, dim)  # validate before mutating anything

    h = cfg.half_life_s
    if state.n_events == 0 and state.sum_vec is None:
        state.updated_ts = ts  # the first event sets the clock
    d = ts - state.updated_ts
    if v is not None:
        if state.sum_vec is None:
            state.sum_vec = np.zeros(v.shape[0], dtype=np.float32)
        if d >= 0:
            state.sum_vec *= np.float32(0.5 ** (d / h))
            state.sum_vec += np.float32(w) * v
        else:
            state.sum_vec += np.float32(w * 0.5 ** (-d / h)) * v
    elif state.sum_vec is not None and d > 0:
        state.sum_vec *= np.float32(0.5 ** (d / h))
    if d > 0:
        state.updated_ts = ts

    state.n_events += 1
    _remember(state.recent_event_ids, event_id, cfg.dedupe_window)
    _remember(state.seen, item_id, cfg.seen_max)
    if event_type in cfg.hide_event_types:
        _remember(state.hidden, item_id, cfg.hidden_max)
    _update_history(state, item_id, event_type, w, ts, cfg)
    return True


def _update_history(state: UserState, item_id: str, event_type: str, w: float, ts: float, cfg: RankingSettings) -> None:
    old = next((h for h in state.history if h.item_id == item_id), None)
    if old is not None:
        state.history.remove(old)
    if w <= 0:
        return
    etype = event_type
    if old is not None and cfg.event_weight(old.event_type) > cfg.event_weight(event_type):
        etype = old.event_type
    entry = HistoryEntry(item_id, max(ts, old.ts) if old is not None else ts, etype)
    # Keep newest last even for late events: insert by timestamp (history is short).
    i = len(state.history)
    while i > 0 and state.history[i - 1].ts > entry.ts:
        i -= 1
    state.history.insert(i, entry)
    if len(state.history) > cfg.history_len:
        del state.history[: len(state.history) - cfg.history_len]


def user_vector(state: UserState | None) -> np.ndarray | None:
    """The unit-norm taste vector (float32), or None for a cold-start user or a near-zero sum.

    Decay scales the whole sum by one factor, so the direction needs no ``now``.
    """
    if state is None or state.sum_vec is None:
        return None
    n = float(np.linalg.norm(state.sum_vec))
    if not math.isfinite(n) or n < MIN_NORM:
        return None
    return (state.sum_vec / np.float32(n)).astype(np.float32, copy=False)


def history_ids(state: UserState | None) -> list[str]:
    """Ids of the user's recent positive items, oldest first."""
    return [] if state is None else [h.item_id for h in state.history]
