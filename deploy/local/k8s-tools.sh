#!/usr/bin/env bash
# Creates .cache/k8s-tools: a venv of its own with checkov, the security linter that
# tests/unit/test_k8s.py runs over deploy/k8s. Kept out of .venv on purpose: checkov pulls in
# ~100 packages (boto3, networkx, its own pinned pydantic/jsonschema ...) that would fight
# avrec's pins. Idempotent and cached: a second run only compares a stamp and exits.
#
#   deploy/local/k8s-tools.sh          # then: .cache/k8s-tools/bin/checkov --version
set -euo pipefail
cd "$(dirname "$0")/../.."

# Bump on purpose (and rerun the test): a newer checkov brings new checks.
CHECKOV_VERSION="${AVREC_CHECKOV_VERSION:-3.3.30}"
VENV=.cache/k8s-tools

PYTHON="${AVREC_PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for cand in python3.11 python3.12 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PYTHON="$(command -v "$cand")"; break; fi
  done
fi
if [ -z "$PYTHON" ]; then
  echo "error: no python3 found: install python3.11 or set AVREC_PYTHON=/path/to/python3" >&2
  exit 1
fi

# uv: from PATH, else the private copy under .cache/tools (the one setup-env.sh uses too).
source deploy/local/uv.sh

stamp="$VENV/.avrec-installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "checkov==$CHECKOV_VERSION" ] && [ -x "$VENV/bin/checkov" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$UV" venv -q --python "$PYTHON" "$VENV"
"$UV" pip install -q --python "$VENV/bin/python" "checkov==$CHECKOV_VERSION"
echo "checkov==$CHECKOV_VERSION" > "$stamp"
echo "k8s tools ready: $VENV/bin/checkov $("$VENV/bin/checkov" --version)"
