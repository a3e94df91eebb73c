"""streams.evaluation.metrics: each metric against a hand-computed case."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streams.evaluation.metrics import MethodMetrics, coverage, hit_at, intra_list_diversity, ndcg_at, novelty


def test_hit_at():
    ranked = [5, 3, 9, 1]
    assert hit_at(ranked, 9, 3) == 1.0
    assert hit_at(ranked, 1, 3) == 0.0  # rank 3 (0-based) is outside the top 3
    assert hit_at(ranked, 1, 4) == 1.0
    assert hit_at([], 1, 10) == 0.0


def test_ndcg_single_target():
    ranked = [5, 3, 9, 1]
    assert ndcg_at(ranked, 5, 10) == 1.0  # rank 0: 1 / log2(2)
    assert ndcg_at(ranked, 3, 10) == pytest.approx(1 / math.log2(3))  # 0.6309
    assert ndcg_at(ranked, 1, 10) == pytest.approx(1 / math.log2(5))  # rank 3: 0.4307
    assert ndcg_at(ranked, 1, 3) == 0.0
    assert ndcg_at(ranked, 42, 10) == 0.0


def test_intra_list_diversity_hand_computed():
    # Orthogonal pair: cos 0, diversity 1. Identical pair: cos 1, diversity 0.
    assert intra_list_diversity(np.array([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(1.0)
    assert intra_list_diversity(np.array([[1.0, 0.0], [2.0, 0.0]])) == pytest.approx(0.0)  # norms do not matter
    # Three vectors: cos(a,b) = 1, cos(a,c) = cos(b,c) = 0 -> mean 1/3, diversity 2/3.
    v = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert intra_list_diversity(v) == pytest.approx(2 / 3)
    # 60 degrees apart: cos 0.5 -> 0.5.
    assert intra_list_diversity(np.array([[1.0, 0.0], [0.5, math.sqrt(3) / 2]])) == pytest.approx(0.5)
    assert intra_list_diversity(np.array([[1.0, 0.0]])) is None
    assert intra_list_diversity(np.zeros((0, 2))) is None


def test_intra_list_diversity_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(7, 5))
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    pairs = [float(u[i] @ u[j]) for i in range(7) for j in range(7) if i < j]
    assert intra_list_diversity(v) == pytest.approx(1 - np.mean(pairs))


def test_novelty_hand_computed():
    counts = np.array([6.0, 0.0, 2.0, 0.0])  # N = 8 interactions, |I| = 4 items -> denominator 12
    # item 0: p = 7/12; item 1: p = 1/12
    expected = (-math.log2(7 / 12) - math.log2(1 / 12)) / 2
    assert novelty([0, 1], counts, 8.0) == pytest.approx(expected)
    assert novelty([1], counts, 8.0) == pytest.approx(math.log2(12))
    assert novelty([], counts, 8.0) is None


def test_coverage():
    assert coverage({1, 2, 3}, 10) == 0.3
    assert coverage(np.array([True, False, True, False]), 4) == 0.5
    assert coverage(set(), 0) == 0.0


def test_method_metrics_accumulates():
    vecs = np.eye(4)
    counts = np.array([3.0, 1.0, 0.0, 0.0])
    m = MethodMetrics(ks=(1, 2), n_items=4, n_buckets=2)
    m.add([0, 1], target=1, positive=True, bucket=0, vectors=vecs, counts=counts, total=4.0, reasons=2)
    m.add([2, 3], target=0, positive=False, bucket=1, vectors=vecs, counts=counts, total=4.0, reasons=1)
    m.add([], target=3, positive=True, bucket=1, vectors=vecs, counts=counts, total=4.0, reasons=0)
    s = m.summary(catalogue_size=4)
    assert s["targets"] == 3 and s["positive_targets"] == 2
    assert s["hr@1"] == 0.0
    assert s["hr@2"] == pytest.approx(1 / 3)
    assert s["ndcg@2"] == pytest.approx((1 / math.log2(3)) / 3)
    assert s["pos_hr@2"] == pytest.approx(1 / 2)  # the hit was on a positive target
    assert s["coverage"] == 1.0
    assert s["diversity"] == pytest.approx(1.0)  # orthogonal vectors; the empty list is not counted
    assert s["reasons_share"] == pytest.approx(3 / 4)
    assert s["mean_list_len"] == pytest.approx(4 / 3)
    assert s["empty_lists"] == 1
    assert s["hr_over_time"] == [1.0, 0.0]
    # novelty: (c+1)/(4+4): items 0,1 -> 4/8, 2/8; items 2,3 -> 1/8 each
    assert s["novelty"] == pytest.approx(((1 + 2) / 2 + 3) / 2)


def test_method_metrics_without_reasons_reports_none():
    m = MethodMetrics(ks=(10,), n_items=3)
    m.add([0, 1], target=2, positive=True, bucket=0, vectors=np.eye(3), counts=np.zeros(3), total=0.0)
    assert m.summary(3)["reasons_share"] is None
