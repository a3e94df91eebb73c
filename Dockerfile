# syntax=docker/dockerfile:1
# The avrec streaming worker (`avrec worker`: Faust on Kafka, calling Triton and Milvus).
# Built by docker-compose.yml; see deploy/docker/README.md.
#
# Nothing from ../shared (data, weights) goes into the image: the text tower's
# weights come from a pip package, and trained checkpoints are mounted into Triton.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: resolve and install everything into a venv, copied whole below ----
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv

# torch is a dependency of the project but the worker runs no model (Triton does), so
# `--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu` swaps PyPI's CUDA
# build for the CPU one, several GB smaller. Empty (the default): PyPI's torch.
ARG TORCH_INDEX_URL=
RUN --mount=type=cache,target=/root/.cache/pip \
    if [ -n "$TORCH_INDEX_URL" ]; then \
      pip install --index-url "$TORCH_INDEX_URL" "torch>=2.4" "numpy>=1.26,<2"; \
    fi

# Only what the wheel is built from (pyproject's readme and packages).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY encoders ./encoders
COPY deploy ./deploy
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install . \
 && avrec --help > /dev/null

# ---- runtime ----
FROM ${PYTHON_IMAGE}

# AVREC_STACK__STATE_DIR holds Faust's RocksDB state (a volume in compose). The
# defaults of these paths point inside site-packages: neither writable nor persistent.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AVREC_STACK__STATE_DIR=/var/lib/avrec \
    AVREC_STACK__CACHE_DIR=/var/lib/avrec/cache \
    AVREC_DATA_DIR=/var/lib/avrec/data

# A fixed uid, so volume ownership survives image rebuilds. The state dir is created
# here, owned by that user, so a fresh named volume mounted on it inherits the owner.
RUN groupadd --system --gid 10001 avrec \
 && useradd --system --uid 10001 --gid avrec --home-dir /var/lib/avrec --no-create-home \
      --shell /usr/sbin/nologin avrec \
 && install -d -o avrec -g avrec -m 0750 /var/lib/avrec

COPY --from=build /opt/venv /opt/venv

USER avrec
WORKDIR /var/lib/avrec
CMD ["avrec", "worker"]
