# One task runner. Every target sets up .venv itself (python3 -m venv + pip install -e).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DB     ?=
MONTH  ?=
OUT    ?= out

.PHONY: venv demo report test test-stress bench bench-peers lint typecheck clean

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

## report: finance's report of a database (DB=URL, default: the spec's) in $(OUT)/report.html
##         (every month; MONTH=YYYY-MM first, default the latest)
report: venv
	@mkdir -p $(OUT)
	$(PY) -m aoai_helpers report --html $(OUT)/report.html $(if $(DB),--db $(DB)) $(if $(MONTH),--month $(MONTH))

## test: the whole test suite
test: venv
	$(PY) -m pytest

## test-stress: the whole suite three times in a row beside two CPU-bound processes
##              (stress-ng --cpu 2), with the clock at the first minutes of a month
STRESS_NOW  ?= 2027-03-01T00:05:00Z
STRESS_RUNS ?= 3
test-stress: venv
	@command -v stress-ng >/dev/null 2>&1 || { echo "make test-stress needs stress-ng: apt-get install stress-ng" >&2; exit 1; }
	@stress-ng --cpu 2 --quiet & hogs=$$!; trap 'kill $$hogs 2>/dev/null; wait $$hogs 2>/dev/null' EXIT; \
	for run in $$(seq $(STRESS_RUNS)); do \
	  echo "== make test-stress: run $$run of $(STRESS_RUNS), 2 CPU hogs, AOAI_NOW=$(STRESS_NOW)"; \
	  started=$$(date +%s); \
	  AOAI_NOW=$(STRESS_NOW) $(PY) -m pytest || exit 1; \
	  echo "== run $$run passed in $$(( $$(date +%s) - started )) s"; \
	done

## bench: benchmarks/ (numbers quoted in the README)
bench: venv
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/gateway.py
	$(PY) benchmarks/function.py
	$(PY) benchmarks/report.py
	$(PY) benchmarks/consumers.py
	$(PY) benchmarks/startup.py
	$(PY) benchmarks/accuracy.py

## bench-peers: the gateway benchmark with LiteLLM's proxy measured beside it, in the same run
##              (installed, pinned, into bench-results/.peers/, never into .venv)
bench-peers: venv
	$(PY) benchmarks/gateway.py --peers

lint: venv
	$(PY) -m ruff check aoai_helpers tests benchmarks
	$(PY) -m ruff format --check aoai_helpers tests benchmarks

typecheck: venv
	$(PY) -m mypy

clean:
	rm -rf $(VENV) data/*.db build dist *.egg-info $(OUT)
