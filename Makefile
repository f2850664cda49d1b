# One task runner. Every target sets up .venv itself (python3 -m venv + pip install -e).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DB     ?= sqlite:///data/aoai_usage.db
MONTH  ?=

.PHONY: venv demo test bench lint typecheck clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "apim-aoai-proxy needs Python 3.11+ (found: $$($(PYTHON) --version 2>&1)); run: make PYTHON=python3.11 …" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[local,azure,postgres,dev]'
	@rm -f $(VENV)/.installed-* && touch $@

## demo: ingest the bundled sample events into data/aoai_usage.db and print the per-BU chargeback
demo: venv
	@mkdir -p data
	$(PY) -m aoai_helpers demo --db $(DB)

## test: the whole test suite
test: venv
	$(PY) -m pytest

## bench: benchmarks/ (numbers quoted in the README)
bench: venv
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/gateway.py
	$(PY) benchmarks/function.py

lint: venv
	$(PY) -m ruff check aoai_helpers tests benchmarks
	$(PY) -m ruff format --check aoai_helpers tests benchmarks

typecheck: venv
	$(PY) -m mypy

clean:
	rm -rf $(VENV) data/*.db build dist *.egg-info
