"""The OpenAPI document is valid 3.1, lists every route the worker's web server serves, and /docs lists
every operation; the read API's input checks give 4xx with a reason (pure functions, no stack)."""

from __future__ import annotations

import orjson
import pytest
from multidict import MultiDict
from openapi_spec_validator import validate

from streams.web import openapi
from streams.web.api_params import (MAX_FEEDBACK_BYTES, BadRequest, bool_param, check_id, exclude_param,
                                    feedback_records, page_params)


def _served() -> set[tuple[str, str]]:
    from streams.app import app
    from streams.web import register_views

    register_views()  # every view the worker serves

    return {(res.canonical, route.method.lower()) for res in app.web.web_app.router.resources() for route in res
            if route.method not in ("HEAD", "OPTIONS")}


def test_the_document_is_valid_openapi_3_1():
    doc = openapi.document()
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_every_served_route_is_documented_and_every_api_operation_is_served():
    documented = {(p, m) for p, ops in openapi.PATHS.items() for m in ops}
    served = _served()
    assert served, "no views registered"
    assert served <= documented, f"served but not documented: {sorted(served - documented)}"
    api = {(p, m) for p, m in documented if not p.startswith(("/dashboard", "/metrics"))}
    assert api <= served, f"documented but not served: {sorted(api - served)}"


def test_docs_page_lists_every_operation_without_external_resources():
    page = openapi.html_page()
    for path, ops in openapi.PATHS.items():
        for method in ops:
            assert f"{method.upper()} {path}" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page


@pytest.mark.parametrize("bad", ["", "   ", "a'b", "a\\b", "x" * 129, "tab\there"])
def test_invalid_ids_are_refused_with_the_rule(bad):
    with pytest.raises(BadRequest) as exc:
        check_id(bad, "user id")
    assert exc.value.status == 400 and "invalid user id" in exc.value.reason


@pytest.mark.parametrize("query,reason", [
    ({"n": "x"}, "n must be an integer"), ({"n": "0"}, "n must be between 1 and 100"),
    ({"n": "1.5"}, "n must be an integer"), ({"offset": "-1"}, "offset must be between 0"),
    ({"n": "60", "offset": "50"}, "n + offset must be at most 100"),
])
def test_bad_pages_are_refused(query, reason):
    with pytest.raises(BadRequest) as exc:
        page_params(query, 100)
    assert reason in exc.value.reason


def test_good_params():
    assert page_params({}, 100) == (10, 0)
    assert page_params({"n": "30", "offset": "70"}, 100) == (30, 70)
    assert bool_param({"explain": "TRUE"}, "explain") is True and bool_param({}, "explain") is False
    with pytest.raises(BadRequest, match="explain must be true or false"):
        bool_param({"explain": "maybe"}, "explain")
    q = MultiDict([("exclude", "a,b"), ("exclude", "c"), ("exclude", " ,d ")])
    assert exclude_param(q.getall("exclude"), 10) == {"a", "b", "c", "d"}
    with pytest.raises(BadRequest, match="item id in exclude"):
        exclude_param(["ok,bad'id"], 10)


def _ev(**kw) -> dict:
    return {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "like", "ts": 1_700_000_000.0, **kw}


def test_feedback_is_validated_like_avrec_produce():
    from streams.records import Interaction, parse_json, validate as validate_record

    one = feedback_records(orjson.dumps(_ev()))
    assert one == [validate_record(Interaction, parse_json(orjson.dumps(_ev())))]
    assert [r.event_id for r in feedback_records(orjson.dumps([_ev(), _ev(event_id="e2")]))] == ["e1", "e2"]
    with pytest.raises(BadRequest) as exc:
        feedback_records(orjson.dumps([_ev(), _ev(type="clap"), _ev(ts=1e12), "x", _ev(user_id="")]))
    e = exc.value
    assert e.status == 422 and "4 of 5" in e.reason
    assert [d["index"] for d in e.details] == [1, 2, 3, 4]
    assert e.details[0]["fields"] == ["type"] and "future" in e.details[1]["reason"]
    assert e.details[2]["stage"] == "decode" and e.details[3]["fields"] == ["user_id"]
    for body, status in ((b"{nope", 400), (b"[]", 400), (b"[1, 2]", 400),
                         (b" " * (MAX_FEEDBACK_BYTES + 1), 413), (orjson.dumps([_ev()] * 1001), 413)):
        with pytest.raises(BadRequest) as exc:
            feedback_records(body)
        assert exc.value.status == status, body[:20]
