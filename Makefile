# Two commands for a new user: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED := $(abspath ../shared)
FEATCACHE_DATA ?= $(if $(wildcard $(SHARED)/data/clothing-dataset-small),$(SHARED)/data/clothing-dataset-small,)
FEATCACHE_WEIGHTS ?= $(if $(wildcard $(SHARED)/weights/xception_imagenet_notop.weights.h5),$(SHARED)/weights/xception_imagenet_notop.weights.h5,imagenet)
export FEATCACHE_DATA FEATCACHE_WEIGHTS

.PHONY: install demo test test-slow lint docs bench bench-profile clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The images: $FEATCACHE_DATA (../shared's when present), else clothing-dataset-small, downloaded once into
# Keras' cache folder by `featcache demo-data` ($FEATCACHE_DEMO_URL names another archive).
demo: install
	@data="$$($(BIN)/featcache demo-data)" && set -x && \
		$(BIN)/featcache extract "$$data" -o cache/features.h5 --weights "$(FEATCACHE_WEIGHTS)"
	$(BIN)/featcache info cache/features.h5
	$(BIN)/featcache train-head cache/features.h5 --out cache/head
	$(BIN)/featcache compare cache/features.h5 --head cache/head --out cache/compare

test: install
	$(BIN)/ruff check featcache tests benchmarks
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m slow

# The benchmark suite (well over an hour on 2 cores): table on stdout, Markdown, JSON and PNG in bench-results/.
bench: install
	@test -n "$(FEATCACHE_DATA)" || { echo "set FEATCACHE_DATA to a folder of train/validation/test class folders"; exit 1; }
	$(BIN)/python -m benchmarks.bench --data "$(FEATCACHE_DATA)" --weights "$(FEATCACHE_WEIGHTS)" $(BENCH_ARGS)

# Where stage one's CPU time goes, per image: read, hash, decode, forward pass (about a minute).
bench-profile: install
	$(BIN)/python -m benchmarks.profile_stage_one --data "$(FEATCACHE_DATA)" --weights "$(FEATCACHE_WEIGHTS)"

# docs/cli.md: every command's --help, which tests/test_docs.py checks is current.
docs: install
	$(BIN)/python -m tests.test_docs

lint: install
	$(BIN)/ruff check featcache tests benchmarks
	$(BIN)/ruff format --check featcache tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
