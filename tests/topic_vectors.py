"""Small unit vectors around coordinate axes ("topics") for the scoring-core tests, and the
ranking settings that switch the cold-start policies off."""

from __future__ import annotations

import numpy as np

# trending evidence, the cold-start lean and the exploration slot off: the plain blend / ranker.
NO_POLICIES = {"trending_evidence": 0.0, "cold_start_events": 0, "explore_slots": 0}


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def around(axis: int, seed: int, spread: float, dim: int) -> np.ndarray:
    """A unit vector near coordinate ``axis`` of ``dim``: the axis plus Gaussian noise of ``spread``."""
    rng = np.random.default_rng(seed)
    v = rng.normal(scale=spread, size=dim)
    v[axis] += 1.0
    return unit(v)
