"""``avrec eval --live``: replay the log through Kafka and a real worker, score what it published.

The offline evaluation calls the scoring core in-process. Live mode checks that
the deployed path (Kafka, the Faust worker, Triton's item encoder, Milvus'
search) publishes the same lists:

1. ``--workers N`` worker subprocesses (1 by default) start in one consumer
   group on their own topics (a fresh prefix) and Milvus collections, with
   new-content fan-out off (fan-out refreshes publish lists the offline protocol
   has no counterpart for) and the eval's ranking settings; the replay starts
   once the group is stable with all of them.
2. The log (usually a slice: ``--users N``, ``--limit N``) is published in time
   order: uploads to the upload topic (a worker encodes them through Triton,
   indexes them in Milvus and announces them in the item-state log; the replay
   waits for the announcements before the next interaction, so no item is
   recommendable earlier than offline), then
   each interaction, keeping at most ``in_flight`` interactions whose list has
   not arrived yet (1 = lock-step, each event its own batch, as offline).
3. Lists are read back from the recommendations topic. The worker batches: per
   batch it publishes one list per user, tagged (``source_event_id``) with that
   user's last applied event in the batch. After event e of user u, the list
   tagged e (if any) becomes u's current list; an event superseded within its
   batch leaves the current list as it was.
4. One offline replay of the same log then scores, on the same targets:
   ``hybrid`` (the offline protocol: the list from the state just before the
   event, at the event's time), ``hybrid-as-live`` (the list computed right
   after the user's previous event, at that event's time: what a worker
   processing one event per batch publishes) and ``live`` (the list that was
   current for the user on the topic before the event).

Agreement: the share of targets whose ``live`` top-K equals the offline one
(item ids in order), the mean overlap of the two top-K sets, and the HR
difference. ``hybrid`` and ``live`` differ by construction when other users'
events arrive between a user's two events (co-occurrence and trending moved
on); ``hybrid-as-live`` isolates that, so what is left between it and ``live``
is the deployed path itself (batching, cross-partition order, Milvus search,
Triton's float rounding).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streams.evaluation.dataset import Event, EvalLog, Upload
from streams.evaluation.methods import GENERIC_REASON, Hybrid
from streams.evaluation.state import Catalogue, CoreState
from streams.ranking import RankingError, RankingSettings, recommend
from streams.ranking.learned import LinearRanker
from streams.kafka.admin import wait_group_stable
from streams.settings import Settings
from streams.training.ranker_fit import fit_ranker
from streams.worker_process import WorkerProcess

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- the worker
def ranking_env(base: RankingSettings, ranking: RankingSettings) -> dict[str, str]:
    """``AVREC_RANKING__...`` variables that turn ``base`` into ``ranking`` in a worker's settings."""
    from streams.evaluation.overrides import diff_settings

    env = {}
    for key, (_, value) in diff_settings(base, ranking).items():
        name = "AVREC_RANKING__" + "__".join(p.upper() for p in key.split("."))
        env[name] = value if isinstance(value, str) else orjson.dumps(value).decode()
    return env


