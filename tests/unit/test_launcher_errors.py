"""The local launcher's clear errors: missing JDK, failed download, busy port (no services needed)."""

from __future__ import annotations

import shutil
import socket

import pytest

from deploy.local.exceptions import DownloadFailed, MissingDependency, PortInUse
from deploy.local.kafka_broker import KafkaBroker, java_binary
from deploy.local.process import check_port_free, ephemeral_hint, ephemeral_port_range
from streams.settings import Settings


def test_missing_jdk_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk-here"))
    with pytest.raises(MissingDependency, match="openjdk-17"):
        java_binary()


def test_old_java_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / "bin" / "java"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho \'openjdk version "11.0.2" 2019-01-15\' >&2\n')
    fake.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(MissingDependency, match="Java 11"):
        java_binary()


@pytest.mark.skipif(shutil.which("mvn") is None, reason="needs Maven")
def test_failed_download_names_the_version_and_what_to_do(tmp_path):
    s = Settings(stack={"state_dir": tmp_path / "state", "cache_dir": tmp_path / "cache",
                        "kafka_version": "0.0.0-does-not-exist"})
    with pytest.raises(DownloadFailed, match="0.0.0-does-not-exist") as err:
        KafkaBroker(s).fetch_jars()
    assert "AVREC_STACK__KAFKA_VERSION" in str(err.value)
    # A failed download leaves no half-filled cache that a later run would trust.
    assert not list((tmp_path / "cache").glob("kafka-*/.complete"))


def test_busy_port_names_the_setting_to_change():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(PortInUse, match="AVREC_STACK__MILVUS_PORT"):
            check_port_free("127.0.0.1", port, "AVREC_STACK__MILVUS_PORT")


@pytest.mark.skipif(ephemeral_port_range() is None, reason="needs Linux's ip_local_port_range")
def test_a_client_connected_to_itself_holds_the_port_and_the_error_says_why():
    """The outage tests' restart failures: a client retrying a stopped server whose port lies in
    the ephemeral range is handed that port as its source and connects to itself."""
    low, high = ephemeral_port_range()
    with socket.socket() as probe:  # a port the kernel would hand out as a source port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert low <= port <= high
    with socket.socket() as client:
        client.bind(("127.0.0.1", port))
        client.connect(("127.0.0.1", port))  # TCP simultaneous open: it is connected to itself
        assert client.getpeername() == client.getsockname()
        with pytest.raises(PortInUse, match="ephemeral range") as err:
            check_port_free("127.0.0.1", port, "AVREC_STACK__KAFKA_PORT")
        assert f"below {low}" in str(err.value)
    assert ephemeral_hint(low - 1) == ""
