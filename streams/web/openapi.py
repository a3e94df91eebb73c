"""The OpenAPI 3.1 document of the worker's web port, written as data (served at ``/openapi.json``),
and ``/docs``: a small self-contained HTML page listing the operations (no CDN, no script).

Keep it in step with ``streams/web/api.py`` (and the dashboard's and metrics' routes):
``tests/unit/test_openapi.py`` checks that it is valid and that every route the app serves is in it.
"""

from __future__ import annotations

import html

_JSON = "application/json"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _resp(description: str, schema: str | dict | None = None, media: str = _JSON) -> dict:
    out: dict = {"description": description}
    if schema is not None:
        out["content"] = {media: {"schema": _ref(schema) if isinstance(schema, str) else schema}}
    return out


_ERR = {"400": _resp("Malformed id or parameter: `error` says which and why.", "Error"),
        "503": _resp("The worker is starting, rebalancing, or a backing store did not answer; retry.", "Error")}


def _path_id(name: str, what: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": f"The {what} id (the event records' rules: "
            "1-128 characters, no control characters, no apostrophe or backslash).",
            "schema": {"type": "string", "minLength": 1, "maxLength": 128}}


def _query(name: str, description: str, schema: dict, **kw) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema, **kw}


_N = _query("n", "How many items (n + offset <= settings.web.api_max_n, 100 by default).",
            {"type": "integer", "minimum": 1, "default": 10})

