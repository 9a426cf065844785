# driftloop developer commands. `make demo` and `make test` work on a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
PROTO_FILES := $(shell find protos -name '*.proto' | sort)
GEN := shared/_gen

.PHONY: install foreign-client kafka demo test test-unit test-integration test-e2e protos lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(VENV)/bin/driftloop demo

# tritonclient in its own venv (.bench/, gitignored): the foreign-client compatibility test runs
# the unmodified client against serving (it cannot share driftloop's process; see benchmarks/).
foreign-client: .bench/foreign-client-venv/.installed

.bench/foreign-client-venv/.installed: benchmarks/foreign_client/setup.sh
	bash benchmarks/foreign_client/setup.sh
	touch $@

# Apache Kafka's jars (.bench/kafka/libs, gitignored) for the tests that run against real Kafka
# as well as the embedded broker (tests/kafka_broker.py). Fetched with Maven; without Java or
# Maven it says which is missing and those tests skip (CI sets DRIFTLOOP_REQUIRE_KAFKA=1: fail).
kafka: .bench/kafka/libs/.fetched

# fetch.sh writes the stamp (the pom's hash) only after a complete fetch; it is idempotent
.bench/kafka/libs/.fetched: tests/kafka/pom.xml tests/kafka/fetch.sh
	bash tests/kafka/fetch.sh
	test ! -f $@ || touch $@

test: install foreign-client kafka
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest -m unit

test-integration: install
	$(PY) -m pytest -m integration

test-e2e: install
	$(PY) -m pytest -m e2e

# Regenerate protobuf/gRPC code from protos/ (tests/unit/shared/test_protos.py fails when it is stale).
protos: install
	find $(GEN)/driftloop -name '*_pb2*.py*' -delete
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m grpc_tools.protoc -I protos --python_out=$(GEN) --grpc_python_out=$(GEN) \
		--mypy_out=$(GEN) $(PROTO_FILES)
	for d in $$(find $(GEN)/driftloop -mindepth 1 -type d -not -name __pycache__); do test -f $$d/__init__.py || touch $$d/__init__.py; done

# ruff, ruff format, mypy, and the import contracts of pyproject.toml (tools/lint_imports.py).
lint: install
	$(VENV)/bin/ruff check shared services tests tools
	$(VENV)/bin/ruff format --check shared services tests tools
	$(VENV)/bin/mypy shared services
	$(PY) tools/lint_imports.py

clean:
	rm -rf $(VENV) .pytest_cache
