"""``KEY=VALUE`` overrides of ``RankingSettings`` for the CLI (``--set``, ``--variant``).

Keys are dotted field paths (``creator_cap``, ``source_weights.ann``); values
are read as JSON when they parse (numbers, booleans, lists) and as plain strings
otherwise. The result is validated by ``RankingSettings`` itself, so a typo in a
key fails loudly instead of being ignored.
"""

from __future__ import annotations

from typing import Any

import orjson

from streams.ranking import RankingSettings


class OverrideError(ValueError):
    pass


def _value(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def apply_overrides(base: RankingSettings, pairs: list[str]) -> RankingSettings:
    """A copy of ``base`` with each ``key=value`` of ``pairs`` applied."""
    data = base.model_dump()
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise OverrideError(f"expected KEY=VALUE, got {pair!r}")
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise OverrideError(f"unknown settings group {p!r} in {key!r}")
            node = node[p]
        if parts[-1] not in node:
            raise OverrideError(f"unknown setting {key!r}")
        node[parts[-1]] = _value(raw.strip())
    try:
        return RankingSettings.model_validate(data)
    except ValueError as exc:
        raise OverrideError(str(exc)) from exc


def parse_variant(spec: str, base: RankingSettings) -> tuple[str, RankingSettings]:
    """``"NAME:key=v,key=v"`` -> (NAME, settings). Overrides apply to ``base`` (the live settings)."""
    name, sep, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise OverrideError(f"a variant needs a name: NAME:key=value,... (got {spec!r})")
    pairs = [p for p in (rest.split(",") if sep else []) if p.strip()]
    return name, apply_overrides(base, pairs)


def diff_settings(base: RankingSettings, other: RankingSettings) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (base value, other value) for every field that differs."""
    out: dict[str, tuple[Any, Any]] = {}

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in a:
                walk(a[k], b.get(k), f"{prefix}{k}.")
        elif a != b:
            out[prefix.rstrip(".")] = (a, b)

    walk(base.model_dump(mode="json"), other.model_dump(mode="json"), "")
    return out
