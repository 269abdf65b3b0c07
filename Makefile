# Digits. `make up` runs the stack, `make test` proves it. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROTOS := $(wildcard protos/digits/v1/*.proto protos/digits/oip/*.proto)
STAMP := $(VENV)/.installed
TRITON_STAMP := .venv-triton/.installed

.PHONY: up down status logs test unit lint protos bench lock clean bench-scaling

up: $(STAMP) digits/v1/__init__.py  ## start the whole stack, healthy, with a model
	$(BIN)/python -m digits.stack up

down:  ## stop everything `make up` started
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m digits.stack down; else echo "Nothing was running."; fi

status: $(STAMP) digits/v1/__init__.py
	$(BIN)/python -m digits.stack status

logs: $(STAMP) digits/v1/__init__.py
	$(BIN)/python -m digits.stack logs

test: $(STAMP) digits/v1/__init__.py $(TRITON_STAMP)  ## lint, type-check, unit and integration tests
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

unit: $(STAMP) digits/v1/__init__.py
	$(BIN)/pytest tests/unit

bench: $(STAMP) digits/v1/__init__.py
	$(BIN)/python -m bench

protos: digits/v1/__init__.py  ## generate Python code and .pyi stubs from protos/

# Generated code only: digits/v1/ (Digits' own API) and digits/oip/ (the Open Inference Protocol).
digits/v1/__init__.py: $(PROTOS) $(STAMP)
	mkdir -p digits/v1 digits/oip
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m grpc_tools.protoc -Iprotos \
		--python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. $(PROTOS)
	touch digits/oip/__init__.py $@

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# The Open Inference Protocol conformance test runs tritonclient in a venv of its own (it needs protobuf < 7).
$(TRITON_STAMP): tests/conformance/requirements.lock
	test -x .venv-triton/bin/python || $(PYTHON) -m venv .venv-triton
	.venv-triton/bin/python -m pip install --quiet --disable-pip-version-check -r tests/conformance/requirements.lock
	touch $@

lock:  ## re-resolve pinned direct dependencies into requirements.lock
	$(BIN)/python -m pip install --quiet pip-tools==7.6.2
	$(BIN)/pip-compile --quiet --strip-extras --extra dev --output-file requirements.lock pyproject.toml

clean: down
	rm -rf $(VENV) .venv-triton digits/v1 digits/oip .run

bench-scaling: $(STAMP) digits/v1/__init__.py  ## throughput and p99 vs inference replicas; fan-out retrain vs trainer workers
	$(BIN)/python -m bench.scaling
