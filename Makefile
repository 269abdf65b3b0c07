# Digits. `make up` runs the stack, `make test` proves it. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROTOS := $(wildcard protos/digits/v1/*.proto)
STAMP := $(VENV)/.installed

.PHONY: up down status logs test unit lint protos bench lock clean

up: $(STAMP) digits/v1/__init__.py  ## start the whole stack, healthy, with a model
	$(BIN)/python -m digits.stack up

down:  ## stop everything `make up` started
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m digits.stack down; else echo "Nothing was running."; fi

status: $(STAMP) digits/v1/__init__.py
	$(BIN)/python -m digits.stack status

logs: $(STAMP) digits/v1/__init__.py
	$(BIN)/python -m digits.stack logs

test: $(STAMP) digits/v1/__init__.py  ## lint, type-check, unit and integration tests
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

unit: $(STAMP) digits/v1/__init__.py
	$(BIN)/pytest tests/unit

bench: $(STAMP) digits/v1/__init__.py
	$(BIN)/python -m bench

protos: digits/v1/__init__.py  ## generate Python code and .pyi stubs from protos/

digits/v1/__init__.py: $(PROTOS) $(STAMP)
	mkdir -p digits/v1
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m grpc_tools.protoc -Iprotos \
		--python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. $(PROTOS)
	touch $@

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

lock:  ## re-resolve pinned direct dependencies into requirements.lock
	$(BIN)/python -m pip install --quiet pip-tools==7.6.2
	$(BIN)/pip-compile --quiet --strip-extras --extra dev --output-file requirements.lock pyproject.toml

clean: down
	rm -rf $(VENV) digits/v1 .run
