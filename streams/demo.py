"""``avrec demo``: a first run worth seeing, lists flowing and the dashboard to watch them.

On the local stack (started or reused), it starts a worker, uploads a small catalogue and
keeps a few synthetic users interacting:

* the catalogue: a few hundred MicroLens titles and a handful of its videos (``file://``
  URIs, so the audio and video encoders run too) when ``<data_dir>/microlens-sample`` is
  there, else generated text items on a few themes;
* the users: ``demo-<HHMMSS>-00`` .. (fresh ids each run) with Zipf-skewed activity (the
  first user is the busiest), each with a taste (most of their picks come from a slice of
  the catalogue of their own), so their lists visibly differ and move toward their taste;
* the users are shown their new lists (``impressions``) and click some of the items, so
  the dashboard's online CTR and hit rate fill in;
* more items keep coming (``uploads_per_min``), so new items reach lists as they are uploaded;
* one malformed record, announced, so the dashboard's dead-letter table shows what a
  rejected record and its reason look like.

It writes to the deployment's own topics (no prefix), so ``avrec tail recommendations``
and ``avrec recommend <user>`` show the same lists as the dashboard.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import orjson

from streams.records import Recommendation, RecordError, Upload, decode_recommendation, validate
from streams.settings import Settings

log = logging.getLogger(__name__)

MICROLENS_DIR = "microlens-sample"
MICROLENS_TITLES = "MicroLens-50k_titles.csv"
USER_PREFIX = "demo-"
# Items kept back to upload while the demo runs: new items keep reaching lists (the fan-out and
# the fresh source), and busy users, who never get an item they have seen, do not run out.
LATER_ITEMS = 2000
# How often a user's pick comes from their own slice of the catalogue (else from all of it).
TASTE_SHARE = 0.8
# How often a user who was shown a list picks from it (a click, in the online metrics).
CLICK_SHARE = 0.3
SHOWN_ITEMS = 10
# Interaction types and how often each is sent: mostly views, some strong signals, a few skips.
EVENT_MIX = (("view", 0.45), ("complete", 0.2), ("like", 0.2), ("share", 0.05), ("skip", 0.1))

THEMES = {
    "cooking": (["pasta", "ramen", "sourdough", "curry", "dumplings", "tacos", "pancakes", "risotto"],
                ["recipe", "at home in 15 minutes", "from scratch", "for beginners", "like a chef"]),
    "cars": (["supercar", "pickup truck", "electric SUV", "muscle car", "rally car", "hatchback"],
             ["review", "top speed test", "restoration", "oil change guide", "road trip"]),
    "music": (["guitar solo", "piano cover", "drum groove", "jazz standard", "synth patch", "violin etude"],
              ["lesson", "live session", "in 60 seconds", "for beginners", "remix"]),
    "travel": (["Lisbon", "Kyoto", "Patagonia", "Iceland", "Marrakesh", "the Alps"],
               ["travel vlog", "on a budget", "hidden gems", "street food tour", "in 4K"]),
    "fitness": (["kettlebell", "yoga flow", "HIIT", "mobility", "running form", "pull-up"],
                ["workout", "routine for beginners", "in 10 minutes", "mistakes to avoid", "challenge"]),
    "gaming": (["speedrun", "boss fight", "city builder", "racing sim", "puzzle game", "roguelike"],
               ["walkthrough", "tips and tricks", "first look", "world record", "review"]),
}


@dataclass
class Catalogue:
    uploads: list[dict]
    source: str  # what the user is told about where it came from
    tastes: dict[str, list[str]] = field(default_factory=dict)  # a theme -> its item ids
    later: list[dict] = field(default_factory=list)  # uploaded one by one while the demo runs


def _upload(item_id: str, title: str, creator: str, created_at: float, tags: list[str], **media: str) -> dict | None:
    rec = {"event_id": f"demo-up-{item_id}", "item_id": item_id, "creator_id": creator, "title": title,
           "tags": tags, "created_at": created_at, **media}
    try:
        validate(Upload, rec)
    except RecordError as exc:  # a title the schema refuses is left out of the demo, not sent to die
        log.info("demo: leaving out %s (%s)", item_id, exc)
        return None
    return rec


def microlens_title(raw: str) -> tuple[str, list[str]]:
    """MicroLens titles end in ``# tag # tag``: the text before them, and the tags."""
    text, *tags = raw.split("#")
    tags = [t.strip()[:64] for t in tags if t.strip()][:8]
    return (text.strip() or (tags[0] if tags else raw.strip())), tags


