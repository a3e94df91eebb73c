"""Milvus Lite in server mode, so the worker, the CLI and the tests share one store.

The client code is plain ``pymilvus.MilvusClient(uri, token)``: point
``AVREC_MILVUS__URI`` at Milvus standalone and nothing else changes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from deploy.local.process import port_open
from deploy.local.service import LocalService, PortSpec


class MilvusLiteServer(LocalService):
    name = "milvus"

    @property
    def marker(self) -> str:
        return str(self.data_dir)

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def endpoint(self) -> str:
        return f"http://{self.stack.host}:{self.stack.milvus_port}"

    def ports(self) -> list[PortSpec]:
        return [PortSpec(self.stack.milvus_port, "AVREC_STACK__MILVUS_PORT")]

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "milvus_lite", "server",
            "--data-dir", str(self.data_dir),
            "--host", self.stack.host, "--port", str(self.stack.milvus_port),
        ]

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
