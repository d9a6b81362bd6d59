# samlab: `make study` runs the quick profile end to end; `make test` runs the tests and every notebook (CI),
# `make test-all` adds the heavy end-to-end tests.
# Both create .venv on first use and reuse it afterwards (reinstalling only when pyproject.toml changes).

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.samlab-installed
PROFILE ?= params/quick.yaml
RUN_DIR ?= runs/quick
PYTEST_ARGS ?=

export PATH := $(abspath $(BIN)):$(PATH)
export MPLBACKEND ?= Agg
export PYTHONWARNINGS ?= ignore::DeprecationWarning,ignore::FutureWarning

.PHONY: install study test test-all test-fast figures lab clean distclean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch and torchvision first, together, at the versions that work side by side (see README).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (samlab)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

study: install
	$(BIN)/samlab run $(PROFILE)
	$(MAKE) figures

# Every table and figure from the results of $(RUN_DIR), without retraining: figures/<profile>/ (PNG + PDF).
figures: install
	$(BIN)/samlab figures $(RUN_DIR)

# CI's command: everything but the `heavy` end-to-end runs (README, "Tests"), so that it stays within 40 minutes.
test: install
	$(BIN)/python -m pytest tests notebooks --nbval-lax -p no:cacheprovider -m "not heavy" --durations=30 $(PYTEST_ARGS)

# Every test, the heavy ones included (run by hand before a hand-in; the closing note reports it).
test-all: install
	$(BIN)/python -m pytest tests notebooks --nbval-lax -p no:cacheprovider --durations=30 $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest tests -m "not slow" $(PYTEST_ARGS)

lab: install
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf runs/dev runs/quick .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) runs
