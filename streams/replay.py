"""Turn rating datasets and JSONL files into avrec's upload and interaction events.

Three layouts are recognised from the files in a directory (see :func:`detect_layout`):

``ml-100k``   ``u.item`` + ``u.data`` (+ ``u.genre``, ``u.user``), MovieLens 100k, Latin-1.
``ml-latest`` ``movies.csv`` + ``ratings.csv`` (+ ``tags.csv``), MovieLens latest / 25M / 32M, UTF-8.
``jsonl``     ``items.jsonl`` (upload records) and/or ``interactions.jsonl`` (interaction records).

Every layout yields ``(kind, key, value)`` with ``kind`` ``"uploads"`` or
``"interactions"`` (attribute names of ``settings.kafka.topics``), ``key`` the
Kafka key (``item_id`` / ``user_id``, UTF-8) and ``value`` the encoded record,
in time order, with each item's upload before that item's first interaction.

MovieLens mapping (also in docs/EVENTS.md):

* item ``<prefix>:<movieId>``, user ``<prefix>:<userId>`` (prefix ``ml``);
* upload ``event_id`` ``<prefix>:item:<movieId>``; ``creator_id`` ``"movielens"``
  (MovieLens has no creators, and a made-up one, such as the first genre, would
  fake a creator signal that duplicates the tags); ``title`` the title without its
  year and with a trailing article moved to the front ("Usual Suspects, The" ->
  "The Usual Suspects"); ``description`` ``"<title> (<year>)"`` (just the title
  without a year); ``tags`` the genre names (ml-100k's "unknown" genre and
  ml-latest's "(no genres listed)" are left out), then for ml-latest the
  ``tags.csv`` tags, most used first, deduplicated case-insensitively, capped at
  the record limits (50 tags, 64 characters);
* upload ``created_at`` = the item's first rating time minus 1 s, so each upload
  lands just before its first interaction; items nobody rated get the dataset's
  first rating time minus 1 s (release dates are not used: many predate 1970);
* interaction ``event_id`` ``<prefix>:<userId>:<movieId>:<ts>``, ``watch_ms`` None,
  ``type`` from the rating on MovieLens' own scale (5 "must see", 4 "will enjoy",
  3 "it's OK", 2 "fairly bad", 1 "awful"): rating >= 4 -> ``like``,
  3 <= rating < 4 -> ``view``, rating < 3 -> ``dislike`` (half stars: 3.5 is a
  view, 2.5 a dislike);
* ratings naming an item missing from the item file, or (ml-100k) a user missing
  from ``u.user``, are skipped and counted, as are malformed lines.

Ordering is by timestamp, ties kept in file order, uploads before interactions
at equal times. For JSONL input an upload whose ``created_at`` is later than its
item's first interaction is moved up to that interaction (its ``created_at`` is
left as written).

Loading sorts in memory: ml-latest-full's 33M ratings take a few GB and a minute.
"""

from __future__ import annotations

import csv
import heapq
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from streams.exceptions import AvrecError
from streams.records import (
    MAX_TAG_CHARS,
    MAX_TAGS,
    MAX_TITLE_CHARS,
    RECORD_TYPES,
    Interaction,
    RecordError,
    Upload,
    encode,
    parse_json,
    validate,
)

log = logging.getLogger(__name__)

UPLOADS = "uploads"
INTERACTIONS = "interactions"
MOVIELENS_CREATOR = "movielens"

# u.genre's names, used when a ml-100k directory lacks u.genre.
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_NO_GENRE = {"unknown", "(no genres listed)"}
_ARTICLES = ("The", "A", "An", "Les", "Le", "La", "L'", "Il", "El", "Los", "Las", "Das", "Der", "Die")
_YEAR_RE = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:[-–]\d{0,4})?\)\s*$")
_ARTICLE_RE = re.compile(
    r"^(?P<base>.+?), (?P<art>" + "|".join(re.escape(a) for a in _ARTICLES) + r")(?P<rest> \(.*\))?$"
)


