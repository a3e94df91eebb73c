"""Placeholder: filled by the dashboard change (see streams/web/__init__.py)."""

from __future__ import annotations
