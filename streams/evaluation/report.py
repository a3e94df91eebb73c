"""Markdown report, PNG plots and the JSON summary of one evaluation run."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

TABLE_COLS = (
    ("hr@10", "HR@10", "{:.4f}"), ("hr@20", "HR@20", "{:.4f}"), ("ndcg@10", "NDCG@10", "{:.4f}"),
    ("ndcg@20", "NDCG@20", "{:.4f}"), ("coverage", "coverage", "{:.3f}"), ("diversity", "diversity", "{:.3f}"),
    ("novelty", "novelty (bits)", "{:.2f}"), ("reasons_share", "reasons", "{:.3f}"),
)  # fmt: skip
POS_COLS = (("pos_hr@10", "HR@10", "{:.4f}"), ("pos_hr@20", "HR@20", "{:.4f}"), ("pos_ndcg@20", "NDCG@20", "{:.4f}"))
BAR_HR_GAIN = 0.10  # the hybrid must beat the best baseline by this relative HR@20 ...
BAR_COVERAGE_LOSS = 0.10  # ... without losing more than this share of that baseline's coverage


@dataclass
class BarCheck:
    method: str
    best_baseline: str
    hr: float
    baseline_hr: float
    coverage: float
    baseline_coverage: float
    k: int = 20

    @property
    def gain(self) -> float:
        return self.hr / self.baseline_hr - 1.0 if self.baseline_hr > 0 else float("inf")

    @property
    def coverage_ratio(self) -> float:
        return self.coverage / self.baseline_coverage if self.baseline_coverage > 0 else float("inf")

    @property
    def passed(self) -> bool:
        return self.gain >= BAR_HR_GAIN and self.coverage_ratio >= 1.0 - BAR_COVERAGE_LOSS

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "best_baseline": self.best_baseline, f"hr@{self.k}": self.hr,
                f"baseline_hr@{self.k}": self.baseline_hr, "relative_gain": self.gain, "coverage": self.coverage,
                "baseline_coverage": self.baseline_coverage, "coverage_ratio": self.coverage_ratio,
                "passed": self.passed}


def bar_check(summary: dict[str, dict], method: str, baselines: list[str], k: int = 20) -> BarCheck | None:
    """The issue's acceptance bar for ``method`` against the best of ``baselines`` by HR@k."""
    present = [b for b in baselines if b in summary]
    if method not in summary or not present:
        return None
    best = max(present, key=lambda b: summary[b][f"hr@{k}"])
    m, b = summary[method], summary[best]
    return BarCheck(method, best, m[f"hr@{k}"], b[f"hr@{k}"], m["coverage"], b["coverage"], k)


def _fmt(v: Any, spec: str) -> str:
    return "—" if v is None else spec.format(v)


def metrics_table(summary: dict[str, dict]) -> str:
    head = "| method | " + " | ".join(c[1] for c in TABLE_COLS) + " | list len | seconds |"
    sep = "|---|" + "---:|" * (len(TABLE_COLS) + 2)
    rows = [head, sep]
    for name, m in summary.items():
        cells = [_fmt(m.get(key), spec) for key, _, spec in TABLE_COLS]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {m['mean_list_len']:.1f} | {m['seconds']:.1f} |")
    return "\n".join(rows)


def positive_table(summary: dict[str, dict]) -> str:
    rows = ["| method | " + " | ".join(c[1] for c in POS_COLS) + " |", "|---|" + "---:|" * len(POS_COLS)]
    for name, m in summary.items():
        rows.append(f"| {name} | " + " | ".join(_fmt(m.get(k), s) for k, _, s in POS_COLS) + " |")
    return "\n".join(rows)


def _plot_bars(summary: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("hr@10", "HR@10"), ("hr@20", "HR@20"), ("ndcg@20", "NDCG@20"), ("coverage", "catalogue coverage"),
            ("diversity", "intra-list diversity"), ("novelty", "novelty (bits)")]
    names = list(summary)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, title) in zip(axes.ravel(), keys):
        vals = [summary[n].get(key) or 0.0 for n in names]
        bars = ax.bar(range(len(names)), vals, color=[colors[i % len(colors)] for i in range(len(names))])
        ax.set_title(title)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
        for b, v in zip(bars, vals):
            ax.annotate(f"{v:.3g}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_over_time(summary: dict[str, dict], bucket_ts: list[float], path: Path, k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    dates = [datetime.fromtimestamp(t, tz=timezone.utc) for t in bucket_ts]
    for name, m in summary.items():
        ys = m["hr_over_time"][: len(dates)]
        ax.plot(dates[: len(ys)], [y if y is not None else float("nan") for y in ys], marker="o", ms=3,
                label=name)
    ax.set_ylabel(f"HR@{k}")
    ax.set_title(f"HR@{k} over replay time (test events in {len(dates)} equal-count buckets)")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    fig.autofmt_xdate()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(summary: dict[str, dict], bucket_ts: list[float], out: Path, k: int) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    bars, over_time = out / "metrics.png", out / f"hr{k}_over_time.png"
    _plot_bars(summary, bars)
    _plot_over_time(summary, bucket_ts, over_time, k)
    return [bars, over_time]


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