class ReplayError(AvrecError):
    """A dataset directory could not be read."""


def rating_to_type(rating: float) -> str:
    """MovieLens star rating -> interaction type (>= 4 like, [3, 4) view, < 3 dislike)."""
    if rating >= 4.0:
        return "like"
    if rating >= 3.0:
        return "view"
    return "dislike"


def split_title(raw: str) -> tuple[str, int | None]:
    """``"Usual Suspects, The (1995)"`` -> ``("The Usual Suspects", 1995)``."""
    raw = raw.strip()
    year = None
    m = _YEAR_RE.match(raw)
    if m and m.group("title"):
        raw, year = m.group("title"), int(m.group("year"))
    a = _ARTICLE_RE.match(raw)
    if a:
        art = a.group("art")
        raw = f"{art}{'' if art.endswith(chr(39)) else ' '}{a.group('base')}{a.group('rest') or ''}"
    return raw, year


# ---------------------------------------------------------------- JSONL


class JsonlLine(NamedTuple):
    """One non-blank line of a JSONL file: its 1-based number and either a record or the error."""

    lineno: int
    raw: bytes
    record: Any | None
    error: RecordError | None


def read_jsonl(path: str | Path, kind: str, **validate_kw: Any) -> Iterator[JsonlLine]:
    """Validate each line of ``path`` as a ``kind`` record (``uploads``, ``interactions``, ...).

    Blank lines are skipped; a UTF-8 BOM on the first line is ignored; a bad line
    yields its :class:`RecordError` instead of raising.
    """
    try:
        cls = RECORD_TYPES[kind]
    except KeyError:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {sorted(RECORD_TYPES)}") from None
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                rec = validate(cls, parse_json(line), **validate_kw)
            except RecordError as exc:
                yield JsonlLine(lineno, line, None, exc)
            else:
                yield JsonlLine(lineno, line, rec, None)


def iter_jsonl_events(path: str | Path, kind: str, **validate_kw: Any) -> Iterator[tuple[str, bytes, bytes]]:
    """``(kind, key, value)`` for each valid line of a JSONL file; bad lines are logged and skipped."""
    for line in read_jsonl(path, kind, **validate_kw):
        if line.error is not None:
            log.warning("%s:%d: skipped (%s): %s", path, line.lineno, line.error.stage, line.error.reason)
            continue
        yield kind, line.record.kafka_key(), encode(line.record)


# ---------------------------------------------------------------- the merged stream


@dataclass
class Replay:
    """A loaded dataset: ``len()`` events, iterated as ``(kind, key, value)`` or, via :meth:`timed`, with their ts."""

    path: Path
    layout: str
    n_uploads: int
    n_interactions: int
    skipped: Counter = field(default_factory=Counter)
    _timed: Callable[[], Iterator[tuple[float, str, bytes, bytes]]] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.n_uploads + self.n_interactions

    def timed(self) -> Iterator[tuple[float, str, bytes, bytes]]:
        """``(ts, kind, key, value)``; ``ts`` is the position in the stream (an upload's may precede its created_at)."""
        assert self._timed is not None
        return self._timed()

    def __iter__(self) -> Iterator[tuple[str, bytes, bytes]]:
        for _, kind, key, value in self.timed():
            yield kind, key, value


def _merge(
    uploads: list[tuple[float, bytes, bytes]], interactions: Callable[[], Iterator[tuple[float, bytes, bytes]]]
) -> Callable[[], Iterator[tuple[float, str, bytes, bytes]]]:
    """Merge ``(emit_ts, key, value)`` uploads with time-sorted interactions; uploads win ties."""
    uploads = sorted(uploads, key=lambda u: u[0])  # stable: file order among equal times

    def gen() -> Iterator[tuple[float, str, bytes, bytes]]:
        ups = ((ts, 0, i, UPLOADS, k, v) for i, (ts, k, v) in enumerate(uploads))
        ints = ((ts, 1, i, INTERACTIONS, k, v) for i, (ts, k, v) in enumerate(interactions()))
        for ts, _, _, kind, key, value in heapq.merge(ups, ints):
            yield ts, kind, key, value

    return gen


