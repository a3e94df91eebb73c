"""Triton model `audio_encoder`: 16 kHz mono waveforms -> audio vectors in the shared space."""

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
import torch  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from encoders.serving import ModelContext, RequestRejected, check_config, split_rows, check_waveform, input_array, serve_batch  # noqa: E402
from encoders.towers import build_audio  # noqa: E402
from streams.settings import Settings  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        self.ctx = ModelContext.from_args(args)
        self.settings = Settings().encoders
        self.tower = build_audio(self.settings, self.ctx.device)
        check_config(self.ctx, {"WAVEFORM": "TYPE_FP32"}, {"EMBEDDING": ("TYPE_FP32", [self.tower.dim])})
        self.tower([torch.zeros(self.settings.sample_rate)])

    def _parse(self, request):
        arr = input_array(pb_utils, request, "WAVEFORM")
        if arr is None:
            raise RequestRejected("WAVEFORM is required")
        rows = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr[None]
        return [check_waveform(r, self.settings.sample_rate, self.settings.max_audio_s) for r in rows]

    def _compute(self, payloads):
        flat = [torch.from_numpy(w) for wavs in payloads for w in wavs]
        emb = self.tower(flat).cpu().numpy().astype(np.float32)
        return split_rows(emb, [len(p) for p in payloads], "EMBEDDING")

    def execute(self, requests):
        return serve_batch(pb_utils, requests, self._parse, self._compute)
