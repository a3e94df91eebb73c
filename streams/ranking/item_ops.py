"""What one interaction changes in the item-keyed state, as data: a list of :class:`ItemOp`.

The user-keyed state (taste vector, history) and the item-keyed state
(co-occurrence rows, popularity, trending) are owned by different partitions
when several workers share the load: a user's events arrive at the worker that
owns the user, while the rows they touch belong to the items. So an interaction
is applied to its user's state in place, and what it changes on the item side
is described as one op per touched item, which can travel (the live worker
ships them on an item-keyed topic, ``streams/items/``) or be applied at once
(the offline evaluation). Both ends run :func:`apply_op`, so they build the
same rows from the same ops.

Per interaction with effective weight ``w``:

* ``w > 0``: the item's trending counter gets ``+w`` at the event's time;
* the user's *first* positive interaction with the item (it is not in their
  recent history yet): its popularity gets ``+1`` and it is paired with each
  distinct item ``h`` among the last ``window`` of the history before it, in
  both rows (``row[item][h]`` and ``row[h][item]``), by ``1`` or, with
  ``pair_half_life = p > 0``, ``0.5 ** (d / p)`` for the d-th most recent h.

Each op touches one item only, so applying the ops of many interactions row by
row, in any interleaving of rows, gives the same rows as applying them in
order: only the order of the ops *of one row* matters (pruning keeps the
highest counts, ties broken by insertion order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from streams.ranking.cooccurrence import CoOccurrence
from streams.ranking.exceptions import RankingError
from streams.ranking.trending import DecayedCounter


@dataclass(frozen=True, slots=True)
class ItemOp:
    """The change one interaction makes to one item's state."""

    item: str
    pop: float = 0.0  # added to the item's popularity (users who liked it)
    trend_ts: float = 0.0  # a trending event at this time ...
    trend_w: float = 0.0  # ... of this weight (0: none)
    pairs: tuple[tuple[str, float], ...] = ()  # (neighbour, count added) in insertion order


def pair_window(history_item_ids: Sequence[str], new_item_id: str, window: int) -> list[str]:
    """The distinct items among the last ``window`` of the history (oldest first given), most recent first,
    without ``new_item_id``: the items a first positive interaction with ``new_item_id`` is paired with."""
    others: list[str] = []
    for h in reversed(history_item_ids):
        if len(others) == window:
            break
        if h != new_item_id and h not in others:
            others.append(h)
    return others


def pair_ops(cooc: CoOccurrence, history_item_ids: Sequence[str], new_item_id: str,
             weight: float = 1.0) -> list[ItemOp]:
    """The ops of one user's first positive interaction with ``new_item_id`` (see the module doc);
    ``cooc`` supplies the window and the pair half-life, nothing is read from its rows."""
    if not (weight > 0 and math.isfinite(weight)):
        raise RankingError(f"co-occurrence weight must be positive and finite, got {weight!r}")
    others = pair_window(history_item_ids, new_item_id, cooc.window)
    ph = cooc.pair_half_life
    pairs = [(h, weight * 0.5 ** (d / ph) if ph > 0 else weight) for d, h in enumerate(others)]
    ops = [ItemOp(new_item_id, pop=weight, pairs=tuple(pairs))]
    ops.extend(ItemOp(h, pairs=((new_item_id, w),)) for h, w in pairs)
    return ops


def with_trend(ops: list[ItemOp], item_id: str, ts: float, weight: float) -> list[ItemOp]:
    """``ops`` with a trending event for ``item_id`` folded into its op (one op per item)."""
    if not (weight > 0 and math.isfinite(weight)):
        raise RankingError(f"trending weights must be positive and finite, got {weight!r}")
    if not math.isfinite(ts):
        raise RankingError(f"event timestamp must be finite, got {ts!r}")
    for k, op in enumerate(ops):
        if op.item == item_id:
            ops[k] = ItemOp(op.item, op.pop, float(ts), float(weight), op.pairs)
            return ops
    return [ItemOp(item_id, trend_ts=float(ts), trend_w=float(weight)), *ops]


def apply_op(op: ItemOp, cooc: CoOccurrence | None, trending: DecayedCounter | None) -> None:
    """Apply one op to the stores (either may be None: that part of the op is skipped).

    The same arithmetic, in the same order per row, as the co-occurrence store and
    the trending counter apply to their own updates, so the live replicas and the
    offline replay agree to the bit.
    """
    apply_ops((op,), cooc, trending)


def apply_ops(ops: Iterable[ItemOp], cooc: CoOccurrence | None, trending: DecayedCounter | None) -> None:
    """:func:`apply_op` for each of ``ops`` in order, copying each touched row once, not once per op.

    A batch's events touch the same rows again and again (every first like pairs the item with
    the user's last 20, so a popular item's row of ~375 entries gets an op per event); copying it
    per op dominated applying them. The rows are the same to the bit: each op still starts from
    the row, pruned or not, that the op before it left, and every row is replaced whole at the
    end (readers rely on that: ``streams/ranking/cooc_rows.py``).
    """
    rows: dict[str, dict[str, float]] = {}
    for op in ops:
        if trending is not None and op.trend_w > 0:
            trending.update(op.item, op.trend_ts, op.trend_w)
        if cooc is None:
            continue
        if op.pop:
            cooc.pops[op.item] = float(cooc.pops.get(op.item, 0.0)) + op.pop
        if op.pairs:
            row = rows.get(op.item)
            if row is None:
                row = dict(cooc.counts.get(op.item, {}))
            for j, w in op.pairs:
                row[j] = row.get(j, 0.0) + w
            rows[op.item] = cooc.bounded(row)
    if cooc is not None:
        for item, row in rows.items():
            cooc.counts[item] = row
