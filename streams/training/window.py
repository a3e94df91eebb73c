"""Which logged interactions a ranker learns from: the same window for ``avrec ranker fit`` and the eval."""

from __future__ import annotations

# Each example holds a few hundred candidates' features (~40 KB as float32, and the fit makes a float64
# copy of them all): this bounds a fit's memory to a few GB however long the log (about 4 GB at its
# peak for the ~26k examples 40,000 MovieLens interactions give), and its learning replay to minutes.
MAX_LEARN_EVENTS = 40_000


def learn_window_start(n: int, learn_frac: float, max_events: int = MAX_LEARN_EVENTS) -> int:
    """Index of the first of the last ``learn_frac`` of ``n`` interactions, at most ``max_events`` of them:
    where a ranker starts learning (in ``avrec ranker fit`` and the evaluation's replay alike)."""
    if max_events < 1:
        raise ValueError(f"max_events must be >= 1, got {max_events}")
    return n - min(int(learn_frac * n), max_events)