def microlens_catalogue(sample: Path, n_titles: int, n_videos: int, now: float) -> Catalogue:
    """The first ``n_titles`` titles of the sample's CSV, and up to ``n_videos`` of its .mp4 files."""
    titles: dict[str, str] = {}
    with (sample / MICROLENS_TITLES).open(newline="", encoding="utf-8", errors="replace") as fh:
        for row in csv.DictReader(fh):
            titles[row["item"]] = row["title"]
    videos = sorted(sample.glob("*.mp4"))[:n_videos]
    chosen = [v.stem for v in videos] + [i for i in titles if i not in {v.stem for v in videos}][
        :n_titles + LATER_ITEMS]
    uploads, rng = [], random.Random(7)
    for k, item in enumerate(chosen):
        title, tags = microlens_title(titles.get(item, f"MicroLens video {item}"))
        media = {}
        if k < len(videos):
            uri = videos[k].resolve().as_uri()
            media = {"video_uri": uri, "audio_uri": uri}
        creator = f"ml-creator-{int(item) % 40 if item.isdigit() else 0}"
        # Uploaded over the last week, so the freshness source has old and new items to tell apart.
        if rec := _upload(f"ml{item}", title, creator, now - rng.uniform(60, 7 * 86400), ["microlens", *tags],
                          **media):
            uploads.append(rec)
    first = len(videos) + n_titles
    uploads, later = uploads[:first], uploads[first:]
    # No themes in the titles to build tastes from: each taste is a fixed random slice.
    ids = [u["item_id"] for u in uploads]
    tastes = {f"slice{k}": rng.sample(ids, min(len(ids), 25)) for k in range(6)}
    return Catalogue(uploads, f"{len(uploads)} MicroLens items ({len(videos)} with video) from {sample}", tastes,
                     later)


def generated_catalogue(n_items: int, now: float, seed: int = 7) -> Catalogue:
    """Text items on a few themes (``THEMES``): a user's taste is a theme."""
    rng = random.Random(seed)
    uploads, tastes = [], {theme: [] for theme in THEMES}
    names = list(THEMES)
    for k in range(n_items + LATER_ITEMS):
        theme = names[k % len(names)]
        subjects, formats = THEMES[theme]
        title = f"{rng.choice(subjects).capitalize()} {rng.choice(formats)}"
        created_at = now - rng.uniform(60, 7 * 86400)
        if rec := _upload(f"demo-{theme}-{k:04d}", title, f"{theme}-creator-{k % 5}", created_at, [theme]):
            uploads.append(rec)
    uploads, later = uploads[:n_items], uploads[n_items:]
    for rec in uploads:
        tastes[rec["tags"][0]].append(rec["item_id"])
    return Catalogue(uploads, f"{len(uploads)} generated text items on {len(names)} themes", tastes, later)


def build_catalogue(settings: Settings, n_items: int, n_videos: int, now: float | None = None) -> Catalogue:
    now = time.time() if now is None else now
    sample = settings.data_dir / MICROLENS_DIR
    if (sample / MICROLENS_TITLES).is_file():
        return microlens_catalogue(sample, n_items, n_videos, now)
    return generated_catalogue(n_items, now)


def zipf_weights(n: int, s: float = 1.1) -> list[float]:
    """User k's share of the traffic, proportional to 1/(k+1)^s (a few busy users, a long tail)."""
    raw = [1.0 / (k + 1) ** s for k in range(n)]
    return [w / sum(raw) for w in raw]


