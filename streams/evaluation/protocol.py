"""The prequential (test-then-train) replay.

Interactions ``[0, train_end)`` only train. For each later interaction up to
``test_end``, every method is first asked for the user's top-K *before* the
event is applied (the state as of the previous event, candidates at ``now`` =
the event's time); the event counts as a target when the user has never
interacted with its item before; then the event is applied to every state.
Uploads are applied when they come, so an item can only be recommended once it
has been uploaded.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from streams.evaluation.dataset import EvalLog, Event
from streams.evaluation.methods import (
    ALS,
    EASE,
    ContentOnly,
    DecayedPop,
    Hybrid,
    ItemKNN,
    ItemKNNWatched,
    Method,
    MostPop,
)
from streams.evaluation.metrics import MethodMetrics
from streams.evaluation.state import Catalogue, CoreState, SeenLog, ingest_signature, replay_order
from streams.ranking import RankingSettings, event_weight
from streams.ranking.learned import LinearRanker
from streams.training.window import learn_window_start

log = logging.getLogger(__name__)

BASELINES = ("mostpop", "decayedpop", "itemknn", "itemknn-watched", "content", "als")
DEFAULT_METHODS = (*BASELINES, "als-foldin", "hybrid")
# Research methods: run only when named (`--methods ...,ease`), never counted as a baseline.
RESEARCH_METHODS = ("ease",)
KNOWN_METHODS = (*DEFAULT_METHODS, *RESEARCH_METHODS)


@dataclass
class ALSParams:
    refit_frac: float = 0.05  # refit after every this share of the test events
    factors: int = 64
    regularization: float = 0.05
    alpha: float = 10.0
    iterations: int = 15
    fold_in: bool = False


@dataclass
class EvalConfig:
    train_frac: float = 0.8
    end_frac: float = 1.0
    ks: tuple[int, ...] = (10, 20)
    methods: tuple[str, ...] = DEFAULT_METHODS
    # Extra hybrid variants: name -> settings (e.g. a tuning sweep in the same run).
    variants: dict[str, RankingSettings] = field(default_factory=dict)
    als: ALSParams = field(default_factory=ALSParams)  # refit_frac also paces EASE's refits
    ease_lambda: float = 500.0
    # A hybrid with fusion "learned" fits its ranker on the events in this last share of the
    # training segment, at most training.window.MAX_LEARN_EVENTS (each one a candidate pool and the
    # item chosen from it), as `avrec ranker fit` does.
    ranker_learn_frac: float = 0.25
    # ... unless it is given a fitted ranker (live mode: the one the worker loaded).
    ranker: LinearRanker | None = None
    buckets: int = 20
    # Keep these methods' per-target lists (EvalResult.lists), e.g. to compare live and offline lists.
    keep_lists: tuple[str, ...] = ()
    # Extra methods built on the live settings' state: callables (core, catalogue) -> Method
    # (live mode adds the lists that arrived from the worker this way).
    extra_methods: tuple[Callable[[CoreState, Catalogue], Method], ...] = ()


@dataclass
class EvalResult:
    metrics: dict[str, MethodMetrics]
    n_train: int
    n_test: int
    n_targets: int
    catalogue_size: int
    train_seconds: float
    test_seconds: float
    bucket_ts: list[float]  # start time of each replay-time bucket
    als_fits: int = 0
    als_fit_seconds: float = 0.0

    states: dict[str, str] = field(default_factory=dict)  # method -> id of the core state it reads
    # With EvalConfig.keep_lists: the target events' ids in replay order, and each kept method's lists
    # (item indices, best first), one per target.
    target_events: list[str] = field(default_factory=list)
    lists: dict[str, list[list[int]]] = field(default_factory=dict)

    def summary(self) -> dict[str, dict]:
        out = {}
        for name, m in self.metrics.items():
            out[name] = m.summary(self.catalogue_size)
            out[name]["state"] = self.states.get(name)
        return out


def _build(cfg: EvalConfig, ranking: RankingSettings, cat: Catalogue, n_test: int
           ) -> tuple[list[Method], dict[str, CoreState]]:
    cores: dict[str, CoreState] = {}

    def core_for(rs: RankingSettings) -> CoreState:
        sig = ingest_signature(rs)
        if sig not in cores:
            cores[sig] = CoreState(rs)
        return cores[sig]

    base = core_for(ranking)
    methods: list[Method] = []
    for spec in cfg.methods:
        # "itemknn@VARIANT": a baseline on a variant's state (e.g. item-kNN on the hybrid's tuned store).
        name, _, on = spec.partition("@")
        core = base
        if on:
            if name == "hybrid":
                raise ValueError("a hybrid on other settings is a variant: use --variant NAME:key=value,...")
            if on not in cfg.variants:
                raise ValueError(f"{spec!r}: no variant named {on!r}")
            core = core_for(cfg.variants[on])
        m = _make_method(name, core, cat, cfg, ranking, n_test)
        m.name = spec
        methods.append(m)
    for vname, rs in cfg.variants.items():
        methods.append(Hybrid(core_for(rs), cat, rs, vname, ranker=cfg.ranker))
    for make in cfg.extra_methods:
        methods.append(make(base, cat))
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    return methods, cores


def _make_method(name: str, core: CoreState, cat: Catalogue, cfg: EvalConfig, ranking: RankingSettings,
                 n_test: int) -> Method:
    simple = {"mostpop": MostPop, "decayedpop": DecayedPop, "itemknn": ItemKNN, "itemknn-watched": ItemKNNWatched,
              "content": ContentOnly}
    if name in simple:
        return simple[name](core, cat)
    refit_every = max(1, math.ceil(cfg.als.refit_frac * n_test))  # ALS and EASE refit on one schedule
    if name in ("als", "als-foldin"):
        a = cfg.als
        return ALS(core, cat, refit_every=refit_every, factors=a.factors,
                   regularization=a.regularization, alpha=a.alpha, iterations=a.iterations,
                   fold_in=a.fold_in or name == "als-foldin")
    if name == "ease":
        return EASE(core, cat, refit_every=refit_every, lam=cfg.ease_lambda)
    if name == "hybrid":
        return Hybrid(core, cat, ranking, "hybrid", ranker=cfg.ranker)
    raise ValueError(f"unknown method {name!r}; expected some of {', '.join(KNOWN_METHODS)}")


def run_prequential(log_: EvalLog, vectors: np.ndarray, ranking: RankingSettings, cfg: EvalConfig) -> EvalResult:
    """Replay ``log_`` under the protocol above; ``ranking`` is the live settings (baselines share its state)."""
    # Every product here is one small matrix-vector; a multi-threaded BLAS only adds wake-up and spin
    # costs (measured: half the wall time of a run went to system time with two OpenBLAS threads).
    with threadpool_limits(1, "blas"):
        return _replay(log_, vectors, ranking, cfg)


def _replay(log_: EvalLog, vectors: np.ndarray, ranking: RankingSettings, cfg: EvalConfig) -> EvalResult:
    if not 0.0 <= cfg.train_frac < cfg.end_frac <= 1.0:
        raise ValueError(f"need 0 <= train_frac < end_frac <= 1, got {cfg.train_frac}, {cfg.end_frac}")
    n = log_.n_interactions
    train_end = int(cfg.train_frac * n)
    test_end = int(cfg.end_frac * n)
    n_test = test_end - train_end
    kmax = max(cfg.ks)
    cat = Catalogue(log_.items, vectors)
    methods, cores = _build(cfg, ranking, cat, n_test)
    core_list = list(cores.values())
    learners = [m for m in methods if isinstance(m, Hybrid) and m.learns]
    learn_start = learn_window_start(train_end, cfg.ranker_learn_frac)
    for m in methods:
        if isinstance(m, Hybrid) and m.cfg.top_k != kmax:
            log.warning("%s: live lists have top_k=%d items; evaluated at K up to %d", m.name, m.cfg.top_k, kmax)
    metrics = {m.name: MethodMetrics(cfg.ks, len(cat.ids), cfg.buckets) for m in methods}
    seen = SeenLog()
    kept: dict[str, list[list[int]]] = {name: [] for name in cfg.keep_lists}
    target_events: list[str] = []
    test_ts = [e.ts for e in log_.stream if isinstance(e, Event)][train_end:test_end]
    bucket_of = (np.arange(n_test) * cfg.buckets) // max(n_test, 1)
    bucket_ts = [test_ts[int(np.searchsorted(bucket_of, b))] for b in range(cfg.buckets)
                 if n_test and np.searchsorted(bucket_of, b) < n_test]
    log.info("prequential replay: %d train + %d test interactions, methods %s, %d core state(s)",
             train_end, n_test, ", ".join(m.name for m in methods), len(core_list))

    t_start = time.perf_counter()
    t_test = None
    n_targets = 0
    for i, ev in replay_order(log_, cat, test_end):
        if i == train_end:
            t_test = time.perf_counter()
            log.info("training replay done in %.1f s; testing", t_test - t_start)
            for m in methods:
                t0 = time.perf_counter()
                m.start_test()
                metrics[m.name].seconds += time.perf_counter() - t0
        if i >= train_end and not seen.has(ev.user_id, ev.item):
            n_targets += 1
            j = i - train_end
            b = int(bucket_of[j])
            positive = event_weight(ev.type, None, ranking) > 0
            if kept:
                target_events.append(ev.event_id)
            for m in methods:
                t0 = time.perf_counter()
                ranked, reasons = m.recommend(ev.user_id, ev.ts, kmax)
                metrics[m.name].seconds += time.perf_counter() - t0
                if m.name in kept:
                    kept[m.name].append(list(ranked[:kmax]))
                metrics[m.name].add(ranked, ev.item, positive, b, cat.vectors, cat.counts, cat.total, reasons)
        elif learners and i >= learn_start and not seen.has(ev.user_id, ev.item):
            for m in learners:
                t0 = time.perf_counter()
                m.learn(ev)
                metrics[m.name].seconds += time.perf_counter() - t0
        # ... then train: the event reaches every state.
        seen.add(ev.user_id, ev.item)
        for core in core_list:
            core.apply(ev, cat)
        cat.count(ev.item)
        for m in methods:
            m.observe(ev)
        done = i + 1
        if done > train_end:
            for m in methods:
                t0 = time.perf_counter()
                m.tick(done - train_end)
                metrics[m.name].seconds += time.perf_counter() - t0
        if done % 20000 == 0:
            log.info("%d / %d interactions replayed (%.0f s)", done, test_end, time.perf_counter() - t_start)
    t_end = time.perf_counter()
    t_test = t_test if t_test is not None else t_end
    als = [m for m in methods if isinstance(m, ALS)]
    state_ids = {id(c): f"s{k}" for k, c in enumerate(core_list)}  # s0: the live settings' state
    return EvalResult(
        metrics=metrics, n_train=train_end, n_test=n_test, n_targets=n_targets,
        catalogue_size=int(cat.available.sum()), train_seconds=t_test - t_start, test_seconds=t_end - t_test,
        bucket_ts=bucket_ts, als_fits=sum(m.fits for m in als), als_fit_seconds=sum(m.fit_seconds for m in als),
        states={m.name: state_ids[id(m.core)] for m in methods}, target_events=target_events, lists=kept,
    )
