"""streams.replay: MovieLens 100k, ml-latest and JSONL directories become time-ordered events."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streams.records import decode_interaction, decode_upload
from streams.replay import (
    ReplayError,
    detect_layout,
    iter_jsonl_events,
    movielens_events,
    open_replay,
    rating_to_type,
    read_jsonl,
    split_title,
)

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]  # fmt: skip


def flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in GENRES)


def write_ml100k(d: Path, with_users: bool = True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n", encoding="latin-1")
    items = [
        "1|Toy Story (1995)|01-Jan-1995||http://x|" + flags("Animation", "Children's", "Comedy"),
        f"2|Usual Suspects, The (1995)|14-Aug-1995||http://x|{flags('Crime', 'Thriller')}",
        f"3|Café Olé (1998)|01-Jan-1998||http://x|{flags('Drama')}",
        f"4|unknown||||{flags('unknown')}",
        f"5|Never Rated|01-Jan-1920||http://x|{flags('Western')}",
    ]
    (d / "u.item").write_text("\n".join(items) + "\n", encoding="latin-1")
    ratings = [
        (10, 2, 5, 1000),
        (11, 1, 3, 900),
        (10, 1, 1, 900),  # same ts as the line above: file order kept
        (12, 3, 4, 1200),
        (11, 2, 2, 1100),
        (12, 4, 3, 1300),
        (99, 1, 5, 950),  # user 99 is not in u.user
        (10, 77, 5, 960),  # item 77 is not in u.item
    ]
    lines = [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in ratings]
    lines[3] += "\t"  # trailing whitespace is tolerated
    lines.append("garbage line")
    (d / "u.data").write_text("\n".join(lines) + "\n", encoding="latin-1")
    if with_users:
        (d / "u.user").write_text("10|24|M|x|1\n11|30|F|y|2\n12|40|M|z|3\n", encoding="latin-1")
    return d


def decoded(events):
    out = []
    for kind, key, value in events:
        rec = decode_upload(value) if kind == "uploads" else decode_interaction(value)
        assert key == (rec.item_id if kind == "uploads" else rec.user_id).encode()
        out.append((kind, rec))
    return out


def ts_of(kind, rec) -> float:
    return rec.created_at if kind == "uploads" else rec.ts


def assert_uploads_first(events) -> None:
    seen = set()
    for kind, rec in events:
        if kind == "uploads":
            seen.add(rec.item_id)
        else:
            assert rec.item_id in seen, f"interaction on {rec.item_id} before its upload"


def test_rating_mapping():
    assert [rating_to_type(r) for r in (5, 4, 4.5, 3.5, 3, 2.5, 2, 1, 0.5)] == [
        "like", "like", "like", "view", "view", "dislike", "dislike", "dislike", "dislike"
    ]  # fmt: skip


def test_split_title():
    assert split_title("Toy Story (1995)") == ("Toy Story", 1995)
    assert split_title("Usual Suspects, The (1995)") == ("The Usual Suspects", 1995)
    assert split_title("City of Lost Children, The (Cité des enfants perdus, La) (1995)") == (
        "The City of Lost Children (Cité des enfants perdus, La)", 1995)  # fmt: skip
    assert split_title("Avventura, L' (1960)") == ("L'Avventura", 1960)
    assert split_title("Babylon 5") == ("Babylon 5", None)
    assert split_title("Corrina, Corrina (1994)") == ("Corrina, Corrina", 1994)


def test_ml100k_events(tmp_path):
    d = write_ml100k(tmp_path / "ml")
    assert detect_layout(d) == "ml-100k"
    replay = open_replay(d)
    assert (replay.n_uploads, replay.n_interactions) == (5, 6)
    assert replay.skipped == {"rating by an unknown user": 1, "rating of an unknown item": 1, "malformed rating line": 1}
    events = decoded(movielens_events(d))
    assert len(events) == 11 == len(replay)
    ts = [ts_of(k, r) for k, r in events]
    assert ts == sorted(ts)
    assert_uploads_first(events)

    ups = {r.item_id: r for k, r in events if k == "uploads"}
    assert set(ups) == {"ml:1", "ml:2", "ml:3", "ml:4", "ml:5"}
    toy = ups["ml:1"]
    assert toy.title == "Toy Story" and toy.description == "Toy Story (1995)"
    assert toy.tags == ["Animation", "Children's", "Comedy"] and toy.creator_id == "movielens"
    assert toy.event_id == "ml:item:1" and toy.created_at == 899.0  # first rating 900 - 1
    assert ups["ml:2"].title == "The Usual Suspects" and ups["ml:2"].created_at == 999.0
    assert ups["ml:3"].title == "Café Olé"  # Latin-1 decoded
    assert ups["ml:4"].tags == [] and ups["ml:4"].title == "unknown" and ups["ml:4"].description == "unknown"
    # Never rated: placed before the whole stream; year from the release date.
    assert ups["ml:5"].created_at == 899.0 and ups["ml:5"].description == "Never Rated (1920)"

    ints = [r for k, r in events if k == "interactions"]
    assert [(r.user_id, r.item_id, r.type, r.ts) for r in ints] == [
        ("ml:11", "ml:1", "view", 900.0),
        ("ml:10", "ml:1", "dislike", 900.0),
        ("ml:10", "ml:2", "like", 1000.0),
        ("ml:11", "ml:2", "dislike", 1100.0),
        ("ml:12", "ml:3", "like", 1200.0),
        ("ml:12", "ml:4", "view", 1300.0),
    ]
    assert ints[0].event_id == "ml:11:1:900" and ints[0].watch_ms is None
    # Each upload sits right before its item's first interaction.
    order = [(k, r.item_id) for k, r in events]
    assert order.index(("uploads", "ml:2")) == order.index(("interactions", "ml:2")) - 1


def test_ml100k_without_u_user_keeps_every_user(tmp_path):
    d = write_ml100k(tmp_path / "ml", with_users=False)
    assert open_replay(d).n_interactions == 7


def test_ml100k_timed_and_deterministic(tmp_path):
    d = write_ml100k(tmp_path / "ml")
    first = list(open_replay(d).timed())
    assert first == list(open_replay(d).timed())
    assert [t for t, *_ in first] == sorted(t for t, *_ in first)
    assert {kind for _, kind, _, _ in first} == {"uploads", "interactions"}


def write_latest(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children\n"
        '2,"American President, The (1995)",Comedy|Drama|Romance\n'
        "3,Some Film,(no genres listed)\n",
        encoding="utf-8",
    )
    (d / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        "1,1,4.0,964982703\n"
        "1,2,3.5,964981247\n"
        "2,1,2.5,964982224\n"
        "2,3,0.5,964983815\n"
        "3,9,5.0,964980000\n",  # unknown movie
        encoding="utf-8",
    )
    (d / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n"
        "1,1,pixar,1139045764\n"
        "2,1,Pixar,1139045765\n"
        "3,1,fun,1139045766\n"
        "4,1,PIXAR,1139045767\n"
        "5,1,animation,1139045768\n"  # same as a genre: not repeated
        f"6,1,{'x' * 70},1139045769\n"  # too long: left out
        "1,3,  odd   spacing ,1139045770\n",
        encoding="utf-8",
    )
    return d


def test_ml_latest_events(tmp_path):
    d = write_latest(tmp_path / "latest")
    assert detect_layout(d) == "ml-latest"
    replay = open_replay(d)
    assert (replay.n_uploads, replay.n_interactions) == (3, 4)
    assert replay.skipped == {"rating of an unknown item": 1}
    events = decoded(replay)
    ts = [ts_of(k, r) for k, r in events]
    assert ts == sorted(ts)
    assert_uploads_first(events)
    ups = {r.item_id: r for k, r in events if k == "uploads"}
    assert ups["ml:1"].tags == ["Adventure", "Animation", "Children", "pixar", "fun"]
    assert ups["ml:2"].title == "The American President" and ups["ml:2"].description == "The American President (1995)"
    assert ups["ml:3"].tags == ["odd spacing"] and ups["ml:3"].description == "Some Film"
    ints = [(r.user_id, r.item_id, r.type) for k, r in events if k == "interactions"]
    assert ints == [("ml:1", "ml:2", "view"), ("ml:2", "ml:1", "dislike"), ("ml:1", "ml:1", "like"),
                    ("ml:2", "ml:3", "dislike")]  # fmt: skip


def test_id_prefix(tmp_path):
    d = write_latest(tmp_path / "latest")
    kinds_keys = [(k, key) for k, key, _ in movielens_events(d, id_prefix="ml25m")]
    assert ("uploads", b"ml25m:1") in kinds_keys and ("interactions", b"ml25m:2") in kinds_keys


def write_jsonl_dir(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    items = [
        {"event_id": "u-a", "item_id": "a", "creator_id": "c1", "title": "A", "created_at": 100.0},
        # Created "after" its first interaction: emitted before it anyway.
        {"event_id": "u-b", "item_id": "b", "creator_id": "c1", "title": "B", "created_at": "1970-01-01T00:05:00Z"},
    ]
    lines = [orjson.dumps(i) for i in items] + [b"{broken", b""]
    (d / "items.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")
    ints = [
        {"event_id": "i3", "user_id": "u1", "item_id": "a", "type": "like", "ts": 250},
        {"event_id": "i1", "user_id": "u1", "item_id": "a", "type": "view", "watch_ms": 1000, "ts": 150},
        {"event_id": "i2", "user_id": "u2", "item_id": "b", "type": "skip", "ts": 200},
        {"event_id": "i4", "user_id": "u2", "item_id": "b", "type": "nope", "ts": 210},
    ]
    (d / "interactions.jsonl").write_bytes(b"\r\n".join(orjson.dumps(i) for i in ints) + b"\r\n\xff\n")
    return d


def test_jsonl_layout(tmp_path):
    d = write_jsonl_dir(tmp_path / "j")
    assert detect_layout(d) == "jsonl"
    replay = open_replay(d)
    assert (replay.n_uploads, replay.n_interactions) == (2, 3)
    assert replay.skipped == {"invalid line in items.jsonl": 1, "invalid line in interactions.jsonl": 2}
    events = decoded(replay)
    assert_uploads_first(events)
    assert [(k, r.event_id) for k, r in events] == [
        ("uploads", "u-a"), ("interactions", "i1"), ("uploads", "u-b"), ("interactions", "i2"), ("interactions", "i3")
    ]  # fmt: skip
    assert [r for k, r in events if r.event_id == "u-b"][0].created_at == 300.0  # kept as written


def test_read_jsonl_reports_line_numbers(tmp_path):
    d = write_jsonl_dir(tmp_path / "j")
    lines = list(read_jsonl(d / "interactions.jsonl", "interactions"))
    assert [(ln.lineno, ln.error is None) for ln in lines] == [(1, True), (2, True), (3, True), (4, False), (5, False)]
    assert lines[3].error.stage == "validate" and "type" in lines[3].error.reason
    assert lines[4].error.stage == "decode"
    items = list(read_jsonl(d / "items.jsonl", "uploads"))
    assert [(ln.lineno, ln.error is None) for ln in items] == [(1, True), (2, True), (3, False)]  # BOM, blank ok
    events = list(iter_jsonl_events(d / "interactions.jsonl", "interactions"))
    assert [(k, key) for k, key, _ in events] == [("interactions", b"u1"), ("interactions", b"u1"), ("interactions", b"u2")]
    with pytest.raises(ValueError):
        list(read_jsonl(d / "items.jsonl", "nope"))


def test_unknown_directory(tmp_path):
    with pytest.raises(ReplayError):
        detect_layout(tmp_path)
    with pytest.raises(ReplayError):
        open_replay(tmp_path / "missing")


@pytest.mark.shared_data
def test_real_ml100k(shared_data):
    d = shared_data / "ml-100k"
    if not d.is_dir():
        pytest.skip(f"{d} not present")
    replay = open_replay(d)
    assert (replay.n_uploads, replay.n_interactions) == (1682, 100000)
    n_up = n_int = 0
    last = 0.0
    seen: set[bytes] = set()
    for ts, kind, key, value in replay.timed():
        assert ts >= last
        last = ts
        if kind == "uploads":
            n_up += 1
            seen.add(key)
        else:
            n_int += 1
            item = orjson.loads(value)["item_id"].encode()
            assert item in seen
    assert (n_up, n_int) == (1682, 100000)
