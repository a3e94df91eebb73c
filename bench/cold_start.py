"""Content-driven cold start on real titles: do new users' lists follow what they liked?

Users are simulated from the topics of real MicroLens titles (their hashtags),
then replayed through the same prequential protocol as ``avrec eval`` (the
scoring core the worker runs). Each user follows one topic: most of their
events are on items of that topic (popular ones more often), the rest are
drawn from the whole catalogue (noise), and users arrive through the whole
replay, so the test segment holds many users with a handful of events.
A quarter of the catalogue is uploaded during the replay (fresh items).

Reported per method, over the test segment's targets:

* **on-topic precision@10**: the share of the list's top 10 items that carry
  the user's topic, for users with 1-5 earlier events ("cold") and more ("warm");
* **HR@20** (the hit rate ``avrec eval`` reports) and catalogue coverage.

Methods: the live defaults (``hybrid``, the learned ranker fit as ``avrec
eval`` fits it), the weighted ``blend`` (what a deployment runs before a ranker
is fitted), ``content`` (the taste vector's nearest items) and
``trending`` (decayed popularity, ``decayedpop``).

    python -m bench.cold_start --titles ../shared/data/microlens-sample/MicroLens-50k_titles.csv

Results: ``bench/results/cold_start.json`` and ``docs/QUALITY.md`` ("Cold start").
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import orjson

from bench.report import emit
from streams.evaluation.dataset import load_log
from streams.evaluation.protocol import EvalConfig, run_prequential
from streams.evaluation.vectors import DEFAULT_CACHE_DIR, item_vectors
from streams.ranking import RankingSettings

log = logging.getLogger("bench.cold_start")

# Topics as groups of hashtags (lower-cased, spaces kept): an item is on a topic when one of its
# hashtags contains one of the topic's words. Chosen from the most frequent hashtags of the titles.
TOPICS: dict[str, tuple[str, ...]] = {
    "food": ("food", "delicious", "recipe", "homemade", "cooking", "cook", "eat", "snack", "dish", "kitchen"),
    "game": ("king glory", "kingglory", "peace elite", "peaceelite", "game", "myworld", "fifth personality",
             "subway escape", "original god", "sakura campus", "glory firefly", "escapeteen"),
    "anime": ("anime", "animation", "comic", "manga", "cartoon", "naruto", "ultraman", "two yuan", "2 yuan",
              "simpsons"),
    "film": ("movie", "film", "drama", "screening room", "television"),
    "music": ("music", "song", "singing", "sing", "guitar", "piano", "dance"),
    "pets": ("cat", "dog", "pet", "puppy", "kitten", "meow"),
}
_HASHTAG = re.compile(r"#\s*([^#]+)")


def item_topics(title: str) -> set[str]:
    """The topics whose words appear in the title's hashtags (empty: no topic)."""
    tags = [t.strip().lower() for t in _HASHTAG.findall(title)]
    return {name for name, words in TOPICS.items() if any(w in tag for tag in tags for w in words)}


