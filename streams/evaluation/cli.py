"""``avrec eval``: the prequential replay evaluation (wired into streams/cli.py by ``register``)."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer

log = logging.getLogger(__name__)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def eval_cmd(
    dataset: Annotated[Path, typer.Argument(help="Dataset directory: ml-100k, ml-latest or JSONL layout.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for report.md, plots and summary.json.")] = Path(
        "reports/eval"),
    train_frac: Annotated[float, typer.Option(help="Share of interactions that only train.")] = 0.8,
    end_frac: Annotated[float, typer.Option(help="Stop after this share (e.g. 0.8 with --train-frac 0.7 "
                                                 "evaluates the 70-80% validation segment).")] = 1.0,
    methods: Annotated[str, typer.Option(help="Comma-separated methods; 'itemknn@VARIANT' runs a baseline "
                                              "on a variant's state; 'ease' (research, never a baseline) "
                                              "only runs when named.")] =
        "mostpop,decayedpop,itemknn,itemknn-watched,content,als,als-foldin,hybrid",
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override the live ranking settings, KEY=VALUE (dotted keys), repeatable.")] = None,
    variant: Annotated[list[str] | None, typer.Option(
        help="Extra hybrid, NAME:KEY=VALUE,KEY=VALUE (on top of the live settings), repeatable.")] = None,
    ks: Annotated[str, typer.Option("--k", help="Cut-offs, comma-separated.")] = "10,20",
    limit: Annotated[int | None, typer.Option(help="Use only the first N interactions.")] = None,
    als_refit_frac: Annotated[float, typer.Option(help="Refit ALS after every this share of test events.")] = 0.05,
    als_factors: Annotated[int, typer.Option()] = 64,
    als_alpha: Annotated[float, typer.Option()] = 10.0,
    als_reg: Annotated[float, typer.Option()] = 0.05,
    als_iterations: Annotated[int, typer.Option()] = 15,
    ease_lambda: Annotated[float, typer.Option(help="Ridge λ of the research method 'ease' (refit like ALS).")]
        = 500.0,
    ranker_learn_frac: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="A learned-fusion hybrid fits its ranker on this last share of the training "
                               "events.")] = 0.25,
    cache_dir: Annotated[Path, typer.Option(help="Item vector cache.")] = Path(".cache/eval-vectors"),
    device: Annotated[str, typer.Option(help="Torch device for encoding item texts.")] = "cpu",
    report: Annotated[Path | None, typer.Option(help="Markdown report path (default OUT/report.md).")] = None,
    json_out: Annotated[str | None, typer.Option(
        "--json", help="Write the JSON summary here ('-' = stdout; default OUT/summary.json).")] = None,
    live: Annotated[bool, typer.Option(
        "--live", help="Replay through Kafka and a worker subprocess (the stack must be up) and compare the "
                       "lists it publishes with the offline ones.")] = False,
    users: Annotated[int | None, typer.Option(
        min=1, help="Only the interactions of N users drawn at random (--seed); all uploads are kept.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --users.")] = 0,
    in_flight: Annotated[int, typer.Option(
        min=1, help="Live: most interactions sent whose list has not arrived (1 = lock-step).")] = 1,
    event_timeout: Annotated[float, typer.Option(help="Live: give up on an event's list after this many s.")] = 60.0,
    workers: Annotated[int, typer.Option(
        min=1, help="Live: worker processes in the one consumer group (scale-out; each its own data dir).")] = 1,
) -> None:
    """Prequential (test-then-train) replay: HR/NDCG@K, coverage, diversity, novelty for the hybrid and baselines."""
    from streams.evaluation.overrides import OverrideError, apply_overrides, parse_variant
    from streams.evaluation.protocol import ALSParams, EvalConfig
    from streams.evaluation.runner import RunOptions, evaluate
    from streams.settings import get_settings

    settings = get_settings()
    try:
        ranking = apply_overrides(settings.ranking, set_ or [])
        variants = dict(parse_variant(v, settings.ranking) for v in (variant or []))
    except OverrideError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        k_list = tuple(sorted({int(k) for k in _csv(ks)}))
    except ValueError:
        raise typer.BadParameter(f"--k must be comma-separated integers, got {ks!r}") from None
    if not k_list or k_list[0] < 1:
        raise typer.BadParameter("--k needs at least one cut-off >= 1")
    cfg = EvalConfig(
        train_frac=train_frac, end_frac=end_frac, ks=k_list, methods=tuple(_csv(methods)), variants=variants,
        als=ALSParams(refit_frac=als_refit_frac, factors=als_factors, regularization=als_reg, alpha=als_alpha,
                      iterations=als_iterations),
        ease_lambda=ease_lambda, ranker_learn_frac=ranker_learn_frac,
    )
    json_path = None if json_out in (None, "-") else Path(json_out)
    command = "avrec " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if live:
        _live(dataset, out, ranking, settings, train_frac, end_frac, k_list, limit, users, seed, in_flight,
              event_timeout, cache_dir, device, report, json_path, json_out, command, bool(variant), workers)
        return
    opts = RunOptions(
        dataset=dataset, out=out, ranking=ranking, config=cfg, limit=limit, users=users, seed=seed,
        cache_dir=cache_dir, device=device,
        fusion_checkpoint=settings.encoders.fusion_checkpoint, dim=settings.encoders.dim, report_path=report,
        json_path=json_path, command=command,
    )
    try:
        doc = evaluate(opts)
    except (ValueError, OSError) as exc:
        typer.echo(f"avrec eval: {exc}", err=True)
        raise typer.Exit(1) from exc
    if json_out == "-":
        typer.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode())
        return
    for name, m in doc["methods"].items():
        typer.echo(f"{name:24s} HR@{k_list[-1]} {m[f'hr@{k_list[-1]}']:.4f}  NDCG@{k_list[-1]} "
                   f"{m[f'ndcg@{k_list[-1]}']:.4f}  coverage {m['coverage']:.3f}")
    for name, b in doc["bar"].items():
        typer.echo(f"bar for {name}: {b['relative_gain']:+.1%} HR vs {b['best_baseline']}, coverage "
                   f"{b['coverage_ratio'] - 1:+.1%}: {'PASS' if b['passed'] else 'FAIL'}")
    typer.echo(f"report: {report or out / 'report.md'}")


def _live(dataset, out, ranking, settings, train_frac, end_frac, k_list, limit, users, seed, in_flight,
          event_timeout, cache_dir, device, report, json_path, json_out, command, has_variants,
          workers: int = 1) -> None:
    from streams.evaluation.live import LiveOptions, run_live

    if has_variants:
        raise typer.BadParameter("--live evaluates one hybrid (the worker's settings, with --set): no --variant")
    opts = LiveOptions(
        dataset=dataset, out=out, ranking=ranking, base_ranking=settings.ranking, train_frac=train_frac,
        end_frac=end_frac, ks=k_list, limit=limit, users=users, seed=seed, in_flight=in_flight,
        event_timeout=event_timeout, cache_dir=cache_dir, device=device,
        fusion_checkpoint=settings.encoders.fusion_checkpoint, dim=settings.encoders.dim, report_path=report,
        json_path=json_path, command=command, workers=workers,
    )
    try:
        doc = run_live(opts)
    except (ValueError, OSError, TimeoutError, RuntimeError) as exc:
        typer.echo(f"avrec eval --live: {exc}", err=True)
        raise typer.Exit(1) from exc
    if json_out == "-":
        typer.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode())
        return
    kmax = k_list[-1]
    for name, m in doc["methods"].items():
        typer.echo(f"{name:16s} HR@{kmax} {m[f'hr@{kmax}']:.4f}  NDCG@{kmax} {m[f'ndcg@{kmax}']:.4f}  "
                   f"coverage {m['coverage']:.3f}")
    a = doc["agreement"]
    typer.echo(f"identical top-{kmax} lists, live vs offline: {a['live_vs_hybrid']['identical']:.1%} "
               f"(vs as-live {a['live_vs_hybrid_as_live']['identical']:.1%}); HR@{kmax} difference "
               f"{doc['hr_difference']['live_minus_hybrid']:+.4f}")
    typer.echo(f"report: {report or out / 'report.md'}")


def register(app: typer.Typer) -> None:
    """Add ``avrec eval`` to the CLI (``avrec ranker fit`` is streams.training.cli's)."""
    app.command("eval")(eval_cmd)
