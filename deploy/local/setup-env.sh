#!/usr/bin/env bash
# Creates .venv with everything avrec needs, from deploy/requirements.lock.
# Idempotent and cached: uv keeps downloaded wheels (torch and its CUDA wheels,
# about 3 GB) in its cache, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON="${AVREC_PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON="$(command -v "$cand")"; break
    fi
  done
fi
if [ -z "$PYTHON" ]; then
  echo "error: Python 3.11 is required (Triton's Python backend stub is built per version)." >&2
  echo "       Install it (e.g. apt-get install python3.11) or set AVREC_PYTHON=/path/to/python3.11." >&2
  exit 1
fi

# Kafka runs on the machine's JDK 17 and Maven fetches its jars once.
need_apt=()
if ! command -v java >/dev/null 2>&1; then need_apt+=(openjdk-17-jre-headless); fi
if ! command -v mvn >/dev/null 2>&1; then need_apt+=(maven); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need_apt[*]} with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    echo "error: missing ${need_apt[*]}: install them (apt-get install ${need_apt[*]}) and rerun." >&2
    exit 1
  fi
fi

# The dashboard's browser test (tests/integration/test_dashboard.py) drives Debian's chromium
# through chromium-driver. Only the tests need them (the test skips without them), so a
# machine where apt-get cannot run gets a note, not an error.
need_browser=()
if ! command -v chromium >/dev/null 2>&1; then need_browser+=(chromium); fi
if ! command -v chromedriver >/dev/null 2>&1; then need_browser+=(chromium-driver); fi
if [ ${#need_browser[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need_browser[*]} with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_browser[@]}"
  else
    echo "note: ${need_browser[*]} missing: the dashboard's browser test will skip" \
         "(apt-get install ${need_browser[*]} to run it)." >&2
  fi
fi

# uv: from PATH, else the private copy under .cache/tools (the one setup-env.sh uses too).
source deploy/local/uv.sh

stamp=.venv/.avrec-installed
want="$(cat deploy/requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/avrec ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$UV" venv -q --python "$PYTHON" .venv
"$UV" pip install -q --python .venv/bin/python -r deploy/requirements.lock
"$UV" pip install -q --python .venv/bin/python --no-deps -e .
echo "$want" > "$stamp"
echo "environment ready: .venv ($(.venv/bin/python -c 'import torch, numpy; print("torch", torch.__version__, "numpy", numpy.__version__)'))"
