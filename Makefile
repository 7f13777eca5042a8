# Veil. Two commands matter: `make demo` and `make test`. Everything else is for developers.
# Two distributions, installed editable into .venv: client/ (veil) and server/ (veil-server).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --quiet
PYPROJECTS := client/pyproject.toml server/pyproject.toml
PROTOS := $(wildcard client/veil/v1/*.proto)

# What the demo runs: the library and the node, no extras.
DEMO_STAMP := $(VENV)/.installed-demo
# What the tests and benchmarks need: every extra (PostgreSQL, Spark, Dask) and the dev tools.
DEV_STAMP  := $(VENV)/.installed-dev

.PHONY: demo demo-federated test bench proto docs install browser clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found; set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(DEMO_STAMP): $(PY) $(PYPROJECTS)
	$(PIP) install -e ./client -e ./server
	touch $@

$(DEV_STAMP): $(PY) $(PYPROJECTS)
	$(PIP) install -e ./client -e './server[dev]'
	touch $@ $(DEMO_STAMP)

install: $(DEV_STAMP)

## Start a node on embedded defaults, run an analyst query end to end, print the decrypted result.
demo: $(DEMO_STAMP)
	$(PY) examples/demo.py

## Federation (issue 6): three member nodes on loopback, one grouped query under Paillier and
## under secret sharing; prints the totals and what each party saw.
demo-federated: $(DEMO_STAMP)
	$(PY) examples/federated_demo.py

## The console's browser tests (issue 19) drive Debian's chromium through chromium-driver.
## Installed here when missing, if this runs as root with apt-get (as CI does); otherwise this
## stops and says what to install. VEIL_CHROMIUM / VEIL_CHROMEDRIVER point at other binaries.
CHROMIUM       ?= $(or $(VEIL_CHROMIUM),$(shell command -v chromium 2>/dev/null))
CHROMEDRIVER   ?= $(or $(VEIL_CHROMEDRIVER),$(shell command -v chromedriver 2>/dev/null))
browser:
	@if [ -n "$(CHROMIUM)" ] && [ -n "$(CHROMEDRIVER)" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium and chromium-driver for the console's browser tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	        chromium chromium-driver >/dev/null) || { echo "apt-get could not install chromium chromium-driver"; exit 1; }; \
	else \
	    echo "The console's browser tests need Chromium and ChromeDriver, and they are missing."; \
	    echo "On Debian or Ubuntu: sudo apt-get install chromium chromium-driver"; \
	    echo "Elsewhere: set VEIL_CHROMIUM and VEIL_CHROMEDRIVER to a Chromium and its matching driver."; \
	    exit 1; \
	fi

## Run the whole test suite (the console's browser tests included: they never skip).
test: $(DEV_STAMP) browser
	$(PY) -m pytest -q

## Benchmarks: Veil vs plain DuckDB, Veil's Paillier path vs plain phe, federation, scale
## (DuckDB vs PostgreSQL vs Spark at 1M, 10M and 100M rows; crypto by worker processes and on a
## Dask cluster), and the analyst's install (size of the SDK's venv, `import veil` time).
## Prints ratios. BENCH_ARGS=--quick for a short run, --keep-postgres to keep the loaded tables
## for the next run, "--only perf" for one section (issue 22's four ratios; see bench/run.py).
bench: $(DEV_STAMP)
	$(PY) bench/run.py $(BENCH_ARGS)

## Regenerate the committed protobuf/gRPC stubs next to the .proto files in client/veil/v1/.
proto: $(DEV_STAMP)
	$(PY) -m grpc_tools.protoc -I client --python_out=client --grpc_python_out=client \
	    --pyi_out=client $(PROTOS)

## Regenerate docs/errors.md (every ErrorInfo reason, from the code); a test fails when it is stale.
docs: $(DEV_STAMP)
	$(PY) docs/errors_catalogue.py

clean:
	rm -rf $(VENV) .demo .pytest_cache
