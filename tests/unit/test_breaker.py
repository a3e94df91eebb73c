"""The circuit breaker, the back-off schedule, and the Triton client's retry logic without Triton.

The client tests talk to a closed loopback port (nothing listens) or to a tiny
aiohttp server on loopback that speaks just enough of the KServe v2 protocol:
they exercise our retry/breaker/error classification over a real HTTP exchange.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import time

import numpy as np
import pytest
from aiohttp import web

from encoders.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, backoff_delays
from encoders.client import ItemInputs, ItemVectors, TritonClient
from encoders.exceptions import CircuitOpen, InferenceError, TritonUnavailable
from streams.settings import TritonSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, s: float) -> None:
        self.now += s


# -- breaker -----------------------------------------------------------------------------------


def test_breaker_opens_after_n_consecutive_failures_and_fails_fast(caplog):
    clock = FakeClock()
    br = CircuitBreaker(failures=3, reset_s=5.0, name="t", clock=clock)
    caplog.set_level(logging.INFO, logger="encoders.breaker")
    for i in range(2):
        br.before_call()
        br.record_failure(RuntimeError(f"boom {i}"))
        assert br.state == CLOSED
    br.before_call()
    br.record_failure(RuntimeError("boom 2"))
    assert br.state == OPEN
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "Triton circuit OPEN after 3 failures: boom 2; failing fast for 5.0 s" in msg

    for _ in range(10):
        with pytest.raises(CircuitOpen, match="boom 2"):
            br.before_call()
    # Late failures of calls admitted earlier neither log again nor extend the open period.
    br.record_failure(RuntimeError("late"))
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    clock.advance(4.9)
    with pytest.raises(CircuitOpen):
        br.before_call()
    assert br.retry_in() == pytest.approx(0.1)
    assert issubclass(CircuitOpen, TritonUnavailable)


def test_success_resets_the_consecutive_count():
    br = CircuitBreaker(failures=2, reset_s=1.0, clock=FakeClock())
    br.record_failure("a")
    br.record_success()
    br.record_failure("b")
    assert br.state == CLOSED and br.consecutive_failures == 1


def test_half_open_allows_one_trial_and_success_closes(caplog):
    clock = FakeClock()
    br = CircuitBreaker(failures=1, reset_s=5.0, clock=clock)
    br.record_failure("down")
    assert br.state == OPEN
    clock.advance(5.0)
    assert br.state == HALF_OPEN
    caplog.set_level(logging.INFO, logger="encoders.breaker")
    br.before_call()  # the trial
    with pytest.raises(CircuitOpen, match="trial"):
        br.before_call()  # concurrent callers still fail fast
    clock.advance(2.0)
    br.record_success()
    assert br.state == CLOSED
    assert any("circuit closed, Triton back after 7.0 s" in r.getMessage() for r in caplog.records)
    br.before_call()
    br.before_call()


def test_half_open_trial_failure_reopens_for_a_full_period(caplog):
    clock = FakeClock()
    br = CircuitBreaker(failures=2, reset_s=5.0, clock=clock)
    br.record_failure("x")
    br.record_failure("y")
    clock.advance(5.0)
    caplog.set_level(logging.INFO, logger="encoders.breaker")
    br.before_call()
    br.record_failure("still down")
    assert br.state == OPEN
    # The outage was announced once when the circuit opened; the failed trial does not warn again.
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    assert "trial call failed (still down)" in caplog.records[-1].getMessage()
    clock.advance(4.0)
    with pytest.raises(CircuitOpen, match="still down"):
        br.before_call()
    clock.advance(1.0)
    br.before_call()  # next trial
    br.record_success()
    assert br.state == CLOSED


def test_abandoned_trial_frees_the_slot():
    clock = FakeClock()
    br = CircuitBreaker(failures=1, reset_s=1.0, clock=clock)
    br.record_failure("x")
    clock.advance(1.0)
    br.before_call()
    br.record_abandoned()
    br.before_call()  # a new trial may go
    with pytest.raises(CircuitOpen):
        br.before_call()


def test_breaker_rejects_bad_parameters():
    with pytest.raises(ValueError):
        CircuitBreaker(failures=0, reset_s=1.0)
    with pytest.raises(ValueError):
        CircuitBreaker(failures=1, reset_s=0)


# -- back-off ----------------------------------------------------------------------------------


def test_backoff_grows_exponentially_up_to_the_cap():
    assert backoff_delays(0) == []
    assert backoff_delays(7, base=0.05, cap=2.0, jitter=False) == pytest.approx(
        [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    )


def test_backoff_full_jitter_is_bounded_and_deterministic_with_a_random():
    a = backoff_delays(10, base=0.1, cap=1.0, jitter=random.Random(7))
    b = backoff_delays(10, base=0.1, cap=1.0, jitter=random.Random(7))
    assert a == b
    bounds = backoff_delays(10, base=0.1, cap=1.0, jitter=False)
    assert all(0.0 <= d <= hi for d, hi in zip(a, bounds))
    assert a != bounds  # actually jittered
    many = [backoff_delays(6, base=0.1, cap=1.0)[5] for _ in range(200)]
    assert max(many) <= 1.0 and min(many) >= 0.0 and np.std(many) > 0.1
    with pytest.raises(ValueError):
        backoff_delays(-1)


# -- client against a closed port ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(url: str, protocol: str = "http", **kw) -> TritonSettings:
    base = dict(url=url, protocol=protocol, timeout_s=1.0, max_retries=2, breaker_failures=2, breaker_reset_s=30.0)
    base.update(kw)
    return TritonSettings(**base)


TEXT_REQ = {"TEXT": np.array([[b"hello"]], dtype=np.object_)}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
async def test_closed_port_retries_then_unavailable_then_circuit_open(protocol):
    port = _free_port()
    client = TritonClient(_settings(f"127.0.0.1:{port}", protocol), backoff_base=0.01, rng=random.Random(0))
    async with client:
        for _ in range(2):
            with pytest.raises(TritonUnavailable, match=f"127.0.0.1:{port}.*after 3 attempt") as ei:
                await client.infer("m", TEXT_REQ, ["OUT"])
            assert not isinstance(ei.value, CircuitOpen)
        assert client.breaker.state == OPEN
        t0 = time.perf_counter()
        with pytest.raises(CircuitOpen):
            await client.infer("m", TEXT_REQ, ["OUT"])
        with pytest.raises(CircuitOpen):
            await client.infer_many("m", [TEXT_REQ] * 5, ["OUT"])
        assert time.perf_counter() - t0 < 0.05
        assert await client.ready() is False  # the probe answers even while the circuit is open


# -- client against a fake KServe v2 server --------------------------------------------------------


class FakeTriton:
    """Answers /v2/models/<m>/infer from a script of statuses, then with a valid response."""

    def __init__(self, script: list[int] | None = None, delay_s: float = 0.0) -> None:
        self.script = list(script or [])
        self.delay_s = delay_s
        self.requests: list[dict] = []
        self.config_calls = 0

    async def infer(self, request: web.Request) -> web.Response:
        body = await request.read()
        hlen = request.headers.get("Inference-Header-Content-Length")
        header = json.loads(body[: int(hlen)] if hlen else body)
        self.requests.append(header)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.script:
            status = self.script.pop(0)
            if status == 503:
                return web.Response(status=503, text="Service Unavailable")  # a proxy's plain-text page
            return web.json_response({"error": f"scripted {status}"}, status=status)
        names = {i["name"]: i for i in header["inputs"]}
        if "BAD" in names:
            return web.json_response(
                {"error": "inference input 'BAD' data-type is 'FP32', but model 'm' expects 'BYTES'"}, status=400
            )
        model = request.match_info["model"]
        if model == "item_encoder":
            mask = [1.0, float("WAVEFORM" in names), float("FRAMES" in names)]
            outputs = [
                {"name": n, "datatype": "FP32", "shape": [1, 4], "data": [float(k)] * 4}
                for k, n in enumerate(["FUSED", "TEXT_EMB", "AUDIO_EMB", "VIDEO_EMB"])
            ]
            outputs.append({"name": "MASK", "datatype": "FP32", "shape": [1, 3], "data": mask})
        else:
            outputs = [{"name": "EMBEDDING", "datatype": "FP32", "shape": [1, 4], "data": [0.5, 0.5, 0.5, 0.5]}]
        return web.json_response({"model_name": model, "model_version": "1", "outputs": outputs})

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def config(self, request: web.Request) -> web.Response:
        self.config_calls += 1
        return web.json_response(
            {"name": request.match_info["model"], "output": [{"name": "EMBEDDING", "data_type": "TYPE_FP32", "dims": [4]}]}
        )


@pytest.fixture
async def fake():
    state = FakeTriton()
    app = web.Application()
    app.router.add_post("/v2/models/{model}/infer", state.infer)
    app.router.add_get("/v2/health/ready", state.ready)
    app.router.add_get("/v2/models/text_encoder/ready", state.ready)
    app.router.add_get("/v2/models/{model}/config", state.config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"127.0.0.1:{port}"
    yield state
    await runner.cleanup()


def _fake_client(fake, **kw) -> TritonClient:
    return TritonClient(_settings(fake.url, **kw), backoff_base=0.01, rng=random.Random(0))


async def test_retries_503_then_succeeds(fake):
    fake.script = [503, 503]
    async with _fake_client(fake) as client:
        out = await client.infer("text_encoder", TEXT_REQ, ["EMBEDDING"])
        assert await client.ready() is True
        assert await client.ready("text_encoder") is True
        assert await client.ready("not_loaded") is False
    assert len(fake.requests) == 3
    np.testing.assert_allclose(out["EMBEDDING"], [[0.5, 0.5, 0.5, 0.5]])
    assert out["EMBEDDING"].dtype == np.float32
    assert client.breaker.state == CLOSED and client.breaker.consecutive_failures == 0
    # The request on the wire: BYTES [1, 1], as the text_encoder contract says.
    assert fake.requests[0]["inputs"][0]["datatype"] == "BYTES"
    assert fake.requests[0]["inputs"][0]["shape"] == [1, 1]


async def test_503_every_time_exhausts_retries(fake):
    fake.script = [503] * 10
    async with _fake_client(fake, max_retries=1) as client:
        with pytest.raises(TritonUnavailable, match="503"):
            await client.infer("m", TEXT_REQ, ["EMBEDDING"])
    assert len(fake.requests) == 2


async def test_bad_request_is_not_retried_and_does_not_trip_the_breaker(fake):
    fake.script = [400, 500, 404]
    async with _fake_client(fake, breaker_failures=1) as client:
        for code in (400, 500, 404):
            with pytest.raises(InferenceError, match=f"scripted {code}") as ei:
                await client.infer("m", TEXT_REQ, ["EMBEDDING"])
            assert not isinstance(ei.value, TritonUnavailable)
        assert client.breaker.state == CLOSED
        assert len(fake.requests) == 3  # one attempt each
        await client.infer("m", TEXT_REQ, ["EMBEDDING"])


async def test_timeout_is_retried_then_unavailable(fake):
    fake.delay_s = 0.5
    async with _fake_client(fake, timeout_s=0.1, max_retries=1) as client:
        t0 = time.perf_counter()
        with pytest.raises(TritonUnavailable, match="timed out"):
            await client.infer("m", TEXT_REQ, ["EMBEDDING"])
        assert time.perf_counter() - t0 < 0.45
    assert len(fake.requests) == 2


async def test_infer_many_puts_the_bad_request_error_in_place(fake):
    reqs = [TEXT_REQ, {"BAD": np.zeros((1, 1), np.float32)}, TEXT_REQ, {"TEXT": np.array([["ok"]])}]
    async with _fake_client(fake) as client:
        results = await client.infer_many("text_encoder", reqs, ["EMBEDDING"])
        assert await client.infer_many("text_encoder", [], ["EMBEDDING"]) == []
    assert [type(r).__name__ for r in results] == ["dict", "InferenceError", "dict", "dict"]
    assert "expects 'BYTES'" in str(results[1])
    assert fake.requests[3]["inputs"][0]["datatype"] == "BYTES"  # numpy str arrays go as BYTES


async def test_unsupported_dtype_fails_locally(fake):
    async with _fake_client(fake) as client:
        with pytest.raises(InferenceError, match="no Triton datatype"):
            await client.infer("m", {"X": np.zeros(2, np.complex64)}, ["Y"])
    assert fake.requests == []


async def test_model_config_is_cached(fake):
    async with _fake_client(fake) as client:
        a = await client.model_config("text_encoder")
        b = await client.model_config("text_encoder")
        assert a == b and a["output"][0]["dims"] == [4]
        assert (await client.encode_texts([])).shape == (0, 4)
    assert fake.config_calls == 1


async def test_encode_items_follows_the_contract(fake):
    items = [
        ItemInputs("a", "text only"),
        ItemInputs("b", "with audio", waveform=np.zeros(16000, np.float64)),
        ItemInputs("c", "with video", frames=np.zeros((8, 16, 16, 3), np.uint8)),
        ItemInputs("d", "float frames", frames=np.zeros((8, 16, 16, 3), np.float32)),
    ]
    async with _fake_client(fake) as client:
        out = await client.encode_items(items)
    assert [type(o) for o in out] == [ItemVectors, ItemVectors, ItemVectors, InferenceError]
    assert len(fake.requests) == 3  # the bad item never left the process
    assert [o.item_id for o in out[:3]] == ["a", "b", "c"]
    np.testing.assert_array_equal(out[1].mask, [1, 1, 0])
    np.testing.assert_array_equal(out[2].mask, [1, 0, 1])
    assert out[0].fused.shape == (4,) and out[0].video[0] == 3.0
    by_name = {i["name"]: i for r in fake.requests for i in r["inputs"]}
    assert by_name["TEXT"]["datatype"] == "BYTES" and by_name["TEXT"]["shape"] == [1, 1]
    assert by_name["WAVEFORM"]["datatype"] == "FP32" and by_name["WAVEFORM"]["shape"] == [1, 16000]
    assert by_name["FRAMES"]["datatype"] == "UINT8" and by_name["FRAMES"]["shape"] == [1, 8, 16, 16, 3]
    assert sorted(o["name"] for o in fake.requests[0]["outputs"]) == sorted(
        ["FUSED", "TEXT_EMB", "AUDIO_EMB", "VIDEO_EMB", "MASK"]
    )
