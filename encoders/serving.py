"""Shared machinery of the Triton Python models in ``triton_models/``.

The rules we follow (Triton python_backend practice):

* ``config.pbtxt`` is the single source of truth for names, dtypes and shapes;
  :func:`check_config` compares it with what the tower produces and fails the
  model load (not a request) when they disagree;
* every request is validated on its own; a bad one gets a ``TritonError`` in
  its response while the rest of the batch is served (:func:`serve_batch`);
* nothing is built inside ``execute``: towers are created in ``initialize``.

``pb_utils`` (``triton_python_backend_utils``) exists only inside the stub, so
it is passed in rather than imported here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class RequestRejected(ValueError):
    """This one request is malformed; the message goes back to the caller."""


@dataclass
class ModelContext:
    """What ``initialize`` learns from Triton's ``args``."""

    name: str
    config: dict
    device: str  # "cpu" or "cuda:N"

    @classmethod
    def from_args(cls, args: dict) -> ModelContext:
        config = json.loads(args["model_config"])
        kind = args.get("model_instance_kind", "CPU")
        device = f"cuda:{args.get('model_instance_device_id', '0')}" if kind == "GPU" else "cpu"
        return cls(name=args.get("model_name", config.get("name", "?")), config=config, device=device)

    def io(self, kind: str, name: str) -> dict:
        for spec in self.config.get(kind, []):
            if spec["name"] == name:
                return spec
        raise RuntimeError(f"{self.name}: config.pbtxt declares no {kind[:-1]} named {name!r}")


def check_config(ctx: ModelContext, inputs: dict[str, str], outputs: dict[str, tuple[str, list[int]]]) -> None:
    """Fail the model load when config.pbtxt and the code disagree.

    ``inputs``: name -> data_type; ``outputs``: name -> (data_type, dims).
    """
    problems = []
    for name, dtype in inputs.items():
        spec = ctx.io("input", name)
        if spec["data_type"] != dtype:
            problems.append(f"input {name} is {spec['data_type']} in config.pbtxt, code expects {dtype}")
    for name, (dtype, dims) in outputs.items():
        spec = ctx.io("output", name)
        if spec["data_type"] != dtype:
            problems.append(f"output {name} is {spec['data_type']} in config.pbtxt, code produces {dtype}")
        if [int(d) for d in spec["dims"]] != list(dims):
            problems.append(f"output {name} dims are {spec['dims']} in config.pbtxt, the tower produces {dims}")
    if problems:
        raise RuntimeError(f"{ctx.name}: " + "; ".join(problems) + ". Fix config.pbtxt or the encoder settings.")


def to_text(arr: np.ndarray | None, field: str = "TEXT") -> str:
    """A BYTES tensor of one element -> str, rejecting non-UTF-8."""
    if arr is None:
        return ""
    flat = arr.reshape(-1)
    if flat.size != 1:
        raise RequestRejected(f"{field} must hold exactly one string, got {flat.size}")
    raw = flat[0]
    if isinstance(raw, bytes):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestRejected(f"{field} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    return str(raw)


def check_waveform(arr: np.ndarray, sample_rate: int, max_seconds: float, min_seconds: float = 0.05) -> np.ndarray:
    wav = np.asarray(arr, dtype=np.float32).reshape(-1)
    if wav.size < int(min_seconds * sample_rate):
        raise RequestRejected(f"WAVEFORM has {wav.size} samples; at least {min_seconds} s at {sample_rate} Hz needed")
    if wav.size > int(max_seconds * sample_rate) + sample_rate:
        raise RequestRejected(f"WAVEFORM is {wav.size / sample_rate:.1f} s; the limit is {max_seconds} s")
    if not np.isfinite(wav).all():
        raise RequestRejected("WAVEFORM contains NaN or infinite samples")
    return wav


def check_frames(arr: np.ndarray, max_frames: int = 64, min_side: int = 16, max_side: int = 1024) -> np.ndarray:
    frames = np.asarray(arr)
    if frames.ndim == 5 and frames.shape[0] == 1:
        frames = frames[0]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise RequestRejected(f"FRAMES must be [N, H, W, 3] uint8, got shape {list(frames.shape)}")
    n, h, w, _ = frames.shape
    if not 1 <= n <= max_frames:
        raise RequestRejected(f"FRAMES has {n} frames; 1..{max_frames} allowed")
    if not (min_side <= h <= max_side and min_side <= w <= max_side):
        raise RequestRejected(f"FRAMES are {h}x{w}; each side must be {min_side}..{max_side}")
    return frames


def serve_batch(
    pb_utils: Any,
    requests: Sequence[Any],
    parse: Callable[[Any], Any],
    compute: Callable[[list[Any]], list[dict[str, np.ndarray]]],
) -> list[Any]:
    """Parse each request on its own, compute the valid ones together, answer each one.

    ``parse(request)`` returns the request's payload or raises :class:`RequestRejected`;
    ``compute(payloads)`` returns one ``{output name: array}`` per payload.
    """
    responses: list[Any] = [None] * len(requests)
    valid_idx, payloads = [], []
    for i, req in enumerate(requests):
        try:
            payloads.append(parse(req))
            valid_idx.append(i)
        except RequestRejected as exc:
            responses[i] = error_response(pb_utils, f"invalid request: {exc}", invalid=True)
    if payloads:
        try:
            results = compute(payloads)
        except Exception as exc:  # a failure of the batch computation itself, reported per request
            log.exception("batch computation failed")
            results = [exc] * len(payloads)
        for i, res in zip(valid_idx, results):
            if isinstance(res, Exception):
                responses[i] = error_response(pb_utils, f"encoder failed: {res}", invalid=False)
            else:
                tensors = [pb_utils.Tensor(k, np.ascontiguousarray(v)) for k, v in res.items()]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
    return responses


def split_rows(array: np.ndarray, counts: Sequence[int], name: str) -> list[dict[str, np.ndarray]]:
    """Split a batch computed for several requests back into one output dict per request."""
    out, start = [], 0
    for n in counts:
        out.append({name: array[start : start + n]})
        start += n
    return out


def error_response(pb_utils: Any, message: str, invalid: bool) -> Any:
    """A response carrying only an error. Bad input is INVALID_ARG (HTTP 400, gRPC
    INVALID_ARGUMENT), so clients know not to retry it; anything else is INTERNAL."""
    code = pb_utils.TritonError.INVALID_ARG if invalid else pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))


def input_array(pb_utils: Any, request: Any, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()
