"""``avrec``: the user's front door.

    avrec stack up|down|status|logs     the embedded local stack (deploy/local)
    avrec config show                   effective settings, secrets masked
    avrec worker                        the Faust worker (streams/app.py)
    avrec run                           stack up + worker, the README's command 1
    avrec demo                          stack up + worker + a small demo flowing (``make run``)
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Annotated

import orjson
import typer

from streams.exceptions import AvrecError
from streams.settings import get_settings

app = typer.Typer(
    help="avrec: streaming audio/video recommender", no_args_is_help=True, pretty_exceptions_show_locals=False
)
stack_app = typer.Typer(help="The local stack: real Kafka (KRaft), Triton and Milvus Lite on loopback.")
config_app = typer.Typer(help="Settings.")
encoders_app = typer.Typer(help="The text, audio and video encoders.")
app.add_typer(stack_app, name="stack")
app.add_typer(config_app, name="config")
app.add_typer(encoders_app, name="encoders")

log = logging.getLogger("avrec")


def _setup_logging() -> None:
    level = get_settings().log_level
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # kafka-python logs every connection at INFO; keep the CLI readable.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))


def _only(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


OnlyOpt = Annotated[str | None, typer.Option("--only", help="Comma-separated subset: kafka,milvus,triton")]


@stack_app.command("up")
def stack_up(
    only: OnlyOpt = None,
    reuse: Annotated[bool, typer.Option(help="Keep services that already run; start the rest.")] = False,
) -> None:
    """Start the real services and wait until each is ready."""
    from deploy.local.stack import LocalStack

    settings = get_settings()
    t0 = time.monotonic()
    report = LocalStack(settings, _only(only)).up(reuse=reuse)
    for name in report.reused:
        typer.echo(f"{name:7s} already running (kept)")
    for name in report.started:
        typer.echo(f"{name:7s} ready in {report.seconds[name]:.1f}s")
    if report.topics:
        typer.echo("topics: " + ", ".join(f"{t} ({s})" for t, s in report.topics.items()))
    typer.echo(f"stack ready in {time.monotonic() - t0:.1f}s (state in {settings.stack.state_dir})")


@stack_app.command("down")
def stack_down(only: OnlyOpt = None) -> None:
    """Stop the services (data is kept under the state dir)."""
    from deploy.local.stack import LocalStack

    stopped = LocalStack(get_settings(), _only(only)).down()
    typer.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@stack_app.command("status")
def stack_status(only: OnlyOpt = None) -> None:
    """Show each service's pid, readiness and endpoint. Exit 1 unless all are ready."""
    from deploy.local.stack import LocalStack

    rows = LocalStack(get_settings(), _only(only)).status()
    for st in rows:
        state = "ready" if st.ready else ("starting" if st.pid else "stopped")
        typer.echo(f"{st.name:7s} {state:8s} pid={st.pid or '-':<8} {st.endpoint}  log: {st.log_file}")
    if not all(st.ready for st in rows):
        raise typer.Exit(1)


@stack_app.command("logs")
def stack_logs(
    service: Annotated[str, typer.Argument(help="kafka, milvus or triton")],
    lines: Annotated[int, typer.Option("-n", "--lines")] = 50,
) -> None:
    """Print the last lines of a service's log."""
    from deploy.local.stack import LocalStack

    typer.echo(LocalStack(get_settings(), [service]).logs(service, lines))


@config_app.command("show")
def config_show() -> None:
    """Print the effective settings as JSON; secrets print as **********."""
    typer.echo(orjson.dumps(get_settings().masked_dump(), option=orjson.OPT_INDENT_2).decode())


