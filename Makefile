PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/keywatch demo

# Two workers (this project's reference machine has 2 cores). The slow replays (marked `slow`) run
# in `make test-all` and in CI (CI=true), where `make test` runs everything.
PYTEST := $(BIN)/pytest -q -n 2 --dist worksteal
test: $(STAMP)
ifeq ($(CI),true)
	$(PYTEST)
else
	$(PYTEST) -m "not slow"
endif

test-all: $(STAMP)
	$(PYTEST)

lint: $(STAMP)
	$(BIN)/ruff check monitor alerts console tests bench
	$(BIN)/ruff format --check monitor alerts console tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
