# Veil. Two commands matter: `make demo` and `make test`. Everything else is for developers.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROTOS := $(wildcard proto/veil/v1/*.proto)

.PHONY: demo demo-federated test bench proto install clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found; set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start a node on embedded defaults, run an analyst query end to end, print the decrypted result.
demo: $(STAMP)
	$(PY) examples/demo.py

## Federation (issue 6): three member nodes on loopback, one grouped query under Paillier and
## under secret sharing; prints the totals and what each party saw.
demo-federated: $(STAMP)
	$(PY) examples/federated_demo.py

## Run the whole test suite.
test: $(STAMP)
	$(PY) -m pytest -q

## Benchmarks: Veil vs plain DuckDB, Veil's Paillier path vs plain phe, federation, and scale
## (DuckDB vs PostgreSQL vs Spark at 1M, 10M and 100M rows; crypto by worker processes and on a
## Dask cluster). Prints ratios. BENCH_ARGS=--quick for a short run, --keep-postgres to keep the
## loaded tables for the next run.
bench: $(STAMP)
	$(PY) bench/run.py $(BENCH_ARGS)

## Regenerate the committed protobuf/gRPC stubs from proto/.
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -I proto --python_out=client --grpc_python_out=client \
	    --pyi_out=client $(PROTOS)

clean:
	rm -rf $(VENV) .demo .pytest_cache
