# The one command surface: run, test, lint, proto, bench.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTOS := $(wildcard proto/authq/v1/*.proto)

.PHONY: venv run demo test lint proto proto-check bench bench-quick clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## Generate the gRPC/protobuf code (checked in; `proto-check` fails when stale).
proto: $(STAMP)
	$(BIN)/python proto/generate.py

proto-check: $(STAMP)
	$(BIN)/python proto/generate.py --check

run: $(STAMP)
	$(BIN)/authq-server --listen 127.0.0.1:50051 --data-dir ./var --demo

## A live center: server (./var/demo, fresh each time), simulated branches, console windows
## (text view without a display). Closing the windows or Ctrl-C stops it all. DEMO_ARGS=--help
demo: $(STAMP)
	$(BIN)/python -m authorizer_console.demo --data-dir ./var/demo --fresh $(DEMO_ARGS)

## Everything CI checks: generated code fresh, lint and types clean, the whole suite.
test: $(STAMP)
	$(BIN)/python proto/generate.py --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

## Benchmarks (issue 5): a fresh server, every scenario, baselines in the same run;
## writes bench/out/report.json, report.md and PNG plots.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench --quick

## A local test CA for demos and tests (never production): ./var/tls/ca.pem, server.pem,
## server-key.pem, client.pem, client-key.pem. See "TLS" in the README.
.PHONY: test-ca
test-ca: $(STAMP)
	$(BIN)/python -m server.devtools.make_test_ca ./var/tls