def worker_env(unique: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Names of the eval worker's own app, topics and collections (Milvus names allow [A-Za-z0-9_])."""
    return {
        "AVREC_APP_ID": f"avrec-eval-{unique}",
        "AVREC_KAFKA__TOPIC_PREFIX": f"eval-{unique}-",
        "AVREC_MILVUS__ITEMS_COLLECTION": f"items_eval_{unique}",
        "AVREC_MILVUS__USERS_COLLECTION": f"users_eval_{unique}",
        # Fan-out refreshes publish lists for users who did nothing; the offline protocol has none.
        "AVREC_WORKER__FANOUT_USERS": "0",
        **(extra or {}),
    }


@dataclass
class LiveRecord:
    """One list read back from the recommendations topic."""

    user_id: str
    source_event_id: str
    items: list[str]
    reasons_specific: int  # items with a specific reason
    produced_at: float
    received_at: float
    model_version: str = ""


@dataclass
class LiveRun:
    records: list[LiveRecord] = field(default_factory=list)
    sent_at: dict[str, float] = field(default_factory=dict)  # interaction event id -> wall time sent
    uploads: int = 0
    upload_waits: int = 0
    upload_wait_s: float = 0.0
    interactions: int = 0
    unresolved: list[str] = field(default_factory=list)  # events whose list never came (timeout)
    seconds: float = 0.0
    worker_log: str = ""
    group_settle_s: float = 0.0

    def by_event(self) -> dict[str, LiveRecord]:
        """The list tagged with each event (the last one, should a list be published twice)."""
        return {r.source_event_id: r for r in self.records}


class _Outstanding:
    """Interactions sent whose list has not arrived: per user, in send order."""

    def __init__(self) -> None:
        self.per_user: dict[str, list[str]] = {}
        self.since: dict[str, float] = {}
        self.n = 0

    def add(self, user: str, event_id: str) -> None:
        self.per_user.setdefault(user, []).append(event_id)
        self.since[event_id] = time.monotonic()
        self.n += 1

    def resolve(self, user: str, event_id: str) -> None:
        """A list tagged ``event_id`` arrived: it and the user's earlier events are done."""
        evs = self.per_user.get(user)
        if not evs or event_id not in evs:
            return
        k = evs.index(event_id) + 1
        for e in evs[:k]:
            self.since.pop(e, None)
        self.n -= k
        del evs[:k]

    def expire(self, timeout: float) -> list[str]:
        """Give up on events waiting longer than ``timeout`` (e.g. dead-lettered ones)."""
        now = time.monotonic()
        old = [e for e, t in self.since.items() if now - t > timeout]
        if not old:
            return []
        gone = set(old)
        for user, evs in self.per_user.items():
            keep = [e for e in evs if e not in gone]
            self.n -= len(evs) - len(keep)
            self.per_user[user] = keep
        for e in old:
            del self.since[e]
        return old


def replay_live(elog: EvalLog, settings: Settings, in_flight: int = 1, event_timeout: float = 60.0,
                upload_timeout: float = 120.0, progress_every: int = 500) -> LiveRun:
    """Publish ``elog`` (its raw records) to the worker's topics and collect the lists it publishes."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    if elog.raw is None:
        raise ValueError("live replay needs the raw records: load_log(..., keep_raw=True)")
    kafka, topics = settings.kafka, settings.kafka.topics
    producer = KafkaProducer(**kafka.kafka_python_config(), acks="all", linger_ms=0)
    # fetch_max_wait_ms: the broker answers a fetch at once instead of holding it up to 500 ms for more
    # bytes, so "received" measures the list's arrival, not the consumer's batching.
    consumer = KafkaConsumer(**kafka.kafka_python_config(), enable_auto_commit=False, fetch_max_wait_ms=10)
    recs_topic = topics.recommendations.name
    parts = [TopicPartition(recs_topic, p) for p in range(topics.recommendations.partitions)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    # An upload is recommendable once its "up" record is in the item-state log (the worker writes it
    # after the item is in Milvus; every worker's fresh window and cache follow the log).
    log_topic = f"{settings.app_id}-item-deltas"
    announcements = KafkaConsumer(**kafka.kafka_python_config(), enable_auto_commit=False, fetch_max_wait_ms=10)
    log_parts = [TopicPartition(log_topic, p) for p in range(kafka.item_partitions)]
    announcements.assign(log_parts)
    announcements.seek_to_beginning(*log_parts)
    announced: set[str] = set()
    run = LiveRun()
    out = _Outstanding()
    pending: list[str] = []  # uploads sent, not yet in the item-state log
    t0 = time.monotonic()

    def drain(timeout_ms: int) -> None:
        for batch in consumer.poll(timeout_ms=timeout_ms).values():
            now = time.time()
            for msg in batch:
                if msg.value is None:
                    continue
                rec = orjson.loads(msg.value)
                run.records.append(LiveRecord(
                    user_id=rec["user_id"], source_event_id=rec["source_event_id"],
                    items=[i["item_id"] for i in rec["items"]],
                    reasons_specific=sum(1 for i in rec["items"] if any(r != GENERIC_REASON for r in i["reasons"])),
                    produced_at=float(rec["produced_at"]), received_at=now, model_version=rec["model_version"]))
                out.resolve(rec["user_id"], rec["source_event_id"])

    def wait_uploads() -> None:
        producer.flush(30)
        t = time.monotonic()
        want = set(pending)
        while want:
            for batch in announcements.poll(timeout_ms=20).values():
                for msg in batch:
                    if msg.value is not None and (doc := orjson.loads(msg.value)).get("k") == "up":
                        announced.add(doc["item"])
            want -= announced
            if not want:
                break
            if time.monotonic() - t > upload_timeout:
                raise TimeoutError(f"{len(want)} uploads not indexed after {upload_timeout:.0f} s "
                                   f"(e.g. {sorted(want)[:3]}); see the worker log")
            if out.n:
                drain(20)  # lists of events still in flight keep arriving meanwhile
        run.upload_waits += 1
        run.upload_wait_s += time.monotonic() - t
        pending.clear()

    def wait_below(limit: int, timeout: float) -> None:
        if out.n >= limit:
            producer.flush(30)
        while out.n >= limit:
            drain(50)
            lost = out.expire(timeout)
            if lost:
                log.warning("no list for %d event(s) after %.0f s (e.g. %s); going on", len(lost), timeout, lost[0])
                run.unresolved.extend(lost)

    try:
        for entry, (key, value) in zip(elog.stream, elog.raw):
            if isinstance(entry, Upload):
                producer.send(topics.uploads.name, key=key, value=value)
                pending.append(elog.items[entry.item].item_id)
                run.uploads += 1
                continue
            if pending:
                wait_uploads()
            if in_flight > 1:
                drain(0)  # read lists as they come, so "received" latencies are not the replay's own waits
            wait_below(in_flight, event_timeout)
            run.sent_at[entry.event_id] = time.time()
            producer.send(topics.interactions.name, key=key, value=value)
            out.add(entry.user_id, entry.event_id)
            run.interactions += 1
            if run.interactions % progress_every == 0:
                log.info("live replay: %d / %d interactions sent (%.0f s)", run.interactions, elog.n_interactions,
                         time.monotonic() - t0)
        wait_below(1, event_timeout)
    finally:
        producer.close(10)
        consumer.close()
        announcements.close()
    run.seconds = time.monotonic() - t0
    log.info("live replay: %d uploads, %d interactions, %d lists in %.0f s", run.uploads, run.interactions,
             len(run.records), run.seconds)
    return run


# ---------------------------------------------------------------------- the methods compared
class LiveLists:
    """The worker's lists, as a method of the prequential replay: the list current on the topic before the event.

    After event e of user u is applied, the list tagged e (if the worker published
    one) becomes u's current list; a user with no list yet gets an empty list (a miss).
    """

    def __init__(self, core: CoreState, cat: Catalogue, lists: dict[str, LiveRecord], name: str = "live") -> None:
        self.core = core
        self.cat = cat
        self.name = name
        self.index = {iid: j for j, iid in enumerate(cat.ids)}
        self.lists = lists
        self.current: dict[str, LiveRecord] = {}
        self.unknown_items = 0

    def recommend(self, user: str, now: float, k: int) -> tuple[list[int], int | None]:
        rec = self.current.get(user)
        if rec is None:
            return [], None
        ranked = []
        for iid in rec.items[:k]:
            j = self.index.get(iid)
            if j is None:
                self.unknown_items += 1
            else:
                ranked.append(j)
        return ranked, min(rec.reasons_specific, len(ranked))

    def observe(self, ev: Event) -> None:
        rec = self.lists.get(ev.event_id)
        if rec is not None:
            self.current[ev.user_id] = rec

    def start_test(self) -> None:
        pass

    def tick(self, n_test_seen: int) -> None:
        pass


class HybridAsOfPrevious(Hybrid):
    """The hybrid as a one-event-per-batch worker publishes it: computed right after the user's previous event.

    ``observe`` runs after every state has applied the event, so the list is the
    one the worker would publish for that event (at ``now`` = the event's time).
    """

    def __init__(self, core: CoreState, cat: Catalogue, cfg: RankingSettings, name: str = "hybrid-as-live",
                 ranker: LinearRanker | None = None) -> None:
        super().__init__(core, cat, cfg, name, ranker=ranker)
        self.learns = False  # the list a worker publishes uses the ranker it loaded, or none
        self.current: dict[str, tuple[list[int], int]] = {}

    def observe(self, ev: Event) -> None:
        state = self.core.users.get(ev.user_id)
        cand = self.candidates(ev.user_id, ev.ts)
        recs = recommend(state, cand, self.cat.infos, ev.ts, self.cfg, learned=self.learned(ev.user_id, ev.ts, cand))
        n_reasons = sum(1 for r in recs if any(x != GENERIC_REASON for x in r.reasons))
        self.current[ev.user_id] = ([self.index[r.item_id] for r in recs], n_reasons)

    def recommend(self, user: str, now: float, k: int) -> tuple[list[int], int | None]:
        ranked, n_reasons = self.current.get(user, ([], 0))
        return ranked[:k], min(n_reasons, k)


# ---------------------------------------------------------------------- agreement
def agreement(a: list[list[int]], b: list[list[int]], k: int) -> dict[str, float]:
    """Share of identical top-k lists (same items, same order), and mean overlap of the top-k sets.

    Overlap is ``|A ∩ B| / max(|A|, |B|)``, 1 when both lists are empty (they agree).
    """
    n = len(a)
    if n == 0:
        return {"identical": float("nan"), "overlap": float("nan"), "n": 0}
    same = sum(1 for x, y in zip(a, b) if list(x[:k]) == list(y[:k]))
    overlap = float(np.mean([len(set(x[:k]) & set(y[:k])) / max(len(x[:k]), len(y[:k])) if (x or y) else 1.0
                             for x, y in zip(a, b)]))
    return {"identical": same / n, "overlap": overlap, "n": n}


def latencies(run: LiveRun) -> dict[str, np.ndarray]:
    """Seconds from sending an interaction to its list being produced (worker clock) and received here."""
    produced, received = [], []
    for r in run.records:
        t = run.sent_at.get(r.source_event_id)
        if t is None:
            continue
        produced.append(r.produced_at - t)
        received.append(r.received_at - t)
    return {"produced": np.asarray(produced), "received": np.asarray(received)}


def latency_summary(x: np.ndarray) -> dict[str, Any]:
    if not len(x):
        return {"n": 0}
    p = np.percentile(x * 1000.0, [50, 90, 99])
    return {"n": int(len(x)), "p50_ms": float(p[0]), "p90_ms": float(p[1]), "p99_ms": float(p[2]),
            "max_ms": float(x.max() * 1000.0), "mean_ms": float(x.mean() * 1000.0)}


def plot_latency(lat: dict[str, np.ndarray], path: Path, in_flight: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    x = lat["received"] * 1000.0
    if len(x):
        hi = float(np.percentile(x, 99.5))
        bins = np.linspace(0, max(hi, 1.0), 60)
        ax.hist(np.clip(x, 0, hi), bins=bins, alpha=0.7, label="sent → list received")
        ax.hist(np.clip(lat["produced"] * 1000.0, 0, hi), bins=bins, alpha=0.6, label="sent → list produced")
        for q, ls in ((50, "--"), (90, ":")):
            ax.axvline(np.percentile(x, q), color="k", ls=ls, lw=1, label=f"p{q} received {np.percentile(x, q):.0f} ms")
    ax.set_xlabel("milliseconds (clipped at p99.5)")
    ax.set_ylabel("lists")
    ax.set_title(f"Live mode: interaction → published list latency (at most {in_flight} in flight)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------- one live run end to end
@dataclass
class LiveOptions:
    dataset: Path
    out: Path
    ranking: RankingSettings
    base_ranking: RankingSettings  # the settings' own ranking: the worker gets the difference as env vars
    train_frac: float = 0.8
    end_frac: float = 1.0
    ks: tuple[int, ...] = (10, 20)
    limit: int | None = None
    users: int | None = None
    seed: int = 0
    in_flight: int = 1
    event_timeout: float = 60.0
    cache_dir: Path = Path(".cache/eval-vectors")
    device: str = "cpu"
    fusion_checkpoint: Path | None = None
    dim: int = 384
    report_path: Path | None = None
    json_path: Path | None = None
    command: str = ""
    keep: bool = False  # keep the worker's Milvus collections afterwards
    ranker_learn_frac: float = 0.25  # fusion "learned": fit on this last share of the training events
    workers: int = 1  # worker processes in the one consumer group (each its own data directory)


def run_live(opts: LiveOptions) -> dict[str, Any]:
    """Replay through a real worker, then score its lists against the offline ones; writes the report."""
    import platform

    from streams.evaluation.dataset import load_log, select_users
    from streams.evaluation.protocol import EvalConfig, run_prequential
    from streams.evaluation.report import write_json, write_plots
    from streams.evaluation.vectors import item_vectors, model_id

    t0 = time.perf_counter()
    elog = load_log(opts.dataset, limit=opts.limit, keep_raw=True)
    if opts.users is not None:
        elog = select_users(elog, opts.users, opts.seed)
    n = elog.n_interactions
    stop = int(opts.end_frac * n)
    if stop < n:  # events after --end-frac are never scored: do not replay them either
        k = [j for j, e in enumerate(elog.stream) if isinstance(e, Event)][stop]
        elog = EvalLog(elog.name, elog.layout, elog.items, elog.index, elog.stream[:k], stop, elog.skipped,
                       elog.raw[:k])
        opts_end = 1.0
        train_frac = opts.train_frac / opts.end_frac
    else:
        opts_end, train_frac = 1.0, opts.train_frac
    vectors = item_vectors(elog.items, opts.cache_dir, opts.fusion_checkpoint, opts.device, opts.dim)

    unique = uuid.uuid4().hex[:10]
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    work_dir = opts.cache_dir.parent / "eval-live"
    ranking, ranker = _live_ranker(elog, vectors, opts.ranking, int(train_frac * elog.n_interactions),
                                   opts.ranker_learn_frac, work_dir / f"ranker-{unique}.json")
    # The workers' logs stay out of the report directory (which may be versioned, e.g. docs/quality/).
    env = worker_env(unique, ranking_env(opts.base_ranking, ranking))
    workers = [WorkerProcess({**env, **({"AVREC_WORKER__REPLICA": str(k)} if opts.workers > 1 else {})},
                             work_dir / f"worker-{unique}-{k}.log") for k in range(opts.workers)]
    worker = workers[0]
    worker_ranking = worker.settings.ranking
    if worker_ranking != ranking:
        raise ValueError("the worker's ranking settings would differ from the evaluated ones")
    t_live = time.perf_counter()
    try:
        for w in workers:
            w.start(timeout=180)
        # Every worker joined and the group settled: no rebalance races the replay.
        settle_s = wait_group_stable(worker.settings.kafka, worker.settings.app_id, opts.workers, 180)
        run = replay_live(elog, worker.settings, in_flight=opts.in_flight, event_timeout=opts.event_timeout)
        run.group_settle_s = settle_s
    finally:
        for w in workers:
            w.stop()
        if not opts.keep:
            try:
                worker.drop_collections()
                worker.drop_topics()
            except Exception as exc:  # noqa: BLE001 - cleanup must not hide the run's own error
                log.warning("could not drop the eval worker's collections and topics: %s", exc)
    t_live = time.perf_counter() - t_live
    run.worker_log = ", ".join(str(w.log_path) for w in workers)
    # Every list the workers published, by the event it answers: runs with other worker counts compare with it.
    (out / "lists.json").write_bytes(orjson.dumps({e: r.items for e, r in run.by_event().items()}))

    lists = run.by_event()
    live_method: list[LiveLists] = []

    def make_live(core: CoreState, cat: Catalogue) -> LiveLists:
        m = LiveLists(core, cat, lists)
        live_method.append(m)
        return m

    cfg = EvalConfig(
        train_frac=train_frac, end_frac=opts_end, ks=opts.ks, methods=("hybrid",),
        keep_lists=("hybrid", "hybrid-as-live", "live"), ranker=ranker,
        extra_methods=(lambda core, cat: HybridAsOfPrevious(core, cat, ranking, ranker=ranker), make_live),
    )
    res = run_prequential(elog, vectors, ranking, cfg)
    summary = res.summary()
    kmax = max(opts.ks)
    lat = latencies(run)
    first_events = _first_event_targets(elog, res.target_events)
    agree = {
        "live_vs_hybrid": agreement(res.lists["live"], res.lists["hybrid"], kmax),
        "live_vs_hybrid_as_live": agreement(res.lists["live"], res.lists["hybrid-as-live"], kmax),
        "hybrid_as_live_vs_hybrid": agreement(res.lists["hybrid-as-live"], res.lists["hybrid"], kmax),
    }
    # Without the users' first events: live has no list before a user's first event, offline has a
    # cold-start one (trending and fresh items).
    keep_idx = [i for i, e in enumerate(res.target_events) if e not in first_events]
    agree["live_vs_hybrid_after_first"] = agreement([res.lists["live"][i] for i in keep_idx],
                                                    [res.lists["hybrid"][i] for i in keep_idx], kmax)
    agree["live_vs_hybrid_as_live_after_first"] = agreement(
        [res.lists["live"][i] for i in keep_idx], [res.lists["hybrid-as-live"][i] for i in keep_idx], kmax)
    hr = {name: summary[name][f"hr@{kmax}"] for name in summary}
    batches = _batch_stats(elog, lists)
    doc: dict[str, Any] = {
        "command": opts.command,
        "mode": "live",
        "dataset": {"path": str(opts.dataset), "name": elog.name, "layout": elog.layout, "items": len(elog.items),
                    "interactions": n, "replayed_interactions": elog.n_interactions, "limit": opts.limit,
                    "users": opts.users, "seed": opts.seed},
        "protocol": {"train_frac": opts.train_frac, "end_frac": opts.end_frac, "train_interactions": res.n_train,
                     "test_interactions": res.n_test, "targets": res.n_targets,
                     "first_event_targets": len(first_events), "ks": list(opts.ks),
                     "catalogue_size": res.catalogue_size, "in_flight": opts.in_flight},
        "encoder": {"model_id": model_id(opts.fusion_checkpoint), "device": opts.device},
        "methods": summary,
        "agreement": agree,
        "hr_difference": {"live_minus_hybrid": hr["live"] - hr["hybrid"],
                          "live_minus_hybrid_as_live": hr["live"] - hr["hybrid-as-live"]},
        "live": {"uploads": run.uploads, "interactions": run.interactions, "lists": len(run.records),
                 "events_with_own_list": sum(1 for e in run.sent_at if e in lists),
                 "unresolved_events": len(run.unresolved), "upload_waits": run.upload_waits,
                 "upload_wait_s": run.upload_wait_s, "replay_s": run.seconds,
                 "events_per_s": run.interactions / run.seconds if run.seconds else None,
                 "unknown_items_in_lists": live_method[0].unknown_items if live_method else 0,
                 "latency_received": latency_summary(lat["received"]),
                 "latency_produced": latency_summary(lat["produced"]), "batches": batches,
                 "model_versions": sorted({r.model_version for r in run.records}),
                 "workers": opts.workers, "group_settle_s": run.group_settle_s,
                 "worker_log": run.worker_log, "worker_app_id": worker.env["AVREC_APP_ID"],
                 "topic_prefix": worker.env["AVREC_KAFKA__TOPIC_PREFIX"]},
        "settings": {"hybrid": ranking.model_dump(mode="json"), "worker_env": {
            k: v for k, v in worker.env.items() if k.startswith(("AVREC_RANKING", "AVREC_WORKER"))}},
        "runtime": {"total_s": time.perf_counter() - t0, "live_s": t_live, "offline_replay_s":
                    res.train_seconds + res.test_seconds, "cpus": os.cpu_count(),
                    "python": platform.python_version()},
    }
    plots = write_plots(summary, res.bucket_ts, out, kmax)
    lat_png = out / "latency.png"
    plot_latency(lat, lat_png, opts.in_flight)
    plots.append(lat_png)
    report = opts.report_path or out / "report.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render_live_report(doc, [os.path.relpath(p, report.parent) for p in plots]), encoding="utf-8")
    write_json(doc, opts.json_path or out / "summary.json")
    log.info("live report %s", report)
    return doc


def _live_ranker(elog: EvalLog, vectors: np.ndarray, ranking: RankingSettings, n_train: int, learn_frac: float,
                 path: Path) -> tuple[RankingSettings, LinearRanker | None]:
    """Fusion "learned": fit the ranker on the training events, as a deployment fits it on its log, and
    hand the worker the file (``ranker_path``) and the offline replay the same model. Where the slice
    gives nothing to learn from, both rank with the weighted blend instead (said in the log)."""
    if ranking.fusion != "learned":
        return ranking, None
    try:
        ranker = fit_ranker(elog, vectors, ranking, until=n_train, learn_frac=learn_frac)
    except RankingError as exc:
        log.warning("%s; the worker and the offline replay rank with the weighted blend", exc)
        return ranking.model_copy(update={"fusion": "weighted", "ranker_path": ""}), None
    ranker.save(path)
    return ranking.model_copy(update={"ranker_path": str(path)}), ranker


def _first_event_targets(elog: EvalLog, target_events: list[str]) -> set[str]:
    """Targets that are their user's first interaction in the replayed log."""
    first: dict[str, str] = {}
    for e in elog.stream:
        if isinstance(e, Event) and e.user_id not in first:
            first[e.user_id] = e.event_id
    firsts = set(first.values())
    return {e for e in target_events if e in firsts}


def _batch_stats(elog: EvalLog, lists: dict[str, LiveRecord]) -> dict[str, int]:
    """How many interactions got a list of their own, and how many were superseded within a batch."""
    own = sum(1 for e in elog.stream if isinstance(e, Event) and e.event_id in lists)
    return {"interactions": elog.n_interactions, "with_own_list": own, "superseded": elog.n_interactions - own}


def render_live_report(doc: dict[str, Any], plots: list[str]) -> str:
    from streams.evaluation.report import metrics_table

    d, p, lv, a = doc["dataset"], doc["protocol"], doc["live"], doc["agreement"]
    k = max(p["ks"])
    sl = []
    if d.get("limit"):
        sl.append(f"the first {d['limit']} interactions")
    if d.get("users"):
        sl.append(f"{d['users']} users drawn at random (seed {d['seed']})")
    rl, pl = lv["latency_received"], lv["latency_produced"]

    def ag(key: str) -> str:
        x = a[key]
        return f"{x['identical']:.1%} identical, mean overlap {x['overlap']:.1%} (n = {x['n']})"

    lines = [
        f"# Live evaluation: {d['name']} through Kafka and the worker",
        "",
        f"Reproduce: `{doc['command']}`" if doc.get("command") else "",
        "",
        "## What ran",
        "",
        f"- Slice: {', '.join(sl) or 'the whole log'}: {d['replayed_interactions']} interactions replayed"
        f" (train {p['train_interactions']}, test {p['test_interactions']}, {p['targets']} targets, "
        f"{p['first_event_targets']} of them a user's first event), {lv['uploads']} uploads, "
        f"catalogue {p['catalogue_size']} items.",
        f"- {lv.get('workers', 1)} worker process(es) in one consumer group on their own topics "
        f"(`{lv['topic_prefix']}*`) and collections, fan-out off; "
        f"at most {p['in_flight']} interaction(s) in flight; uploads indexed in Milvus (through Triton) before "
        f"the next interaction ({lv['upload_waits']} waits, {lv['upload_wait_s']:.0f} s).",
        f"- {lv['interactions']} interactions in {lv['replay_s']:.0f} s ({lv['events_per_s']:.1f}/s); "
        f"{lv['lists']} lists received; {lv['batches']['with_own_list']} interactions got a list of their own, "
        f"{lv['batches']['superseded']} were superseded by a later event of the same user in the same batch; "
        f"{lv['unresolved_events']} never got a list.",
        "",
        "## Results (same targets, same metric code)",
        "",
        metrics_table(doc["methods"]),
        "",
        "`hybrid`: offline protocol (state just before the event, at the event's time). `hybrid-as-live`: "
        "offline, the list computed right after the user's previous event (a one-event batch). `live`: the list "
        "that was current for the user on the recommendations topic before the event.",
        "",
        "## Agreement",
        "",
        f"- live vs offline `hybrid`: {ag('live_vs_hybrid')}; HR@{k} difference "
        f"{doc['hr_difference']['live_minus_hybrid']:+.4f}.",
        f"  - without users' first events (no live list exists yet): {ag('live_vs_hybrid_after_first')}.",
        f"- live vs `hybrid-as-live`: {ag('live_vs_hybrid_as_live')}; HR@{k} difference "
        f"{doc['hr_difference']['live_minus_hybrid_as_live']:+.4f}.",
        f"  - without users' first events: {ag('live_vs_hybrid_as_live_after_first')}.",
        f"- `hybrid-as-live` vs `hybrid` (timing alone, both offline): {ag('hybrid_as_live_vs_hybrid')}.",
        "",
        "## Latency",
        "",
        (f"Interaction sent → list received: p50 {rl['p50_ms']:.0f} ms, p90 {rl['p90_ms']:.0f} ms, p99 "
         f"{rl['p99_ms']:.0f} ms, max {rl['max_ms']:.0f} ms ({rl['n']} lists); → list produced (worker clock): "
         f"p50 {pl['p50_ms']:.0f} ms, p90 {pl['p90_ms']:.0f} ms." if rl.get("n") else "No lists."),
        "",
    ]
    if plots:
        lines += ["## Plots", ""] + [f"![{pth}]({pth})" for pth in plots] + [""]
    return "\n".join(lines) + "\n"
