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

# SeaweedFS's `weed` (the S3 server docker-compose.yml and overlays/in-cluster run) for
# tests/integration/infra/test_s3_seaweedfs.py, built with Go from the Go module proxy into
# .bench/seaweedfs/bin (gitignored). Not part of `make test` or CI: the build takes ~8 CPU-minutes
# (~30 min on a busy 2-core machine) and ~4 GB of module and build cache; without it those tests
# skip and the object-store contract runs on moto only. The proxy has no SeaweedFS release tags,
# so this is a pinned development revision (4.53, 2026-11-09), newer than the image's 4.48.
# Built as the main module: its go.mod has a replace directive, which `go install` refuses.
.PHONY: seaweedfs
SEAWEEDFS_MODULE := github.com/seaweedfs/seaweedfs@v0.0.0-20261109003541-7506e5f91cd6
seaweedfs: .bench/seaweedfs/bin/weed

.bench/seaweedfs/bin/weed:
	rm -rf .bench/seaweedfs/src && mkdir -p .bench/seaweedfs/bin
	cp -R "$$(go mod download -json $(SEAWEEDFS_MODULE) | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')" .bench/seaweedfs/src
	chmod -R u+w .bench/seaweedfs/src
	cd .bench/seaweedfs/src && CGO_ENABLED=0 GOFLAGS='-mod=mod -buildvcs=false' go build -trimpath -o ../bin/weed.part ./weed
	mv .bench/seaweedfs/bin/weed.part $@
	rm -rf .bench/seaweedfs/src
