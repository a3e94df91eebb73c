"""The contract every local service follows, and the shared start/wait logic."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from deploy.local.exceptions import AlreadyRunning, ExitedDuringStartup, NotReady
from deploy.local.process import ManagedProcess, check_port_free, ephemeral_hint
from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PortSpec:
    port: int
    setting: str  # the environment variable that moves it, for error messages


@dataclass
class ServiceStatus:
    name: str
    pid: int | None
    ready: bool
    endpoint: str
    log_file: Path


class LocalService(ABC):
    """One real server process of the local stack (Kafka, Triton or Milvus Lite)."""

    name: str = "service"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stack = settings.stack
        self.dir = self.stack.state_dir / self.name
        self.process = ManagedProcess(self.name, self.dir, marker=self.marker, env=self.env())

    # -- what each service defines -------------------------------------------------
    @property
    @abstractmethod
    def marker(self) -> str:
        """A string in the process's command line that identifies it."""

    @abstractmethod
    def ports(self) -> list[PortSpec]: ...

    @abstractmethod
    def argv(self) -> list[str]: ...

    @abstractmethod
    def is_ready(self) -> bool:
        """One cheap readiness probe; must not block for long."""

    @property
    @abstractmethod
    def endpoint(self) -> str: ...

    def env(self) -> dict[str, str]:
        return {}

    def prepare(self) -> None:
        """Install or lay out what the process needs (idempotent, cached)."""

    # -- shared lifecycle ---------------------------------------------------------
    def running(self) -> bool:
        return self.process.running()

    def start(self) -> None:
        if self.running():
            raise AlreadyRunning(
                f"{self.name} is already running (pid {self.process.pid()}). "
                "See `avrec stack status`, or stop it first with `avrec stack down`."
            )
        for spec in self.ports():
            check_port_free(self.stack.host, spec.port, spec.setting)
            if hint := ephemeral_hint(spec.port):
                log.warning("%s: %s (%s).", self.name, hint.strip(), spec.setting)
        self.prepare()
        self.process.start(self.argv(), cwd=self.dir)

    def wait_ready(self, timeout_s: float | None = None) -> float:
        """Poll the readiness probe until it passes; returns the seconds it took."""
        timeout_s = timeout_s or self.stack.ready_timeout_s
        t0 = time.monotonic()
        delay = 0.05
        while True:
            if self.process.exited_early():
                time.sleep(0.5)  # let the dying process's last log lines land before quoting them
                raise ExitedDuringStartup(
                    f"{self.name} exited during start-up (exit status {self.process.exit_code()}). "
                    f"Last lines of {self.process.log_file}:\n{self.process.tail()}"
                )
            try:
                if self.is_ready():
                    took = time.monotonic() - t0
                    log.info("%s ready at %s after %.1fs", self.name, self.endpoint, took)
                    return took
            except Exception as exc:  # a probe error just means "not yet"
                log.debug("%s not ready yet: %s", self.name, exc)
            if time.monotonic() - t0 > timeout_s:
                raise NotReady(
                    f"{self.name} did not become ready within {timeout_s:.0f}s. "
                    f"Last lines of {self.process.log_file}:\n{self.process.tail()}\n"
                    "Raise AVREC_STACK__READY_TIMEOUT_S if the machine is just slow."
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def start_and_wait(self) -> None:
        """Start and wait for readiness; a server that dies at once is given one more try.

        A port freed a moment ago by the previous instance (a restart) is the usual
        cause; a second failure is reported with the log.
        """
        try:
            self.start()
            self.wait_ready()
        except ExitedDuringStartup as first:
            log.warning("%s; retrying once in 2 s", str(first).splitlines()[0])
            self.stop()
            time.sleep(2.0)
            self.start()
            self.wait_ready()

    def stop(self) -> bool:
        return self.process.stop(self.stack.stop_timeout_s)

    def status(self) -> ServiceStatus:
        pid = self.process.pid()
        ready = False
        if pid is not None:
            try:
                ready = self.is_ready()
            except Exception:
                ready = False
        return ServiceStatus(self.name, pid, ready, self.endpoint, self.process.log_file)
