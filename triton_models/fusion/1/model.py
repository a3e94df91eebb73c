"""Triton model `fusion`: per-modality vectors + presence mask -> one fused item vector."""

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

from encoders.fusion import MODALITIES  # noqa: E402
from encoders.serving import ModelContext, RequestRejected, check_config, input_array, serve_batch  # noqa: E402
from encoders.towers import build_fusion  # noqa: E402
from streams.settings import Settings  # noqa: E402

INPUTS = [f"{m.upper()}_EMB" for m in MODALITIES]


class TritonPythonModel:
    def initialize(self, args):
        self.ctx = ModelContext.from_args(args)
        self.fusion = build_fusion(Settings().encoders, self.ctx.device)
        d, m = self.fusion.dim, len(MODALITIES)
        check_config(
            self.ctx,
            {**{name: "TYPE_FP32" for name in INPUTS}, "MASK": "TYPE_FP32"},
            {"FUSED": ("TYPE_FP32", [d]), "WEIGHTS": ("TYPE_FP32", [m])},
        )

    def _parse(self, request):
        arrays = [input_array(pb_utils, request, name) for name in INPUTS]
        mask = input_array(pb_utils, request, "MASK")
        if mask is None or any(a is None for a in arrays):
            raise RequestRejected(f"inputs {INPUTS + ['MASK']} are all required (zeros + mask 0 for a missing modality)")
        vectors = np.stack(arrays, axis=1).astype(np.float32)  # [B, M, D]
        mask = mask.astype(np.float32).reshape(vectors.shape[0], -1)
        if not np.isin(mask, (0.0, 1.0)).all():
            raise RequestRejected("MASK values must be 0 or 1")
        if (mask.sum(1) == 0).any():
            raise RequestRejected("MASK has no modality present")
        if not np.isfinite(vectors).all():
            raise RequestRejected("a modality vector contains NaN or infinity")
        return vectors, mask

    def _compute(self, payloads):
        vectors = torch.from_numpy(np.concatenate([v for v, _ in payloads]))
        mask = torch.from_numpy(np.concatenate([m for _, m in payloads]))
        fused, _, weights = self.fusion(vectors.to(self.ctx.device), mask.to(self.ctx.device))
        fused, weights = fused.cpu().numpy(), weights.cpu().numpy()
        out, start = [], 0
        for v, _ in payloads:
            n = v.shape[0]
            out.append({"FUSED": fused[start : start + n], "WEIGHTS": weights[start : start + n]})
            start += n
        return out

    def execute(self, requests):
        return serve_batch(pb_utils, requests, self._parse, self._compute)
