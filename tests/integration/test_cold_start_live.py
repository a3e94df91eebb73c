"""Issue 16's scenario on the real stack: on a platform whose catalogue was just uploaded (text
only), a new user who liked three food videos and another who liked three game videos each get a
list led by their own topic, not by the other user's likes riding a few events of "trending".

With ../shared/data the catalogue is real MicroLens titles (topics from their hashtags); without
it, titles made here.
"""

from __future__ import annotations

import time
import uuid

import pytest

from bench.cold_start import item_topics, read_titles
from streams.records import decode_recommendation
from streams.vectors.milvus import milvus_client
from tests.workerproc import WorkerProcess, poll_until, worker_env

pytestmark = pytest.mark.stack

DISHES = ["braised pork belly", "dry fried duck intestines", "homemade dumplings", "spicy crayfish",
          "egg fried rice", "beef noodle soup", "sweet and sour ribs", "steamed fish", "mapo tofu", "hot pot"]
GAMES = ["King Glory ranked match", "Peace Elite squad", "Naruto mobile game combo", "Original God boss fight",
         "subway escape run", "fifth personality chase", "MyWorld castle build", "glory firefly hero guide",
         "sakura campus simulator secrets", "escapeteen speedrun"]


def made_titles() -> list[tuple[str, str, str]]:
    out = []
    for n in range(40):
        out.append((f"food{n}", f"{DISHES[n % 10]}, super delicious, step {n} # food # homemade", "food"))
        out.append((f"game{n}", f"{GAMES[n % 10]} highlights part {n} # game # king glory", "game"))
    return out


def microlens_titles(shared) -> list[tuple[str, str, str]]:
    food, game = [], []
    for item, title in read_titles(shared / "microlens-sample" / "MicroLens-50k_titles.csv"):
        topics = item_topics(title)
        if topics == {"food"} and len(food) < 150:
            food.append((f"mlf{item}", title, "food"))
        elif topics == {"game"} and len(game) < 150:
            game.append((f"mlg{item}", title, "game"))
    return food + game


@pytest.fixture(scope="module")
def platform(stack, tmp_path_factory):
    from tests.conftest import SHARED_DATA

    titles = microlens_titles(SHARED_DATA) if SHARED_DATA.is_dir() else made_titles()
    unique = "cold" + uuid.uuid4().hex[:8]
    w = WorkerProcess(worker_env(unique), tmp_path_factory.mktemp("worker") / "worker.log")
    w.start()
    now = time.time()
    # The whole catalogue was uploaded in the last few minutes: every item is fresh.
    w.produce("uploads", [{"event_id": f"up-{iid}", "item_id": iid, "creator_id": f"creator{k % 25}",
                           "title": title[:200], "tags": [], "created_at": now - 300 + k * 0.1}
                          for k, (iid, title, _) in enumerate(titles)])
    client = milvus_client(w.settings.milvus)
    want = [iid for iid, _, _ in titles]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if client.has_collection(w.settings.milvus.items_collection) and \
                len(client.get(w.settings.milvus.items_collection, ids=want, output_fields=["item_id"])) == len(want):
            break
        time.sleep(1.0)
    else:
        pytest.fail(f"the catalogue never reached Milvus:\n{w.tail()}")
    client.close()
    yield w, {iid: topic for iid, _, topic in titles}
    w.stop()
    w.drop_collections()


def likes(user: str, ids: list[str], t0: float) -> list[dict]:
    return [{"event_id": f"{user}-{i}", "user_id": user, "item_id": i, "type": "like", "ts": t0 + k}
            for k, i in enumerate(ids)]


def test_new_users_lists_are_led_by_what_they_liked(platform):
    w, topic_of = platform
    food = [i for i, t in topic_of.items() if t == "food"][:4]
    game = [i for i, t in topic_of.items() if t == "game"][:3]
    fan_a, fan_b = f"food-fan-{uuid.uuid4().hex[:6]}", f"game-fan-{uuid.uuid4().hex[:6]}"
    consumer = w.consumer("recommendations")
    now = time.time()
    # A likes three food videos, then B three game videos, then A a fourth: by A's last list the
    # trending counter holds B's likes (one event each), and by B's list A's.
    sends = [likes(fan_a, food[:3], now - 60), likes(fan_b, game, now - 50), likes(fan_a, food[3:], now - 40)]
    sends[2][0]["event_id"] += "-late"
    got: list = []
    for batch in sends:
        w.produce("interactions", batch)
        last = batch[-1]
        got += poll_until(consumer, lambda rs, e=last: any(
            r.value and decode_recommendation(r.value).source_event_id == e["event_id"] for r in got + rs), 60, w)
    lists = {}
    for r in got:
        if r.value:
            rec = decode_recommendation(r.value)
            lists[rec.user_id] = rec
    for user, topic, own, other in ((fan_a, "food", food, game), (fan_b, "game", game, food)):
        top = [i.item_id for i in lists[user].items[:10]]
        assert len(top) == 10, top
        shown = [(i.item_id, topic_of.get(i.item_id), i.reasons) for i in lists[user].items[:10]]
        # Led by the user's topic: the first two on it and most of the top 10 (the blend's scores of a
        # catalogue this fresh are close, so MMR's diversity term brings in an item or two of the other
        # topic; before issue 16 the first on-topic item was at #12).
        assert [topic_of.get(i) for i in top[:2]] == [topic, topic], shown
        assert sum(topic_of.get(i) == topic for i in top) >= 7, shown
        assert lists[user].items[0].reasons[0].startswith("similar to"), shown
        assert not set(other) & set(top), f"{user}'s top 10 holds the other user's likes: {top}"
        assert not set(own) & set(top)
        reasons = [r for i in lists[user].items[:5] for r in i.reasons]
        assert not any(r == "trending now" for r in reasons), reasons
    consumer.close()
