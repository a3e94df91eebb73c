"""A real avrec worker in a subprocess, on its own app id, topics and collections.

Used wherever a worker must run beside the caller: ``avrec eval --live``, the
benchmarks in ``bench/`` and the tests (``tests/workerproc.py`` adds Kafka
helpers). The worker's settings are ``env`` laid over this process's
environment, so the caller and the worker agree on every name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from streams.kafka.admin import admin_client, ensure_topics
from streams.settings import Settings

# Logged by streams/services/context.py once the worker's replica of the item state has read
# everything written so far (after Faust's own "[^Worker]: Ready" in practice).
READY_MARK = "worker context ready"


def free_port() -> int:
    """A TCP port free on loopback now, below Linux's ephemeral range (32768-60999): a server
    there can lose its port to a client's outgoing connection (see tests/conftest.py)."""
    import random

    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port between 20000 and 32000 on 127.0.0.1")


@dataclass
class WorkerProcess:
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    starts: int = 0
    _log_offset: int = field(default=0)

    @property
    def settings(self) -> Settings:
        """The settings the worker sees (``env`` over this process's environment)."""
        old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            return Settings()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    @property
    def web_url(self) -> str:
        """Where this worker's web server listens (``/metrics``, the read API, the dashboard)."""
        return self.settings.web.url

    def start(self, timeout: float = 120.0) -> None:
        """Create the topics, start the worker, and wait until Faust says it is ready."""
        # Several workers run side by side here: each gets a web port of its own, kept across restarts.
        self.env.setdefault("AVREC_WEB__PORT", str(free_port()))
        s = self.settings
        ensure_topics(s.kafka, s.kafka.topics.all())
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker", "-l", "info"], env={**os.environ, **self.env},
                stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode} (log {self.log_path}):\n{self.tail()}")
            if READY_MARK in self.new_log():
                return
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"worker not ready in {timeout:.0f}s (log {self.log_path}):\n{self.tail()}")

    def new_log(self) -> str:
        """What the worker logged since its last start."""
        with open(self.log_path, "rb") as fh:
            fh.seek(self._log_offset)
            return fh.read().decode(errors="replace")

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log_path.read_bytes().decode(errors="replace").splitlines()[-n:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM (a clean Faust shutdown), SIGKILL after 30 s."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()

    def drop_topics(self) -> list[str]:
        """Delete this worker's topics: those under its topic prefix and Faust's own
        (changelogs, leader topic) under its app id. Returns the names deleted.

        Only for a worker with its own prefix and app id, as every caller here gives it:
        without a prefix this would match the shared topics, so it refuses.
        """
        s = self.settings
        prefix = s.kafka.topic_prefix
        if not prefix or s.app_id == Settings.model_fields["app_id"].default:
            raise ValueError("drop_topics needs a worker with its own topic prefix and app id")
        admin = admin_client(s.kafka, timeout_s=10.0)
        try:
            mine = sorted(t for t in admin.list_topics() if t.startswith(prefix) or t.startswith(f"{s.app_id}-"))
            if mine:
                admin.delete_topics(mine, timeout_ms=30_000)
            return mine
        finally:
            admin.close()

    def drop_collections(self) -> None:
        """Remove this worker's Milvus collections (its items and users)."""
        from streams.vectors.milvus import milvus_client

        m = self.settings.milvus
        client = milvus_client(m)
        try:
            for name in (m.items_collection, m.users_collection):
                if client.has_collection(name):
                    client.drop_collection(name)
        finally:
            client.close()
