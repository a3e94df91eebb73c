"""streams.training: the dependency on the evaluation goes one way, and the CLI wiring."""

from __future__ import annotations

import ast
from pathlib import Path

import typer
from typer.testing import CliRunner

import streams.training

# The evaluation's data layer (reading a log, the replay state, item vectors) is shared; its protocol,
# methods and reports import training, so training must not import them back.
ALLOWED_EVALUATION = {"streams.evaluation.dataset", "streams.evaluation.state", "streams.evaluation.vectors"}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_training_imports_only_the_evaluations_data_layer():
    pkg = Path(streams.training.__file__).parent
    for path in pkg.glob("*.py"):
        evaluation = {m for m in _imports(path) if m == "streams.evaluation" or m.startswith("streams.evaluation.")}
        assert evaluation <= ALLOWED_EVALUATION, (path.name, evaluation - ALLOWED_EVALUATION)


def test_the_package_root_imports_nothing_of_the_evaluation():
    """The evaluation imports streams.training while its own package initialises: the root and the
    modules it loads must not need streams.evaluation back (an import cycle)."""
    pkg = Path(streams.training.__file__).parent
    for name in ("__init__.py", "window.py", "learner.py", "exceptions.py"):
        assert not any(m.startswith("streams.evaluation") for m in _imports(pkg / name)), name


def test_training_error_is_a_ranking_error():
    from streams.ranking import RankingError

    # `avrec eval --live` falls back to the blend on a RankingError from the fit.
    assert issubclass(streams.training.TrainingError, RankingError)


def test_ranker_fit_is_registered_under_ranker():
    from streams.training.cli import register

    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    res = CliRunner().invoke(app, ["ranker", "fit", "--help"])
    assert res.exit_code == 0, res.output
    assert "--max-learn-events" in res.output and "--learn-frac" in res.output


def test_learn_window_start():
    from streams.training import learn_window_start

    assert learn_window_start(100, 0.25) == 75
    assert learn_window_start(100, 1.0, max_events=10) == 90
