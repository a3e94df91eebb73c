"""``avrec ranker fit``: fit the learned ranker on a log (wired into streams/cli.py by ``register``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from streams.training.window import MAX_LEARN_EVENTS

log = logging.getLogger(__name__)


def ranker_fit_cmd(
    dataset: Annotated[Path, typer.Argument(help="Logged interactions and uploads: ml-100k, ml-latest or JSONL "
                                                 "layout.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the ranker (JSON); point "
                                                     "AVREC_RANKING__RANKER_PATH at it.")],
    learn_frac: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Learn from this last share of the interactions.")] = 0.25,
    max_learn_events: Annotated[int, typer.Option(
        min=1, help="... but from at most this many (they bound the fit's memory, ~40 KB each).")] = MAX_LEARN_EVENTS,
    limit: Annotated[int | None, typer.Option(help="Use only the first N interactions.")] = None,
    cache_dir: Annotated[Path, typer.Option(help="Item vector cache.")] = Path(".cache/eval-vectors"),
    device: Annotated[str, typer.Option(help="Torch device for encoding item texts.")] = "cpu",
) -> None:
    """Fit the learned ranker (fusion "learned") on a log, replayed through the live scoring core."""
    # Imported here: `avrec --help` and every other command start without numpy/torch work.
    from streams.evaluation.dataset import load_log
    from streams.evaluation.vectors import item_vectors
    from streams.exceptions import AvrecError
    from streams.settings import get_settings
    from streams.training.ranker_fit import fit_ranker

    settings = get_settings()
    try:
        elog = load_log(dataset, limit=limit)
        vectors = item_vectors(elog.items, cache_dir, settings.encoders.fusion_checkpoint, device,
                               settings.encoders.dim)
        ranker = fit_ranker(elog, vectors, settings.ranking, learn_frac=learn_frac, max_events=max_learn_events)
        ranker.save(out)
    except (ValueError, OSError, AvrecError) as exc:
        typer.echo(f"avrec ranker fit: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo("weights (standardised features): " + ", ".join(f"{f} {w:+.3f}" for f, w in ranker.describe()))
    im = ranker.item_model
    if im is not None:
        typer.echo(f"item regression: {len(im)} items, {im.weights.nnz} weights, l2 {im.l2:g} (saved in the same file)")
    typer.echo(f"ranker: {out} (set AVREC_RANKING__RANKER_PATH={out}; a worker already running with it "
               "reloads it within AVREC_WORKER__RANKER_RELOAD_S, no restart needed)")


def register(app: typer.Typer) -> None:
    """Add ``avrec ranker fit`` to the CLI."""
    ranker_app = typer.Typer(help="The learned ranker (fusion \"learned\").", no_args_is_help=True)
    ranker_app.command("fit")(ranker_fit_cmd)
    app.add_typer(ranker_app, name="ranker")
