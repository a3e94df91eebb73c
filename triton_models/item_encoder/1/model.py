"""Triton model `item_encoder` (BLS): an upload's decoded inputs -> fused + per-modality vectors.

For one `execute` call it sends one batched request to `text_encoder`, one
request per clip to `audio_encoder` and `video_encoder` (clips differ in
shape; Triton's dynamic batcher regroups them), and one batched request to
`fusion`. A request whose own inputs are bad, or whose sub-request fails, gets
its own error; the rest of the batch is answered.
"""

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
import asyncio  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from encoders.serving import (  # noqa: E402
    ModelContext,
    RequestRejected,
    check_config,
    check_frames,
    check_waveform,
    error_response,
    input_array,
    to_text,
)
from streams.settings import Settings  # noqa: E402

OUTPUTS = ["FUSED", "TEXT_EMB", "AUDIO_EMB", "VIDEO_EMB", "MASK"]


@dataclass
class Item:
    text: str | None
    waveform: np.ndarray | None
    frames: np.ndarray | None
    vectors: dict = field(default_factory=dict)
    error: str | None = None
    error_is_input: bool = True  # False when a sub-model failed for its own reasons


class TritonPythonModel:
    def initialize(self, args):
        self.ctx = ModelContext.from_args(args)
        self.settings = Settings().encoders
        d = self.settings.dim
        check_config(
            self.ctx,
            {"TEXT": "TYPE_STRING", "WAVEFORM": "TYPE_FP32", "FRAMES": "TYPE_UINT8"},
            {name: ("TYPE_FP32", [3] if name == "MASK" else [d]) for name in OUTPUTS},
        )
        for name in ("TEXT", "WAVEFORM", "FRAMES"):
            if not self.ctx.io("input", name).get("optional", False):
                raise RuntimeError(f"item_encoder: input {name} must be optional in config.pbtxt")
        self.dim = d

    def _parse(self, request) -> Item:
        text_arr = input_array(pb_utils, request, "TEXT")
        wav_arr = input_array(pb_utils, request, "WAVEFORM")
        frames_arr = input_array(pb_utils, request, "FRAMES")
        for name, arr in (("TEXT", text_arr), ("WAVEFORM", wav_arr), ("FRAMES", frames_arr)):
            if arr is not None and arr.shape[0] != 1:
                raise RequestRejected(f"{name}: item_encoder takes one item per request (batch dim 1)")
        text = to_text(text_arr).strip() if text_arr is not None else ""
        s = self.settings
        waveform = check_waveform(wav_arr, s.sample_rate, s.max_audio_s) if wav_arr is not None else None
        frames = check_frames(frames_arr) if frames_arr is not None else None
        if not text and waveform is None and frames is None:
            raise RequestRejected("an item needs at least one of TEXT, WAVEFORM or FRAMES")
        return Item(text or None, waveform, frames)

    async def _call(self, model: str, inputs: dict, outputs: list[str]) -> dict:
        request = pb_utils.InferenceRequest(
            model_name=model,
            inputs=[pb_utils.Tensor(k, np.ascontiguousarray(v)) for k, v in inputs.items()],
            requested_output_names=outputs,
        )
        response = await request.async_exec()
        if response.has_error():
            err = response.error()
            if err.code() == pb_utils.TritonError.INVALID_ARG:
                raise RequestRejected(f"{model}: {err.message()}")
            raise RuntimeError(f"{model}: {err.message()}")
        return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs}

    async def _encode_modality(self, items: list[Item], key: str, model: str, make_input) -> None:
        todo = [it for it in items if getattr(it, key) is not None and it.error is None]
        results = await asyncio.gather(
            *(self._call(model, make_input(it), ["EMBEDDING"]) for it in todo), return_exceptions=True
        )
        for it, res in zip(todo, results):
            if isinstance(res, Exception):
                it.error = str(res)
                it.error_is_input = isinstance(res, RequestRejected)
            else:
                it.vectors[key] = res["EMBEDDING"][0]

    async def _encode(self, items: list[Item]) -> None:
        texts = [it for it in items if it.text]
        if texts:
            batch = np.array([[it.text.encode("utf-8")] for it in texts], dtype=np.object_)
            try:
                emb = (await self._call("text_encoder", {"TEXT": batch}, ["EMBEDDING"]))["EMBEDDING"]
                for it, vec in zip(texts, emb):
                    it.vectors["text"] = vec
            except Exception as exc:  # fall back to one request per text to isolate the bad one
                await self._encode_modality(texts, "text", "text_encoder",
                                            lambda it: {"TEXT": np.array([[it.text.encode("utf-8")]], dtype=np.object_)})
        await asyncio.gather(
            self._encode_modality(items, "waveform", "audio_encoder", lambda it: {"WAVEFORM": it.waveform[None]}),
            self._encode_modality(items, "frames", "video_encoder", lambda it: {"FRAMES": it.frames[None]}),
        )
        ok = [it for it in items if it.error is None]
        if not ok:
            return
        zeros = np.zeros(self.dim, np.float32)
        text = np.stack([it.vectors.get("text", zeros) for it in ok])
        audio = np.stack([it.vectors.get("waveform", zeros) for it in ok])
        video = np.stack([it.vectors.get("frames", zeros) for it in ok])
        mask = np.array([[k in it.vectors for k in ("text", "waveform", "frames")] for it in ok], np.float32)
        fused = await self._call(
            "fusion", {"TEXT_EMB": text, "AUDIO_EMB": audio, "VIDEO_EMB": video, "MASK": mask}, ["FUSED"]
        )
        for i, it in enumerate(ok):
            it.vectors.update(fused=fused["FUSED"][i], text_out=text[i], audio_out=audio[i], video_out=video[i],
                              mask=mask[i])

    async def execute(self, requests):
        items: list[Item | None] = []
        errors: list[str | None] = []  # this request's own input is bad (INVALID_ARG)
        for req in requests:
            try:
                items.append(self._parse(req))
                errors.append(None)
            except RequestRejected as exc:
                items.append(None)
                errors.append(f"invalid request: {exc}")
        valid = [it for it in items if it is not None]
        if valid:
            await self._encode(valid)
        responses = []
        for it, err in zip(items, errors):
            if err:
                responses.append(error_response(pb_utils, err, invalid=True))
                continue
            if it.error:
                responses.append(error_response(pb_utils, it.error, invalid=it.error_is_input))
                continue
            v = it.vectors
            tensors = [
                pb_utils.Tensor("FUSED", v["fused"][None].astype(np.float32)),
                pb_utils.Tensor("TEXT_EMB", v["text_out"][None].astype(np.float32)),
                pb_utils.Tensor("AUDIO_EMB", v["audio_out"][None].astype(np.float32)),
                pb_utils.Tensor("VIDEO_EMB", v["video_out"][None].astype(np.float32)),
                pb_utils.Tensor("MASK", v["mask"][None].astype(np.float32)),
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
