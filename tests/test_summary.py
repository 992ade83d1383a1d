"""rocktokens.report.summary on small hand-made artifacts: every number is read from the files, the mapping is stated."""
import json
import math

import pandas as pd
import pytest

from rocktokens.report.summary import PAPER, SummaryInputError, load_artifacts, summary_table, write_summary


def _tsv(df, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, sep="\t", index=False)
    return path


def _json(obj, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def make_artifacts(root, Ks=(10, 20, 30, 40), K=20):
    """One tiny run directory with every artifact the summary reads; returns {input key: path}."""
    cands = [{"K": k, "coverage": k / 100, "jaccard_avg": 1.0 - k / 100, "jaccard_min_n": 0.5} for k in Ks]
    chosen = {"K": K, "evidence": {"candidates": cands, "min_jaccard": 0.7, "rule_met": True},
              "corpus": {"n_types": 400}, "median_density": 0.4, "median_density_ctx": 0.123}
    grp = lambda n, c: {"median_grad_norm": n, "median_cos_balanced": c, "n_types": 5}  # noqa: E731
    gradients = {"checkpoint": "opd-2", "groups": {"rock": grp(0.02, 0.05), "high_kl": grp(0.6, 0.02),
                                                     "random": grp(0.1, 0.001)},
                 "mann_whitney": {"grad_norm:rock_vs_high_kl": {"p": 1.5e-4, "n_a": 5, "n_b": 5}}}
    pg = lambda e, l_, p: {"median_kl_early": e, "median_kl_late": l_, "wilcoxon_p": p}  # noqa: E731
    persistence = {"early": "opd-1", "late": "opd-2", "groups": {"rock": pg(0.2, 0.2, 0.9),
                                                                   "high_kl": pg(2.0, 1.0, 1e-9),
                                                                   "random": pg(0.5, 0.5, 0.4)}}
    table1 = pd.DataFrame({"benchmark": ["math"] * 2 + ["ifeval"] * 2,
                           "label": ["Frequency", "Rock count", "Frequency", "Rock count"],
                           "r": [0.05, -0.42, float("nan"), float("nan")], "p": [0.6, 0.004, float("nan"), float("nan")]})
    table2 = pd.DataFrame({"benchmark": ["math", "ifeval"], "n_candidates": [40, 40], "strong_pillar": [3, 0],
                           "neutral": [36, 39], "strong_stumbling": [0, 1], "mixed": [1, 0],
                           "baseline_acc": [0.5, 0.25]})
    sign = pd.DataFrame({"scope": ["all", "all", "all", "core"], "benchmark": ["math", "ifeval", "combined", "combined"],
                         "n_negative": [4, 0, 4, 2], "n_positive": [0, 1, 1, 0], "p_two_sided": [0.125, 1.0, 0.375, 0.5]})
    mt = pd.DataFrame({"benchmark": ["math", "math", "ifeval"], "family": ["token", "window", "token"],
                       "n_tests": [40, 40, 40], "bonferroni_rejections": [1, 5, 0], "bh_q0.05_rejections": [2, 6, 0],
                       "bh_q0.2_rejections": [3, 7, 1]})
    arms = pd.DataFrame({"arm": ["base", "frz", "rnd"], "lam": [1.0, 0.0, 0.0], "windows": ["rock", "rock", "random"],
                         "optimizer": ["adamw"] * 3, "K": [K] * 3, "masked_share": [0.31, 0.3, 0.29],
                         "rock_tokens_share": [0.2, 0.19, 0.2], "update_s_median": [2.0, 1.25, 1.3],
                         "update_speedup": [1.0, 1.6, 2 / 1.3], "speedup_reference": ["base"] * 3,
                         "matched_ratio": [math.nan, math.nan, 0.97]})
    facc = pd.DataFrame({"arm": ["base", "base", "frz", "frz", "rnd", "rnd"], "step": [0, 8, 0, 8, 0, 8],
                         "pass@1": [0.1, 0.2, 0.1, 0.19, 0.1, 0.05], "ci_low": [0.05] * 6, "ci_high": [0.3] * 6})
    acc = pd.DataFrame({"checkpoint": ["teacher", "stage1", "opd-2", "opd-10", "teacher", "opd-10"],
                        "benchmark": ["math", "math", "math", "math", "hard_avg", "hard_avg"],
                        "pass@1": [0.9, 0.3, 0.35, 0.4, 0.5, 0.2]})
    return {"rocks": _json(chosen, root / "rocks" / "R.json"),
            "gradients": _json(gradients, root / "geometry" / "gradients.json"),
            "persistence": _json(persistence, root / "geometry" / "persistence.json"),
            "probe": _json({"verdict": "refuted"}, root / "geometry" / "optimizer_probe.json"),
            "table1": _tsv(table1, root / "knockout" / "table1.tsv"),
            "table2": _tsv(table2, root / "knockout" / "table2.tsv"),
            "sign_test": _tsv(sign, root / "knockout" / "sign_test.tsv"),
            "multiple_testing": _tsv(mt, root / "knockout" / "multiple_testing.tsv"),
            "freeze_arms": _tsv(arms, root / "freeze" / "arms.tsv"),
            "freeze_accuracy": _tsv(facc, root / "freeze" / "accuracy.tsv"),
            "accuracy": _tsv(acc, root / "eval" / "accuracy.tsv")}


def _row(t, contains):
    hit = t[t["quantity"].str.contains(contains, regex=False)]
    assert len(hit) == 1, (contains, hit["quantity"].tolist())
    return hit.iloc[0]


def test_every_number_is_read_from_the_artifacts(tmp_path):
    t = summary_table(load_artifacts(make_artifacts(tmp_path / "run")))
    assert list(t["section"].unique())[0].startswith("Rock Tokens")
    # rock analysis: coverage at K*, density ctx vs 18.5 %, the Jaccard mapping K <= K*, K >= 1.5 K*, K*/2
    r = _row(t, "coverage of the corpus KL at the chosen K (K=20)")
    assert r.value == pytest.approx(0.20) and r.paper_value == PAPER["coverage_K"] and r.source == "rocks/R.json"
    r = _row(t, "context-consistent")
    assert r.value == pytest.approx(0.123) and r.this_run == "12.3 %" and r.paper == "18.5 %"
    assert _row(t, "all occurrences").value == pytest.approx(0.4)
    assert _row(t, "K ≤ K*").value == pytest.approx(0.80)  # min over K in {10, 20}
    r = _row(t, "K ≥ 1.5·K*")
    assert r.value == pytest.approx(0.60) and "{30, 40}" in r.quantity  # min over K in {30, 40}
    assert _row(t, "average Jaccard at K ≈ K*/2 (K=10)").value == pytest.approx(0.9)
    assert _row(t, "share of the observed vocabulary").value == pytest.approx(20 / 400)
    # geometry
    assert _row(t, "median ‖ḡ‖ — Rock tokens").value == 0.02
    assert _row(t, "median cos(ḡ, G_balanced) — Rare high-KL").value == 0.02
    r = _row(t, "median KL early → late — Rare high-KL")
    assert r.value == pytest.approx(-0.5) and "p=1.0e-09" in r.this_run and "opd-1 → opd-2" in r.note
    assert _row(t, "Mann–Whitney").value == 1.5e-4
    assert _row(t, "Is Adam the cause").this_run == "REFUTED"
    # knockout: census per benchmark with the paper's row, Table 1's |r| of a negative r, survivors, sign tests
    r = _row(t, "Strong Pillars (math ↔ MATH-500)")
    assert r.this_run == "3 / 40 (7.5 %)" and r.paper == "7 / 200 (3.5 %)"
    assert _row(t, "Strong Stumbling Blocks (ifeval ↔ IFEval)").value == pytest.approx(1 / 40)
    assert _row(t, "mixed").value == pytest.approx(1 / 40)  # shown only where present
    assert _row(t, "baseline accuracy of the post-OPD student (ifeval").value == 0.25
    r = _row(t, "max |r| over the predictors (math)")
    assert r.value == pytest.approx(0.42) and "Rock count" in r.this_run and r.paper_value == 0.063 and not r.note
    assert _row(t, "min p over the predictors (math)").value == pytest.approx(0.004)
    r = _row(t, "max |r| over the predictors (ifeval)")  # every r undefined (constant Δ): said, not a crash
    assert math.isnan(r.value) and r.this_run == "n/a" and "undefined for 2 of 2" in r.note
    r = _row(t, "multiple-testing correction (math)")
    assert r.this_run == "Bonferroni 1, BH(q=0.2) 3 of 40 tests" and r.value == 1  # token family, not window
    r = _row(t, "(all, combined)")
    assert r.this_run == "4 : 1 (p=0.38)" and r.paper == "10 : 0 (p=0.002)"
    assert _row(t, "(core, combined)").paper_value == 0.031
    # freeze: the speed-up is labelled as the in-DAG ratio; final pass@1 per arm
    r = _row(t, "speed-up")
    assert "NOT a benchmark" in r.quantity and r.value == pytest.approx(1.6) and "bench_freeze" in r.note
    assert _row(t, "masked share of response tokens, rock freeze (arm frz, K=20)").value == pytest.approx(0.3)
    assert "matched ratio 0.97" in _row(t, "random control").this_run
    r = _row(t, "— arm rnd")
    assert r.value == pytest.approx(0.05) and "step 0: 0.100" in r.this_run and "degradation" in r.paper
    # accuracy: the final OPD checkpoint is opd-10 (numeric order, not lexical)
    r = _row(t, "pass@1 on math")
    assert r.value == pytest.approx(0.4) and "opd-10 0.400" in r.this_run and "opd-2" not in r.this_run
    assert _row(t, "hard_avg").value == pytest.approx(0.2)


def test_large_K_not_measured_is_said_and_files_written(tmp_path):
    paths = make_artifacts(tmp_path / "run", Ks=(5, 10, 15, 20), K=20)
    outs = {k: tmp_path / "out" / f"summary.{k}" for k in ("md", "tsv", "parquet", "html")}
    t = write_summary(paths, outs, "toy")
    r = _row(t, "K ≥ 1.5·K*")
    assert math.isnan(r.value) and "not measured" in r.this_run and "1.5·K* = 30" in r.this_run
    md = outs["md"].read_text()
    assert md.startswith("# This run vs the paper") and "| not measured: rocks.Ks tops out at 20" in md
    assert "max \\|r\\|" in md  # pipes inside cells are escaped
    back = pd.read_csv(outs["tsv"], sep="\t")
    assert back["quantity"].tolist() == t["quantity"].tolist()
    assert pd.read_parquet(outs["parquet"])["value"].tolist() == pytest.approx(t["value"].tolist(), nan_ok=True)
    page = outs["html"].read_text()
    assert page.count("<table>") == t["section"].nunique() and "18.5 %" in page
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in outs.values())


