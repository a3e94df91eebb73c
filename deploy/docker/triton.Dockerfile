# syntax=docker/dockerfile:1
# Triton Inference Server with avrec's encoders, serving triton_models/ (Python backend).
# Built from the repository root by docker-compose.yml:
#   docker build -f deploy/docker/triton.Dockerfile -t avrec/triton .
#
# 24.10 is Triton 2.51, the same server as the nvidia-pytriton wheel the local stack
# runs, with CUDA 12.6 and the Python backend stub built for the image's Python 3.10.
FROM nvcr.io/nvidia/tritonserver:24.10-py3

# The server runs as triton-server, whose home directory the image does not create:
# the CUDA JIT, torch and Hugging Face caches go to /tmp. Weights are loaded from local files only,
# so a stray hub download fails at once instead of hanging the model load.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CUDA_CACHE_PATH=/tmp/.nv/ComputeCache \
    XDG_CACHE_HOME=/tmp/.cache \
    HF_HOME=/tmp/.cache/huggingface \
    HF_HUB_OFFLINE=1

# The compose healthcheck uses curl.
RUN command -v curl > /dev/null \
 || { apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*; }

# torch 2.7's PyPI wheels are built for CUDA 12.6, matching this image. numpy stays
# below 2: the Python backend returns empty outputs with numpy 2.x.
ARG TORCH_VERSION=2.7.1
RUN mkdir -p /etc/avrec \
 && printf 'numpy>=1.26,<2\ntorch==%s\n' "$TORCH_VERSION" > /etc/avrec/constraints.txt \
 && python3 -m pip install --no-cache-dir -c /etc/avrec/constraints.txt torch numpy

# The project itself, so that each model.py can `import encoders`. pyproject asks for
# Python 3.11 (the worker's); the encoders run on 3.10, so that check is skipped for
# this one package only, and its dependencies are then installed normally, less those
# only the worker uses. nvidia-pytriton is skipped too: it carries a second tritonserver.
ARG WORKER_ONLY_DEPS="nvidia-pytriton faust-streaming aiokafka kafka-python rocksdict pymilvus milvus-lite"
COPY pyproject.toml README.md /src/avrec/
COPY streams /src/avrec/streams
COPY encoders /src/avrec/encoders
COPY deploy /src/avrec/deploy
RUN <<'EOF'
set -eu
python3 -m pip install --no-cache-dir --no-deps --ignore-requires-python /src/avrec
WORKER_ONLY_DEPS="$WORKER_ONLY_DEPS" python3 - > /tmp/avrec-requirements.txt <<'PY'
import os
import re
from importlib.metadata import requires

skip = set(os.environ["WORKER_ONLY_DEPS"].split())
for req in requires("avrec") or []:
    if "extra ==" in req:  # optional extras (dev) are not runtime dependencies
        continue
    name = re.split(r"[\s\[<>=!~;(]", req, maxsplit=1)[0].lower().replace("_", "-")
    if name not in skip:
        print(req)
PY
python3 -m pip install --no-cache-dir -c /etc/avrec/constraints.txt -r /tmp/avrec-requirements.txt
python3 -c "import encoders, numpy, torch; assert numpy.__version__ < '2'"
rm -rf /src/avrec /tmp/avrec-requirements.txt
EOF

# A copy of the model repository, so the image also runs where nothing is mounted
# (compose mounts ./triton_models over it, read-only).
COPY triton_models /models

USER triton-server
CMD ["tritonserver", "--model-repository=/models"]
