# The documented commands. Each target installs what it needs, so a fresh clone works.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The versions the tests passed with; every install here is held to them.
LOCK := requirements.lock

.PHONY: up test lint bench install clean browser-deps lock js widget

# `dev` brings every extra too (the LLM SDKs, the embedded PostgreSQL, OpenTelemetry).
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/nexus up

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# The benchmarks' peers (pgqueuer, procrastinate) are optional extras, installed only here.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP) pyproject.toml $(LOCK)
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

# Re-resolve to the newest versions pyproject.toml allows, in a scratch environment, and write
# them to the lock; run `make clean test` before committing the new lock.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip
	.venv-lock/bin/pip install --quiet -e '.[dev,bench]'
	{ sed -n '/^#/p' $(LOCK); .venv-lock/bin/pip freeze --exclude-editable; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Debian's Chromium for the browser tests (tests/browser); Playwright's own download is not used.
browser-deps:
	command -v chromium || (apt-get update && apt-get install -y chromium)

# The JavaScript client alone: its pinned tools (npm ci), node tests, type check, widget bundle.
# `make test` runs the same checks (tests/js), plus the contract and the Next.js example.
js:
	cd clients/js && npm ci --no-audit --no-fund && npm test && npm run typecheck && npm run check:widget

# Rebuild src/nexus_ingest/dashboard/static/widget.js (served as /widget.js) from clients/js.
widget:
	cd clients/js && npm ci --no-audit --no-fund && npm run build:widget
