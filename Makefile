# Digits. `make up` runs the stack, `make test` proves it. Everything installs into .venv, from uv.lock.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# uv installs from the lock; the Makefile brings its own, pinned and hash-checked (tools/bootstrap-uv.txt), from
# PyPI like everything else: the machine's pip configuration (other indexes, find-links) is not consulted.
UV := .venv-uv/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy
PROTOS := $(wildcard protos/digits/v1/*.proto protos/digits/oip/*.proto)
STAMP := $(VENV)/.installed
TRITON_STAMP := .venv-triton/.installed
PEERS_STAMP := .venv-peers/.installed .venv-peers-triton/.installed

.PHONY: up down status logs test unit lint protos bench lock clean bench-scaling bench-peers

up: $(STAMP) digits/v1/__init__.py  ## start the whole stack, healthy, with a model
	$(BIN)/python -m digits.stack up

down:  ## stop everything `make up` started
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m digits.stack down; else echo "Nothing was running."; fi

status: $(STAMP) digits/v1/__init__.py
	$(BIN)/python -m digits.stack status

logs: $(STAMP) digits/v1/__init__.py
	$(BIN)/python -m digits.stack logs

test: $(STAMP) digits/v1/__init__.py $(TRITON_STAMP)  ## lint, type-check, import contracts, unit and integration tests
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest

# Unit tests hold no shared state, so they run on up to four cores; the stack suites share one stack each.
unit: $(STAMP) digits/v1/__init__.py  ## the unit tests alone, in well under a minute
	$(BIN)/pytest --numprocesses=auto --maxprocesses=4 tests/unit

bench: $(STAMP) digits/v1/__init__.py
	$(BIN)/python -m bench

protos: digits/v1/__init__.py  ## generate Python code and .pyi stubs from protos/

# Generated code only: digits/v1/ (Digits' own API) and digits/oip/ (the Open Inference Protocol).
# (A wheel gets the same code from setup.py's build step: protos/generate.py serves both.)
digits/v1/__init__.py: $(PROTOS) protos/generate.py $(STAMP)
	$(BIN)/python protos/generate.py
	touch $@

$(UV): tools/bootstrap-uv.txt
	test -x .venv-uv/bin/python || $(PYTHON) -m venv .venv-uv
	PIP_CONFIG_FILE=/dev/null .venv-uv/bin/python -m pip --isolated install --quiet --disable-pip-version-check \
		--index-url https://pypi.org/simple --only-binary :all: --require-hashes -r tools/bootstrap-uv.txt
	touch $@

# Every group: the services, training, local running, development. --locked: the lock is installed as it is,
# and a pyproject.toml that no longer matches it is an error (run `make lock`), never a silent re-resolution.
$(STAMP): uv.lock pyproject.toml setup.py $(UV)
	$(UV) sync --locked --all-extras --all-groups --python $(PYTHON)
	touch $@

# The Open Inference Protocol conformance test runs tritonclient in a venv of its own (it needs protobuf < 7).
$(TRITON_STAMP): tests/conformance/requirements.lock $(UV)
	test -x .venv-triton/bin/python || $(UV) venv --quiet --python $(PYTHON) .venv-triton
	$(UV) pip sync --quiet --python .venv-triton/bin/python --require-hashes tests/conformance/requirements.lock
	touch $@

# The servers Digits is measured against (MLServer, KServe) and the Open Inference client that drives them all, in a
# venv of their own: they pin grpcio < 1.68 and protobuf < 6 (bench/peers/requirements.in).
.venv-peers/.installed: bench/peers/requirements.lock $(UV)
	test -x .venv-peers/bin/python || $(UV) venv --quiet --python $(PYTHON) .venv-peers
	$(UV) pip sync --quiet --python .venv-peers/bin/python --require-hashes bench/peers/requirements.lock
	touch $@

# Triton needs numpy < 2 (bench/peers/triton.in says why), so it has a venv of its own.
.venv-peers-triton/.installed: bench/peers/triton.lock $(UV)
	test -x .venv-peers-triton/bin/python || $(UV) venv --quiet --python $(PYTHON) .venv-peers-triton
	$(UV) pip sync --quiet --python .venv-peers-triton/bin/python --require-hashes bench/peers/triton.lock
	touch $@

lock: $(UV)  ## renew uv.lock and the conformance lock: the newest versions the pins allow, with hashes, from PyPI
	$(UV) lock --upgrade --python $(PYTHON)
	$(UV) pip compile --quiet --upgrade --universal --python-version 3.11 --generate-hashes \
		--custom-compile-command "make lock" --output-file tests/conformance/requirements.lock \
		tests/conformance/requirements.in
	$(UV) pip compile --quiet --upgrade --universal --python-version 3.11 --generate-hashes \
		--custom-compile-command "make lock" --output-file bench/peers/requirements.lock \
		bench/peers/requirements.in
	$(UV) pip compile --quiet --upgrade --universal --python-version 3.11 --generate-hashes \
		--custom-compile-command "make lock" --output-file bench/peers/triton.lock bench/peers/triton.in

clean: down
	rm -rf $(VENV) .venv-triton .venv-peers .venv-peers-triton .venv-uv digits/v1 digits/oip .run

bench-scaling: $(STAMP) digits/v1/__init__.py  ## throughput and p99 vs inference replicas; fan-out retrain vs trainer workers
	$(BIN)/python -m bench.scaling

bench-peers: $(STAMP) digits/v1/__init__.py $(PEERS_STAMP)  ## Digits against MLServer and Triton, one OIP client
	$(BIN)/python -m bench.peers
