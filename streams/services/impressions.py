"""Online metrics: which list a user was shown, and which of its items they then engaged with.

An ``impressions`` event (``streams/records.py: Impression``) says a user was shown
a list. The user agent handles a user's impressions and interactions in one stream
(co-partitioned topics, one owner per user), so the attribution state lives in
the user's state (``UserState.impressions``) and survives restarts and rebalances
through its changelog. The rules (docs/EVENTS.md, "Impression"):

* an impression is applied once per ``event_id`` (re-deliveries are dropped) and
  counts ``impressions += 1``, ``impressed_items += len(items)`` for its
  ``model_version``; the user keeps their last ``impressions_kept`` of them;
* a later interaction of a click type (:data:`CLICK_TYPES`) on a shown item, at
  most ``impression_attribution_s`` after the impression (by event time, never
  before it), is a click for the most recent such impression, at most once per
  (impression, item); an impression's first click is also a hit;
* an impression that arrives after its clicks (no order across topics) gets
  them from the user's recent positive items (:func:`apply_impression`).

The functions that change a state do no I/O (the state changed in place, what
to count returned), so they are tested on their own; :func:`count` moves what a batch produced into the worker's
Prometheus counters once its states are written, and :func:`online_metrics`
reads them back per model_version.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from streams.ranking.user_state import KeptImpression, UserState
from streams.records import Impression
from streams.web.metrics import CLICKS, HITS, IMPRESSED_ITEMS, IMPRESSIONS

#: Interaction types that count as a click: positive engagement. ``skip``, ``dislike`` and
#: ``hide`` are reactions to a shown item too, but not the kind a CTR should reward.
CLICK_TYPES = frozenset({"view", "like", "share", "comment", "complete"})
#: Distinct model_version labels one worker exports; later ones are counted under :data:`OTHER`.
#: The label comes from the producers' impressions, and every new value is a new Prometheus
#: series: a client that sent, say, a uuid as model_version must not grow them without bound.
MAX_MODEL_VERSIONS = 64
OTHER = "other"

log = logging.getLogger(__name__)
_labels: set[str] = set()


@dataclass(frozen=True, slots=True)
class Shown:
    """An impression applied to a user's state (what it adds to the counters)."""

    model_version: str
    n_items: int
    late_clicks: tuple["Click", ...] = ()  # interactions applied before the impression arrived (see below)


@dataclass(frozen=True, slots=True)
class Click:
    """An interaction attributed to an impression."""

    model_version: str
    impression_id: str
    item_id: str
    hit: bool  # the impression's first click


def apply_impression(state: UserState, imp: Impression, *, kept: int, window_s: float,
                     dedupe: int) -> Shown | None:
    """Remember ``imp`` in ``state``; None (and no change) for an ``event_id`` already applied.

    ``kept`` bounds the impressions kept (the oldest by ``ts`` go first), ``dedupe``
    the impression ids remembered. Impressions whose window has closed relative to
    the user's newest event are dropped too (they can no longer get a click, except
    from an interaction that arrives that far out of order).

    Kafka does not order the impressions topic against the interactions topic, and
    apps often send their impression logs in batches, so the user's clicks on the
    list may have been applied before it arrives. Those are found in the user's
    ``history`` (their recent positive items, each with its latest time) and
    counted now as the impression's ``late_clicks``: a shown item whose history
    time lies in the impression's window, unless a kept impression already has a
    click on it (a click is never counted twice, so that one keeps it).
    """
    if imp.event_id in state.impression_ids:
        return None
    state.impression_ids[imp.event_id] = None
    while len(state.impression_ids) > dedupe:
        state.impression_ids.popitem(last=False)
    entry = KeptImpression(imp.event_id, imp.model_version, float(imp.ts), list(imp.items), imp.list_event_id)
    # Oldest first by ts; an impression arriving late is placed after those shown at the same time or earlier.
    i = len(state.impressions)
    while i > 0 and state.impressions[i - 1].ts > entry.ts:
        i -= 1
    state.impressions.insert(i, entry)
    late = _late_clicks(state, entry, window_s)
    if len(state.impressions) > kept:
        del state.impressions[: len(state.impressions) - kept]
    _expire(state, entry.ts, window_s)
    return Shown(imp.model_version, len(imp.items), late)


