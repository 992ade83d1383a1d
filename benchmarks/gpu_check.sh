#!/usr/bin/env bash
# `make gpu-check`: the paper-scale code paths on one GPU in <= 8 minutes, then the GPU figures.
#   1. the smoke DAG (configs/smoke.yaml + configs/gpu_check.yaml) end to end with vLLM for teacher samples,
#      evaluation, knockout and the OPD rollouts (colocated engine, weight sync after every update, sleep mode),
#      and the trainer under `accelerate launch` (1 process, FSDP2, bf16);
#   2. benchmarks/bench_rollouts.py at the real Qwen3-4B shape: HF generate vs the vLLM engine incl. sync;
#   3. benchmarks/bench_scoring.py on the GPU (per-token scoring, full Qwen3 vocabulary).
# Run it in the GPU environment (envs/gpu.yaml) on a machine with a GPU: `make gpu-check` (PYTHON=... to choose
# the interpreter). Everything lands in results/gpu_check/ (the DAG's outputs, gpu_check.log with the figures).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=results/gpu_check
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
"$PY" - <<'PYEOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu-check needs a CUDA GPU (torch.cuda.is_available() is False)")
try:
    import vllm
except ImportError:
    sys.exit("gpu-check needs vLLM: create the GPU environment with `conda env create -f envs/gpu.yaml`")
import transformers, accelerate
print(f"GPU: {torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB; "
      f"torch {torch.__version__}, vllm {vllm.__version__}, transformers {transformers.__version__}, "
      f"accelerate {accelerate.__version__}")
PYEOF
start=$(date +%s)
echo "== 1/3 smoke DAG with vLLM + accelerate/FSDP2 (configs/gpu_check.yaml)"
"$PY" -m snakemake --cores "$(nproc)" --resources gpus=1 --configfile configs/smoke.yaml configs/gpu_check.yaml \
    --rerun-incomplete
dag=$(( $(date +%s) - start ))
echo "smoke DAG on the GPU: ${dag} s"
"$PY" - <<'PYEOF'
import pandas as pd
d = "results/gpu_check"
print(pd.read_csv(f"{d}/eval/distillation_checkpoints.tsv", sep="\t").to_string(index=False))
h = pd.read_parquet(f"{d}/checkpoints/stage2/history.parquet") if __import__("os").path.exists(f"{d}/checkpoints/stage2/history.parquet") else None
if h is not None:
    print(h[["step", "loss", "mean_response_len"]].to_string(index=False))
PYEOF
echo "== 2/3 rollouts: HF generate vs the vLLM engine (Qwen3-4B shape, bf16)"
"$PY" benchmarks/bench_rollouts.py --device cuda --scale paper --prompts 40 --prompt-len 256 --new 1024 --steps 3 \
    --out "$OUT/bench_rollouts.json"
echo "== 3/3 per-token scoring on the GPU"
"$PY" benchmarks/bench_scoring.py --device cuda
echo "gpu-check finished in $(( $(date +%s) - start )) s; figures above and in $OUT/gpu_check.log"