def detect_layout(path: str | Path) -> str:
    """``"ml-100k"``, ``"ml-latest"`` or ``"jsonl"``, from the files in directory ``path``."""
    p = Path(path)
    if not p.is_dir():
        raise ReplayError(f"{p} is not a directory")
    if (p / "u.item").is_file() and (p / "u.data").is_file():
        return "ml-100k"
    if (p / "movies.csv").is_file() and (p / "ratings.csv").is_file():
        return "ml-latest"
    if (p / "items.jsonl").is_file() or (p / "interactions.jsonl").is_file():
        return "jsonl"
    raise ReplayError(
        f"{p} holds no known dataset: expected u.item + u.data (MovieLens 100k), "
        "movies.csv + ratings.csv (MovieLens latest) or items.jsonl / interactions.jsonl"
    )


def open_replay(path: str | Path, *, id_prefix: str = "ml") -> Replay:
    """Load the dataset in ``path`` (layout detected) into a time-ordered :class:`Replay`."""
    p = Path(path)
    layout = detect_layout(p)
    if layout == "jsonl":
        replay = _load_jsonl(p)
    else:
        replay = _load_movielens(p, layout, id_prefix)
    if replay.skipped:
        log.warning("%s: skipped %s", p, dict(replay.skipped))
    log.info("%s (%s): %d uploads, %d interactions", p, layout, replay.n_uploads, replay.n_interactions)
    return replay


def movielens_events(path: str | Path, *, id_prefix: str = "ml") -> Iterator[tuple[str, bytes, bytes]]:
    """``(kind, key, value)`` for a MovieLens (100k or latest) or JSONL directory, in time order."""
    yield from open_replay(path, id_prefix=id_prefix)


# ---------------------------------------------------------------- MovieLens


@dataclass
class _Movie:
    mid: int
    title: str
    year: int | None
    tags: list[str]


def _read_ml100k_items(p: Path, skipped: Counter) -> dict[int, _Movie]:
    genres = list(ML100K_GENRES)
    if (p / "u.genre").is_file():
        named: dict[int, str] = {}
        for line in (p / "u.genre").read_text(encoding="latin-1").splitlines():
            name, _, idx = line.strip().rpartition("|")
            if name and idx.isdigit():
                named[int(idx)] = name
        if named:
            genres = [named.get(i, f"genre{i}") for i in range(max(named) + 1)]
    movies: dict[int, _Movie] = {}
    n_flags = len(genres)
    for line in (p / "u.item").read_text(encoding="latin-1").splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) < 5 + n_flags or not fields[0].strip().isdigit():
            skipped["malformed item line"] += 1
            continue
        flags = fields[-n_flags:]
        mid = int(fields[0])
        title, year = split_title("|".join(fields[1 : len(fields) - n_flags - 3]))
        if year is None:  # fall back on the release date, "01-Jan-1995"
            try:
                year = datetime.strptime(fields[2].strip(), "%d-%b-%Y").year
            except ValueError:
                pass
        tags = [g for g, f in zip(genres, flags) if f.strip() == "1" and g not in _NO_GENRE]
        movies[mid] = _Movie(mid, title, year, tags)
    return movies


def _read_ml100k_users(p: Path) -> set[int] | None:
    if not (p / "u.user").is_file():
        return None
    users = set()
    for line in (p / "u.user").read_text(encoding="latin-1").splitlines():
        uid = line.split("|", 1)[0].strip()
        if uid.isdigit():
            users.add(int(uid))
    return users or None