def read_titles(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        return [(row["item"], row["title"]) for row in csv.DictReader(fh) if row.get("title")]


def simulate(titles: list[tuple[str, str]], n_items: int, n_users: int, seed: int, noise: float,
             out: Path) -> tuple[dict[str, set[str]], dict[str, str]]:
    """Write ``items.jsonl`` + ``interactions.jsonl`` under ``out``; returns (item topics, user topic)."""
    rng = np.random.default_rng(seed)
    labelled = [(i, t, tp) for i, t in titles if len(tp := item_topics(t)) == 1]
    other = [(i, t, set()) for i, t in titles if not item_topics(t)]
    n_lab = min(len(labelled), int(n_items * 0.7))
    pick = [labelled[k] for k in rng.choice(len(labelled), n_lab, replace=False)]
    pick += [other[k] for k in rng.choice(len(other), n_items - n_lab, replace=False)]
    rng.shuffle(pick)
    t0, span = 1_700_000_000.0, 14 * 86400.0
    # Three quarters of the catalogue exists at the start; the rest is uploaded through the replay.
    created = np.where(np.arange(len(pick)) < 0.75 * len(pick), t0 - 86400.0,
                       t0 + rng.uniform(0, span, len(pick)))
    topics_of = {f"mlt:{i}": tp for i, _, tp in pick}
    by_topic: dict[str, list[int]] = defaultdict(list)
    for k, (_, _, tp) in enumerate(pick):
        for name in tp:
            by_topic[name].append(k)
    # Item appeal: Zipf-like, so every topic has its own head and tail.
    appeal = rng.zipf(1.6, len(pick)).astype(float)
    names = sorted(by_topic)
    user_topic: dict[str, str] = {}
    events = []
    for u in range(n_users):
        uid = f"mlt:u{u}"
        topic = names[u % len(names)]
        user_topic[uid] = topic
        start = t0 + rng.uniform(0, span * 0.9)
        n_ev = int(min(150, max(2, rng.zipf(1.5) + 1)))  # skewed activity: most users have few events
        t = start
        chosen: set[int] = set()
        for _ in range(n_ev):
            t += rng.exponential(600.0)
            pool = by_topic[topic] if rng.random() > noise else range(len(pick))
            cand = [k for k in pool if created[k] <= t and k not in chosen]
            if not cand:
                continue
            w = appeal[cand] / appeal[cand].sum()
            k = int(rng.choice(cand, p=w))
            chosen.add(k)
            kind = rng.choice(["like", "complete", "view"], p=[0.4, 0.3, 0.3])
            events.append({"event_id": f"{uid}:{k}:{int(t)}", "user_id": uid, "item_id": f"mlt:{pick[k][0]}",
                           "type": str(kind), "ts": float(t)})
    events.sort(key=lambda e: e["ts"])
    out.mkdir(parents=True, exist_ok=True)
    with (out / "items.jsonl").open("wb") as fh:
        for k, (i, title, _) in enumerate(pick):
            fh.write(orjson.dumps({"event_id": f"mlt:item:{i}", "item_id": f"mlt:{i}", "creator_id": f"c{k % 400}",
                                   "title": title[:200], "tags": [], "created_at": float(created[k])}) + b"\n")
    with (out / "interactions.jsonl").open("wb") as fh:
        for e in events:
            fh.write(orjson.dumps(e) + b"\n")
    log.info("simulated %d items (%d on a topic), %d users, %d interactions", len(pick), n_lab, n_users,
             len(events))
    return topics_of, user_topic


def on_topic_report(elog, res, topics_of: dict[str, set[str]], user_topic: dict[str, str], methods: list[str],
                    cold_max: int) -> dict[str, dict]:
    """On-topic precision@10 and HR@20 per method, split by the user's earlier events."""
    prior: dict[str, int] = {}
    target_info: dict[str, tuple[str, int, int]] = {}
    wanted = set(res.target_events)
    for ev in elog.stream:
        if not hasattr(ev, "user_id"):
            continue
        n = prior.get(ev.user_id, 0)
        if ev.event_id in wanted:
            target_info[ev.event_id] = (ev.user_id, n, ev.item)
        prior[ev.user_id] = n + 1
    ids = [m.item_id for m in elog.items]
    out: dict[str, dict] = {}
    for name in methods:
        acc: dict[str, list] = {"cold": [], "warm": [], "new": []}
        hits: dict[str, list] = {"cold": [], "warm": [], "new": []}
        shown: set[int] = set()
        for eid, lst in zip(res.target_events, res.lists[name]):
            user, n, item = target_info[eid]
            group = "new" if n == 0 else "cold" if n <= cold_max else "warm"
            top = lst[:10]
            shown.update(lst[:20])
            topic = user_topic[user]
            acc[group].append(sum(topic in topics_of[ids[j]] for j in top) / 10.0)
            hits[group].append(item in lst[:20])
        out[name] = {
            **{f"on_topic_p10_{g}": float(np.mean(v)) if v else None for g, v in acc.items()},
            **{f"hr20_{g}": float(np.mean(v)) if v else None for g, v in hits.items()},
            "coverage20": len(shown) / max(1, res.catalogue_size),
            "targets": {g: len(v) for g, v in acc.items()},
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--titles", type=Path, default=None,
                    help="MicroLens titles CSV (default: <data_dir>/microlens-sample/MicroLens-50k_titles.csv)")
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--users", type=int, default=1500)
    ap.add_argument("--noise", type=float, default=0.15, help="share of a user's events off their topic")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--train-frac", type=float, default=0.5)
    ap.add_argument("--cold-max", type=int, default=5, help="users with at most this many earlier events are cold")
    ap.add_argument("--variant", action="append", default=[], help="NAME:key=value,... (as avrec eval)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/cold_start.json"))
    args = ap.parse_args(argv)
    if args.titles is None:
        from streams.settings import get_settings

        args.titles = get_settings().data_dir / "microlens-sample" / "MicroLens-50k_titles.csv"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from streams.evaluation.overrides import parse_variant

    ranking = RankingSettings()
    variants = {"blend": parse_variant("blend:fusion=weighted", ranking)[1]}
    for spec in args.variant:
        name, rs = parse_variant(spec, ranking)
        variants[name] = rs
    with tempfile.TemporaryDirectory() as tmp:
        topics_of, user_topic = simulate(read_titles(args.titles), args.items, args.users, args.seed, args.noise,
                                         Path(tmp))
        elog = load_log(Path(tmp), id_prefix="mlt")
    vectors = item_vectors(elog.items, DEFAULT_CACHE_DIR, None, "cpu", 384)
    methods = ["hybrid", "content", "decayedpop"]
    cfg = EvalConfig(train_frac=args.train_frac, methods=tuple(methods), variants=variants,
                     keep_lists=tuple(methods + list(variants)))
    res = run_prequential(elog, vectors, ranking, cfg)
    summary = res.summary()
    table = on_topic_report(elog, res, topics_of, user_topic, methods + list(variants), args.cold_max)
    for name, row in table.items():
        row["hr20"] = summary[name]["hr@20"]
        row["coverage"] = summary[name]["coverage"]
    doc = {"dataset": {"items": len(elog.items), "interactions": elog.n_interactions, "users": args.users,
                       "noise": args.noise, "seed": args.seed, "topics": sorted(TOPICS)},
           "protocol": {"train_frac": args.train_frac, "targets": res.n_targets, "cold_max": args.cold_max},
           "methods": table}
    emit(doc, str(args.out))
    return doc


if __name__ == "__main__":
    main()
