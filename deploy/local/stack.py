"""``avrec stack up|down|status|logs``: the local stack as one unit.

Start order: Kafka (then its topics), Milvus Lite, Triton. Each service is
started detached and waited on with a readiness probe, never a fixed sleep.
State (Kafka's log dirs, Milvus data, logs, pid files) lives under
``settings.stack.state_dir`` (``.stack/`` by default), so ``down`` then ``up``
keeps every message and vector.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from deploy.local.exceptions import AlreadyRunning, StackError
from deploy.local.kafka_broker import KafkaBroker
from deploy.local.milvus_server import MilvusLiteServer
from deploy.local.service import LocalService, ServiceStatus
from deploy.local.triton_server import TritonServer
from streams.kafka.admin import ensure_topics
from streams.settings import Settings

log = logging.getLogger(__name__)

SERVICE_ORDER = ("kafka", "milvus", "triton")
_CLASSES: dict[str, type[LocalService]] = {
    "kafka": KafkaBroker,
    "milvus": MilvusLiteServer,
    "triton": TritonServer,
}


@dataclass
class UpReport:
    started: list[str]
    reused: list[str]
    seconds: dict[str, float]
    topics: dict[str, str]


class LocalStack:
    def __init__(self, settings: Settings, only: list[str] | None = None) -> None:
        unknown = set(only or []) - set(SERVICE_ORDER)
        if unknown:
            raise StackError(f"unknown service(s) {sorted(unknown)}; choose from {', '.join(SERVICE_ORDER)}")
        self.settings = settings
        names = [n for n in SERVICE_ORDER if not only or n in only]
        self.services: dict[str, LocalService] = {n: _CLASSES[n](settings) for n in names}

    def up(self, reuse: bool = False) -> UpReport:
        """Start every selected service and wait until each is ready.

        A second ``up`` raises :class:`AlreadyRunning` unless ``reuse`` is set,
        in which case running services are kept and only the missing ones start.
        """
        running = [n for n, s in self.services.items() if s.running()]
        if running and not reuse:
            raise AlreadyRunning(
                f"the local stack is already running ({', '.join(running)}). "
                "`avrec stack status` shows it; `avrec stack down` stops it; "
                "`avrec stack up --reuse` starts only what is missing."
            )
        self.settings.stack.state_dir.mkdir(parents=True, exist_ok=True)
        report = UpReport(started=[], reused=running, seconds={}, topics={})
        try:
            for name, svc in self.services.items():
                if name in running:
                    continue
                t0 = time.monotonic()
                svc.start_and_wait()
                report.started.append(name)
                report.seconds[name] = round(time.monotonic() - t0, 2)
                if name == "kafka":
                    report.topics = ensure_topics(self.settings.kafka, self.settings.kafka.topics.all())
        except BaseException:
            # Don't leave half a stack behind: stop what this call started.
            for name, svc in self.services.items():
                if name not in running:
                    svc.stop()
            raise
        return report

    def down(self) -> list[str]:
        stopped = []
        for name in reversed(list(self.services)):
            if self.services[name].stop():
                stopped.append(name)
        return stopped

    def status(self) -> list[ServiceStatus]:
        return [svc.status() for svc in self.services.values()]

    def logs(self, name: str, lines: int = 50) -> str:
        if name not in self.services:
            raise StackError(f"no service {name!r}; choose from {', '.join(self.services)}")
        return self.services[name].process.tail(lines)
