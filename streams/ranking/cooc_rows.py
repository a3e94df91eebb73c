"""Co-occurrence rows as NumPy arrays, cached: what vectorised scoring reads instead of the row dicts.

A row ``{neighbour_id: count}`` becomes ``(codes, counts)``: the neighbours as
integer codes of one interner (str -> int, grows with the catalogue and never
shrinks: ids are the catalogue) and their counts as float64, in the row's
iteration order. Building them costs a pass over the row, so they are kept, per
item, in an LRU bounded by the total number of row entries (``max_entries``, 12
bytes each in the arrays: int32 code + float64 count): a budget in entries
rather than rows, as rows run from a few to 1.25 x ``cooc_max_neighbors`` (375
by default) entries.

Validity rests on the write discipline of :mod:`streams.ranking.cooccurrence`:
a row is never changed in place, it is replaced whole (``counts[i] = row``;
``apply_op``, ``merge_row``, ``remove`` and the item store all do so). So a
cached entry is current exactly when the mapping still holds *the same dict
object* it was built from (``cached_row is counts.get(i)``). The entry keeps a
strong reference to that dict, so its address cannot be reused by a new dict
while the entry lives (an ``id()``-only check could be fooled by CPython's dict
free list). The price: an entry whose row has been replaced keeps the old dict
alive until the entry is rebuilt, evicted or swept (:meth:`RowArrays.sweep`,
run after every ``max_entries // 4`` entries built), so memory stays bounded:
the arrays of ``max_entries`` entries, plus at worst an old dict per entry
(~30 MB and ~70 MB at the default budget: a dict costs ~27-35 bytes an entry).

Popularity by code. Scoring divides every candidate's sum by ``sqrt(p_j)``; a warm
user's rows hold thousands of distinct candidates, and one ``pops.get`` each was
the largest part of co-occurrence scoring. :class:`CodedPops` is the ``pops``
dict that also keeps each value at its id's code in an array, written on every
change, so the candidates' popularities are one fancy index.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

import numpy as np

# ~16k rows of 125 entries, ~5k of 375: a warm user's scoring reads 20 of them.
DEFAULT_MAX_ENTRIES = 2_000_000


class RowArrays:
    """An interner of item ids and an LRU of rows as ``(codes int32, counts float64)`` arrays."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = max(1, int(max_entries))
        self.entries = 0  # row entries held
        self.code: dict[str, int] = {}
        # names[code] -> id, as an object array so a batch of codes maps back with one fancy index;
        # capacity doubles as the interner grows (only the first len(self.code) slots are in use).
        self._names = np.empty(1024, dtype=object)
        self._rows: OrderedDict[str, tuple[dict, np.ndarray, np.ndarray]] = OrderedDict()
        self._built_since_sweep = 0  # entries
        self._scratch = np.empty(1024, dtype=np.intp)
        self._slots = np.full(1024, -1, dtype=np.intp)
        self.hits = self.builds = 0

    def __len__(self) -> int:
        return len(self._rows)

    def scratch(self, n: int) -> np.ndarray:
        """A reusable intp buffer of at least ``n`` slots, contents undefined (grows by doubling)."""
        buf = self._scratch
        if len(buf) < n:
            buf = self._scratch = np.empty(max(n, 2 * len(buf)), dtype=np.intp)
        return buf

    def slots(self, n: int) -> np.ndarray:
        """A reusable intp buffer of at least ``n`` slots, -1 in every one: whoever writes to it puts
        the -1s back before returning (grows by doubling)."""
        buf = self._slots
        if len(buf) < n:
            buf = self._slots = np.full(max(n, 2 * len(buf)), -1, dtype=np.intp)
        return buf

    # -- the interner --------------------------------------------------------------------
    def intern(self, ids: Iterable[str]) -> None:
        """Give every id of ``ids`` a code (those that have none yet)."""
        code = self.code
        for j in ids:
            if j not in code:
                c = len(code)
                if c == len(self._names):
                    grown = np.empty(2 * c, dtype=object)
                    grown[:c] = self._names
                    self._names = grown
                code[j] = c
                self._names[c] = j

    def codes_of(self, ids: Iterable[str]) -> list[int]:
        """The codes of those of ``ids`` that have one (an id never interned is in no cached row)."""
        get = self.code.get
        return [c for c in map(get, ids) if c is not None]

    def names(self, codes: np.ndarray) -> list[str]:
        """The ids of ``codes``."""
        return self._names[codes].tolist()

    # -- rows ------------------------------------------------------------------------------
    def get(self, item_id: str, row: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """``row`` (the current row of ``item_id``) as arrays, from the cache when built from this very row."""
        hit = self._rows.get(item_id)
        if hit is not None and hit[0] is row:
            self._rows.move_to_end(item_id)
            self.hits += 1
            return hit[1], hit[2]
        n = len(row)
        codes = self._codes_after(hit, row) if hit is not None else None
        if codes is None:
            codes = self._codes(row, n)
        # float64 of each count: the same value Python's float arithmetic would use.
        counts = np.fromiter(row.values(), dtype=np.float64, count=n)
        if hit is not None:
            self.entries -= len(hit[1])
        self._rows[item_id] = (row, codes, counts)  # type: ignore[assignment]
        self._rows.move_to_end(item_id)
        self.entries += n
        while self.entries > self.max_entries and len(self._rows) > 1:  # the newest row always stays
            self.entries -= len(self._rows.popitem(last=False)[1][1])
        self.builds += 1
        self._built_since_sweep += n
        return codes, counts

    def _codes(self, keys: Iterable[str], n: int) -> np.ndarray:
        try:  # every neighbour is usually interned already: no Python-level loop then
            return np.fromiter(map(self.code.__getitem__, keys), dtype=np.int32, count=n)
        except KeyError:
            keys = list(keys)
            self.intern(keys)
            return np.fromiter(map(self.code.__getitem__, keys), dtype=np.int32, count=n)

    def _codes_after(self, hit: tuple[dict, np.ndarray, np.ndarray], row: Mapping[str, float]) -> np.ndarray | None:
        """The codes of ``row`` from the previous version's, when ``row`` starts with the same neighbours
        in the same order (the usual write: a copy of the old row, counts changed, neighbours appended;
        a pruned row is rebuilt whole). Popular rows change every batch; this halves their rebuild."""
        old_row, old_codes, _ = hit
        m = len(old_codes)
        if len(row) < m or m == 0:
            return None
        keys = list(row)
        if keys[:m] != list(old_row):  # the same string objects: an identity check per key
            return None
        if len(keys) == m:
            return old_codes
        return np.concatenate((old_codes, self._codes(keys[m:], len(keys) - m)))

    def code_of(self, item_id: str) -> int:
        """``item_id``'s code, interning it first when it has none."""
        c = self.code.get(item_id)
        if c is None:
            self.intern((item_id,))
            c = self.code[item_id]
        return c

    def clear(self) -> None:
        """Forget every cached row (the interner stays)."""
        self._rows.clear()
        self.entries = self._built_since_sweep = 0

    def sweep(self, counts: Mapping[str, Mapping[str, float]]) -> int:
        """Drop the entries whose row ``counts`` no longer holds (replaced or removed); returns how many."""
        stale = [i for i, e in self._rows.items() if counts.get(i) is not e[0]]
        for i in stale:
            self.entries -= len(self._rows.pop(i)[1])
        self._built_since_sweep = 0
        return len(stale)

    def maybe_sweep(self, counts: Mapping[str, Mapping[str, float]]) -> None:
        """:meth:`sweep` once ``max_entries // 4`` entries have been built since the last one (amortised)."""
        if self._built_since_sweep >= max(1, self.max_entries // 4):
            self.sweep(counts)


class CodedPops(dict):
    """``item_id -> popularity`` (a dict), each value also held as float64 at the id's code of
    ``interner`` (:meth:`at` reads many at once). Every way a dict changes is overridden to keep the
    two equal; an id without a popularity reads 0.0 there, as ``float(pops.get(j, 0.0))`` does."""

    def __init__(self, interner: RowArrays, data: Mapping[str, float] | Iterable = ()) -> None:
        super().__init__()
        self.interner = interner
        self._by_code = np.zeros(1024, dtype=np.float64)
        self.update(data)

    def __reduce__(self):  # copy/pickle: rebuilt through __init__, not item by item before its state
        return type(self), (self.interner, dict(self))

    def _put(self, item_id: str, value) -> None:
        c = self.interner.code_of(item_id)
        if c >= len(self._by_code):
            self._grow(c + 1)
        self._by_code[c] = float(value)

    def _zero(self, item_id: str) -> None:
        c = self.interner.code.get(item_id)
        if c is not None and c < len(self._by_code):
            self._by_code[c] = 0.0

    def at(self, codes: np.ndarray) -> np.ndarray:
        """The popularities of the ids with ``codes`` (codes of ``interner``; 0.0 where none)."""
        n = len(self.interner.code)
        if n > len(self._by_code):  # ids interned since the last write have no popularity: zeros
            self._grow(n)
        return self._by_code[codes]

    def _grow(self, n: int) -> None:
        grown = np.zeros(max(2 * len(self._by_code), n), dtype=np.float64)
        grown[: len(self._by_code)] = self._by_code
        self._by_code = grown

    def __setitem__(self, item_id: str, value) -> None:
        super().__setitem__(item_id, value)
        self._put(item_id, value)

    def __delitem__(self, item_id: str) -> None:
        super().__delitem__(item_id)
        self._zero(item_id)

    _missing = object()

    def pop(self, item_id: str, default=_missing):
        if item_id not in self:
            if default is CodedPops._missing:
                raise KeyError(item_id)
            return default
        value = super().pop(item_id)
        self._zero(item_id)
        return value

    def popitem(self):
        item_id, value = super().popitem()
        self._zero(item_id)
        return item_id, value

    def setdefault(self, item_id: str, default=None):
        if item_id not in self:
            self[item_id] = default
        return super().__getitem__(item_id)

    def update(self, other=(), **kw) -> None:
        for item_id, value in (other.items() if isinstance(other, Mapping) else other):
            self[item_id] = value
        for item_id, value in kw.items():
            self[item_id] = value

    def __ior__(self, other):
        self.update(other)
        return self

    def clear(self) -> None:
        super().clear()
        self._by_code[:] = 0.0
