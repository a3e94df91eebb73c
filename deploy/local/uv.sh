# Sourced by setup-env.sh and k8s-tools.sh, from the repository root with $PYTHON set: UV is uv
# from PATH, else a private copy under .cache/tools (nothing global is changed).
UV="$(command -v uv || true)"
if [ -z "$UV" ]; then
  if [ ! -x .cache/tools/bin/uv ]; then
    "$PYTHON" -m venv .cache/tools
    .cache/tools/bin/pip install -q uv
  fi
  UV=.cache/tools/bin/uv
fi
