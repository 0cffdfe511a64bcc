# The front door. `make test` and `make demo` set everything up themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The test harness's Redis (devtools.redis_server starts one there when none answers; CI too).
# REDIS_URL is the harness's variable, not the product's: tests/conftest.py hands it to what the
# tests start as GATEWAYZ_REDIS_URL. Exported to the test targets only; `make run` and `make demo`
# run without it (env -u: one exported in the shell, as for `make test`, would otherwise reach
# the product, which still reads it as the old name of GATEWAYZ_REDIS_URL), so they read the
# product's GATEWAYZ_* variables and nothing else.
REDIS_URL ?= redis://127.0.0.1:6379/0
test test-deps: export REDIS_URL := $(REDIS_URL)

.PHONY: install test test-deps lint format run demo docs bench bench-quick soak torture clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

# One pytest process per core (at most 4: every one shares the harness's Redis), tests handed out
# one at a time except the heavy end-to-end modules' (marked xdist_group("heavy"): one process
# runs them one after another, so no two of them compete for the cores). PYTEST_WORKERS=0 runs
# everything in this process.
PYTEST_WORKERS ?= auto
test: install
	$(BIN)/python -m devtools.redis_server -- $(BIN)/python -m pytest --durations=25 \
		--numprocesses=$(PYTEST_WORKERS) --maxprocesses=4 --dist=loadgroup $(PYTEST_ARGS)

# The tests of each side on the OLDEST versions of its dependencies pyproject.toml allows, and
# everything on the NEWEST releases: one venv per environment under .venv-matrix/ (oldest-gateway:
# a gateway's environment, redis-py 5.0.1 and uvicorn 0.24.0 among them; oldest-aggregator: the
# aggregator's own; newest), pinned by devtools/constraints/<env>.txt (devtools/dep_matrix.py).
# Not part of `make test` (CI runs it after); ARGS="--only oldest-gateway", ARGS="-- -k raw".
test-deps: install
	$(BIN)/python -m devtools.dep_matrix $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

run: install
	env -u REDIS_URL $(BIN)/python -m aggregator $(ARGS)

# The docs site: reference pages regenerated from the code, then built with every warning an
# error (broken links included) into build/site.
docs: install
	$(BIN)/python -m devtools.docs_reference
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The demo needs its own extras only (no test tools): a venv made for it gets those.
$(BIN)/.demo-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $@

demo: $(BIN)/.demo-installed
	env -u REDIS_URL $(BIN)/python -m devtools.demo $(ARGS)

# prometheus-redis-client (a peer, measured side by side) pins redis<5 although it runs on
# redis 5+: installed without its dependencies, for the benchmarks only. The gateway benchmark's
# peer (prometheus-fastapi-instrumentator, with its dependencies: prometheus_client and
# starlette, both there already) and py-spy (to profile a worker) are for the benchmarks only
# too; it also needs `wrk` (Debian: apt-get install wrk). Redone when this file changes: a venv
# installed before a benchmark dependency was added gets it.
$(BIN)/.bench-installed: $(BIN)/.installed Makefile
	$(BIN)/pip install --quiet --no-deps 'prometheus-redis-client==0.6.0'
	$(BIN)/pip install --quiet 'prometheus-fastapi-instrumentator==8.1.0' 'py-spy>=0.4'
	touch $@

bench: $(BIN)/.bench-installed
	$(BIN)/python -m bench $(ARGS)

bench-quick: $(BIN)/.bench-installed
	$(BIN)/python -m bench --quick $(ARGS)

soak: install
	$(BIN)/python -m devtools.soak $(ARGS)

# A random fault schedule against real processes, every README invariant checked after it
# (devtools/torture). SEED replays one (default: a fresh one, printed); DURATION in seconds;
# ARGS="--cluster", "--faults oom,proxy_cut", "--for 1800" (seeds back to back), "--keep DIR".
DURATION ?= 60
torture: install
	$(BIN)/python -m devtools.torture $(if $(SEED),--seed $(SEED)) --duration $(DURATION) $(ARGS)

clean:
	rm -rf $(VENV) .venv-matrix .pytest_cache .mypy_cache .ruff_cache *.egg-info
