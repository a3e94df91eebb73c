"""CPU time each process of the pipeline spends per event: where a throughput ceiling comes from.

Throughput on a small machine is bounded by the CPU *all* the processes on the
request path burn per event, not only the worker's: the Milvus server scans the
catalogue for every search, and the Kafka broker stores and serves every record
the worker reads and writes (changelogs included). Dividing the cores by the
summed CPU-seconds per event gives the rate those processes can sustain at best.
"""

from __future__ import annotations

import logging
import os

import psutil

log = logging.getLogger(__name__)


def stack_pids(settings) -> dict[str, int]:
    """Pids of the local stack's services that are running on this machine ({} for a remote stack)."""
    from deploy.local.stack import LocalStack

    out = {}
    for name, svc in LocalStack(settings).services.items():
        pid = svc.process.pid()
        if pid is not None:
            out[name] = pid
    return out


class CpuMeter:
    """User + system CPU seconds of named processes between ``start()`` and ``per_event()``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {}
        for name, pid in pids.items():
            try:
                self.procs[name] = psutil.Process(pid)
            except psutil.Error as exc:
                log.warning("not metering %s (pid %s): %s", name, pid, exc)
        self._start: dict[str, float] = {}

    def _cpu(self) -> dict[str, float]:
        out = {}
        for name, p in self.procs.items():
            try:
                t = p.cpu_times()
                out[name] = t.user + t.system
            except psutil.Error:
                pass  # exited: left out of this phase's figures
        return out

    def start(self) -> None:
        self._start = self._cpu()

    def per_event(self, events: int, server_side: tuple[str, ...]) -> dict:
        """CPU ms per event for each process, their sum over ``server_side``, and the rate that sum allows."""
        end = self._cpu()
        ms = {n: round((end[n] - self._start[n]) * 1e3 / max(1, events), 3) for n in end if n in self._start}
        total = sum(v for n, v in ms.items() if n in server_side)
        cores = os.cpu_count() or 1
        return {"cpu_ms_per_event": ms, "server_cpu_ms_per_event": round(total, 3), "cores": cores,
                "cpu_bound_events_per_s": round(cores * 1e3 / total, 1) if total > 0 else None}