@encoders_app.command("info")
def encoders_info() -> None:
    """Which weights each tower runs (pretrained or built-in), and whether Triton serves it."""
    import urllib.request

    from encoders.towers import weights_report

    settings = get_settings()
    models = {"text": "text_encoder", "audio": "audio_encoder", "video": "video_encoder", "fusion": "fusion"}
    host, port = settings.stack.host, settings.stack.triton_http_port
    for info in weights_report(settings.encoders):
        kind = "pretrained" if info.pretrained else "NOT pretrained"
        try:
            url = f"http://{host}:{port}/v2/models/{models[info.tower]}/ready"
            with urllib.request.urlopen(url, timeout=2) as resp:
                served = "served by Triton" if resp.status == 200 else f"Triton says {resp.status}"
        except OSError:
            served = "Triton not reachable"
        typer.echo(f"{info.tower:7s} {kind:15s} {info.description}  [{info.source}]  ({served})")


@app.command("recommend")
def recommend_cmd(user_id: Annotated[str, typer.Argument(help="The user whose list to show.")]) -> None:
    """The user's current list and taste state, as the worker last published them."""
    from streams.state_reader import current_list, current_state

    settings = get_settings()
    state = current_state(settings, user_id)
    rec = current_list(settings, user_id)
    if state is None and rec is None:
        typer.echo(f"no state and no list for user {user_id!r} (unknown, or forgotten)")
        raise typer.Exit(1)
    if state is not None:
        recent = ", ".join(f"{h.item_id} ({h.event_type})" for h in state.history[-5:])
        typer.echo(f"{user_id}: {state.n_events} events applied; recent: {recent or '-'}")
    if rec is not None:
        typer.echo(f"list from event {rec.source_event_id} ({rec.model_version}):")
        for rank, item in enumerate(rec.items, 1):
            typer.echo(f"{rank:3d}. {item.item_id:24s} {item.score:7.3f}  {'; '.join(item.reasons)}")


@app.command("worker")
def worker(
    loglevel: Annotated[str, typer.Option("--loglevel", "-l")] = "info",
) -> None:
    """Run the Faust worker (consumes uploads, interactions, control)."""
    from streams.worker import run_worker

    run_worker(loglevel)


@app.command("run")
def run(loglevel: Annotated[str, typer.Option("--loglevel", "-l")] = "info") -> None:
    """Bring the local stack up (reusing what runs) and start the worker in the foreground."""
    from deploy.local.stack import LocalStack
    from streams.worker import print_endpoints, run_worker

    settings = get_settings()
    report = LocalStack(settings).up(reuse=True)
    for name in report.started:
        typer.echo(f"{name:7s} ready in {report.seconds[name]:.1f}s")
    print_endpoints(settings)
    run_worker(loglevel)


@app.command("demo")
def demo(
    items: Annotated[int, typer.Option(help="Catalogue size (MicroLens titles, or generated items).")] = 300,
    videos: Annotated[int, typer.Option(help="MicroLens videos uploaded with their media.")] = 4,
    users: Annotated[int, typer.Option(help="Synthetic users.")] = 12,
    rate: Annotated[float, typer.Option(help="Interactions per second, all users together.")] = 4.0,
    uploads_per_min: Annotated[float, typer.Option(help="New items uploaded per minute while it runs.")] = 30.0,
) -> None:
    """Stack up, a worker, a small demo catalogue and users interacting: lists flow, watch the dashboard."""
    from streams.demo import run_demo

    if items < 1 or users < 1 or rate <= 0 or videos < 0 or uploads_per_min < 0:
        raise typer.BadParameter("--items and --users must be at least 1, --rate above 0, "
                                 "--videos and --uploads-per-min 0 or more")
    run_demo(get_settings(), typer.echo, n_items=items, n_videos=videos, n_users=users, rate=rate,
             uploads_per_min=uploads_per_min)


def _register_event_commands() -> None:
    from streams.evaluation.cli import register as register_eval
    from streams.events_cli import register
    from streams.training.cli import register as register_training

    register(app)
    register_eval(app)
    register_training(app)


_register_event_commands()


def main() -> None:
    _setup_logging()
    try:
        app()
    except AvrecError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)
