# The two set-up commands: `make run` (demo archive served on 127.0.0.1:8000) and
# `make test`. Each creates .venv and installs requirements.txt when needed.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell md5sum requirements.txt | cut -c1-12)

.PHONY: install run test lint bench deploy-dry image clean

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip<26.3"
	$(PY) -m pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m chalicelib demo

lint: $(STAMP)
	$(PY) -m ruff check app.py chalicelib tests

test: $(STAMP) lint
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 tests

bench: $(STAMP)
	$(PY) -m chalicelib bench ingest

# the Lambda container image, with buildah (infra/image/build.sh; README "The image")
# PYTHON: whose pip fetches the wheels (CPython 3.11, as in the image)
PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)
image:
	PYTHON=$(PYTHON) infra/image/build.sh

deploy-dry:
	infra/deploy.sh --dry-run

clean:
	rm -rf demo archive .pytest_cache
