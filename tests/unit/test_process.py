"""ManagedProcess: pid files, stop, and no orphans left behind when a server dies at start-up."""

from __future__ import annotations

import sys
import time

from deploy.local.process import ManagedProcess, pid_alive


def test_stop_kills_children_left_behind_by_a_dead_leader(tmp_path):
    child_pid_file = tmp_path / "child.pid"
    # The leader starts a child in its own process group, then dies at once (like tritonserver
    # exiting after a failed model load while a Python stub lingers).
    script = (
        "import subprocess, sys, pathlib;"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', '{tmp_path}']);"
        f"pathlib.Path('{child_pid_file}').write_text(str(p.pid))"
    )
    proc = ManagedProcess("svc", tmp_path / "svc", marker=str(tmp_path))
    proc.start([sys.executable, "-c", script, str(tmp_path)])
    deadline = time.monotonic() + 10
    while not child_pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(child_pid_file.read_text())
    while proc.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not proc.running() and proc.exited_early()
    assert pid_alive(child)
    assert proc.stop(timeout_s=5) is False  # the leader was already gone...
    for _ in range(50):
        if not pid_alive(child):
            break
        time.sleep(0.05)
    assert not pid_alive(child)  # ...but its orphaned child was killed
    assert not proc.pid_file.exists()


def test_start_and_stop_a_live_process(tmp_path):
    proc = ManagedProcess("sleeper", tmp_path / "run", marker=str(tmp_path))
    pid = proc.start([sys.executable, "-c", "import time; time.sleep(60)", str(tmp_path)])
    assert proc.pid() == pid and proc.running()
    assert proc.stop(timeout_s=5) is True
    assert not pid_alive(pid) and not proc.pid_file.exists()


def test_stop_kills_children_that_outlive_a_leader_stopping_on_sigterm(tmp_path):
    """tritonserver on SIGTERM: it exits after its own exit timeout, and its Python stubs,
    which ignore the signal, were left running, orphaned, with a model's memory each."""
    child_pid_file = tmp_path / "child.pid"
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    script = (
        "import subprocess, sys, pathlib, time;"
        f"p = subprocess.Popen([sys.executable, '-c', {stubborn!r}, '{tmp_path}']);"
        f"pathlib.Path('{child_pid_file}').write_text(str(p.pid));"
        "time.sleep(120)"
    )
    proc = ManagedProcess("svc", tmp_path / "svc", marker=str(tmp_path))
    leader = proc.start([sys.executable, "-c", script, str(tmp_path)])
    deadline = time.monotonic() + 10
    while not child_pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(child_pid_file.read_text())
    time.sleep(0.3)  # the child has set its handler
    assert proc.stop(timeout_s=5) is True
    assert not pid_alive(leader)
    for _ in range(50):
        if not pid_alive(child):
            break
        time.sleep(0.05)
    assert not pid_alive(child)
