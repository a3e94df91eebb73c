"""Event commands for the ``avrec`` CLI: produce JSONL files, tail recommendations, replay datasets.

    avrec produce uploads|interactions|impressions|control FILE.jsonl [--topic T]
    avrec tail recommendations [--user U] [--from-beginning] [--max N] [--timeout S]
    avrec replay movielens PATH [--speed X] [--limit N] [--max-gap S]

``streams.cli`` calls :func:`register` to add them to the main app. Records are
validated with :mod:`streams.records` (see docs/EVENTS.md) before they are sent.
"""

from __future__ import annotations

import enum
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from streams.settings import get_settings

#: Replay never sleeps longer than this between two events, whatever the speed.
DEFAULT_MAX_GAP_S = 1.0
#: Bad lines printed one by one before ``produce`` only counts them.
MAX_REPORTED_ERRORS = 50


class ProduceKind(str, enum.Enum):
    uploads = "uploads"
    interactions = "interactions"
    impressions = "impressions"
    control = "control"


def _producer() -> Any:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from streams.kafka.exceptions import BrokerUnavailable

    kafka = get_settings().kafka
    try:
        return KafkaProducer(**kafka.kafka_python_config(), acks="all", linger_ms=5)
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"cannot reach Kafka at {kafka.bootstrap_servers} ({exc}). Start the local stack with "
            "`avrec stack up`, or point AVREC_KAFKA__BOOTSTRAP_SERVERS at your brokers."
        ) from exc


class _Sender:
    """Counts acknowledged and failed sends; remembers the first failure."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.acked = 0
        self.failed = 0
        self.first_error: str | None = None

    def _ok(self, _meta: Any) -> None:
        self.acked += 1

    def _err(self, exc: BaseException) -> None:
        self.failed += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        try:
            fut = self.producer.send(topic, key=key, value=value)
        except Exception as exc:  # noqa: BLE001 - a record too large, a closed producer: count, go on
            self._err(exc)
            return
        fut.add_callback(self._ok)
        fut.add_errback(self._err)

    def close(self, timeout_s: float = 60.0) -> None:
        try:
            self.producer.flush(timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001
            self._err(exc)
        finally:
            self.producer.close(timeout=10)


def _progress(total: int | None, desc: str, unit: str, unit_scale: bool = False) -> Any:
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (pipes, CI, tests).
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, disable=None, leave=False)


def produce(
    kind: Annotated[ProduceKind, typer.Argument(help="Record type of every line in FILE.")],
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="JSON Lines, one record per line.")
    ],
    topic: Annotated[str | None, typer.Option(help="Topic to send to (default: the configured one).")] = None,
) -> None:
    """Validate each line of FILE and send the valid ones to Kafka, keyed by item_id / user_id.

    A bad line is reported with its number and skipped. Exit 1 if a send fails.
    """
    from streams.records import encode
    from streams.replay import read_jsonl

    settings = get_settings()
    topic = topic or getattr(settings.kafka.topics, kind.value).name
    sender = _Sender(_producer())
    rejected = 0
    t0 = time.monotonic()
    try:
        with _progress(_count_lines(file), f"produce {kind.value}", "line") as bar:
            done = 0
            for line in read_jsonl(file, kind.value):
                if line.error is not None:
                    rejected += 1
                    if rejected <= MAX_REPORTED_ERRORS:
                        typer.echo(
                            f"{file}:{line.lineno}: rejected ({line.error.stage}): {line.error.reason}", err=True
                        )
                    elif rejected == MAX_REPORTED_ERRORS + 1:
                        typer.echo("... further rejected lines are counted, not shown", err=True)
                else:
                    sender.send(topic, line.record.kafka_key(), encode(line.record))
                bar.update(line.lineno - done)
                done = line.lineno
    finally:
        sender.close()
    elapsed = time.monotonic() - t0
    typer.echo(
        f"{kind.value} -> {topic}: sent {sender.acked}, rejected {rejected}, failed {sender.failed} "
        f"({elapsed:.1f}s)"
    )
    if sender.failed:
        typer.echo(f"first send failure: {sender.first_error}", err=True)
        raise typer.Exit(1)


def _count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            n += chunk.count(b"\n")
    return n


def tail_recommendations(
    user: Annotated[str | None, typer.Option("--user", "-u", help="Only this user_id.")] = None,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest record, not at new ones.")
    ] = False,
    max_records: Annotated[int | None, typer.Option("--max", "-n", min=1, help="Stop after N lists.")] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0, help="Stop after S seconds without a matching list.")
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="Items shown per list.")] = 5,
    topic: Annotated[str | None, typer.Option(help="Topic (default: the configured recommendations topic).")] = None,
) -> None:
    """Print one line per recommendation list: the user and the top items with score and first reason."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from streams.kafka.exceptions import BrokerUnavailable
    from streams.kafka.exceptions import KafkaError as KafkaTopicError
    from streams.records import RecordError, decode_recommendation

    settings = get_settings()
    topic = topic or settings.kafka.topics.recommendations.name
    want = user.encode() if user is not None else None
    try:
        # No group: nothing is committed and no consumer group is left behind.
        consumer = KafkaConsumer(**settings.kafka.kafka_python_config(), group_id=None, enable_auto_commit=False)
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {settings.kafka.bootstrap_servers} ({exc})") from exc
    shown = 0
    try:
        partitions = sorted(consumer.partitions_for_topic(topic))
        if not partitions:
            raise KafkaTopicError(
                f"topic {topic!r} does not exist (or is not visible) on {settings.kafka.bootstrap_servers}"
            )
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*tps)
        last_hit = time.monotonic()
        while max_records is None or shown < max_records:
            if timeout is not None and time.monotonic() - last_hit >= timeout:
                break
            batches = consumer.poll(timeout_ms=200)
            for msg in (m for recs in batches.values() for m in recs):
                if want is not None and msg.key != want:
                    continue
                last_hit = time.monotonic()
                key = msg.key.decode("utf-8", "replace") if msg.key is not None else "-"
                if msg.value is None:
                    typer.echo(f"{key}: (tombstone: list deleted)")
                else:
                    try:
                        rec = decode_recommendation(msg.value, max_future_s=None)
                    except RecordError as exc:
                        typer.echo(f"{key}: undecodable at {msg.partition}@{msg.offset}: {exc.reason}", err=True)
                        continue
                    typer.echo(_format_recommendation(rec, top))
                shown += 1
                if max_records is not None and shown >= max_records:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


