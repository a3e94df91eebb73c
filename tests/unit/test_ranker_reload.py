"""Reloading a refitted ranker in a running worker: the file's changes, bad files, the swap, the labels."""

from __future__ import annotations

import asyncio
import logging
import os
from types import SimpleNamespace

import numpy as np
import pytest

from streams.ranking import ItemInfo, RankingSettings, UserState, apply_interaction, new_cooccurrence, new_trending
from streams.ranking.learned import FEATURES, LinearRanker
from streams.services.ranker_reload import ActiveRanker, RankerFile, adopt, start_ranker_watch, watch_ranker
from streams.services.recommender import Recommender

D = len(FEATURES)


def ranker(seed: int) -> LinearRanker:
    rng = np.random.default_rng(seed)
    return LinearRanker(rng.normal(size=D), np.zeros(D), np.ones(D))


def bump_mtime(path) -> None:
    """Filesystems stamp in coarse ticks: make a rewrite within the same tick visible as one."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def ctx_for(path, first: LinearRanker | None, reload_s: float = 0.01):
    settings = SimpleNamespace(model_version="hybrid-v1", ranking=RankingSettings(ranker_path=str(path)),
                               worker=SimpleNamespace(ranker_reload_s=reload_s))
    return SimpleNamespace(settings=settings, active=ActiveRanker.of("hybrid-v1", first))


def test_poll_reports_each_change_once_and_only_a_readable_ranker(tmp_path, caplog):
    path = tmp_path / "ranker.json"
    a, b = ranker(1), ranker(2)
    a.save(path)
    watched = RankerFile(path)
    # The first poll reads the file, so a refit landing between the start-up load and the watch is
    # not missed; then only changes are news.
    assert watched.poll().fingerprint() == a.fingerprint()
    assert watched.poll() is None

    b.save(path)
    bump_mtime(path)
    got = watched.poll()
    assert got is not None and got.fingerprint() == b.fingerprint()
    assert watched.poll() is None  # the same change is not reported twice

    with caplog.at_level(logging.ERROR, logger="streams.services.ranker_reload"):
        path.write_text('{"v": 1, "features": ["tru')  # a copy caught half-way
        bump_mtime(path)
        assert watched.poll() is None
        assert watched.poll() is None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and str(path) in errors[0].getMessage()
    assert "avrec ranker fit" in errors[0].getMessage()  # how to fix it

    a.save(path)  # the copy completes: read again, and it is a ranker
    bump_mtime(path)
    assert watched.poll().fingerprint() == a.fingerprint()

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streams.services.ranker_reload"):
        path.unlink()
        assert watched.poll() is None
    assert "gone" in caplog.text


def test_adopt_swaps_the_ranker_and_its_version_together_and_ignores_the_same_model(tmp_path):
    a, b = ranker(1), ranker(2)
    ctx = ctx_for(tmp_path / "r.json", a)
    before = ctx.active
    assert not adopt(ctx, LinearRanker(a.weights.copy(), a.mean.copy(), a.scale.copy()), tmp_path)
    assert ctx.active is before
    assert adopt(ctx, b, tmp_path)
    assert ctx.active.ranker is b
    assert ctx.active.model_version == f"hybrid-v1+ranker-{b.fingerprint()}" != before.model_version


async def test_the_watch_task_swaps_in_a_refit_and_keeps_the_model_through_a_bad_file(tmp_path):
    path = tmp_path / "ranker.json"
    a, b = ranker(1), ranker(2)
    a.save(path)
    ctx = ctx_for(path, a)

    async def until(predicate, timeout=5.0):
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            assert asyncio.get_running_loop().time() < deadline, "the watch task did not act in time"
            await asyncio.sleep(0.01)

    task = start_ranker_watch(ctx)
    assert task is not None
    try:
        b.save(path)
        bump_mtime(path)
        await until(lambda: ctx.active.ranker is not None and ctx.active.ranker.fingerprint() == b.fingerprint())
        path.write_text("not json")
        bump_mtime(path)
        await asyncio.sleep(0.1)  # several polls
        assert ctx.active.ranker.fingerprint() == b.fingerprint()
        assert not task.done()  # a bad file does not end the task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_no_watch_without_a_ranker_file_or_with_reloading_off(tmp_path):
    ctx = ctx_for(tmp_path / "r.json", None, reload_s=0.0)
    assert start_ranker_watch(ctx) is None
    ctx = ctx_for("", None)
    ctx.settings.ranking = RankingSettings(ranker_path="")
    assert start_ranker_watch(ctx) is None
    ctx.settings.ranking = RankingSettings(fusion="weighted", ranker_path=str(tmp_path / "r.json"))
    assert start_ranker_watch(ctx) is None


async def test_a_failing_poll_is_logged_and_the_task_goes_on(caplog):
    class Flaky:
        path = "flaky.json"
        calls = 0

        def poll(self):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise PermissionError("denied")
            return None

    ctx = SimpleNamespace(active=ActiveRanker(None, "v"))
    with caplog.at_level(logging.ERROR, logger="streams.services.ranker_reload"):
        task = asyncio.ensure_future(watch_ranker(ctx, Flaky(), 0.01))
        for _ in range(200):
            if Flaky.calls >= 3:
                break
            await asyncio.sleep(0.01)
        task.cancel()
    assert Flaky.calls >= 3 and "denied" in caplog.text


async def test_each_list_carries_the_version_of_the_model_that_ranked_it():
    """The chunk's lists name the active ranker; a list the ranker failed on names the blend."""
    cfg = RankingSettings()
    items = {f"i{j}": ItemInfo(f"i{j}", "c", f"t{j}", np.eye(4, dtype=np.float32)[j], 0.0) for j in range(3)}

    class Cache:
        async def get_many(self, ids):
            return {i: items[i] for i in ids if i in items}

    class Broken:
        def score(self, features):
            raise FloatingPointError("boom")

    cooc = new_cooccurrence(cfg)
    cooc.add([], "i0")
    cooc.add(["i0"], "i1")
    cooc.add(["i0"], "i2")
    good = ranker(4)
    ctx = SimpleNamespace(
        settings=SimpleNamespace(ranking=cfg, model_version="hybrid-v1", worker=SimpleNamespace(search_chunk=8)),
        fresh=SimpleNamespace(recent=lambda now, n: []), trending=new_trending(cfg), cooc=cooc,
        items=SimpleNamespace(search_ids=lambda vectors, k: [[] for _ in vectors]), cache=Cache(),
        takedowns=frozenset(), active=ActiveRanker.of("hybrid-v1", good),
    )
    state = UserState()
    apply_interaction(state, "e1", "i0", items["i0"].vector, "like", None, 1.0, cfg)
    lists = await Recommender(ctx).lists_for({"u": state}, now=2.0)
    assert lists["u"].model_version == f"hybrid-v1+ranker-{good.fingerprint()}"
    assert {r.item_id for r in lists["u"].items} == {"i1", "i2"}

    ctx.active = ActiveRanker(Broken(), "hybrid-v1+ranker-broken")  # type: ignore[arg-type]
    lists = await Recommender(ctx).lists_for({"u": state}, now=2.0)
    assert lists["u"].model_version == "hybrid-v1"  # ranked by the blend, and labelled so
    assert [r.item_id for r in lists["u"].items]

