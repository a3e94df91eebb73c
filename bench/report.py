"""How every benchmark hands its result over: JSON on stdout, and to ``--json-out`` when given."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def emit(result: dict[str, Any], json_out: str | None) -> None:
    """Write ``result`` (indented JSON) to ``json_out``, creating its folder, and to stdout."""
    text = json.dumps(result, indent=2)
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(text)
    sys.stdout.write(text + "\n")
