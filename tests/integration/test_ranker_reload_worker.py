"""A running worker picks up a refitted ranker from its file, and keeps its model through a bad one."""

from __future__ import annotations

import os
import time
import uuid

import numpy as np
import pytest

from streams.ranking.learned import FEATURES, LinearRanker
from streams.records import decode_recommendation
from streams.vectors.milvus import milvus_client
from tests.workerproc import WorkerProcess, poll_until, worker_env

pytestmark = pytest.mark.stack

NOW = time.time()
TITLES = ["Fresh pasta at home", "Sourdough bread for beginners", "Vegetable stir fry", "Ramen from scratch",
          "Supercar track test", "Engine oil change"]


def ranker(seed: int) -> LinearRanker:
    d = len(FEATURES)
    return LinearRanker(np.random.default_rng(seed).normal(size=d), np.zeros(d), np.ones(d))


def test_a_refitted_ranker_is_reloaded_without_a_restart(stack, tmp_path):
    path = tmp_path / "ranker.json"
    first, refit = ranker(1), ranker(2)
    first.save(path)
    unique = "rl" + uuid.uuid4().hex[:8]
    worker = WorkerProcess(worker_env(unique, {"AVREC_RANKING__RANKER_PATH": str(path),
                                               "AVREC_WORKER__RANKER_RELOAD_S": "0.5"}), tmp_path / "worker.log")
    worker.start()
    try:
        items = [{"event_id": f"up-{unique}-{i}", "item_id": f"it{i}", "creator_id": f"c{i}", "title": t,
                  "tags": [], "created_at": NOW - 3600} for i, t in enumerate(TITLES)]
        worker.produce("uploads", items)
        client = milvus_client(worker.settings.milvus)
        name = worker.settings.milvus.items_collection
        deadline = time.monotonic() + 120
        while not (client.has_collection(name)
                   and len(client.get(name, ids=[i["item_id"] for i in items], output_fields=["item_id"])) == len(items)):
            assert time.monotonic() < deadline, f"items never reached Milvus:\n{worker.tail()}"
            time.sleep(0.5)
        client.close()
        consumer = worker.consumer("recommendations")

        def list_after(event_id: str, item: str):
            worker.produce("interactions", [{"event_id": event_id, "user_id": "u1", "item_id": item, "type": "like",
                                             "ts": NOW}])
            got = poll_until(consumer, lambda rs: any(
                r.value and decode_recommendation(r.value).source_event_id == event_id for r in rs), 60, worker)
            return next(decode_recommendation(r.value) for r in got
                        if r.value and decode_recommendation(r.value).source_event_id == event_id)

        assert list_after("e1", "it0").model_version == f"hybrid-v1+ranker-{first.fingerprint()}"

        refit.save(path)  # what `avrec ranker fit --out` does: an atomic replace
        deadline = time.monotonic() + 30
        while "ranker reloaded" not in worker.new_log():
            assert time.monotonic() < deadline, f"the refit was not reloaded:\n{worker.tail()}"
            time.sleep(0.2)
        rec = list_after("e2", "it1")
        assert rec.model_version == f"hybrid-v1+ranker-{refit.fingerprint()}"
        assert rec.items  # the refit ranks

        # A broken deploy (a half-written file): reported, and the worker keeps ranking with the refit.
        path.write_text('{"v": 1, "weights": [0.1')
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        deadline = time.monotonic() + 30
        while "not reloading the ranker" not in worker.new_log():
            assert time.monotonic() < deadline, f"the bad file was not reported:\n{worker.tail()}"
            time.sleep(0.2)
        assert list_after("e3", "it2").model_version == f"hybrid-v1+ranker-{refit.fingerprint()}"
        assert worker.alive()
        consumer.close()
    finally:
        worker.stop()
        worker.drop_collections()
        worker.drop_topics()
