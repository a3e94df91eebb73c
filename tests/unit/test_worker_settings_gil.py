"""The worker's GIL switch interval (WorkerSettings.gil_switch_interval_ms)."""

from __future__ import annotations

import sys

from streams.settings import WorkerSettings
from streams.worker import set_gil_switch_interval


def test_the_worker_shortens_the_switch_interval_and_zero_leaves_it_alone():
    before = sys.getswitchinterval()
    try:
        set_gil_switch_interval(WorkerSettings().gil_switch_interval_ms)
        assert sys.getswitchinterval() == 0.001
        sys.setswitchinterval(0.005)
        set_gil_switch_interval(0)
        assert sys.getswitchinterval() == 0.005
    finally:
        sys.setswitchinterval(before)
