# `make test` and `make demo` each create .venv when missing and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
E2E_STAMP := $(VENV)/.installed-e2e-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: test lint typecheck docs pytest demo bench e2e clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# The browser test's extra (JupyterLab, Playwright) on top of dev; `make test` does not need it.
$(E2E_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,e2e]'
	rm -f $(VENV)/.installed-e2e-*
	touch $(E2E_STAMP)

lint: $(STAMP)
	$(BIN)/ruff format --check weft_nb tests benchmarks scripts
	$(BIN)/ruff check weft_nb tests benchmarks scripts
	$(BIN)/lint-imports  # the layers of docs/architecture.md ([tool.importlinter] in pyproject.toml)

typecheck: $(STAMP)
	$(BIN)/mypy

# The documentation site (mkdocs.yml): --strict fails on a broken link or anchor, a page missing
# from the nav, or an API reference that does not resolve. NO_MKDOCS_2_WARNING silences the
# banner mkdocs-material prints on every build (its end-of-life notice for May 2027).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

pytest: $(STAMP)
	$(BIN)/python -m pytest --nbval-lax tests notebooks

test: lint typecheck docs pytest

demo: $(STAMP)
	$(BIN)/python scripts/demo_notebook.py

BENCH_STAMP := $(VENV)/.bench-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	rm -f $(VENV)/.bench-*
	touch $(BENCH_STAMP)

# Never part of `make test`: figures go to docs/performance.md, verdicts are not pass/fail.
bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench_engine.py
	$(BIN)/python benchmarks/bench_executors.py
	$(BIN)/python benchmarks/bench_observability.py  # per step: off, logging, tracing (ratios)
	$(BIN)/python benchmarks/bench_checkpoint_storage.py  # 1 GiB from a Dask worker to S3 (--mib)

# The browser test (tests/e2e): JupyterLab on loopback, the notebooks run in headless Chromium.
# It needs the system Chromium (Debian: apt-get install chromium; .ci/run installs it). Its tests
# are collected only with -m e2e, so `make test` never runs them. Screenshots: demo-output/.
e2e: $(E2E_STAMP)
	$(BIN)/python -m pytest tests/e2e -m e2e

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build/site
