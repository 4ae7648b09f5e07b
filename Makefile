# Development entry points. Embedded PostgreSQL/Redis start only for DATABASE_URL/REDIS_URL left unset.
PY ?= python3
VENV := .venv
PYTEST_ARGS ?=
# Fail the recipe if devenv fails: a bare eval "$$(...)" would swallow its exit status.
DEVENV = exports="$$($(VENV)/bin/python -m gpufs.devenv env $(DEVENV_ARGS))" && eval "$$exports"

.PHONY: venv run test lint demo bench stop clean

venv: $(VENV)/.installed

# The pinned requirements first, then the server and the agent themselves, editable and without
# their (looser) dependencies, so `gpufs-agent` and `flask --app app gpufs` run from .venv/bin.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml agent/pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(VENV)/bin/python -m pip install -q --no-deps -e . -e ./agent
	touch $@

run: venv
	$(DEVENV) && exec $(VENV)/bin/gunicorn -c deploy/gunicorn.conf.py app:app

# Tests use their own database and Redis db, so they never wipe what `make run` serves.
test: DEVENV_ARGS = --test
test: venv
	$(DEVENV) && $(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

# A week of a 20-machine fleet for user_id=demo (README); add --follow to keep it reporting live.
demo: venv
	$(DEVENV) && $(VENV)/bin/flask --app app gpufs simulate --clients 20 --days 7 --user demo

# The performance benchmark (bench/README.md): the live fleet's capacity, then figures 1 and 4-7; its own
# database gpufs_bench (created if missing) and Redis db 9 on the servers above; under 10 minutes on two
# cores. BENCH_ARGS="--quick" tries it out, "--port N" (or BENCH_PORT) fixes the port, "--help" lists options.
BENCH_ARGS ?=
bench: venv
	$(DEVENV) && $(VENV)/bin/python -m bench $(BENCH_ARGS)

stop:
	-test -x $(VENV)/bin/python && $(VENV)/bin/python -m gpufs.devenv stop

clean: stop
	rm -rf $(VENV) var
