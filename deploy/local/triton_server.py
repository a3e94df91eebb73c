"""Triton Inference Server 2.51 from the ``nvidia-pytriton`` wheel, serving ``triton_models/``.

The wheel carries ``tritonserver``, its shared libraries and the Python backend.
What makes it run outside NVIDIA's container (measured on this machine's CPU):

* ``--backend-directory`` holds the wheel's ``backends/python`` plus the
  ``triton_python_backend_stub`` built for *our* Python version;
* ``LD_LIBRARY_PATH`` has the wheel's ``nvidia_pytriton.libs`` and our
  interpreter's libpython directory, and ``PYTHONHOME`` is that interpreter;
* the stub ignores ``PYTHONPATH``, so we pass our site-packages and the project
  root in ``AVREC_TRITON_SYS_PATH`` and each ``model.py`` adds them itself.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import sys
import urllib.request
from pathlib import Path

from deploy.local.exceptions import MissingDependency
from deploy.local.service import LocalService, PortSpec
from streams.settings import PROJECT_ROOT


def pytriton_root() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(
            "the nvidia-pytriton wheel (which carries tritonserver) is not installed in this "
            "environment. Run `make env` (or `uv pip install nvidia-pytriton==0.5.14`)."
        )
    return Path(list(spec.submodule_search_locations)[0])


def triton_sys_path() -> list[str]:
    """Where the Python models find our packages: this environment's site-packages and the project."""
    paths = [p for p in site.getsitepackages() if Path(p).is_dir()]
    return [*paths, str(PROJECT_ROOT)]


class TritonServer(LocalService):
    name = "triton"

    @property
    def marker(self) -> str:
        return str(self.backend_dir)

    @property
    def backend_dir(self) -> Path:
        return self.dir / "backends"

    @property
    def endpoint(self) -> str:
        s = self.stack
        return f"http://{s.host}:{s.triton_http_port} grpc://{s.host}:{s.triton_grpc_port}"

    def ports(self) -> list[PortSpec]:
        s = self.stack
        return [
            PortSpec(s.triton_http_port, "AVREC_STACK__TRITON_HTTP_PORT"),
            PortSpec(s.triton_grpc_port, "AVREC_STACK__TRITON_GRPC_PORT"),
            PortSpec(s.triton_metrics_port, "AVREC_STACK__TRITON_METRICS_PORT"),
        ]

    def _binary(self) -> Path:
        binary = pytriton_root() / "tritonserver" / "bin" / "tritonserver"
        if not binary.exists():
            raise MissingDependency(f"{binary} is missing: reinstall nvidia-pytriton==0.5.14.")
        return binary

    def prepare(self) -> None:
        root = pytriton_root() / "tritonserver"
        ver = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = root / "python_backend_stubs" / ver / "triton_python_backend_stub"
        if not stub.exists():
            raise MissingDependency(
                f"nvidia-pytriton has no Python backend stub for Python {ver}; use Python 3.8-3.13."
            )
        dest = self.backend_dir / "python"
        dest.mkdir(parents=True, exist_ok=True)
        for f in [*(root / "backends" / "python").iterdir(), stub]:
            # Copy then rename: replacing a binary that a lingering process still executes
            # would fail with "Text file busy"; a rename never does.
            tmp = dest / f".{f.name}.tmp"
            shutil.copy2(f, tmp)
            os.replace(tmp, dest / f.name)
        if not self.stack.triton_model_repository.is_dir():
            raise MissingDependency(f"model repository {self.stack.triton_model_repository} does not exist.")

    def env(self) -> dict[str, str]:
        try:
            libs = pytriton_root().parent / "nvidia_pytriton.libs"
        except MissingDependency:
            return {}
        pyhome = sys.base_prefix
        ld = [str(libs), str(Path(pyhome) / "lib")]
        if os.environ.get("LD_LIBRARY_PATH"):
            ld.append(os.environ["LD_LIBRARY_PATH"])
        return {
            "LD_LIBRARY_PATH": os.pathsep.join(ld),
            "PYTHONHOME": pyhome,
            "AVREC_TRITON_SYS_PATH": os.pathsep.join(triton_sys_path()),
        }

    def argv(self) -> list[str]:
        s = self.stack
        return [
            str(self._binary()),
            f"--model-repository={s.triton_model_repository}",
            f"--backend-directory={self.backend_dir}",
            f"--http-address={s.host}", f"--http-port={s.triton_http_port}",
            f"--grpc-address={s.host}", f"--grpc-port={s.triton_grpc_port}",
            f"--metrics-address={s.host}", f"--metrics-port={s.triton_metrics_port}",
            "--allow-metrics=true", "--allow-gpu-metrics=false",
            "--strict-readiness=true", "--exit-on-error=true", "--log-verbose=0",
            # On SIGTERM Triton waits for open HTTP connections and in-flight requests for
            # --exit-timeout-secs (30 by default): one client's idle keep-alive connection
            # holds it there all that time, our stop's whole wait before SIGKILL. Drain for
            # a third of it instead.
            f"--exit-timeout-secs={max(1, int(s.stop_timeout_s / 3))}",
        ]

    def is_ready(self) -> bool:
        s = self.stack
        url = f"http://{s.host}:{s.triton_http_port}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                return resp.status == 200
        except OSError:
            return False
