"""A smoke run of ``avrec eval`` on the first 20k MovieLens-100k interactions (no stack needed).

No wall-clock bound: how long the run takes is a benchmark figure (docs/QUALITY.md, "Runtime"),
and a bound here failed at random on busy 2-core machines (105 s against 90).
"""

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.shared_data


def test_eval_smoke_on_a_slice_of_ml100k(shared_data, tmp_path):
    import typer

    from streams.evaluation.cli import register

    app = typer.Typer()
    app.callback()(lambda: None)  # a group, so the command is invoked as "eval", as under avrec
    register(app)
    out = tmp_path / "eval"
    res = CliRunner().invoke(app, [
        "eval", str(shared_data / "ml-100k"), "--out", str(out), "--limit", "20000",
        "--methods", "mostpop,itemknn,hybrid",
    ])
    assert res.exit_code == 0, res.output
    doc = orjson.loads((out / "summary.json").read_bytes())
    m = doc["methods"]
    assert doc["protocol"]["test_interactions"] == 4000
    assert doc["protocol"]["targets"] == 4000  # MovieLens rates each (user, movie) once
    # The hybrid with its live settings (every MovieLens item shares one creator: the cap must yield).
    assert m["hybrid"]["hr@20"] > m["mostpop"]["hr@20"]
    assert m["hybrid"]["ndcg@20"] > m["mostpop"]["ndcg@20"]
    assert m["hybrid"]["mean_list_len"] == 20.0
    assert m["hybrid"]["reasons_share"] > 0.99
    for f in ("report.md", "metrics.png", "hr20_over_time.png"):
        assert (out / f).stat().st_size > 0
    assert "HR@20" in (out / "report.md").read_text()