SCHEMAS: dict = {
    "Error": {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "string", "description": "What is wrong and how to fix it."},
        "details": {"type": "array", "items": {"type": "object"}}}},
    "Explanation": {
        "type": "object", "required": ["method", "adds_up_to", "total", "intercept", "contributions", "sources"],
        "description": "sum(contributions) + intercept == total. adds_up_to 'score': total is the item's score "
                       "(weighted blend or rrf: the sources' contributions). adds_up_to 'ranker_score': total is the "
                       "learned ranker's score s of the item (each feature's weight * standardised value), and "
                       "score = exp(s - max_ranker_score).",
        "properties": {
            "method": {"type": "string", "enum": ["weighted", "rrf", "learned"]},
            "adds_up_to": {"type": "string", "enum": ["score", "ranker_score"]},
            "total": {"type": "number"}, "intercept": {"type": "number"},
            "contributions": {"type": "object", "additionalProperties": {"type": "number"}},
            "sources": {"type": "object", "additionalProperties": {"type": "number"}},
            "features": {"type": "object", "additionalProperties": {"type": "number"}},
            "ranker_score": {"type": "number"}, "max_ranker_score": {"type": "number"},
            "score_is": {"type": "string"}}},
    "ListItem": {"type": "object", "required": ["item_id", "score", "reasons", "sources"], "properties": {
        "item_id": {"type": "string"}, "score": {"type": "number"}, "title": {"type": ["string", "null"]},
        "reasons": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "sources": {"type": "object", "description": "Each source's weight * normalised score.",
                    "additionalProperties": {"type": "number"}},
        "explain": _ref("Explanation")}},
    "Versions": {"type": "object", "properties": {
        "model_version": {"type": "string"}, "base_model_version": {"type": "string"},
        "fusion": {"type": "string"},
        "ranker": {"type": ["string", "null"], "description": "The ranker's fingerprint."},
        "encoders": {"type": "object", "description": "Per tower: weights (path or built-in) and sha256 prefix.",
                     "additionalProperties": {"type": "object"}}}},
    "Recommendations": {"type": "object",
                        "required": ["user_id", "known_user", "model_version", "n", "offset", "items"],
                        "properties": {
        "user_id": {"type": "string"}, "known_user": {"type": "boolean"}, "model_version": {"type": "string"},
        "n": {"type": "integer"}, "offset": {"type": "integer"},
        "items": {"type": "array", "items": _ref("ListItem")}, "versions": _ref("Versions"),
        "served_by": {"type": "string", "description": "The worker owning the user, which ranked the list."}}},
    "Scored": {"type": "object", "required": ["item_id", "score"], "properties": {
        "item_id": {"type": "string"}, "score": {"type": "number"}, "title": {"type": ["string", "null"]}}},
    "User": {"type": "object", "required": ["user_id", "known_user", "history", "list", "candidates", "model_version"],
             "properties": {
        "user_id": {"type": "string"}, "known_user": {"type": "boolean"}, "model_version": {"type": "string"},
        "n_events": {"type": "integer"}, "served_by": {"type": "string"},
        "history": {"type": "array", "description": "Newest first.", "items": {"type": "object", "properties": {
            "item_id": {"type": "string"}, "title": {"type": ["string", "null"]},
            "type": {"type": ["string", "null"]}}}},
        "list": {"type": "array", "items": _ref("ListItem")},
        "candidates": {"type": "object", "description": "Per source (ann, cooc, fresh, trending), best first; fresh "
                       "scores are upload times.",
                       "additionalProperties": {"type": "array", "items": _ref("Scored")}}}},
    "Item": {"type": "object", "required": ["item_id", "available", "taken_down", "modalities", "neighbours"],
             "properties": {
        "item_id": {"type": "string"}, "title": {"type": ["string", "null"]},
        "creator_id": {"type": ["string", "null"]},
        "created_at": {"type": ["number", "null"]}, "available": {"type": "boolean"}, "taken_down": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}}, "duration_s": {"type": ["number", "null"]},
        "modalities": {"type": "object", "properties": {m: {"type": "boolean"} for m in ("text", "audio", "video")}},
        "neighbours": {"type": "array", "items": _ref("Scored")}}},
    "Similar": {"type": "object", "required": ["item_id", "items"], "properties": {
        "item_id": {"type": "string"}, "items": {"type": "array", "items": _ref("Scored")}}},
    "Interaction": {"type": "object", "required": ["event_id", "user_id", "item_id", "type", "ts"],
                    "description": "docs/EVENTS.md; validated exactly as `avrec produce interactions` does.",
                    "properties": {
        "event_id": {"type": "string"}, "user_id": {"type": "string"}, "item_id": {"type": "string"},
        "type": {"type": "string", "enum": ["view", "like", "share", "comment", "complete", "skip", "dislike", "hide"]},
        "watch_ms": {"type": "integer", "minimum": 0}, "ts": {"type": ["number", "string"]}}},
    "Accepted": {"type": "object", "required": ["accepted", "event_ids"], "properties": {
        "accepted": {"type": "integer"}, "event_ids": {"type": "array", "items": {"type": "string"}}}},
    "Health": {"type": "object", "required": ["status"], "properties": {
        "status": {"type": "string", "enum": ["live", "ready", "not_ready"]}, "reason": {"type": "string"}}},
}


def _get(summary: str, ok: dict, tag: str, params: list | None = None, errors: dict | None = None) -> dict:
    op = {"summary": summary, "tags": [tag], "responses": {"200": ok, **(errors or {})}}
    if params:
        op["parameters"] = params
    return {"get": op}


