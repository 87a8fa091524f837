# Two commands for a new user:  `make report`  and  `make test`.
# PROFILE defaults to `gpu` on a CUDA machine and `cpu` (the committed reference book) elsewhere;
# `make report PROFILE=quick` is the smoke run of every chapter.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# what pip installs for PyTorch; override e.g. with TORCH_SPEC="torch==2.11.* torchvision"
TORCH_SPEC ?= torch torchvision
PROFILE ?= $(shell $(PY) -c "import torch; print('gpu' if torch.cuda.is_available() else 'cpu')" 2>/dev/null || echo cpu)
# `make report` executes only what is out of date, and nothing when that took longer than this the last time
# (the quick profile has no such limit: it is a smoke run)
MAX_MINUTES ?= 15
PORT ?= 8000
CHAPTERS_PY := $(wildcard chapters/[0-9][0-9]_*.py)

.PHONY: print-torch-spec help setup data sync results report render serve test test-fast clean-quick

help:
	@echo "make report   execute what is out of date in PROFILE (default: gpu with CUDA, else cpu) and render the report"
	@echo "make serve    serve the rendered report on http://localhost:$(PORT)/ (the live sampler needs http)"
	@echo "make test     run the test suite"
	@echo "make results  execute every chapter of PROFILE (results/PROFILE/)"
	@echo "make render   only render results/PROFILE/ into the report"
	@echo "make data     copy/verify/extract MNIST (offline from ../shared/data when present)"
	@echo "make sync     bring every chapter's .py and .ipynb into sync (jupytext)"

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[notebooks,test,report,bench,onnx]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ipykernel)" >/dev/null
	touch $@

data: setup
	$(PY) -m diffusion_lib.data data

sync: setup
	$(VENV)/bin/jupytext --sync $(CHAPTERS_PY)

results: setup data sync
	$(PY) tools/run_chapters.py --profile $(PROFILE)

report: setup data sync
	$(PY) tools/run_chapters.py --profile $(PROFILE) --stale-only $(if $(filter quick,$(PROFILE)),,--max-minutes $(MAX_MINUTES))
	$(PY) tools/render_report.py --profile $(PROFILE)

serve:
	$(PY) -m http.server --bind 127.0.0.1 --directory $(if $(shell command -v quarto),_book,report)/$(PROFILE) $(PORT)

render: setup
	$(PY) tools/render_report.py --profile $(PROFILE)

test: setup data
	$(PY) -m pytest -q

test-fast: setup data
	$(PY) -m pytest -q -m "not slow"

print-torch-spec:
	@echo $(TORCH_SPEC)

clean-quick:
	rm -rf results/quick _book/quick report/quick
