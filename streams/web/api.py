"""Placeholder: filled by the api change (see streams/web/__init__.py)."""

from __future__ import annotations
