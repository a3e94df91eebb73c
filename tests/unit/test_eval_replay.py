"""The prequential replay on small synthetic logs whose answers are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from streams.evaluation.dataset import load_log
from streams.evaluation.methods import EASE, top_k
from streams.evaluation.overrides import OverrideError, apply_overrides, diff_settings, parse_variant
from streams.evaluation.protocol import EvalConfig, run_prequential
from streams.evaluation.state import Catalogue, ingest_signature
from streams.evaluation.vectors import VectorCache, content_key
from streams.ranking import RankingSettings

T0 = 1_600_000_000.0
N_ITEMS = 6  # per cluster
TRAIN_USERS = 5  # per group


def _write_two_clusters(d: Path, one_creator: bool = False) -> tuple[Path, float]:
    """Groups A and B: A's users only touch A's items, B's only B's.

    Five users per group like all six of their group's items (training); then
    one more user per group likes one item before the split and the other five
    after it, so every test event is a first interaction by a user with history.
    """
    d.mkdir(parents=True, exist_ok=True)
    items, events = [], []
    for g in "ab":
        for i in range(N_ITEMS):
            items.append({"event_id": f"up:{g}{i}", "item_id": f"{g}{i}",
                          "creator_id": "solo" if one_creator else f"creator-{g}{i}",
                          "title": f"{g} item {i}", "created_at": T0 - 10})
    t = T0
    for u in range(TRAIN_USERS):
        for g in "ab":
            for i in range(N_ITEMS):
                t += 60
                events.append((t, f"{g}-user{u}", f"{g}{(i + u) % N_ITEMS}"))
    for g in "ab":
        t += 60
        events.append((t, f"{g}-new", f"{g}0"))
    n_train = len(events)
    for i in range(1, N_ITEMS):
        for g in "ab":
            t += 60
            events.append((t, f"{g}-new", f"{g}{i}"))
    lines = [{"event_id": f"{u}:{it}:{int(ts)}", "user_id": u, "item_id": it, "type": "like", "ts": ts}
             for ts, u, it in events]
    (d / "items.jsonl").write_bytes(b"\n".join(orjson.dumps(x) for x in items) + b"\n")
    (d / "interactions.jsonl").write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n")
    # A train fraction that lands exactly after event n_train, clear of float rounding.
    return d, (n_train + 0.5) / len(events)


def _cluster_vectors(log) -> np.ndarray:
    """Cluster a near e0, cluster b near e1 (unit rows), standing in for the text encoder."""
    rng = np.random.default_rng(7)
    v = np.zeros((len(log.items), 8), dtype=np.float32)
    for j, it in enumerate(log.items):
        v[j, 0 if it.item_id.startswith("a") else 1] = 1.0
        v[j, 2:] = rng.normal(scale=0.05, size=6)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_item_knn_and_the_hybrid_are_perfect_on_disjoint_clusters(tmp_path):
    path, frac = _write_two_clusters(tmp_path / "clusters")
    log = load_log(path)
    assert log.layout == "jsonl" and len(log.items) == 2 * N_ITEMS
    cfg = EvalConfig(train_frac=frac, ks=(5, 10), methods=("mostpop", "itemknn", "content", "hybrid"), buckets=2)
    res = run_prequential(log, _cluster_vectors(log), RankingSettings(), cfg)
    s = res.summary()
    assert res.n_test == 2 * (N_ITEMS - 1) and res.n_targets == res.n_test
    # At most five unseen items of the user's own cluster remain: a list of five from that cluster holds the target.
    for name in ("itemknn", "content", "hybrid"):
        assert s[name]["hr@5"] == 1.0, name
        assert s[name]["hr@10"] == 1.0, name
    assert s["hybrid"]["reasons_share"] == 1.0
    # Item-kNN never crosses clusters (no co-occurrence between them), so its lists shrink as the user sees more.
    assert s["itemknn"]["mean_list_len"] == pytest.approx(np.mean([5, 4, 3, 2, 1]))
    assert s["itemknn"]["ndcg@10"] > 0.5
    # MostPop is blind to clusters: every item was liked equally often, so it cannot be perfect at K = 5.
    assert s["mostpop"]["hr@5"] < 1.0


def test_ease_is_perfect_on_disjoint_clusters_and_never_crosses_them(tmp_path):
    path, frac = _write_two_clusters(tmp_path / "clusters-ease")
    log = load_log(path)
    cfg = EvalConfig(train_frac=frac, ks=(5,), methods=("itemknn", "ease"), buckets=2)
    s = run_prequential(log, _cluster_vectors(log), RankingSettings(), cfg).summary()
    assert s["ease"]["hr@5"] == 1.0
    # Only positive weights are recommended, and there are none across clusters: lists shrink like item-kNN's.
    assert s["ease"]["mean_list_len"] == s["itemknn"]["mean_list_len"] == pytest.approx(np.mean([5, 4, 3, 2, 1]))


def test_ease_weights_match_the_closed_form_for_two_items():
    """For two items, B[0, 1] = c / (p_0 + λ): the ridge regression of item 1 on item 0, by hand."""
    from types import SimpleNamespace

    from streams.ranking import new_cooccurrence

    cooc = new_cooccurrence(RankingSettings())
    cooc.counts.update({"x": {"y": 3.0}, "y": {"x": 3.0}})
    cooc.pops.update({"x": 5.0, "y": 8.0})
    cat = SimpleNamespace(ids=["x", "y"], available=np.array([True, True]))
    m = EASE(SimpleNamespace(cooc=cooc, users={}), cat, refit_every=1, lam=2.0)
    m.start_test()
    assert m.weights[0, 1] == pytest.approx(3.0 / (5.0 + 2.0))
    assert m.weights[1, 0] == pytest.approx(3.0 / (8.0 + 2.0))
    assert m.weights[0, 0] == m.weights[1, 1] == 0.0
    big = SimpleNamespace(ids=[str(i) for i in range(EASE.MAX_ITEMS + 1)], available=None)
    with pytest.raises(ValueError, match="at most"):
        EASE(SimpleNamespace(cooc=cooc, users={}), big, refit_every=1)


def test_hybrid_lists_stay_full_when_one_creator_owns_everything(tmp_path):
    """All MovieLens items share creator "movielens": the creator cap must yield, not leave 2-item lists."""
    path, frac = _write_two_clusters(tmp_path / "solo", one_creator=True)
    log = load_log(path)
    cfg = EvalConfig(train_frac=frac, ks=(10,), methods=("hybrid",),
                     variants={"nocap": RankingSettings(creator_cap=0)}, buckets=2)
    s = run_prequential(log, _cluster_vectors(log), RankingSettings(), cfg).summary()
    assert RankingSettings().creator_cap == 2
    assert s["hybrid"]["mean_list_len"] == s["nocap"]["mean_list_len"] > 2.0
    assert s["hybrid"]["hr@10"] == s["nocap"]["hr@10"] == 1.0


def test_test_phase_only_counts_first_interactions(tmp_path):
    d = tmp_path / "repeat"
    d.mkdir()
    items = [{"event_id": f"up:{i}", "item_id": f"i{i}", "creator_id": f"c{i}", "title": f"item {i}",
              "created_at": T0} for i in range(3)]
    evs = [("u1", "i0"), ("u2", "i0"), ("u2", "i1"), ("u1", "i0"), ("u1", "i1"), ("u1", "i1")]
    lines = [{"event_id": f"e{n}", "user_id": u, "item_id": it, "type": "view", "ts": T0 + 60 * (n + 1)}
             for n, (u, it) in enumerate(evs)]
    (d / "items.jsonl").write_bytes(b"\n".join(orjson.dumps(x) for x in items))
    (d / "interactions.jsonl").write_bytes(b"\n".join(orjson.dumps(x) for x in lines))
    log = load_log(d)
    res = run_prequential(log, np.eye(3, 4, dtype=np.float32), RankingSettings(),
                          EvalConfig(train_frac=0.5, ks=(2,), methods=("mostpop",), buckets=1))
    # Test events: (u1, i0) repeat, (u1, i1) first, (u1, i1) repeat -> one target, and MostPop's
    # list for u1 (seen i0) is [i1]: a hit.
    assert res.n_test == 3 and res.n_targets == 1
    assert res.summary()["mostpop"]["hr@2"] == 1.0


def test_limit_keeps_a_time_ordered_prefix(tmp_path):
    path, _ = _write_two_clusters(tmp_path / "c")
    log = load_log(path, limit=7)
    assert log.n_interactions == 7
    ts = [e.ts for e in log.interactions]
    assert ts == sorted(ts)


def test_top_k_is_deterministic_with_ties():
    s = np.array([0.5, 0.9, 0.5, -np.inf, 0.9, 0.1])
    assert top_k(s, 3).tolist() == [1, 4, 0]
    assert top_k(s, 10).tolist() == [1, 4, 0, 2, 5]  # -inf never comes back
    assert top_k(np.array([-np.inf]), 3).tolist() == []


def test_catalogue_fresh_matches_the_live_window():
    from streams.evaluation.dataset import ItemMeta

    metas = [ItemMeta(f"i{j}", "c", f"t{j}", "", (), created_at=T0 + j * 3600) for j in range(4)]
    cat = Catalogue(metas, np.eye(4, dtype=np.float32))
    for j in (0, 1, 2):
        cat.upload(j)
    # Newest first, only uploaded items, only those within the window.
    assert cat.fresh(T0 + 2 * 3600, 10, 1.5 * 3600) == [("i2", T0 + 7200), ("i1", T0 + 3600)]
    assert cat.fresh(T0 + 2 * 3600, 1, 1e9) == [("i2", T0 + 7200)]


def test_ingest_signature_ignores_list_only_settings():
    base = RankingSettings()
    assert ingest_signature(base) == ingest_signature(RankingSettings(creator_cap=0, mmr_lambda=1.0))
    assert ingest_signature(base) != ingest_signature(RankingSettings(cooc_window=base.cooc_window + 5))


def test_overrides():
    rs = apply_overrides(RankingSettings(), ["creator_cap=0", "source_weights.cooc=1.5", "hide_event_types=[\"hide\"]"])
    assert rs.creator_cap == 0 and rs.source_weights.cooc == 1.5 and rs.hide_event_types == ("hide",)
    assert diff_settings(RankingSettings(), rs)["source_weights.cooc"] == (1.0, 1.5)
    name, v = parse_variant("tuned:cooc_window=10,mmr_lambda=1", RankingSettings())
    assert name == "tuned" and v.cooc_window == 10 and v.mmr_lambda == 1.0
    for bad in (["nope=1"], ["creator_cap"], ["source_weights.nope=1"], ["creator_cap=-1"]):
        with pytest.raises(OverrideError):
            apply_overrides(RankingSettings(), bad)


def test_vector_cache_round_trip(tmp_path):
    key = content_key("Toy Story. #Animation", "model-x")
    assert key != content_key("Toy Story. #Animation", "model-y")
    c = VectorCache(tmp_path, "model-x")
    assert c.get(key) is None
    c.put_many([key], np.ones((1, 4), dtype=np.float32))
    again = VectorCache(tmp_path, "model-x")
    assert again.get(key).tolist() == [1.0, 1.0, 1.0, 1.0]
    assert VectorCache(tmp_path, "model-y").get(key) is None


def test_the_learned_hybrid_fits_its_ranker_on_the_training_log_and_stays_perfect(tmp_path):
    """fit_ranker (what `avrec ranker fit` and live mode run) on the training events, then the replay
    with that ranker: own-cluster items outrank the other cluster's, as with the blend."""
    from streams.training.ranker_fit import fit_ranker
    from streams.ranking.learned import LinearRanker

    path, frac = _write_two_clusters(tmp_path / "clusters-learned")
    log = load_log(path)
    vectors = _cluster_vectors(log)
    cfg = RankingSettings(fusion="learned", mmr_lambda=1.0)
    ranker = fit_ranker(log, vectors, cfg, until=int(frac * log.n_interactions), learn_frac=1.0)
    assert isinstance(ranker, LinearRanker)
    # Within a cluster every item co-occurs with every other: the chosen item's co-occurrence with
    # the user's last items is what a good ranker leans on, and it does.
    weights = dict(ranker.describe())
    assert max(weights[f] for f in weights if f.startswith(("cooc_", "log_cooc_"))) > 0
    s = run_prequential(log, vectors, cfg, EvalConfig(train_frac=frac, ks=(5,), methods=("hybrid",), buckets=2,
                                                      ranker=ranker)).summary()
    assert s["hybrid"]["hr@5"] == 1.0
    # Without a ranker given, the replay's hybrid learns one itself from the same events.
    s2 = run_prequential(log, vectors, cfg, EvalConfig(train_frac=frac, ks=(5,), methods=("hybrid",), buckets=2,
                                                       ranker_learn_frac=1.0)).summary()
    assert s2["hybrid"]["hr@5"] == 1.0


