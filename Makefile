# Set-up and the two front-door commands. `make install` is idempotent: it reinstalls only when
# pyproject.toml or this Makefile changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: install test demo lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile scripts/disable_torchaudio_native.py
	$(PYTHON) -m venv $(VENV)
	# setuptools < 81 keeps pkg_resources, which pyworld and resemblyzer import.
	$(PY) -m pip install --upgrade pip "setuptools<81" wheel
	# torch first, pinned: 2.13.0 is the CPU build on this machine's disk; anything else downloads CUDA builds.
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[teachers,eval,dev,corpus]"
	# The SpeechTokenizer peer's declared dependencies would pull a different torch: install it alone.
	$(PY) -m pip install --no-deps speechtokenizer==1.0.1
	# PyPI's torchaudio (pulled by speechbrain) is a CUDA build: keep its native libraries from loading.
	$(PY) scripts/disable_torchaudio_native.py
	touch $(STAMP)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

demo: install
	$(VENV)/bin/jaxcodec demo --out demo_out

lint: install
	$(VENV)/bin/ruff check jaxcodec teachers scripts tests

clean:
	rm -rf $(VENV) demo_out