class InteractionFeed:
    """Synthetic users at ``rate`` events per second, in a thread, until :meth:`stop`.

    The users see their lists too: a second thread follows the ``recommendations`` topic, and
    a user with a new list is shown it (an ``impressions`` event) at one of their next events;
    later picks come from the list shown with ``CLICK_SHARE``, which the worker attributes as
    clicks (online CTR and hit rate per model version, on the dashboard).
    """

    def __init__(self, settings: Settings, catalogue: Catalogue, n_users: int, rate: float, seed: int = 11,
                 run_tag: str = "user", upload_every_s: float = 0.0):
        self.settings, self.rate, self.upload_every_s = settings, rate, upload_every_s
        self.rng = random.Random(seed)
        # Fresh user ids per run: a user of an earlier run has seen most of the catalogue already.
        self.prefix = f"{USER_PREFIX}{run_tag}-"
        self.users = [f"{self.prefix}{k:02d}" for k in range(n_users)]
        self.later = list(catalogue.later)
        self.catalogue_tastes = catalogue.tastes
        self.weights = zipf_weights(n_users)
        self.all_items = [u["item_id"] for u in catalogue.uploads]
        themes = [t for t in catalogue.tastes.values() if t] or [self.all_items]
        self.tastes = {u: themes[k % len(themes)] for k, u in enumerate(self.users)}
        self.lists: dict[str, Recommendation] = {}  # each user's newest published list
        self.shown: dict[str, Recommendation] = {}  # the list each user was last shown
        self.sent = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, name="demo-interactions", daemon=True),
                         threading.Thread(target=self._watch, name="demo-lists", daemon=True)]

    def next_events(self, now: float, user: str | None = None) -> list[tuple[str, dict]]:
        """The next user's events as ``(topic kind, record)``: their interaction, and an impression
        first when they have a list not shown yet (its clicks come at their later events)."""
        user = user or self.rng.choices(self.users, self.weights)[0]
        shown = self.shown.get(user)
        if shown is not None and self.rng.random() < CLICK_SHARE:
            pool = [i.item_id for i in shown.items[:SHOWN_ITEMS]]
        else:
            pool = self.tastes[user] if self.rng.random() < TASTE_SHARE else self.all_items
        kind = self.rng.choices([t for t, _ in EVENT_MIX], [w for _, w in EVENT_MIX])[0]
        self.sent += 1
        events = [("interactions", {"event_id": f"demo-{user}-{int(now * 1000)}-{self.sent}", "user_id": user,
                                    "item_id": self.rng.choice(pool), "type": kind, "ts": now})]
        latest = self.lists.get(user)
        if latest is not None and (shown is None or shown.source_event_id != latest.source_event_id):
            self.shown[user] = latest
            events.insert(0, ("impressions", {
                "event_id": f"demo-imp-{user}-{latest.source_event_id}", "user_id": user,
                "items": [i.item_id for i in latest.items[:SHOWN_ITEMS]], "model_version": latest.model_version,
                "list_event_id": latest.source_event_id, "ts": now}))
        return events

    def next_upload(self, now: float) -> dict | None:
        """The next item kept back, uploaded now; users pick it from then on (None: none left)."""
        if not self.later:
            return None
        rec = {**self.later.pop(0), "created_at": now}
        self.all_items.append(rec["item_id"])
        if rec["tags"] and rec["tags"][0] in self.catalogue_tastes:
            self.catalogue_tastes[rec["tags"][0]].append(rec["item_id"])
        return rec

    def offer(self, rec: Recommendation) -> None:
        """A list the worker published: the user's next impression shows it."""
        if rec.user_id in self.tastes and rec.items:
            self.lists[rec.user_id] = rec

    def start(self, producer, lists_consumer) -> None:
        self._producer, self._consumer = producer, lists_consumer
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        t = self.settings.kafka.topics
        next_upload = time.monotonic() + self.upload_every_s
        while not self._stop.wait(1.0 / self.rate):
            events = [(t.interactions.name if kind == "interactions" else t.impressions.name, ev["user_id"], ev)
                      for kind, ev in self.next_events(time.time())]
            if self.upload_every_s > 0 and time.monotonic() >= next_upload:
                next_upload += self.upload_every_s
                if (up := self.next_upload(time.time())) is not None:
                    events.append((t.uploads.name, up["item_id"], up))
            for topic, key, ev in events:
                try:
                    self._producer.send(topic, key=key.encode(), value=orjson.dumps(ev))
                except Exception as exc:  # noqa: BLE001 - a broker hiccup skips one event, the demo goes on
                    log.warning("demo: could not send an event to %s (%s)", topic, exc)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=500).values():
                for r in records:
                    if r.value and r.key and r.key.startswith(self.prefix.encode()):
                        try:
                            self.offer(decode_recommendation(r.value, max_future_s=None))
                        except RecordError as exc:
                            log.warning("demo: unreadable list for %r (%s)", r.key, exc)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)


def worker_env(settings: Settings) -> dict[str, str]:
    """The demo worker's settings over the caller's: the dashboard on the configured port (not a
    random one), and the MicroLens sample readable as media."""
    roots = [str(p) for p in settings.encoders.media_roots]
    sample = settings.data_dir / MICROLENS_DIR
    if sample.is_dir() and not any(sample.resolve().is_relative_to(Path(r).resolve()) for r in roots):
        roots.append(str(sample.resolve()))
    return {"AVREC_WEB__PORT": str(settings.web.port), "AVREC_ENCODERS__MEDIA_ROOTS": json.dumps(roots)}


