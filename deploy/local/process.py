"""A detached, pid-file managed process: the building block of each local service.

Each service runs in its own session (``start_new_session``) so that a Ctrl-C in
the shell that ran ``avrec stack up`` does not take the stack down with it, and
``down`` can signal the whole process group (Triton's Python stubs included).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local.exceptions import PortInUse

log = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    # A zombie (exited, not yet reaped) counts as dead.
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().split(b") ", 1)[1][:1] != b"Z"
    except (FileNotFoundError, IndexError):
        return True


def port_owner(port: int) -> str:
    """Best-effort description of who listens on ``port`` (for error messages)."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="inet"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                if conn.pid:
                    try:
                        proc = psutil.Process(conn.pid)
                        return f"pid {conn.pid} ({' '.join(proc.cmdline()[:3])})"
                    except psutil.Error:
                        return f"pid {conn.pid}"
    except Exception:  # psutil may lack permissions; the message still helps without it
        pass
    return "another process"


def ephemeral_port_range() -> tuple[int, int] | None:
    """The kernel's range for clients' source ports (Linux), or None where unknown."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return None


def ephemeral_hint(port: int) -> str:
    """Why a server port inside the ephemeral range is fragile, or '' when it is outside it.

    A client that keeps reconnecting to a stopped server on such a port can be given
    that very port as its source and connect to itself (TCP simultaneous open); it then
    holds the port, and the server's restart fails with "address in use".
    """
    rng = ephemeral_port_range()
    if rng is None or not rng[0] <= port <= rng[1]:
        return ""
    return (
        f" Port {port} lies in this machine's ephemeral range ({rng[0]}-{rng[1]}), where a "
        "client retrying a stopped server can connect to itself and hold the port; "
        f"pick a port below {rng[0]}."
    )


def check_port_free(host: str, port: int, setting: str) -> None:
    """Raise :class:`PortInUse` with a fix if ``host:port`` cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as the servers themselves set it: connections lingering in
        # TIME_WAIT after a restart don't count, only a live listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortInUse(
                f"port {port} on {host} is in use by {port_owner(port)} ({exc.strerror}). "
                f"Stop that process, or move avrec to a free port with {setting}=<port>."
                + ephemeral_hint(port)
            ) from None


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class ManagedProcess:
    """A process started detached, tracked by ``<dir>/<name>.pid``, logging to ``<dir>/<name>.log``."""

    name: str
    run_dir: Path
    marker: str  # a string that must appear in /proc/<pid>/cmdline, guarding against pid reuse
    env: dict[str, str] = field(default_factory=dict)
    _popen: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The live process named by the pid file, or None."""
        pid = self._recorded_pid()
        if pid is None or not pid_alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return pid
        return pid if self.marker in cmdline else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, argv: list[str], cwd: Path | None = None) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        with open(self.log_file, "ab") as logf:
            logf.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            logf.flush()
            proc = subprocess.Popen(
                argv,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(cwd) if cwd else None,
                env=env,
                start_new_session=True,
            )
        self._popen = proc
        self.pid_file.write_text(str(proc.pid))
        log.info("%s started, pid %d, log %s", self.name, proc.pid, self.log_file)
        return proc.pid

    def exit_code(self) -> int | None:
        """The exit status, when this object started the process and it has ended."""
        return self._popen.poll() if self._popen is not None else None

    def exited_early(self) -> bool:
        """True when the process this object started (or the pid file names) has died."""
        if self._popen is not None:
            return self._popen.poll() is not None
        return self.pid_file.exists() and self.pid() is None

    def _recorded_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _group_leftovers(self, pgid: int) -> list[int]:
        """Live processes still in the service's process group (e.g. Triton's Python stubs
        after tritonserver itself died), recognised by our state dir in their command line."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                stat = (proc / "stat").read_bytes()
                if int(stat.split(b") ", 1)[1].split()[2]) != pgid:
                    continue
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue
            if str(self.run_dir.parent) in cmdline or self.marker in cmdline:
                found.append(int(proc.name))
        return found

    def stop(self, timeout_s: float) -> bool:
        """SIGTERM the process group, wait, then SIGKILL. Returns True if it was running."""
        pid = self.pid()
        if pid is None:
            # The leader is gone, but its children may linger (a failed start): kill them too.
            recorded = self._recorded_pid()
            if recorded is not None:
                self._kill_leftovers(recorded, grace_s=0.0)
            self.pid_file.unlink(missing_ok=True)
            return False
        self._signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.1)
        if pid_alive(pid):
            log.warning("%s (pid %d) did not stop within %.0fs; killing it", self.name, pid, timeout_s)
            self._signal_group(pid, signal.SIGKILL)
            for _ in range(50):
                if not pid_alive(pid):
                    break
                time.sleep(0.1)
        # tritonserver that gives up on its own exit timeout ("Exiting immediately") leaves its
        # Python stubs running, orphaned, with a model's memory each: they go with it.
        self._kill_leftovers(pid, grace_s=2.0)
        self.pid_file.unlink(missing_ok=True)
        return True

    def _kill_leftovers(self, pgid: int, grace_s: float) -> None:
        """SIGKILL what is left of the group once its leader is gone, after ``grace_s`` to exit alone."""
        deadline = time.monotonic() + grace_s
        leftovers = self._group_leftovers(pgid)
        while leftovers and time.monotonic() < deadline:
            time.sleep(0.1)
            leftovers = self._group_leftovers(pgid)
        for child in leftovers:
            log.warning("%s: killing leftover process %d of a stopped server", self.name, child)
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass

    @staticmethod
    def _signal_group(pid: int, sig: int) -> None:
        try:
            os.killpg(os.getpgid(pid), sig)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log yet)"
        return "\n".join(text.splitlines()[-lines:])
