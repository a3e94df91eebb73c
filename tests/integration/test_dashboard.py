"""The dashboard against a live worker: its JSON, then the page in real headless Chromium.

Real Kafka, Triton and Milvus, a real worker subprocess, Debian's chromium driven by
chromium-driver through selenium. The test sends uploads, a user's interactions and one
malformed record, then checks that the page's charts fill from the worker, that its
dead-letter table shows the malformed record with the reason the worker gave, and that
its user inspector shows the list the worker published for the user.

``AVREC_TEST_DASHBOARD_SCREENSHOT=docs/dashboard.png`` saves the page as seen at the end
(the screenshot in docs/DASHBOARD.md).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid

import httpx
import pytest

from streams.records import decode_dead_letter, decode_recommendation
from tests.workerproc import WorkerProcess, poll_until, worker_env

pytestmark = pytest.mark.stack

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
NOW = time.time()
TITLES = [
    "How to make fresh pasta at home", "Perfect sourdough bread recipe for beginners",
    "Quick vegetable stir fry dinner in 15 minutes", "Homemade ramen noodle soup from scratch",
    "Chocolate chip cookies that stay soft", "Supercar acceleration test on the race track",
    "Changing the engine oil in your pickup truck", "Electric SUV highway range review",
    "Vintage muscle car restoration project", "Formula one pit stop explained",
]


@pytest.fixture(scope="module")
def worker(stack, tmp_path_factory):
    unique = "dash" + uuid.uuid4().hex[:8]
    w = WorkerProcess(worker_env(unique, {"AVREC_WORKER__ITEM_TICK_S": "0.5"}),
                      tmp_path_factory.mktemp("worker") / "worker.log")
    w.start()
    yield w
    w.stop()
    w.drop_collections()
    w.drop_topics()


@pytest.fixture(scope="module")
def traffic(worker):
    """Uploads, a user's likes (at a modest rate, so several samples see them) and one malformed
    record; returns the user's latest published list and the malformed record's dead letter."""
    tag = uuid.uuid4().hex[:6]
    items = [{"event_id": f"up-{tag}-{i}", "item_id": f"it-{tag}-{i}", "creator_id": f"c{i % 3}", "title": t,
              "tags": ["demo"], "created_at": NOW - 3600} for i, t in enumerate(TITLES)]
    user, bad_key = f"user-{tag}", f"broken-{tag}"
    likes = [{"event_id": f"ev-{tag}-{k}", "user_id": user, "item_id": items[k]["item_id"], "type": "like",
              "ts": NOW - 60 + k} for k in range(4)]
    recs, dlq = worker.consumer("recommendations"), worker.consumer("interactions_dlq")
    worker.produce("uploads", items)
    # An interaction naming an item not yet in the catalogue waits for it, so no wait here.
    worker.produce("interactions", likes, rate=2.0)
    worker.produce("interactions", [(bad_key.encode(), b"{not json")], raw=True)
    got = poll_until(recs, lambda rs: _latest(rs, user) is not None
                     and _latest(rs, user).source_event_id == likes[-1]["event_id"], 120, worker)
    letters = poll_until(dlq, lambda rs: any(r.key == bad_key.encode() for r in rs), 60, worker)
    letter = decode_dead_letter(next(r.value for r in letters if r.key == bad_key.encode()))
    recs.close()
    dlq.close()
    return {"user": user, "list": [i.item_id for i in _latest(got, user).items], "items": items,
            "bad_key": bad_key, "letter": letter}


def _latest(records, user: str):
    lists = [decode_recommendation(r.value) for r in records if r.key == user.encode() and r.value]
    return lists[-1] if lists else None


def _get(worker, path: str) -> httpx.Response:
    return httpx.get(f"{worker.web_url}{path}", timeout=10)


# -- the JSON the page polls -----------------------------------------------------------------
def test_series_has_one_column_per_metric_and_fills_each_interval(worker, traffic):
    deadline = time.monotonic() + 30
    while (body := _get(worker, "/dashboard/series").json()) and len(body["t"]) < 3:
        assert time.monotonic() < deadline, f"fewer than 3 samples in 30 s: {body}"
        time.sleep(0.5)
    assert body["every_s"] == worker.settings.web.series_every_s
    columns = ["t", "events_per_s", "lists_per_s", "lag", "freshness_p50_s", "freshness_p99_s"]
    assert {len(body[c]) for c in columns} == {len(body["t"])}
    assert body["t"] == sorted(body["t"])
    assert max(body["events_per_s"]) > 0 and max(body["lists_per_s"]) > 0, body


def test_dead_letters_endpoint_returns_the_malformed_record_with_its_reason(worker, traffic):
    body = _get(worker, "/dashboard/dead-letters?limit=5").json()
    t = worker.settings.kafka.topics
    assert body["topics"] == [t.uploads_dlq.name, t.interactions_dlq.name, t.control_dlq.name]
    mine = [d for d in body["dead_letters"] if d["key"] == traffic["bad_key"]]
    assert len(mine) == 1, body
    letter = traffic["letter"]
    assert mine[0]["stage"] == letter.stage and mine[0]["error"] == letter.error and letter.error
    assert mine[0]["dlq_topic"] == t.interactions_dlq.name and mine[0]["topic"] == t.interactions.name
    assert mine[0]["original_preview"] == "{not json"
    assert len(body["dead_letters"]) <= 5


@pytest.mark.parametrize("limit", ["abc", "0", "-3"])
def test_dead_letters_rejects_a_bad_limit_with_the_reason(worker, limit):
    resp = _get(worker, f"/dashboard/dead-letters?limit={limit}")
    assert resp.status_code == 400
    assert "limit must be a whole number" in resp.json()["error"]


def test_summary_reports_model_and_online_metrics_per_version(worker, traffic):
    body = _get(worker, "/dashboard/summary").json()
    assert {"model_version", "online", "coverage", "cold_start_share", "breakers", "events_in",
            "lists_out"} <= set(body)
    assert body["model_version"] == worker.settings.model_version
    for row in body["online"]:
        assert row["ctr"] is None or 0 <= row["ctr"] <= 1
        assert row["hit_rate"] is None or 0 <= row["hit_rate"] <= 1


# -- the page in real headless Chromium --------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium "
                    "chromium-driver; deploy/local/setup-env.sh does it as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1500"):
        opts.add_argument(arg)
    # An explicit driver path: selenium never looks for (or downloads) a driver of its own.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(browser, worker, traffic):
    browser.get(f"{worker.web_url}/dashboard")
    yield browser
    if target := os.environ.get("AVREC_TEST_DASHBOARD_SCREENSHOT"):
        # The page as the tests left it (inspectors filled), the whole height in one image.
        browser.execute_script("window.scrollTo(0, 0)")
        browser.set_window_size(1400, min(max(browser.execute_script("return document.body.scrollHeight"), 900),
                                           2400))
        time.sleep(2.5)  # one more series poll, drawn at the new size (not a check)
        browser.save_screenshot(target)


def _wait(driver, predicate, timeout: float, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.3).until(lambda d: predicate(d))
    except Exception as exc:
        raise AssertionError(f"{what} (after {timeout:.0f} s)\npage status: "
                             f"{driver.find_element('id', 'status').text}") from exc


def _attr(driver, element_id: str, name: str) -> str:
    return driver.find_element("id", element_id).get_attribute(name) or ""


def test_page_loads_and_its_charts_fill_from_the_worker(page, worker):
    assert page.title == "avrec dashboard"
    for chart in ("chart-throughput", "chart-lag", "chart-freshness"):
        _wait(page, lambda d, c=chart: int(_attr(d, c, "data-points")) >= 3, 30, f"{chart} drew < 3 samples")
    _wait(page, lambda d: d.find_element("id", "model-version").text == worker.settings.model_version, 15,
          "the model version is not shown")
    _wait(page, lambda d: float(_attr(d, "chart-throughput", "data-max")) > 0, 30,
          "the throughput chart never drew a non-zero rate")


def test_page_lists_the_malformed_record_with_its_reason(page, traffic):
    key = traffic["bad_key"]
    row = _wait(page, lambda d: d.find_elements("css selector", f'#dead-letters tr[data-key="{key}"]'), 30,
                "the malformed record is not in the dead-letter table")[0]
    assert row.find_element("css selector", "td.reason").text == traffic["letter"].error
    assert row.get_attribute("data-stage") == traffic["letter"].stage


def test_item_inspector_shows_the_reason_of_a_4xx(page):
    box = page.find_element("id", "item-id")
    box.clear()
    box.send_keys(f"no-such-item-{uuid.uuid4().hex[:6]}")
    page.find_element("id", "item-go").click()
    err = _wait(page, lambda d: (e := d.find_element("id", "item-error")).is_displayed() and e, 15,
                "no error shown for an unknown item")
    assert "HTTP 404" in err.text
    assert not page.find_element("id", "item-result").is_displayed()


def test_user_inspector_shows_the_list_the_worker_published(page, worker, traffic):
    box = page.find_element("id", "user-id")
    box.clear()
    box.send_keys(traffic["user"])
    page.find_element("id", "user-go").click()
    shown = _wait(page, lambda d: _attr(d, "user-list", "data-items"), 30, "the user inspector shows no list")
    ids = shown.split(",")
    assert ids == traffic["list"][: len(ids)] and len(ids) >= min(3, len(traffic["list"])), (ids, traffic["list"])
    first = page.find_element("css selector", "#user-list li")
    assert first.find_element("css selector", ".reasons").text not in ("", "(no reason given)")
    history = [li.get_attribute("data-item-id") for li in page.find_elements("css selector", "#user-history li")]
    assert history[0] == traffic["items"][3]["item_id"], history  # newest first: the last like


def test_item_inspector_shows_modalities_and_neighbours(page, worker, traffic):
    item = traffic["items"][0]["item_id"]
    box = page.find_element("id", "item-id")
    box.clear()
    box.send_keys(item)
    page.find_element("id", "item-go").click()
    _wait(page, lambda d: d.find_element("id", "item-result").is_displayed(), 15, "the item inspector stays empty")
    mods = {m.get_attribute("data-modality"): m.get_attribute("data-available")
            for m in page.find_elements("css selector", "#item-modalities .modality")}
    assert mods == {"text": "true", "audio": "false", "video": "false"}  # a text-only upload
    assert page.find_elements("css selector", "#item-neighbours li[data-item-id]")
