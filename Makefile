# One task runner. Every target sets up .venv itself (python3 -m venv + pip install -e).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DB     ?=
MONTH  ?=
OUT    ?= out

.PHONY: venv demo report test bench lint typecheck clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "apim-aoai-proxy needs Python 3.11+ (found: $$($(PYTHON) --version 2>&1)); run: make PYTHON=python3.11 …" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[local,azure,postgres,notebooks,dev]'
	@rm -f $(VENV)/.installed-* && touch $@

## demo: the whole local pipeline: a month of traffic through the local gateway, notebooks 00-04
##       in local mode, the HTML report and the XLSX/CSV statement in $(OUT)/ (DB=URL to keep the data)
demo: venv
	$(PY) -m aoai_helpers demo --out $(OUT) $(if $(DB),--db $(DB))

## report: notebook 04 on a database (DB=URL, default: the spec's) rendered to $(OUT)/report.html
report: venv
	$(PY) -m aoai_helpers notebooks report --out $(OUT) $(if $(DB),--db $(DB)) $(if $(MONTH),--month $(MONTH))

## test: the whole test suite
test: venv
	$(PY) -m pytest

## bench: benchmarks/ (numbers quoted in the README)
bench: venv
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/gateway.py
	$(PY) benchmarks/function.py
	$(PY) benchmarks/report.py

lint: venv
	$(PY) -m ruff check aoai_helpers tests benchmarks
	$(PY) -m ruff format --check aoai_helpers tests benchmarks

typecheck: venv
	$(PY) -m mypy

clean:
	rm -rf $(VENV) data/*.db build dist *.egg-info $(OUT)
