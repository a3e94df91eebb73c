"""Starting the Faust worker, and telling the user where events go in and out."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from streams.settings import Settings, get_settings

log = logging.getLogger(__name__)


def endpoints_text(settings: Settings) -> str:
    t = settings.kafka.topics
    return "\n".join(
        [
            "avrec worker",
            f"  Kafka bootstrap : {settings.kafka.bootstrap_servers}",
            f"  events in       : topic '{t.uploads.name}' (key item_id), '{t.interactions.name}' (key user_id),"
            f" '{t.control.name}'",
            f"  lists out       : topic '{t.recommendations.name}' (key user_id)   -> `avrec tail recommendations`",
            f"  dead letters    : '{t.uploads_dlq.name}', '{t.interactions_dlq.name}', '{t.control_dlq.name}'",
            f"  Triton          : {settings.triton.protocol}://{settings.triton.url}",
            f"  Milvus          : {settings.milvus.uri}",
            *([f"  web             : {settings.web.url}  (/metrics, /dashboard, /docs: the read API)"]
              if settings.web.enabled else []),
        ]
    )


def print_endpoints(settings: Settings) -> None:
    # This is user-facing CLI output, printed before Faust takes over the terminal.
    sys.stdout.write(endpoints_text(settings) + "\n")
    sys.stdout.flush()


def run_worker(loglevel: str = "info") -> None:
    """Run the Faust worker in this process until it is stopped (SIGTERM/SIGINT)."""
    from streams import agents  # noqa: F401  (registers the agents and timers on the app)
    from streams.app import app
    from streams.web import register_views

    register_views()  # /metrics, the read API, health, the dashboard

    # Faust creates only the last level of its data dir (RocksDB state lives there).
    Path(str(app.conf.datadir)).parent.mkdir(parents=True, exist_ok=True)
    settings = get_settings()
    # Faust reads --loop only when `faust` is first imported, which happened long
    # before this point (streams.app), so the option alone leaves asyncio's own loop
    # in place (py-spy showed asyncio's selector loop under the "uvloop" worker).
    # Set the policy here, before Faust creates its loop.
    loop = event_loop()
    import mode.loop

    mode.loop.use(loop)
    limit_blas_threads(settings.worker.blas_threads)
    set_gil_switch_interval(settings.worker.gil_switch_interval_ms)
    # A ranker file that cannot be read fails the worker here, before it joins the group,
    # with the file and the fix named (the context loads it again when the agents start).
    from streams.ranking.learned import LinearRanker

    if settings.ranking.fusion == "learned" and settings.ranking.ranker_path:
        LinearRanker.load(settings.ranking.ranker_path)
    # After the local checks (they need no services), before the worker joins the group:
    # avrec's own topics exist, and every keyed topic has the partition count the state is
    # split by (the input topics are the deployment's: see docs/EVENTS.md).
    from streams.kafka.admin import check_copartitioned, check_partition_counts, ensure_topics

    check_copartitioned(settings.kafka)
    ensure_topics(settings.kafka, [*settings.internal_topics(), *settings.changelog_topics()])
    topics = settings.kafka.topics
    check_partition_counts(settings.kafka, [topics.interactions, topics.impressions, *settings.internal_topics(),
                                            *settings.changelog_topics()])
    # Faust's umbrella command reads sys.argv.
    sys.argv = ["avrec", "--loop", loop, "worker", "--loglevel", loglevel]
    if not settings.web.enabled:
        sys.argv.append("--without-web")
    app.main()


def limit_blas_threads(n: int) -> None:
    """Cap numpy's BLAS thread pools at ``n`` for the rest of the process (0: leave them alone).

    Called once, before any agent runs, so every list the worker ranks multiplies on
    the calling thread (see ``WorkerSettings.blas_threads`` for why).
    """
    if n > 0:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n, user_api="blas")


def set_gil_switch_interval(ms: float) -> None:
    """How long a thread may hold the GIL while another waits for it (0: leave CPython's default):
    see ``WorkerSettings.gil_switch_interval_ms`` for why the worker shortens it."""
    if ms > 0:
        sys.setswitchinterval(ms / 1000.0)


def blas_threads() -> int | None:
    """The largest BLAS thread count in effect in this process (None: no BLAS loaded)."""
    from threadpoolctl import threadpool_info

    counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return max(counts) if counts else None


def event_loop() -> str:
    """uvloop when it is installed and asked for (the default), else asyncio's own loop."""
    wanted = get_settings().worker.event_loop
    if wanted == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            log.warning("uvloop is not installed; running on asyncio's event loop "
                        "(pip install uvloop, or set AVREC_WORKER__EVENT_LOOP=aio to silence this)")
            return "aio"
    return wanted