PATHS: dict = {
    "/health/live": _get("The process answers.", _resp("Live.", "Health"), "health"),
    "/health/ready": _get("Ready to serve: context created, partitions assigned, item replica caught up.",
                          _resp("Ready.", "Health"), "health",
                          errors={"503": _resp("Not ready, with the reason.", "Health")}),
    "/users/{user_id}/recommendations": _get(
        "The user's list now, ranked by the worker that owns the user (any worker forwards to it).",
        _resp("The list; an unknown user gets the cold-start list with known_user false.", "Recommendations"),
        "users", [_path_id("user_id", "user"), _N,
                  _query("offset", "Items to skip: pages of one ranking are disjoint.",
                         {"type": "integer", "minimum": 0, "default": 0}),
                  _query("exclude", "Item ids never to list: comma-separated, the parameter may repeat.",
                         {"type": "array", "items": {"type": "string"}}, style="form", explode=True),
                  _query("explain", "Add each item's explanation and the versions.",
                         {"type": "boolean", "default": False})], _ERR),
    "/users/{user_id}": _get("The user inspector: history, current list with reasons, candidates per source.",
                             _resp("The user.", "User"), "users", [_path_id("user_id", "user")], _ERR),
    "/items/{item_id}": _get("The item inspector: metadata, takedown, modality vectors, nearest neighbours.",
                             _resp("The item.", "Item"), "items", [_path_id("item_id", "item")],
                             {**_ERR, "404": _resp("Not in the catalogue.", "Error")}),
    "/items/{item_id}/similar": _get("The items closest to this one (fused vectors).",
                                     _resp("Similar items.", "Similar"),
                                     "items", [_path_id("item_id", "item"), _N],
                                     {**_ERR, "404": _resp("Not in the catalogue, or taken down.", "Error")}),
    "/feedback": {"post": {
        "summary": "Send interactions (one or a list) to the interactions topic, keyed by user id.",
        "tags": ["events"],
        "requestBody": {"required": True, "content": {_JSON: {"schema": {"oneOf": [
            _ref("Interaction"), {"type": "array", "items": _ref("Interaction"), "minItems": 1, "maxItems": 1000}]}}}},
        "responses": {"202": _resp("In the log (acknowledged by the broker).", "Accepted"),
                      "400": _resp("Not JSON, not objects, or empty; nothing sent.", "Error"),
                      "413": _resp("Body over 1 MiB or more than 1000 interactions.", "Error"),
                      "422": _resp("Invalid interactions (details: index, stage, reason, fields); nothing sent.",
                                   "Error")}}},
    "/openapi.json": _get("This document.", _resp("OpenAPI 3.1.", {"type": "object"}), "meta"),
    "/docs": _get("The operations as an HTML page.", _resp("HTML.", {"type": "string"}, "text/html"), "meta"),
    "/metrics": _get("Prometheus metrics (avrec's own registry).", _resp("Text format.", {"type": "string"},
                                                                          "text/plain"), "metrics"),
    "/dashboard": _get("The live dashboard.", _resp("HTML.", {"type": "string"}, "text/html"), "dashboard"),
    "/dashboard/series": _get("The dashboard's chart samples.", _resp("JSON.", {"type": "object"}), "dashboard"),
    "/dashboard/summary": _get("Model version, online CTR and hit rate.", _resp("JSON.", {"type": "object"}),
                               "dashboard"),
    "/dashboard/dead-letters": _get("Recent dead letters with their reasons.", _resp("JSON.", {"type": "object"}),
                                    "dashboard"),
}


def document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "avrec worker API", "version": "1",
                 "description": "Served by every worker on its web port (settings.web). docs/API.md has examples."},
        "paths": PATHS,
        "components": {"schemas": SCHEMAS},
    }


def html_page() -> str:
    """Every operation with its parameters and responses, as static HTML."""
    rows = []
    for path, ops in PATHS.items():
        for method, op in ops.items():
            params = "".join(f"<li><code>{html.escape(p['name'])}</code> ({p['in']}): {html.escape(p['description'])}"
                             "</li>" for p in op.get("parameters", []))
            codes = ", ".join(f"{c} {html.escape(r['description'])}" for c, r in op["responses"].items())
            rows.append(f"<section><h2><code>{method.upper()} {html.escape(path)}</code></h2>"
                        f"<p>{html.escape(op['summary'])}</p>{f'<ul>{params}</ul>' if params else ''}"
                        f"<p class=r>{codes}</p></section>")
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><title>avrec API</title><style>"
            "body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
            "h2{font-size:1.05rem;margin:1.4rem 0 .3rem}.r{color:#555}</style></head><body><h1>avrec API</h1>"
            "<p>The machine-readable document: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI 3.1).</p>"
            + "".join(rows) + "</body></html>")