def test_fit_ranker_says_when_there_is_nothing_to_learn(tmp_path):
    from streams.training.ranker_fit import fit_ranker
    from streams.ranking import RankingError

    path, frac = _write_two_clusters(tmp_path / "c")
    log = load_log(path)
    # The first event, without fresh or trending candidates: its user has no history and no taste
    # vector yet, so no candidate at all.
    cfg = RankingSettings(fresh_candidates=0, trending_candidates=0)
    with pytest.raises(RankingError, match="nothing to fit a ranker on"):
        fit_ranker(log, _cluster_vectors(log), cfg, until=1, learn_frac=1.0)


def test_fit_ranker_learns_from_at_most_max_events(tmp_path, caplog):
    """A long log's last quarter can be huge; the learning window is capped (memory ~40 KB an example)."""
    import logging

    from streams.training.ranker_fit import fit_ranker

    path, frac = _write_two_clusters(tmp_path / "cap")
    log = load_log(path)
    with caplog.at_level(logging.INFO, logger="streams.training.learner"):
        fit_ranker(log, _cluster_vectors(log), RankingSettings(), learn_frac=1.0, max_events=6)
    assert "of 6 learning events" in caplog.text
    with pytest.raises(ValueError, match="max_events"):
        fit_ranker(log, _cluster_vectors(log), RankingSettings(), max_events=0)
