"""The Markdown report of one run, rendered from its JSON document (so both always agree)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from streams.evaluation.report import BAR_COVERAGE_LOSS, BAR_HR_GAIN, metrics_table, positive_table


def _date(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d")


def _bar_line(name: str, b: dict[str, Any], k: int) -> str:
    verdict = "**meets the bar**" if b["passed"] else "**does not meet the bar**"
    return (f"- `{name}`: HR@{k} {b[f'hr@{k}']:.4f} vs best baseline `{b['best_baseline']}` "
            f"{b[f'baseline_hr@{k}']:.4f} ({b['relative_gain']:+.1%}); coverage {b['coverage']:.3f} vs "
            f"{b['baseline_coverage']:.3f} ({b['coverage_ratio'] - 1:+.1%}): {verdict}")


def render_report(doc: dict[str, Any], plots: list[str]) -> str:
    d, p, rt = doc["dataset"], doc["protocol"], doc["runtime"]
    k = max(p["ks"])
    ts = p["bucket_start_ts"]
    lines = [
        f"# Prequential evaluation: {d['name']}",
        "",
        f"Reproduce: `{doc['command']}`" if doc.get("command") else "",
        "",
        "## Protocol",
        "",
        f"- Data: `{d['path']}` ({d['layout']}): {d['items']} items, {d['interactions']} interactions"
        + (f" (first {d['limit']})" if d.get("limit") else "") + ".",
        f"- The first {p['train_interactions']} interactions only train; the next {p['test_interactions']} "
        f"(fractions {p['train_frac']}–{p['end_frac']}" + (f", {_date(ts[0])} onwards" if ts else "")
        + ") are test-then-train: each method gives the user's top-K from the state before the event, "
        "then the event is applied to every state.",
        f"- Targets: test events whose item the user had not interacted with before: {p['targets']} "
        f"({p['positive_targets']} of them positive, i.e. not a dislike).",
        f"- Metrics at K = {', '.join(map(str, p['ks']))}; coverage, diversity, novelty and reasons on the "
        f"top-{k} lists; catalogue = {p['catalogue_size']} uploaded items.",
        f"- Item vectors: `{doc['encoder']['model_id']}` in-process; ANN candidates by exact search.",
        "",
        "## Results",
        "",
        metrics_table(doc["methods"]),
        "",
        "Coverage: share of the catalogue recommended at least once. Diversity: 1 − mean pairwise cosine of item "
        "vectors within a list. Novelty: mean −log2 of the items' share of interactions so far (add-one smoothed). "
        "Reasons: share of recommended items with a specific reason (only the hybrid explains). "
        "List len: mean list length (empty or short lists count as misses). Seconds: time in this method's "
        "list computations (and ALS fits).",
        "",
        "Positive-only targets (targets whose event has a negative weight left out, e.g. dislikes: MovieLens ratings below 3):",
        "",
        positive_table(doc["methods"]),
        "",
    ]
    if doc.get("bar"):
        lines += [f"## The bar: ≥ {BAR_HR_GAIN:.0%} relative HR@{k} over the best baseline, "
                  f"≤ {BAR_COVERAGE_LOSS:.0%} coverage loss", ""]
        for name, b in doc["bar"].items():
            lines.append(_bar_line(name, b, k))
            if "with_same_state_baselines" in b:
                lines.append("  - counting the baselines run on this variant's own state too: "
                             + _bar_line(name, b["with_same_state_baselines"], k)[2:])
        lines.append("")
    s = doc["settings"]
    lines += ["## Settings", ""]
    diff = s["hybrid_vs_defaults"]
    lines.append("- `hybrid`: " + (", ".join(f"`{key}` = {v[1]!r} (default {v[0]!r})" for key, v in diff.items())
                                   if diff else "the `RankingSettings()` defaults (what the live worker runs)") + ".")
    for name, vd in s["variants"].items():
        lines.append(f"- `{name}`: " + (", ".join(f"`{key}` = {v[1]!r}" for key, v in vd.items()) or "defaults")
                     + ".")
    states: dict[str, list[str]] = {}
    for name, m in doc["methods"].items():
        states.setdefault(m.get("state") or "?", []).append(name)
    if len(states) > 1:
        for sid, names in states.items():
            what = "the live settings' state" if sid == "s0" else "a variant's own state"
            lines.append(f"- State `{sid}` ({what}): " + ", ".join(f"`{n}`" for n in names) + ".")
    a = s["als"]
    lines += [f"- ALS: {a['factors']} factors, regularization {a['regularization']}, alpha {a['alpha']}, "
              f"{a['iterations']} iterations, refit every {a['refit_frac']:.0%} of the test events "
              f"({rt['als_fits']} fits, {rt['als_fit_s']:.1f} s in all).", ""]
    lines += ["## Runtime", "",
              f"{rt['total_s']:.0f} s in all on {rt['cpus']} CPUs: load {rt['load_s']:.1f} s, item vectors "
              f"{rt['vectors_s']:.1f} s, training replay {rt['train_replay_s']:.1f} s, test replay "
              f"{rt['test_replay_s']:.1f} s (per method above).", ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{pth}]({pth})" for pth in plots] + [""]
    return "\n".join(x for x in lines if x is not None) + "\n"