def _late_clicks(state: UserState, entry: KeptImpression, window_s: float) -> tuple[Click, ...]:
    shown = set(entry.items)
    claimed = {item for imp in state.impressions for item in imp.clicked}
    clicks = []
    for h in state.history:  # oldest first: the first is the hit
        if (h.item_id in shown and h.item_id not in claimed and h.event_type in CLICK_TYPES
                and entry.ts <= h.ts <= entry.ts + window_s):
            clicks.append(Click(entry.model_version, entry.event_id, h.item_id, hit=not entry.clicked))
            entry.clicked.append(h.item_id)
    return tuple(clicks)


def attribute(state: UserState, item_id: str, event_type: str, ts: float, *, window_s: float) -> Click | None:
    """The click an applied interaction makes, recorded in ``state``; None when it makes none.

    Call it once per *applied* interaction (not for a duplicate ``event_id``). The
    impression it counts for is the most recent one that showed ``item_id`` at or
    before ``ts`` and at most ``window_s`` before it; if that one already had a
    click on the item, nothing counts (an older impression does not get it instead).
    """
    if not state.impressions:
        return None  # users never shown a list: nothing to do, nothing changes
    click = None
    if event_type in CLICK_TYPES:
        target = None
        for imp in reversed(state.impressions):  # newest first; ties: the one applied last
            if imp.ts <= ts <= imp.ts + window_s and item_id in imp.items:
                target = imp
                break
        if target is not None and item_id not in target.clicked:
            click = Click(target.model_version, target.event_id, item_id, hit=not target.clicked)
            target.clicked.append(item_id)
    _expire(state, ts, window_s)
    return click


def _expire(state: UserState, ts: float, window_s: float) -> None:
    """Drop impressions whose window closed before the user's newest event (``ts`` or an earlier one)."""
    newest = max(ts, state.updated_ts, state.impressions[-1].ts if state.impressions else ts)
    if state.impressions and state.impressions[0].ts + window_s < newest:
        state.impressions[:] = [imp for imp in state.impressions if imp.ts + window_s >= newest]


def count(outcomes: Iterable[Shown | Click]) -> None:
    """Add a batch's impressions and clicks to this worker's counters (after its states are written)."""
    for o in outcomes:
        mv = _label(o.model_version)
        if isinstance(o, Shown):
            IMPRESSIONS.labels(model_version=mv).inc()
            IMPRESSED_ITEMS.labels(model_version=mv).inc(o.n_items)
            count(o.late_clicks)
        else:
            CLICKS.labels(model_version=mv).inc()
            if o.hit:
                HITS.labels(model_version=mv).inc()


def _label(model_version: str) -> str:
    if model_version in _labels:
        return model_version
    if len(_labels) >= MAX_MODEL_VERSIONS:
        if OTHER not in _labels:  # said once per worker
            _labels.add(OTHER)
            log.warning("impressions name more than %d model versions; %r and later ones are counted as %r "
                        "(an impression must carry the shown list's model_version)", MAX_MODEL_VERSIONS,
                        model_version, OTHER)
        return OTHER
    _labels.add(model_version)
    return model_version


_FIELDS = {IMPRESSIONS: "impressions", IMPRESSED_ITEMS: "impressed_items", CLICKS: "clicks", HITS: "hits"}


def online_metrics() -> dict[str, dict[str, float | None]]:
    """This worker's online metrics per model_version, from its counters (since it started).

    ``{model_version: {impressions, impressed_items, clicks, hits, ctr, hit_rate}}``
    with ``ctr = clicks / impressed_items`` and ``hit_rate = hits / impressions``
    (None while the denominator is 0). With N workers, sum the counters across
    workers first (Prometheus does: see docs/EVENTS.md); a user's impression and
    click may be counted by different workers after a rebalance.
    """
    out: dict[str, dict[str, float | None]] = {}
    for counter, name in _FIELDS.items():
        for family in counter.collect():
            for sample in family.samples:
                if sample.name.endswith("_total") and "model_version" in sample.labels:
                    row = out.setdefault(sample.labels["model_version"], dict.fromkeys(_FIELDS.values(), 0))
                    row[name] = sample.value
    for row in out.values():
        row["ctr"] = row["clicks"] / row["impressed_items"] if row["impressed_items"] else None
        row["hit_rate"] = row["hits"] / row["impressions"] if row["impressions"] else None
    return dict(sorted(out.items()))


__all__ = ["CLICK_TYPES", "MAX_MODEL_VERSIONS", "OTHER", "Click", "Shown", "apply_impression", "attribute", "count",
           "online_metrics"]