def _format_recommendation(rec: Any, top: int) -> str:
    items = []
    for it in rec.items[:top]:
        reason = f", {it.reasons[0]}" if it.reasons else ""
        items.append(f"{it.item_id} ({it.score:.3f}{reason})")
    more = f" +{len(rec.items) - top} more" if len(rec.items) > top else ""
    return f"{rec.user_id}: {' | '.join(items) or '(empty)'}{more}  [model {rec.model_version}]"


def replay_movielens(
    path: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="MovieLens 100k / latest, or items+interactions JSONL.")
    ],
    speed: Annotated[
        float, typer.Option(min=0, help="0 = as fast as possible; X = X times real time (gaps capped).")
    ] = 0.0,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after N events (uploads count).")] = None,
    max_gap: Annotated[
        float, typer.Option("--max-gap", min=0, help="Longest sleep between two events, seconds.")
    ] = DEFAULT_MAX_GAP_S,
    uploads_topic: Annotated[str | None, typer.Option(help="Default: the configured uploads topic.")] = None,
    interactions_topic: Annotated[
        str | None, typer.Option(help="Default: the configured interactions topic.")
    ] = None,
) -> None:
    """Publish a dataset's uploads and interactions in time order.

    With --speed X the gap between two events' timestamps is slept divided by X,
    but never longer than --max-gap (1 s), so years of ratings replay in hours.
    """
    from streams.replay import UPLOADS, open_replay

    settings = get_settings()
    topics = {
        "uploads": uploads_topic or settings.kafka.topics.uploads.name,
        "interactions": interactions_topic or settings.kafka.topics.interactions.name,
    }
    replay = open_replay(path)
    if replay.skipped:
        typer.echo("skipped while loading: " + ", ".join(f"{k}: {v}" for k, v in replay.skipped.items()), err=True)
    total = len(replay) if limit is None else min(limit, len(replay))
    sender = _Sender(_producer())
    counts = {"uploads": 0, "interactions": 0}
    t0 = time.monotonic()
    target = t0
    paced_s = 0.0  # the gaps slept, by the schedule (what --speed and --max-gap make of the timestamps)
    prev_ts: float | None = None
    try:
        with _progress(total, f"replay {replay.layout}", "ev") as bar:
            for n, (ts, kind, key, value) in enumerate(replay.timed()):
                if limit is not None and n >= limit:
                    break
                if speed > 0 and prev_ts is not None:
                    gap = min(max(0.0, ts - prev_ts) / speed, max_gap)
                    target += gap
                    paced_s += gap
                    delay = target - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                prev_ts = ts
                sender.send(topics[kind], key, value)
                counts[kind] += 1
                bar.update(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
    finally:
        sender.close()
    elapsed = time.monotonic() - t0
    typer.echo(
        f"replayed {replay.layout} from {path}: {counts[UPLOADS]} uploads -> {topics['uploads']}, "
        f"{counts['interactions']} interactions -> {topics['interactions']}; "
        f"acked {sender.acked}, failed {sender.failed} ({elapsed:.1f}s)"
        + (f"; paced {paced_s:.2f} s of gaps" if speed > 0 else "")
    )
    if sender.failed:
        typer.echo(f"first send failure: {sender.first_error}", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``produce``, ``tail recommendations`` and ``replay movielens`` to the ``avrec`` app."""
    app.command("produce")(produce)
    tail_app = typer.Typer(help="Follow a topic and print its records.", no_args_is_help=True)
    tail_app.command("recommendations")(tail_recommendations)
    app.add_typer(tail_app, name="tail")
    replay_app = typer.Typer(help="Publish a dataset as upload and interaction events.", no_args_is_help=True)
    replay_app.command("movielens")(replay_movielens)
    app.add_typer(replay_app, name="replay")
