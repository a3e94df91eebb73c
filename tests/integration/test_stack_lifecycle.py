"""`stack up` -> `status` -> `down` -> `up` keeps Kafka's data; clear errors for the usual mistakes.

Runs a second, Kafka-only stack in a temporary state dir on its own ports, so the
session stack the other tests share is not disturbed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer

from deploy.local.exceptions import AlreadyRunning, PortInUse
from deploy.local.stack import LocalStack
from streams.kafka.admin import ensure_topics
from streams.settings import Settings, TopicSpec

pytestmark = pytest.mark.stack


def _free_ports(n: int) -> list[int]:
    # Hold every socket open until all are picked, so the n ports are distinct.
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def kafka_only_env(tmp_path):
    broker, controller = _free_ports(2)
    return {
        "AVREC_STACK__STATE_DIR": str(tmp_path / "state"),
        "AVREC_STACK__KAFKA_PORT": str(broker),
        "AVREC_STACK__KAFKA_CONTROLLER_PORT": str(controller),
        "AVREC_STACK__KAFKA_HEAP": "256m",
    }


def _avrec(env: dict, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args], env={**os.environ, **env},
        capture_output=True, text=True, timeout=timeout,
    )


def test_up_status_down_up_keeps_messages(kafka_only_env, stack):
    env = kafka_only_env
    up = _avrec(env, "stack", "up", "--only", "kafka")
    assert up.returncode == 0, up.stderr
    assert "kafka   ready" in up.stdout

    status = _avrec(env, "stack", "status", "--only", "kafka")
    assert status.returncode == 0 and "ready" in status.stdout

    again = _avrec(env, "stack", "up", "--only", "kafka")
    assert again.returncode == 1
    assert "already running" in again.stderr and "avrec stack down" in again.stderr

    settings = Settings(stack={k.split("__")[1].lower(): v for k, v in env.items()})
    ensure_topics(settings.kafka, [TopicSpec(name="keep-me", partitions=1)])
    producer = KafkaProducer(**settings.kafka.kafka_python_config(), acks="all")
    for i in range(10):
        producer.send("keep-me", value=f"msg-{i}".encode())
    producer.flush(30)
    producer.close()

    down = _avrec(env, "stack", "down", "--only", "kafka")
    assert down.returncode == 0 and "kafka" in down.stdout
    stopped = _avrec(env, "stack", "status", "--only", "kafka")
    assert stopped.returncode == 1 and "stopped" in stopped.stdout

    up2 = _avrec(env, "stack", "up", "--only", "kafka")
    assert up2.returncode == 0, up2.stderr
    try:
        consumer = KafkaConsumer("keep-me", **settings.kafka.kafka_python_config(),
                                 auto_offset_reset="earliest", enable_auto_commit=False)
        got: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(got) < 10 and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                got.extend(r.value for r in recs)
        consumer.close()
        assert got == [f"msg-{i}".encode() for i in range(10)]
    finally:
        assert _avrec(env, "stack", "down").returncode == 0


def test_busy_port_and_second_up_give_clear_errors(kafka_only_env, stack):
    env = kafka_only_env
    settings = Settings(stack={k.split("__")[1].lower(): v for k, v in env.items()})
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", settings.stack.kafka_port))
        blocker.listen(1)
        with pytest.raises(PortInUse, match=r"AVREC_STACK__KAFKA_PORT"):
            LocalStack(settings, ["kafka"]).up()
    # Nothing was left running by the failed attempt.
    assert not LocalStack(settings, ["kafka"]).services["kafka"].running()

    # The session stack is running: a second `up` on it refuses and says what to do.
    from streams.settings import get_settings

    with pytest.raises(AlreadyRunning, match="avrec stack status"):
        LocalStack(get_settings()).up()