def _read_ml100k_ratings(p: Path, skipped: Counter) -> Iterator[tuple[int, int, float, float]]:
    with open(p / "u.data", encoding="latin-1") as fh:
        for line in fh:
            parts = line.split()
            if not parts:
                continue
            try:
                if len(parts) != 4:
                    raise ValueError
                uid, mid, rating, ts = int(parts[0]), int(parts[1]), float(parts[2]), float(parts[3])
            except ValueError:
                skipped["malformed rating line"] += 1
                continue
            yield uid, mid, rating, ts


def _read_latest_items(p: Path, skipped: Counter) -> dict[int, _Movie]:
    movies: dict[int, _Movie] = {}
    with open(p / "movies.csv", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                mid = int(row["movieId"])
            except (KeyError, TypeError, ValueError):
                skipped["malformed movies.csv row"] += 1
                continue
            title, year = split_title(row.get("title") or "")
            genres = [g.strip() for g in (row.get("genres") or "").split("|")]
            movies[mid] = _Movie(mid, title, year, [g for g in genres if g and g not in _NO_GENRE])
    tags_file = p / "tags.csv"
    if tags_file.is_file():
        counts: dict[int, Counter] = {}
        with open(tags_file, encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                try:
                    mid = int(row["movieId"])
                except (KeyError, TypeError, ValueError):
                    skipped["malformed tags.csv row"] += 1
                    continue
                tag = " ".join((row.get("tag") or "").split())
                if tag and mid in movies:
                    counts.setdefault(mid, Counter())[tag] += 1  # Counter keeps first-seen order on ties
        for mid, c in counts.items():
            movie = movies[mid]
            seen = {t.casefold() for t in movie.tags}
            for tag, _ in c.most_common():
                if len(movie.tags) >= MAX_TAGS:
                    break
                if len(tag) > MAX_TAG_CHARS or tag.casefold() in seen:
                    continue
                seen.add(tag.casefold())
                movie.tags.append(tag)
    return movies


def _read_latest_ratings(p: Path, skipped: Counter) -> Iterator[tuple[int, int, float, float]]:
    with open(p / "ratings.csv", encoding="utf-8", newline="") as fh:
        header = next(fh, "")
        cols = [c.strip() for c in header.split(",")]
        try:
            iu, im, ir, it = (cols.index(c) for c in ("userId", "movieId", "rating", "timestamp"))
        except ValueError:
            raise ReplayError(f"{p / 'ratings.csv'}: header must name userId,movieId,rating,timestamp") from None
        for line in fh:
            parts = line.rstrip("\r\n").split(",")
            try:
                yield int(parts[iu]), int(parts[im]), float(parts[ir]), float(parts[it])
            except (ValueError, IndexError):
                if line.strip():
                    skipped["malformed rating line"] += 1


def _load_movielens(p: Path, layout: str, prefix: str) -> Replay:
    skipped: Counter = Counter()
    if layout == "ml-100k":
        movies = _read_ml100k_items(p, skipped)
        users = _read_ml100k_users(p)
        rows = _read_ml100k_ratings(p, skipped)
    else:
        movies, users = _read_latest_items(p, skipped), None
        rows = _read_latest_ratings(p, skipped)

    uid_a, mid_a, rat_a, ts_a = [], [], [], []
    for uid, mid, rating, ts in rows:
        if mid not in movies:
            skipped["rating of an unknown item"] += 1
            continue
        if users is not None and uid not in users:
            skipped["rating by an unknown user"] += 1
            continue
        uid_a.append(uid)
        mid_a.append(mid)
        rat_a.append(rating)
        ts_a.append(ts)
    uids = np.asarray(uid_a, dtype=np.int64)
    mids = np.asarray(mid_a, dtype=np.int64)
    ratings = np.asarray(rat_a, dtype=np.float64)
    tss = np.asarray(ts_a, dtype=np.float64)
    del uid_a, mid_a, rat_a, ts_a
    order = np.argsort(tss, kind="stable")

    first_ts: dict[int, float] = {}
    if len(order):
        sorted_mids = mids[order]
        uniq, idx = np.unique(sorted_mids, return_index=True)
        first_ts = dict(zip(uniq.tolist(), tss[order][idx].tolist()))
        default_ts = float(tss[order[0]])
    else:
        default_ts = 2.0  # no ratings at all: created_at 1.0

    uploads: list[tuple[float, bytes, bytes]] = []
    for mid, movie in movies.items():
        first = first_ts.get(mid, default_ts)
        created = max(first - 1.0, first / 2.0)  # before the first rating, and > 0
        title = movie.title[:MAX_TITLE_CHARS]
        rec = {
            "event_id": f"{prefix}:item:{mid}",
            "item_id": f"{prefix}:{mid}",
            "creator_id": MOVIELENS_CREATOR,
            "title": title,
            "description": f"{title} ({movie.year})" if movie.year else title,
            "tags": movie.tags[:MAX_TAGS],
            "created_at": created,
        }
        try:
            up = validate(Upload, rec)
        except RecordError as exc:
            log.warning("movie %s skipped: %s", mid, exc.reason)
            skipped["invalid item"] += 1
            continue
        uploads.append((created, up.kafka_key(), encode(up)))

    n_ratings = len(order)

    def interactions() -> Iterator[tuple[float, bytes, bytes]]:
        for j in order.tolist():
            uid, mid, ts = int(uids[j]), int(mids[j]), float(tss[j])
            ts_txt = str(int(ts)) if ts.is_integer() else repr(ts)
            rec = {
                "event_id": f"{prefix}:{uid}:{mid}:{ts_txt}",
                "user_id": f"{prefix}:{uid}",
                "item_id": f"{prefix}:{mid}",
                "type": rating_to_type(float(ratings[j])),
                "watch_ms": None,
                "ts": ts,
            }
            try:
                it = validate(Interaction, rec)
            except RecordError as exc:
                log.warning("rating %s skipped: %s", rec["event_id"], exc.reason)
                skipped["invalid rating"] += 1
                continue
            yield ts, it.kafka_key(), encode(it)

    return Replay(p, layout, len(uploads), n_ratings, skipped, _merge(uploads, interactions))


# ---------------------------------------------------------------- JSONL layout


def _load_jsonl(p: Path) -> Replay:
    skipped: Counter = Counter()
    ups: list[Upload] = []
    ints: list[Interaction] = []
    for name, kind, out in (("items.jsonl", UPLOADS, ups), ("interactions.jsonl", INTERACTIONS, ints)):
        f = p / name
        if not f.is_file():
            continue
        for line in read_jsonl(f, kind):
            if line.error is not None:
                log.warning("%s:%d: skipped (%s): %s", f, line.lineno, line.error.stage, line.error.reason)
                skipped[f"invalid line in {name}"] += 1
            else:
                out.append(line.record)
    ints.sort(key=lambda r: r.ts)  # stable
    first_ts: dict[str, float] = {}
    for r in ints:
        first_ts.setdefault(r.item_id, r.ts)
    moved = 0
    uploads = []
    for u in ups:
        emit = min(u.created_at, first_ts.get(u.item_id, u.created_at))
        moved += emit < u.created_at
        uploads.append((emit, u.kafka_key(), encode(u)))
    if moved:
        log.info("%s: %d uploads moved ahead of their items' first interaction", p, moved)
    events = [(r.ts, r.kafka_key(), encode(r)) for r in ints]
    return Replay(p, "jsonl", len(uploads), len(events), skipped, _merge(uploads, lambda: iter(events)))


__all__ = [
    "INTERACTIONS",
    "ML100K_GENRES",
    "MOVIELENS_CREATOR",
    "UPLOADS",
    "JsonlLine",
    "Replay",
    "ReplayError",
    "detect_layout",
    "iter_jsonl_events",
    "movielens_events",
    "open_replay",
    "rating_to_type",
    "read_jsonl",
    "split_title",
]