def wait_for_catalogue(settings: Settings, item_ids: list[str], echo: Callable[[str], None],
                       alive: Callable[[], bool] = lambda: True, timeout_s: float = 180.0) -> int:
    """Wait until the worker has stored ``item_ids`` in Milvus (or ``timeout_s``, or the worker
    stopped: ``alive``); returns how many are."""
    from streams.vectors.milvus import milvus_client

    client = milvus_client(settings.milvus)
    name = settings.milvus.items_collection
    deadline, told, stored = time.monotonic() + timeout_s, 0.0, 0
    try:
        while time.monotonic() < deadline and alive():
            if client.has_collection(name):
                stored = len(client.get(name, ids=item_ids, output_fields=["item_id"]))
            if stored >= len(item_ids):
                break
            if time.monotonic() - told > 10:
                echo(f"encoding the catalogue: {stored}/{len(item_ids)} items stored")
                told = time.monotonic()
            time.sleep(1.0)
        if stored < len(item_ids):
            echo(f"{stored}/{len(item_ids)} items stored; starting the users anyway "
                 f"(the worker log says why the others are missing)")
    finally:
        client.close()
    return stored


def run_demo(settings: Settings, echo: Callable[[str], None], n_items: int = 300, n_videos: int = 4,
             n_users: int = 12, rate: float = 4.0, uploads_per_min: float = 30.0,
             status_every_s: float = 15.0) -> None:
    """Stack up, worker up, catalogue in, interactions flowing; until Ctrl-C (then the worker stops)."""
    from kafka import KafkaConsumer, KafkaProducer

    from deploy.local.stack import LocalStack
    from streams.worker_process import WorkerProcess

    report = LocalStack(settings).up(reuse=True)
    for name in report.started:
        echo(f"{name:7s} ready in {report.seconds[name]:.1f}s")
    log_path = settings.stack.state_dir / "demo-worker.log"
    worker = WorkerProcess(worker_env(settings), log_path)
    echo(f"starting a worker (log: {log_path}) ...")
    worker.start(timeout=300)
    feed = None
    producer = KafkaProducer(**settings.kafka.kafka_python_config(), acks="all", linger_ms=5)
    try:
        catalogue = build_catalogue(settings, n_items, n_videos)
        t = settings.kafka.topics
        for rec in catalogue.uploads:
            producer.send(t.uploads.name, key=rec["item_id"].encode(), value=orjson.dumps(rec))
        # Shown in the dashboard's dead-letter table with the worker's reason ("not valid JSON").
        producer.send(t.interactions.name, key=b"demo-malformed", value=b"{this is not json")
        producer.flush(30)
        echo(f"uploaded {catalogue.source}; sent one malformed record (see the dead letters)")
        # Users start once the catalogue is encoded: their first picks then find their items
        # (an interaction naming an item not yet there would wait for it, parked).
        wait_for_catalogue(settings, [u["item_id"] for u in catalogue.uploads], echo, worker.alive)
        feed = InteractionFeed(settings, catalogue, n_users, rate, run_tag=time.strftime("%H%M%S"),
                               upload_every_s=60.0 / uploads_per_min if uploads_per_min > 0 else 0.0)
        lists = KafkaConsumer(t.recommendations.name, **settings.kafka.kafka_python_config(),
                              auto_offset_reset="latest", enable_auto_commit=False)
        feed.start(producer, lists)
        url = settings.web.url
        board = (f"{url}/dashboard   (busiest user: {url}/dashboard?user={feed.users[0]})" if settings.web.enabled
                 else "off (AVREC_WEB__ENABLED=false): no dashboard, no read API")
        echo(f"\n  dashboard : {board}\n"
             f"  lists out : topic '{t.recommendations.name}'  ->  avrec tail recommendations\n"
             f"  a user    : avrec recommend {feed.users[0]}\n"
             f"  traffic   : {n_users} users ({feed.users[0]} busiest), {rate:g} interactions/s, each shown"
             f" their new lists ('{t.impressions.name}': CTR on the dashboard);\n"
             f"              {uploads_per_min:g} new uploads a minute\n"
             f"  Ctrl-C stops the demo and its worker (the stack keeps running: avrec stack down)\n")
        while worker.alive():
            time.sleep(status_every_s)
            echo(f"{time.strftime('%H:%M:%S')}  {feed.sent} interactions sent, {len(feed.shown)} users shown a list, "
                 f"{len(feed.all_items)} items")
        echo(f"the worker stopped (exit {worker.proc.returncode}); its log: {log_path}")
    except KeyboardInterrupt:
        echo("stopping the demo ...")
    finally:
        if feed is not None:
            feed.stop()
            lists.close()
        producer.close(5)
        worker.stop()
