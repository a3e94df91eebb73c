"""The asyncio Triton client the streaming workers (Faust agents) use.

One :class:`TritonClient` wraps ``tritonclient.http.aio`` or
``tritonclient.grpc.aio`` (``settings.protocol``) and adds what the raw client
lacks for a long-running consumer:

* a per-attempt time-out (``settings.timeout_s``);
* retries with exponential back-off and full jitter, **only** for errors that
  say "the server could not serve this right now" (connection refused or reset,
  time-outs, HTTP 502/503/504/408/429, gRPC ``UNAVAILABLE``/``DEADLINE_EXCEEDED``);
* everything else the server answers with (HTTP 400/404/500/501, gRPC
  ``INVALID_ARGUMENT``/``INTERNAL``/..., i.e. a bad request or an error raised by
  the model) becomes :class:`InferenceError` at once: retrying cannot fix the
  input, and the server is evidently up;
* a :class:`~encoders.breaker.CircuitBreaker` around every call, so that when
  Triton is down callers fail fast with :class:`CircuitOpen` instead of each
  waiting ``timeout x retries``.

Model contract (``triton_models/``; its ``config.pbtxt`` files are the single
source of truth for dimensions, readable through :meth:`TritonClient.model_config`):

* ``text_encoder``: ``TEXT`` BYTES ``[1, 1]`` -> ``EMBEDDING`` FP32 ``[1, D]``;
* ``item_encoder``: ``TEXT`` BYTES ``[1, 1]``, optional ``WAVEFORM`` FP32
  ``[1, n_samples]`` (16 kHz mono), optional ``FRAMES`` UINT8 ``[1, N, H, W, 3]``
  -> ``FUSED``, ``TEXT_EMB``, ``AUDIO_EMB``, ``VIDEO_EMB`` FP32 ``[1, D]`` and
  ``MASK`` FP32 ``[1, 3]`` (1.0 where the modality was present).

Every request carries one item; :meth:`TritonClient.infer_many` sends many at
once so Triton's dynamic batcher forms the batches server-side.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence, TypeVar

import aiohttp
import numpy as np
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from encoders.breaker import CLOSED, CircuitBreaker, backoff_delays
from encoders.exceptions import InferenceError, TritonUnavailable
from streams.settings import TritonSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

TEXT_MODEL = "text_encoder"
ITEM_MODEL = "item_encoder"
ITEM_OUTPUTS = ["FUSED", "TEXT_EMB", "AUDIO_EMB", "VIDEO_EMB", "MASK"]

# Statuses (as tritonclient's InferenceServerException.status() spells them) that
# mean "not now" rather than "not this request". Triton itself answers 503 /
# UNAVAILABLE while a model is loading or its queue is full; 502/504/408/429 come
# from proxies and load balancers in front of it.
_RETRY_HTTP = frozenset({"408", "429", "502", "503", "504"})
_RETRY_GRPC = frozenset({"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"})
# Transport failures raised before any answer: refused/reset connections
# (aiohttp.ClientError, OSError) and time-outs. asyncio.TimeoutError is distinct
# from the builtin TimeoutError before Python 3.11, hence both.
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    asyncio.TimeoutError,
    TimeoutError,
    OSError,
)


@dataclass
class ItemInputs:
    """One item to encode. ``waveform``: 16 kHz mono float samples; ``frames``: uint8 ``[N, H, W, 3]``."""

    item_id: str
    text: str
    waveform: np.ndarray | None = None
    frames: np.ndarray | None = None


@dataclass
class ItemVectors:
    """The item encoder's outputs for one item; vectors are 1-D float32 ``[D]``, ``mask`` is ``[3]``."""

    item_id: str
    fused: np.ndarray
    text: np.ndarray
    audio: np.ndarray
    video: np.ndarray
    mask: np.ndarray


class _Retryable(Exception):
    """Internal: an attempt failed in a way that another attempt may not."""


def _to_wire_array(name: str, value: Any) -> tuple[np.ndarray, str]:
    """The array as tritonclient wants it, and its Triton datatype."""
    arr = np.asarray(value)
    if arr.dtype.kind in ("U", "S"):
        # Triton's BYTES travel as an object array of bytes; str is sent as UTF-8.
        arr = np.array(
            [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in arr.reshape(-1)],
            dtype=np.object_,
        ).reshape(arr.shape)
    dtype = np_to_triton_dtype(arr.dtype)
    if dtype is None:
        raise InferenceError(f"input {name!r}: numpy dtype {arr.dtype} has no Triton datatype")
    return arr, dtype


