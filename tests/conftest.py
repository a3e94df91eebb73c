"""Shared fixtures: one real local stack per test session, fresh names per test.

The test stack runs on its own ports and state dir (``.stack-test/``) so that a
developer's ``make run`` stack on the default ports is never touched. The ports lie
below Linux's ephemeral range (32768-60999): the outage tests stop a server while
clients keep reconnecting to it, and a client's connect to a dead port inside that
range can pick the port itself as its source and connect to itself, holding the
port so that the restart fails with "address in use". Settings
travel through the environment, so worker subprocesses started by tests see the
same stack.

``AVREC_TEST_KEEP_STACK=1`` leaves the stack running after the session (faster
local iterations; the next session reuses it).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("AVREC_TEST_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))

_TEST_ENV = {
    "AVREC_STACK__STATE_DIR": str(PROJECT_ROOT / ".stack-test"),
    "AVREC_STACK__KAFKA_PORT": "29092",
    "AVREC_STACK__KAFKA_CONTROLLER_PORT": "29093",
    "AVREC_STACK__TRITON_HTTP_PORT": "28000",
    "AVREC_STACK__TRITON_GRPC_PORT": "28001",
    "AVREC_STACK__TRITON_METRICS_PORT": "28002",
    "AVREC_STACK__MILVUS_PORT": "29530",
    "AVREC_STACK__KAFKA_HEAP": "512m",
}
for _k, _v in _TEST_ENV.items():
    os.environ.setdefault(_k, _v)
os.environ.setdefault("AVREC_ENCODERS__MEDIA_ROOTS", f'["{SHARED_DATA}", "/tmp"]')

from streams.settings import Settings, get_settings  # noqa: E402  (after the env is set)


def pytest_collection_modifyitems(config, items):
    # Tests that need ../shared/data skip cleanly where it is absent (the core suite makes its own data).
    if SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"{SHARED_DATA} not present")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def settings() -> Settings:
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings):
    """The real Kafka, Milvus Lite and Triton, started once for the whole session."""
    from deploy.local.stack import LocalStack

    local = LocalStack(settings)
    local.up(reuse=True)
    yield local
    if os.environ.get("AVREC_TEST_KEEP_STACK") != "1":
        local.down()


@pytest.fixture
def unique() -> str:
    """A fresh suffix for topic, group and collection names (Milvus names allow [A-Za-z0-9_])."""
    return uuid.uuid4().hex[:12]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA
