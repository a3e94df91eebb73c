"""Triton model `text_encoder`: strings -> all-MiniLM-L6-v2 sentence vectors."""

import os
import site
import sys


def _use_avrec_environment() -> None:
    """The Python stub ignores PYTHONPATH: add the directories the launcher passes, in order."""
    paths = [p for p in os.environ.get("AVREC_TRITON_SYS_PATH", "").split(os.pathsep) if p]
    for path in reversed(paths):
        before = set(sys.path)
        site.addsitedir(path)  # addsitedir also runs .pth files (editable installs)
        added = [p for p in sys.path if p not in before]
        for p in added:
            sys.path.remove(p)
        sys.path[:0] = added


_use_avrec_environment()

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from encoders.serving import ModelContext, RequestRejected, check_config, split_rows, input_array, serve_batch, to_text  # noqa: E402
from encoders.towers import build_text  # noqa: E402
from streams.settings import Settings  # noqa: E402

MAX_CHARS = 20_000


class TritonPythonModel:
    def initialize(self, args):
        self.ctx = ModelContext.from_args(args)
        self.tower = build_text(Settings().encoders, self.ctx.device)
        check_config(self.ctx, {"TEXT": "TYPE_STRING"}, {"EMBEDDING": ("TYPE_FP32", [self.tower.dim])})
        self.tower(["warm-up"])  # first call allocates; keep that out of the first request

    def _parse(self, request):
        arr = input_array(pb_utils, request, "TEXT")
        if arr is None:
            raise RequestRejected("TEXT is required")
        texts = [to_text(row) for row in arr.reshape(arr.shape[0], -1)]
        for t in texts:
            if not t.strip():
                raise RequestRejected("TEXT is empty")
            if len(t) > MAX_CHARS:
                raise RequestRejected(f"TEXT is {len(t)} characters; the limit is {MAX_CHARS}")
        return texts

    def _compute(self, payloads):
        flat = [t for texts in payloads for t in texts]
        emb = self.tower(flat).numpy().astype(np.float32)
        return split_rows(emb, [len(p) for p in payloads], "EMBEDDING")

    def execute(self, requests):
        return serve_batch(pb_utils, requests, self._parse, self._compute)