def _normalize_config(node: Any) -> Any:
    """Make gRPC's JSON model config look like HTTP's: int64 ``dims``/``shape`` as ints.

    Protobuf's JSON mapping writes int64 fields as strings (``"dims": ["384"]``)
    while Triton's HTTP endpoint writes numbers; callers should not care which
    protocol fetched the config.
    """
    if isinstance(node, dict):
        out = {}
        for key, val in node.items():
            if key in ("dims", "shape") and isinstance(val, list):
                out[key] = [int(v) for v in val]
            else:
                out[key] = _normalize_config(val)
        return out
    if isinstance(node, list):
        return [_normalize_config(v) for v in node]
    return node


class TritonClient:
    """Retrying, circuit-broken asyncio client for one Triton server.

    Create it anywhere; the underlying aiohttp session / gRPC channel is opened
    lazily on first use, inside the running event loop (both bind to the loop
    that creates them, and Faust builds agents before its loop runs).
    """

    def __init__(
        self,
        settings: TritonSettings,
        *,
        max_in_flight: int = 64,
        backoff_base: float = 0.05,
        backoff_cap: float = 2.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.breaker = CircuitBreaker(
            settings.breaker_failures, settings.breaker_reset_s, name=f"triton@{settings.url}", clock=clock
        )
        self._max_in_flight = max_in_flight
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._jitter: bool | random.Random = rng if rng is not None else True
        # Bounds requests in flight across every caller of this client, so a burst
        # from infer_many cannot open thousands of sockets or overrun Triton's queue.
        self._sem = asyncio.Semaphore(max_in_flight)
        self._client: Any = None
        self._mod: Any = None
        self._configs: dict[str, dict] = {}
        # Called once per attempt with (model, seconds, failed) when set (the worker's metrics:
        # streams/web/instrument.py); a cancelled attempt is not reported, it says nothing about Triton.
        self.observe: Callable[[str, float, bool], None] | None = None

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = {"http": "https" if self.settings.ssl else "http", "grpc": "grpcs" if self.settings.ssl else "grpc"}
        return f"{scheme[self.settings.protocol]}://{self.settings.url}"

    def _raw(self) -> Any:
        if self._client is None:
            s = self.settings
            if s.protocol == "grpc":
                import tritonclient.grpc.aio as mod

                self._client = mod.InferenceServerClient(
                    url=s.url,
                    ssl=s.ssl,
                    # File paths; tritonclient reads them. None: the system's roots, no client certificate.
                    root_certificates=str(s.ssl_cafile) if s.ssl and s.ssl_cafile else None,
                    private_key=str(s.ssl_keyfile) if s.ssl and s.ssl_keyfile else None,
                    certificate_chain=str(s.ssl_certfile) if s.ssl and s.ssl_certfile else None,
                )
            else:
                import tritonclient.http.aio as mod

                self._client = mod.InferenceServerClient(
                    url=s.url,
                    ssl=s.ssl,
                    ssl_context=s.ssl_context(),  # verifies the server against ssl_cafile
                    conn_limit=self._max_in_flight,
                    # aiohttp's own cap; the per-attempt asyncio time-out below is the one that counts.
                    conn_timeout=s.timeout_s,
                )
            self._mod = mod
        return self._client

    async def close(self) -> None:
        """Close the session/channel. A later call opens a new one."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def __aenter__(self) -> "TritonClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _attempt(self, op: Callable[[Any], Awaitable[T]], model: str) -> T:
        """One try of ``op``, time-limited; transport trouble becomes :class:`_Retryable`."""
        timeout = self.settings.timeout_s
        try:
            async with self._sem:
                return await self._observed(model, asyncio.wait_for(op(self._raw()), timeout))
        except InferenceServerException as exc:
            status = exc.status()
            if status in _RETRY_HTTP or status in _RETRY_GRPC:
                raise _Retryable(str(exc)) from exc
            # The server answered and said no: a bad request or the model's own error.
            raise InferenceError(str(exc)) from exc
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise _Retryable(f"timed out after {timeout:g} s") from exc
        except _TRANSPORT_ERRORS as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc

    async def _observed(self, model: str, call: Awaitable[T]) -> T:
        """Await ``call`` (a request, with its time-out) and report its duration and outcome to ``observe``."""
        observe = self.observe
        if observe is None:
            return await call
        t0 = time.perf_counter()
        try:
            result = await call
        except Exception:
            observe(model, time.perf_counter() - t0, True)
            raise
        observe(model, time.perf_counter() - t0, False)
        return result

    async def _call(self, what: str, op: Callable[[Any], Awaitable[T]], model: str) -> T:
        """``op`` through the breaker, with retries; raises InferenceError or TritonUnavailable."""
        self.breaker.before_call()  # CircuitOpen: nothing was sent, so nothing to record
        try:
            result = await self._retrying(what, op, model)
        except InferenceError:
            # A rejected request proves the server is up: not a breaker failure.
            self.breaker.record_success()
            raise
        except TritonUnavailable as exc:
            self.breaker.record_failure(exc.__cause__ if exc.__cause__ is not None else exc)
            raise
        except BaseException:
            # Cancelled (or a bug): no verdict on the server's health, but free a half-open trial slot.
            self.breaker.record_abandoned()
            raise
        self.breaker.record_success()
        return result

    async def _retrying(self, what: str, op: Callable[[Any], Awaitable[T]], model: str) -> T:
        retries = self.settings.max_retries
        delays = backoff_delays(retries, self._backoff_base, self._backoff_cap, self._jitter)
        last: _Retryable | None = None
        for attempt in range(retries + 1):
            try:
                return await self._attempt(op, model)
            except _Retryable as exc:
                last = exc
                if attempt < retries:
                    log.debug(
                        "%s on %s failed (attempt %d/%d): %s; retrying in %.3f s",
                        what, self.url, attempt + 1, retries + 1, exc, delays[attempt],
                    )
                    await asyncio.sleep(delays[attempt])
        assert last is not None
        raise TritonUnavailable(
            f"Triton at {self.url} unavailable for {what} after {retries + 1} attempt(s): {last}"
        ) from last

    # -- public API --------------------------------------------------------------------------

    async def ready(self, model: str | None = None) -> bool:
        """Is the server ready (or, given ``model``, that model)? Never raises, never touches the breaker.

        A readiness probe must answer even while the circuit is open: it is how an
        operator (or a health check) sees that Triton is back.
        """
        try:
            client = self._raw()
            kw = {"client_timeout": self.settings.timeout_s} if self.settings.protocol == "grpc" else {}
            if model is None:
                coro = client.is_server_ready(**kw)
            else:
                coro = client.is_model_ready(model, **kw)
            return bool(await asyncio.wait_for(coro, self.settings.timeout_s))
        except (InferenceServerException, *_TRANSPORT_ERRORS) as exc:
            log.debug("Triton at %s not ready: %s", self.url, exc)
            return False

    async def model_config(self, model: str) -> dict:
        """The model's configuration (``config.pbtxt`` as JSON, HTTP's shape), cached per model."""
        cached = self._configs.get(model)
        if cached is not None:
            return cached
        timeout = self.settings.timeout_s

        async def op(client: Any) -> dict:
            if self.settings.protocol == "grpc":
                resp = await client.get_model_config(model, as_json=True, client_timeout=timeout)
                return _normalize_config(resp.get("config", resp))
            return _normalize_config(await client.get_model_config(model))

        config = await self._call(f"model_config({model})", op, model)
        self._configs[model] = config
        return config

    def _build_request(
        self, inputs: dict[str, np.ndarray], outputs: Sequence[str]
    ) -> tuple[list[Any], list[Any]]:
        self._raw()  # makes sure self._mod is the protocol's module
        mod = self._mod
        infer_inputs = []
        for name, value in inputs.items():
            arr, dtype = _to_wire_array(name, value)
            inp = mod.InferInput(name, list(arr.shape), dtype)
            try:
                inp.set_data_from_numpy(arr)
            except InferenceServerException as exc:  # raised locally, e.g. unserialisable BYTES
                raise InferenceError(f"input {name!r}: {exc}") from exc
            infer_inputs.append(inp)
        requested = [mod.InferRequestedOutput(name) for name in outputs]
        return infer_inputs, requested

    async def infer(
        self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        """One inference request. Raises InferenceError (bad request), TritonUnavailable or CircuitOpen."""
        infer_inputs, requested = self._build_request(inputs, outputs)
        timeout = self.settings.timeout_s

        async def op(client: Any) -> Any:
            if self.settings.protocol == "grpc":
                return await client.infer(model, infer_inputs, outputs=requested, client_timeout=timeout)
            return await client.infer(model, infer_inputs, outputs=requested)

        result = await self._call(f"infer({model})", op, model)
        out: dict[str, np.ndarray] = {}
        for name in outputs:
            arr = result.as_numpy(name)
            if arr is None:
                raise InferenceError(f"{model} returned no output {name!r}")
            # np.frombuffer views of the response are read-only; callers normalise in place.
            out[name] = arr if arr.flags.writeable else arr.copy()
        return out

    async def infer_many(
        self, model: str, requests: Sequence[dict[str, np.ndarray]], outputs: list[str]
    ) -> list[dict[str, np.ndarray] | InferenceError]:
        """Send every request concurrently; results in order, an InferenceError in place of each bad one.

        TritonUnavailable / CircuitOpen abort the whole call (the remaining
        requests are cancelled): if the server cannot be reached, none of them
        can be served, and the caller should back off as a whole.
        """

        async def one(req: dict[str, np.ndarray]) -> dict[str, np.ndarray] | InferenceError:
            try:
                return await self.infer(model, req, outputs)
            except InferenceError as exc:
                return exc

        if not requests:
            return []
        first: list[dict[str, np.ndarray] | InferenceError] = []
        if self.breaker.state != CLOSED and len(requests) > 1:
            # The circuit admits one trial call. Sent together with the others, it would be
            # cancelled as soon as a sibling fails fast with CircuitOpen, so the breaker would
            # never see it settle and stay half-open for good (a stalled stream after Triton
            # is back). So the first request goes alone; the rest follow once it got through.
            first = [await one(requests[0])]
            requests = requests[1:]
        tasks = [asyncio.ensure_future(one(r)) for r in requests]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        if pending:
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        # Read every finished task's exception (so asyncio does not log "never retrieved"),
        # and raise the first failure in request order, so the error is deterministic.
        failures = [t.exception() for t in tasks if t.done() and not t.cancelled()]
        for exc in failures:
            if exc is not None:
                raise exc
        return first + [t.result() for t in tasks]

    # -- model conveniences ------------------------------------------------------------------

    async def encode_texts(self, texts: list[str]) -> np.ndarray:
        """``text_encoder`` embeddings, float32 ``[len(texts), D]``; the first bad text raises InferenceError."""
        if not texts:
            dim = _output_dim(await self.model_config(TEXT_MODEL), "EMBEDDING")
            return np.zeros((0, dim), dtype=np.float32)
        requests = [{"TEXT": np.array([[t.encode("utf-8")]], dtype=np.object_)} for t in texts]
        results = await self.infer_many(TEXT_MODEL, requests, ["EMBEDDING"])
        rows = []
        for i, res in enumerate(results):
            if isinstance(res, InferenceError):
                raise InferenceError(f"text {i} ({texts[i][:40]!r}): {res}") from res
            rows.append(res["EMBEDDING"].reshape(-1))
        return np.stack(rows).astype(np.float32, copy=False)

    async def encode_items(self, items: list[ItemInputs]) -> list[ItemVectors | InferenceError]:
        """``item_encoder`` vectors per item, an InferenceError in place of each item Triton rejected."""
        prepared: list[dict[str, np.ndarray] | InferenceError] = []
        for item in items:
            try:
                prepared.append(_item_request(item))
            except InferenceError as exc:
                prepared.append(exc)
        sendable = [p for p in prepared if not isinstance(p, InferenceError)]
        answers = iter(await self.infer_many(ITEM_MODEL, sendable, ITEM_OUTPUTS))
        out: list[ItemVectors | InferenceError] = []
        for item, req in zip(items, prepared):
            res = req if isinstance(req, InferenceError) else next(answers)
            if isinstance(res, InferenceError):
                out.append(res)
                continue
            out.append(
                ItemVectors(
                    item_id=item.item_id,
                    fused=res["FUSED"].reshape(-1),
                    text=res["TEXT_EMB"].reshape(-1),
                    audio=res["AUDIO_EMB"].reshape(-1),
                    video=res["VIDEO_EMB"].reshape(-1),
                    mask=res["MASK"].reshape(-1),
                )
            )
        return out


def _item_request(item: ItemInputs) -> dict[str, np.ndarray]:
    """The ``item_encoder`` request for one item, shapes checked here so a bad item fails alone."""
    req: dict[str, np.ndarray] = {"TEXT": np.array([[item.text.encode("utf-8")]], dtype=np.object_)}
    if item.waveform is not None:
        wav = np.asarray(item.waveform, dtype=np.float32)
        if wav.ndim == 1:
            wav = wav[None, :]
        if wav.ndim != 2 or wav.shape[0] != 1 or wav.shape[1] == 0:
            raise InferenceError(f"item {item.item_id}: WAVEFORM must be [n] or [1, n], got {wav.shape}")
        req["WAVEFORM"] = np.ascontiguousarray(wav)
    if item.frames is not None:
        frames = np.asarray(item.frames)
        if frames.dtype != np.uint8:
            # Casting float frames would silently turn [0, 1] pixels into black.
            raise InferenceError(f"item {item.item_id}: FRAMES must be uint8, got {frames.dtype}")
        if frames.ndim == 4:
            frames = frames[None]
        if frames.ndim != 5 or frames.shape[0] != 1 or frames.shape[-1] != 3 or frames.shape[1] == 0:
            raise InferenceError(
                f"item {item.item_id}: FRAMES must be [N, H, W, 3] or [1, N, H, W, 3], got {frames.shape}"
            )
        req["FRAMES"] = np.ascontiguousarray(frames)
    return req


def _output_dim(config: dict, output: str) -> int:
    for spec in config.get("output", []):
        if spec.get("name") == output:
            return int(spec["dims"][-1])
    raise InferenceError(f"model config {config.get('name')!r} has no output {output!r}")
