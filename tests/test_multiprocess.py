"""The OPD trainer under `accelerate launch --num_processes 2` (CPU, gloo) against one process.

Same tiny models, prompts and seeds; every rank generates the same rollouts (same weights, same per-request seeds),
takes its share of each global batch, and the gradients are summed over ranks (loss normalised by the global
token count Z, then DDP's mean x num_processes). Mathematically identical to one process; numerically the sums
are grouped differently, so the two runs agree within float32 rounding, amplified a little by Adam over 4 updates.

Tolerance: per-step loss within 1e-5 relative, final weights within 5e-5 absolute (measured with the forward going
through the DDP wrapper: 1.5e-6 and 3.9e-6); both ranks end with identical weights.

The forward must go through the DDP wrapper (`rocktokens.models.final_hidden`): calling the inner HF module skips
DDP's gradient all-reduce and the ranks drift apart (measured before the fix: max |w_rank0 - w_rank1| = 2.4e-2
after 4 updates) -- this test is what caught it.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("mp_opd_worker.py")
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 5e-5


def _run(cmd, out: Path):
    out.mkdir(parents=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    r = subprocess.run(cmd + ["--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return json.loads((out / "result.json").read_text()), load_file(out / "weights.safetensors")


@pytest.mark.slow
def test_two_processes_match_one(tiny_world, tiny_models, tmp_path):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(list(tiny_world["world"]["stage2_prompts"]["prompt"][:16])))
    args = ["--student", str(tiny_models["student"]), "--teacher", str(tiny_models["teacher"]),
            "--tokenizer", str(tiny_world["compact"]), "--prompts", str(prompts)]
    one, w1 = _run([sys.executable, str(WORKER), *args], tmp_path / "one")
    two, w2 = _run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                    "0", str(WORKER), *args], tmp_path / "two")
    assert one["num_processes"] == 1 and two["num_processes"] == 2
    assert two["backend"] == "gloo" and "MULTI_CPU" in two["distributed_type"]
    ranks = [load_file(tmp_path / "two" / f"weights_rank{r}.safetensors") for r in (0, 1)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0]), "the two ranks ended with different weights"
    h1, h2 = one["history"], two["history"]
    assert [h["step"] for h in h1] == [h["step"] for h in h2] == [1, 2, 3, 4]
    for a, b in zip(h1, h2):
        assert a["mean_response_len"] == b["mean_response_len"]  # the same rollouts were sampled
        assert a["lr"] == b["lr"], (a["lr"], b["lr"])  # accelerate must not step the schedule once per process
        assert abs(a["loss"] - b["loss"]) <= LOSS_RTOL * abs(a["loss"]), (a["loss"], b["loss"])
    assert w1.keys() == w2.keys()
    diff = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    w0 = load_file(Path(tiny_models["student"]) / "model.safetensors")
    moved = max(float((w1[k] - w0[k]).abs().max()) for k in w1 if k in w0)
    print(f"\nmax |w_1proc - w_2proc| = {diff:.2e} (training moved weights by up to {moved:.2e})")
    assert moved > 100 * WEIGHT_ATOL  # the comparison is not vacuous: training changed the weights
    assert diff <= WEIGHT_ATOL
