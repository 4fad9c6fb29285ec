# eventscaler: `make demo` shows it working, `make test` proves it. Both set themselves up on first
# use: a virtual environment in .venv (pinned requirements) and Azurite from npm (package-lock).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
AZURITE := node_modules/.bin/azurite-queue
CONFIG ?= config.example.yaml

.PHONY: install servers run demo test bench compare lint fmt clean soak

install: $(VENV_STAMP) $(AZURITE) ## virtual environment and test tools

# --no-compile: each module is byte-compiled when first imported, not all of boto3's and SciPy's
# thousands up front (43 s of a clean install).
$(VENV_STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -r requirements-dev.txt
	touch $@

$(AZURITE): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: $(VENV_STAMP) ## run the daemon on CONFIG against your current kubeconfig
	$(PY) autoscaler.py run --config $(CONFIG)

demo: $(VENV_STAMP) $(AZURITE) ## the flood story on a local stand-in cluster and Azurite
	$(PY) -m tests.support.demo

servers: ## the sources' real test servers from Debian (rabbitmq, redis, nats, beanstalkd, postgresql, mariadb, prometheus), only those missing
	bash .ci/install-servers

# The suite mostly waits on real servers and daemons (the load stays low), so its files run on
# TEST_WORKERS workers at once; each worker is a session with its own servers.
TEST_WORKERS ?= 4

test: $(VENV_STAMP) $(AZURITE) servers ## unit and end-to-end tests (E2E_KUBECONFIG=... for a real cluster)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: $(VENV_STAMP) $(AZURITE) ## issue 6's benchmark, a few minutes; BENCH_ARGS="--help" for options
	$(PY) -m bench.run $(BENCH_ARGS)

soak: $(VENV_STAMP) $(AZURITE) ## hundreds of rules on changing queues for a while; SOAK_ARGS="--minutes 30"
	$(PY) -m bench.soak $(SOAK_ARGS)

compare: $(VENV_STAMP) ## every scenario: ours vs the KEDA model vs no-poll, against the optimum; plots in build/compare
	$(PY) -m eventscaler.compare

lint: $(VENV_STAMP) ## ruff, mypy and the import contracts (.importlinter)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

fmt: $(VENV_STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache
