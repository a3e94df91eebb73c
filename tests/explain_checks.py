"""What an ``explain=true`` explanation says the listed score is (streams/ranking/explain.py), for the
unit and the live API tests alike."""

from __future__ import annotations

import math


def listed_score(e: dict) -> float:
    """The listed score an explanation states: the ranker's relative likelihood, leaned on content
    for a user in their first events (``score_is``)."""
    rel = math.exp(e["total"] - e["max_ranker_score"])
    if "cold_start_share" not in e:
        assert e["score_is"] == "exp(ranker_score - max_ranker_score)"
        return rel
    a = e["cold_start_share"]
    assert 0 < a <= 1 and 0 < e["content"] <= 1
    return rel ** (1 - a) * e["content"] ** a