def test_without_probe_and_without_a_freeze_arm(tmp_path):
    paths = make_artifacts(tmp_path / "run")
    del paths["probe"]
    arms = pd.read_csv(paths["freeze_arms"], sep="\t")
    _tsv(arms[arms["arm"] == "base"], paths["freeze_arms"])
    t = summary_table(load_artifacts(paths))
    assert not t["quantity"].str.contains("Adam|speed-up|masked share").any()
    assert t["quantity"].str.contains("arm base").any()


@pytest.mark.parametrize("breaks, message", [
    (lambda p: p["rocks"].write_text(json.dumps({"K": 20})), r"R.json lacks evidence"),
    (lambda p: p["table2"].write_text("benchmark\tn_candidates\nmath\t4\n"),
     r"table2.tsv lacks column\(s\) \['strong_pillar'"),
    (lambda p: p["accuracy"].unlink(), r"accuracy artifact not found: .*eval/accuracy.tsv"),
    (lambda p: p["gradients"].write_text("{not json"), r"gradients artifact .* is not valid json"),
])
def test_bad_input_is_one_clear_error_and_nothing_written(tmp_path, breaks, message):
    paths = make_artifacts(tmp_path / "run")
    breaks(paths)
    outs = {k: tmp_path / "out" / f"summary.{k}" for k in ("md", "tsv", "parquet", "html")}
    with pytest.raises(SummaryInputError, match=message):
        write_summary(paths, outs, "toy")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_planted_arms_are_described_by_their_role_and_never_taken_for_the_rock_freeze(tmp_path):
    paths = make_artifacts(tmp_path / "run")
    arms = pd.read_csv(paths["freeze_arms"], sep="\t")
    planted = arms[arms["arm"] == "frz"].assign(arm="pillars", planted="pillar", masked_share=0.12,
                                                delta_vs_reference=-0.1, mde_vs_reference=0.05)
    arms = pd.concat([arms.iloc[:1], planted, arms.iloc[1:]], ignore_index=True)  # listed before the rock freeze
    _tsv(arms, paths["freeze_arms"])
    facc = pd.read_csv(paths["freeze_accuracy"], sep="\t")
    _tsv(pd.concat([facc, facc[facc["arm"] == "frz"].assign(arm="pillars")]), paths["freeze_accuracy"])
    t = summary_table(load_artifacts(paths))
    q = t["quantity"]
    assert t.loc[q.str.startswith("masked share of response tokens, rock freeze"), "quantity"].str.contains("arm frz").all()
    row = t[q.str.contains("planted pillar types and their windows at λ=0 \\(arm pillars")]
    assert len(row) == 1 and row["this_run"].iloc[0] == "12.0 %"
    acc = t[q.str.contains("arm pillars \\(λ=0, planted pillar types and their windows, adamw\\)")]
    assert len(acc) == 1 and "vs base -0.100 (detectable ≥ 0.05)" in acc["this_run"].iloc[0]
    assert acc["paper"].iloc[0].startswith("beyond the paper: a planted role")
