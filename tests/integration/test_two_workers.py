"""Two workers in one group: an upload reaches, and a takedown leaves, the lists served by both.

Each worker owns half of the users; the item state (fresh window, takedowns)
reaches both through the item-state log. One user per ``interactions``
partition, so both workers rank lists.
"""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from streams.items.partitioning import partition_for
from streams.kafka.admin import wait_group_stable
from streams.records import decode_dead_letter, decode_recommendation
from tests.workerproc import WorkerProcess, poll_until, worker_env

pytestmark = pytest.mark.stack
NOW = time.time()
TITLES = ["pasta carbonara", "sourdough bread", "chess openings", "mountain biking", "jazz trumpet",
          "piano sonata", "street food tour", "rock climbing"]


def upload(item_id: str, title: str, created_at: float) -> dict:
    return {"event_id": f"up-{item_id}-{uuid.uuid4().hex[:6]}", "item_id": item_id, "creator_id": item_id,
            "title": title, "tags": ["two"], "created_at": created_at}


def latest(records, user: str):
    recs = [decode_recommendation(r.value) for r in records if r.key == user.encode() and r.value]
    return recs[-1] if recs else None


def test_uploads_and_takedowns_reach_the_lists_of_both_workers(stack, tmp_path):
    unique = "two" + uuid.uuid4().hex[:8]
    env = worker_env(unique, {"AVREC_WORKER__FANOUT_USERS": "0"})
    workers = [WorkerProcess({**env, "AVREC_WORKER__REPLICA": str(k)}, tmp_path / f"worker{k}.log")
               for k in range(2)]
    s = workers[0].settings
    n = s.kafka.topics.interactions.partitions
    users, k = {}, 0
    while len(users) < n:  # one user in each partition: both workers own some of them
        users.setdefault(partition_for(f"tw{k}".encode(), n), f"tw{k}")
        k += 1
    try:
        for w in workers:
            w.start()
        wait_group_stable(s.kafka, s.app_id, 2, 120)
        recs = workers[0].consumer("recommendations")
        items = [f"ti{i}" for i in range(len(TITLES))]
        workers[0].produce("uploads", [upload(i, t, NOW - 7200) for i, t in zip(items, TITLES)])
        # The newest upload: in every list's fresh source, whichever worker ranks it.
        workers[0].produce("uploads", [upload("victim", "breaking news of the day", NOW - 60)])
        time.sleep(1)

        def round_(tag: str) -> dict:
            workers[0].produce("interactions", [{"event_id": f"{u}-{tag}", "user_id": u, "item_id": items[p % 8],
                                                 "type": "like", "ts": NOW + len(tag)} for p, u in users.items()])
            got = poll_until(recs, lambda rs: all((x := latest(rs, u)) is not None and x.source_event_id == f"{u}-{tag}"
                                                  for u in users.values()), 120)
            return {u: [i.item_id for i in latest(got, u).items] for u in users.values()}

        before = round_("a")
        # Retry until the uploads are indexed and announced: the first round may predate them.
        deadline = time.monotonic() + 120
        while not all("victim" in ids for ids in before.values()) and time.monotonic() < deadline:
            before = round_(f"a{int(time.monotonic())}")
        assert all("victim" in ids for ids in before.values()), before
        workers[0].produce("control", [{"event_id": f"td-{unique}", "action": "takedown", "item_id": "victim",
                                        "ts": NOW, "reason": "test"}])
        time.sleep(2)
        after = round_("bb")
        assert not any("victim" in ids for ids in after.values()), after
        # An interaction with the taken-down item is dead-lettered at once, whichever worker owns the user.
        dlq = workers[0].consumer("interactions_dlq")
        workers[0].produce("interactions", [{"event_id": f"{u}-late", "user_id": u, "item_id": "victim",
                                             "type": "view", "ts": NOW + 5} for u in users.values()])
        letters = poll_until(dlq, lambda rs: len(rs) >= len(users), 60)
        assert {decode_dead_letter(r.value).stage for r in letters} == {"unknown_item"}
        assert all("was taken down" in decode_dead_letter(r.value).error for r in letters)
        assert {orjson.loads(decode_dead_letter(r.value).original_bytes())["user_id"] for r in letters} \
            == set(users.values())
        for c in (recs, dlq):
            c.close()
    finally:
        for w in workers:
            w.stop()
        workers[0].drop_collections()
