# avrec: the two commands of the README, and a few helpers.
#   make run    set up, bring the local stack up, start a worker with a small demo flowing
#               (avrec demo: the dashboard URL is printed; `avrec run` starts the worker alone)
#   make test   set up, run the whole suite against the real stack, tear down
.PHONY: env run test test-unit stack-up stack-down stack-status lock clean-state

VENV := .venv
AVREC := $(VENV)/bin/avrec

env:
	@deploy/local/setup-env.sh
	@deploy/local/k8s-tools.sh

run: env
	$(AVREC) demo

test: env
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

test-unit: env
	$(VENV)/bin/python -m pytest -q tests/unit $(PYTEST_ARGS)

stack-up: env
	$(AVREC) stack up --reuse

stack-down:
	$(AVREC) stack down

stack-status:
	$(AVREC) stack status

# Re-resolve pinned versions after editing pyproject.toml dependencies.
lock:
	uv pip compile pyproject.toml --extra dev --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_35 -o deploy/requirements.lock

clean-state: stack-down
	rm -rf .stack .stack-test
