"""Milvus Lite (2.5, the C++ core) as a TCP gRPC server, so the worker, the CLI and tests share one store.

Why 2.5 and not the pure-Python 3.x: measured side by side at 100k x 384
(bench/milvus_lite_choice.py, docs/PERFORMANCE.md), 2.5 answers a top-50 search
in ~1.2 ms p50 against ~39 ms, serves 7-10x more batched queries per second and
uses ~4x less memory. Its single-row writes are slow (~60-80 ms), so the worker
batches them.

The ``milvus_lite`` package starts its bundled ``milvus`` binary with
``<db file> <host:port> <log level>`` when given an address
(``milvus_lite.server.Server``); we launch the same command detached. The
client side is plain ``pymilvus.MilvusClient(uri, token)``: point
``AVREC_MILVUS__URI`` at Milvus standalone and nothing else changes.
"""

from __future__ import annotations

import os
from pathlib import Path

from deploy.local.exceptions import MissingDependency
from deploy.local.process import port_open
from deploy.local.service import LocalService, PortSpec


def milvus_lite_bin_dir() -> Path:
    try:
        from milvus_lite.server import BIN_PATH
    except ImportError as exc:
        raise MissingDependency(
            "milvus-lite 2.5 is not installed in this environment: run `make env`."
        ) from exc
    path = Path(BIN_PATH)
    if not (path / "milvus").exists():
        raise MissingDependency(f"{path / 'milvus'} is missing: reinstall milvus-lite==2.5.1.")
    return path


class MilvusLiteServer(LocalService):
    name = "milvus"

    @property
    def marker(self) -> str:
        return str(self.db_file)

    @property
    def db_file(self) -> Path:
        # The binary accepts names matching ^[a-zA-Z0-9.\-_]+$, at most 36 characters.
        return self.dir / "data" / "avrec.db"

    @property
    def endpoint(self) -> str:
        return f"http://{self.stack.host}:{self.stack.milvus_port}"

    def ports(self) -> list[PortSpec]:
        return [PortSpec(self.stack.milvus_port, "AVREC_STACK__MILVUS_PORT")]

    def prepare(self) -> None:
        self.db_file.parent.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        try:
            bin_dir = str(milvus_lite_bin_dir())
        except MissingDependency:
            return {}
        ld = [bin_dir] + ([os.environ["LD_LIBRARY_PATH"]] if os.environ.get("LD_LIBRARY_PATH") else [])
        return {"LD_LIBRARY_PATH": os.pathsep.join(ld)}

    def argv(self) -> list[str]:
        binary = milvus_lite_bin_dir() / "milvus"
        return [str(binary), str(self.db_file), f"{self.stack.host}:{self.stack.milvus_port}", "ERROR"]

    def is_ready(self) -> bool:
        if not port_open(self.stack.host, self.stack.milvus_port):
            return False
        from pymilvus import MilvusClient

        client = MilvusClient(uri=self.endpoint, timeout=2.0)
        try:
            client.list_collections()
            return True
        finally:
            client.close()
