"""Shared fixtures: the smoke DAG, run once per test session through the real Snakemake CLI; the real Qwen3
tokenizer, built once per session; a tiny world and tiny models on top of it.

Every test that uses the smoke DAG (the ``smoke_dir`` / ``smoke_results`` fixtures, directly or through another
fixture) is a ``slow`` test: it is marked so here at collection, so ``-m "not slow"`` never builds the DAG even
when a test forgot its marker."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def run_snakemake(workdir, *args, timeout=900, check=True):
    """Run the workflow with the smoke config in ``workdir``; returns the CompletedProcess."""
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    cmd = [*SNAKEMAKE, "--directory", str(workdir), "--configfile", str(REPO / "configs" / "smoke.yaml"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


SMOKE_FIXTURES = ("smoke_dir", "smoke_results")


def pytest_collection_modifyitems(config, items):
    """A test that needs the smoke DAG is slow, whether or not its module marks it."""
    for item in items:
        uses_smoke = any(f in getattr(item, "fixturenames", ()) for f in SMOKE_FIXTURES)
        if uses_smoke and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def smoke_dir(tmp_path_factory):
    """A working directory in which the whole smoke DAG has been built."""
    wd = tmp_path_factory.mktemp("smoke")
    run_snakemake(wd, "--cores", "2")
    return wd


@pytest.fixture(scope="session")
def smoke_results(smoke_dir):
    return smoke_dir / "results" / "smoke"


@pytest.fixture(scope="session")
def qwen3_dir(tmp_path_factory) -> Path:
    """The real Qwen3 tokenizer (tokenizer.json + tokenizer_config.json), built by the library once per session,
    alone in its parent directory. Read-only for the tests: copy it before changing anything."""
    from rocktokens.tokenizer import build_qwen3_tokenizer

    out = tmp_path_factory.mktemp("tok") / "qwen3"
    build_qwen3_tokenizer(out)
    return out


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory, qwen3_dir):
    """A small world with the real Qwen3 tokenizer (the session's ``qwen3_dir``) and its compact tokenizer."""
    from rocktokens.tokenizer import build_compact_tokenizer
    from rocktokens.tokenizer.compact import chat_wrapped
    from rocktokens.world import all_texts, make_world

    d = tmp_path_factory.mktemp("tiny_world")
    cfg = {"n_teacher_corpus": 64, "n_student_corpus": 64, "n_stage1_prompts": 16, "n_stage2_prompts": 16,
           "n_bench_math": 12, "n_bench_ifeval": 8, "n_bench_aime24": 4, "n_bench_aime25": 4, "n_bench_hmmt25": 4}
    world = make_world(cfg, 3)
    build_compact_tokenizer(qwen3_dir, chat_wrapped(qwen3_dir, all_texts(world)), d / "compact")
    return {"dir": d, "world": world, "qwen3": qwen3_dir, "compact": d / "compact"}


@pytest.fixture(scope="session")
def tiny_models(tiny_world):
    """A tiny teacher (MoE) and student (dense) over the compact vocabulary, untrained, saved as HF dirs."""
    from rocktokens.models import build_toy_model, load_tokenizer, save_checkpoint

    tok = load_tokenizer(tiny_world["compact"])
    arch = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1, "head_dim": 16,
            "intermediate_size": 64, "max_position_embeddings": 256}
    out = {}
    for role, extra in [("teacher", {"type": "qwen3_moe", "num_experts": 4, "num_experts_per_tok": 2,
                                     "moe_intermediate_size": 32}), ("student", {"type": "qwen3"})]:
        m = build_toy_model({**arch, **extra}, len(tok), tok, seed=1 if role == "teacher" else 2)
        save_checkpoint(m, tok, tiny_world["dir"] / role)
        out[role] = tiny_world["dir"] / role
    out["tokenizer"] = tok
    return out
