"""Tests of the planted-role recovery (rocktokens.recovery.planted): ids, BH, the table, confusion matrix, target, figure."""
from __future__ import annotations

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from rocktokens.recovery.planted import (
    RecoveryInputError,
    confusion,
    freeze_recovery,
    planted_table,
    plot_recovery,
    recovery_table,
    run,
    summary_rows,
    target,
)

REPO = Path(__file__).resolve().parents[1]
KO = {"benchmarks": ["math", "ifeval"], "epsilon": 0.01, "alpha": 0.05, "fdr_q": [0.05, 0.10]}


def test_planted_table_maps_tokens_to_ids():
    id_map = pd.DataFrame({"compact_id": [0, 1, 2, 3], "qwen3_id": [16, 8450, 80022, 99],
                           "token": ["1", " thus", "Hmm", "x"]})
    words = pd.DataFrame({"token": ["1", " thus", "Alright"], "role": ["pillar", "neutral", "neutral"],
                          "why": ["a", "b", "c"], "answer_share": [0.3, np.nan, np.nan]})
    t = planted_table(words, id_map)
    assert t["token_id"].tolist() == [0, 1, -1] and t["qwen3_id"].tolist() == [16, 8450, -1]
    assert t["in_vocab"].tolist() == [True, True, False]
    with pytest.raises(RecoveryInputError, match="decodes from 2 ids"):
        planted_table(words, pd.concat([id_map, id_map.assign(compact_id=9)]))
    with pytest.raises(RecoveryInputError, match="unknown planted role"):
        planted_table(words.assign(role="pillar_ish"), id_map)


# A hand-made knockout: planted types A (pillar, hit), B (pillar, missed: Δ ≈ 0), C (stumbling, hit), D (neutral,
# clean), E (neutral, a raw pillar call whose p does not survive BH), F (stumbling, outside the pool), plus 14
# unplanted candidates with p = 1 that fill the BH family.
PLANTED = pd.DataFrame({
    "token_id": [1, 2, 3, 4, 5, 6], "qwen3_id": [11, 12, 13, 14, 15, 16], "token": list("ABCDEF"),
    "role": ["pillar", "pillar", "stumbling", "neutral", "neutral", "stumbling"], "why": ["w"] * 6,
})
TOKEN = {1: (-0.30, 0.0001), 2: (-0.005, 0.8), 3: (0.20, 0.0002), 4: (0.0, 1.0), 5: (-0.05, 0.04)}
WINDOW = {1: (-0.35, 0.0001), 2: (-0.20, 0.0001), 3: (0.10, 0.01), 4: (-0.10, 0.0003), 5: (-0.05, 0.04)}


def _knockout():
    pool = [1, 2, 3, 4, 5, *range(100, 114)]
    cands = pd.DataFrame({"rank": range(1, len(pool) + 1), "token_id": pool, "freq": 10, "R": 1.0})
    rows = []
    for bench in ("math", "ifeval"):
        for v in pool:
            for policy, table in (("token", TOKEN), ("window", WINDOW)):
                d, p = table.get(v, (0.0, 1.0))
                rows.append({"benchmark": bench, "token_id": v, "policy": policy, "arm": str(v), "n_banned": 1,
                             "delta": d, "p": p, "ci_lo": d - 0.05, "ci_hi": d + 0.05})
    eff = pd.DataFrame(rows)
    from rocktokens.knockout.experiment import categorize

    eff2 = eff.assign(acc=0.5, baseline_acc=0.5)
    cats = categorize(eff2, cands, 0.01, 0.05)
    return cands, eff, cats


@pytest.fixture(scope="module")
def rec():
    cands, eff, cats = _knockout()
    return recovery_table(PLANTED, cands, eff, cats, 0.01, 0.05, 0.05, ["math"])


def test_recovery_table(rec):
    assert set(rec["benchmark"]) == {"math"} and len(rec) == 6 * 3
    tok = rec[rec["policy"] == "token"].set_index("token")
    assert tok["in_pool"].tolist() == [True] * 5 + [False]
    assert tok.at["A", "category"] == "strong_pillar" and tok.at["A", "recovered"]
    assert tok.at["B", "category"] == "neutral" and not tok.at["B", "recovered"]
    assert tok.at["C", "category"] == "strong_stumbling"
    assert tok.at["E", "category"] == "strong_pillar" and tok.at["E", "category_bh"] == "neutral"
    assert tok.at["E", "q_bh"] > 0.05 and tok.at["A", "q_bh"] <= 0.05
    # a planted type outside the pool is reported as such: no effect, no category
    assert pd.isna(tok.at["F", "delta"]) and pd.isna(tok.at["F", "category"]) and pd.isna(tok.at["F", "recovered"])
    eq22 = rec[rec["policy"] == "eq22"].set_index("token")
    assert eq22.at["B", "category"] == "strong_pillar"  # the window rescues the missed pillar
    assert eq22.at["D", "category"] == "strong_pillar"  # ... and makes the clean neutral a pillar
    assert eq22.at["D", "category_bh"] == "strong_pillar"


def test_confusion_sensitivity_and_fdr(rec):
    c = confusion(rec).set_index(["policy", "test", "role"]).sort_index()
    raw = c.loc[("token", "raw")]
    assert raw.at["pillar", "n_in_pool"] == 2 and raw.at["pillar", "called_strong_pillar"] == 1
    assert raw.at["pillar", "sensitivity"] == 0.5
    assert raw.at["pillar", "n_called"] == 2 and raw.at["pillar", "fdr"] == 0.5  # A right, E (neutral) wrong
    assert raw.at["stumbling", "sensitivity"] == 1.0 and raw.at["stumbling", "n_not_in_pool"] == 1
    assert raw.at["stumbling", "fdr"] == 0.0
    assert raw.at["neutral", "sensitivity"] == 0.5  # D neutral, E a pillar
    assert raw.at["neutral", "fdr"] == 0.5  # called neutral: D (right) and B (a pillar)
    bh = c.loc[("token", "bh")]
    assert bh.at["pillar", "fdr"] == 0.0 and bh.at["neutral", "sensitivity"] == 1.0
    empty = confusion(rec[rec["role"] != "stumbling"]).set_index(["policy", "test", "role"])
    assert np.isnan(empty.at[("token", "raw", "stumbling"), "sensitivity"])
    assert np.isnan(empty.at[("token", "raw", "stumbling"), "fdr"])


def test_target_names_what_missed(rec):
    t = target(rec, 0.05).set_index("check")
    assert not t.at["hits", "met"] and "'B' (neutral)" in t.at["hits", "detail"]
    assert t.at["neutral_clean_token", "met"]
    assert not t.at["neutral_clean_window", "met"] and "'D'" in t.at["neutral_clean_window", "detail"]
    assert not t.at["reach_stumbling", "met"] and "'F'" in t.at["reach_stumbling", "detail"]
    assert t.at["reach_pillar", "met"] and t.at["reach_neutral", "met"]


def test_run_summary_and_figure(tmp_path):
    cands, eff, cats = _knockout()
    res = run(PLANTED, cands, eff, cats, KO)
    assert res["q"] == 0.05 and set(res["table"]["benchmark"]) == {"math"}  # ifeval is not math-checked
    s = json.loads(json.dumps(res["summary"]))
    rows = summary_rows(s)
    assert any("hits" in q and "not met" in text for q, text, _ in rows)
    assert any(q.startswith("planted pillar recovered") and "sensitivity 50%" in text for q, text, _ in rows)
    out = tmp_path / "fig.png"
    plot_recovery(res["table"], res["confusion"], out)
    assert out.read_bytes()[:4] == b"\x89PNG"


def _freeze_tables():
    """freeze/arms.tsv and freeze/accuracy as rule freeze_table writes them: baseline, the rock freeze, a soft arm,
    the two planted-role arms."""
    arms = pd.DataFrame({"arm": ["baseline", "freeze", "soft0.5", "pillars", "neutral"],
                         "lam": [1.0, 0.0, 0.5, 0.0, 0.0], "windows": ["rock"] * 5,
                         "planted": [np.nan, np.nan, np.nan, "pillar", "neutral"], "optimizer": ["adamw"] * 5,
                         "masked_share": [0.4, 0.4, 0.4, 0.2, 0.05],
                         "delta_vs_reference": [0.0, -0.01, 0.0, -0.12, 0.01],
                         "mde_vs_reference": [np.nan, 0.05, 0.05, 0.05, 0.05]})
    acc = pd.DataFrame([{"arm": a, "step": st, "pass@1": p0 + st * d, "ci_low": p0 + st * d - 0.05,
                         "ci_high": p0 + st * d + 0.05}
                        for a, d in zip(arms["arm"], [0.01, 0.01, 0.01, -0.01, 0.01]) for st, p0 in ((0, 0.2), (4, 0.2))])
    return arms, acc


def test_freeze_recovery_reads_each_planted_arm_against_the_baseline():
    arms, acc = _freeze_tables()
    f = freeze_recovery(arms, acc)
    assert f["arm"].tolist() == ["baseline", "freeze", "pillars", "neutral"]  # the soft arm is not a planted role
    r = f.set_index("arm")
    assert r.loc["pillars", "frozen"] == "planted pillar types and their windows" and r.loc["freeze", "frozen"] == \
        "R and their windows" and r.loc["baseline", "frozen"] == "nothing"
    assert r.loc["pillars", "reading"] == "below" and r.loc["neutral", "reading"] == "no detectable difference"
    assert r.loc["baseline", "reading"] == "reference" and r.loc["pillars", "pass@1"] == pytest.approx(0.16)
    assert "below" in r.loc["pillars", "expected"] and r.loc["freeze", "expected"] == ""
    assert freeze_recovery(arms.drop(columns="planted"), acc).empty  # a run without planted arms
    cands, eff, cats = _knockout()
    s = json.loads(json.dumps(run(PLANTED, cands, eff, cats, KO, arms, acc)["summary"]))
    lines = [(q, t) for q, t, _ in summary_rows(s) if q.startswith("freeze arm")]
    assert [q.split()[2] for q, _ in lines] == ["freeze", "pillars", "neutral"]
    assert "Δ vs reference -0.120 (detectable ≥ 0.050): below" in lines[1][1]


def test_recovery_script(tmp_path):
    cands, eff, cats = _knockout()
    arms, acc = _freeze_tables()
    inputs = {}
    for name, df in (("planted", PLANTED), ("candidates", cands), ("effects", eff), ("categories", cats),
                     ("freeze_accuracy", acc)):
        inputs[name] = str(tmp_path / f"{name}.parquet")
        df.to_parquet(inputs[name])
    inputs["freeze_arms"] = str(tmp_path / "arms.tsv")
    arms.to_csv(inputs["freeze_arms"], sep="\t", index=False)
    outputs = {k: str(tmp_path / "out" / f"{k}.{ext}") for k, ext in
               (("table", "tsv"), ("parquet", "parquet"), ("confusion", "tsv"), ("target", "tsv"),
                ("freeze", "tsv"), ("summary", "json"), ("figure", "png"))}
    smk = SimpleNamespace(input=SimpleNamespace(**inputs), output=SimpleNamespace(**outputs),
                          params=SimpleNamespace(ko=KO, dpi=60), log=[str(tmp_path / "recovery.log")])
    runpy.run_path(str(REPO / "workflow_scripts" / "recovery.py"), init_globals={"snakemake": smk})
    assert len(pd.read_parquet(outputs["parquet"])) == 18
    assert "reach_stumbling" in pd.read_csv(outputs["target"], sep="\t")["check"].tolist()
    assert "NOT met" in (tmp_path / "recovery.log").read_text()
    assert pd.read_csv(outputs["freeze"], sep="\t")["arm"].tolist() == ["baseline", "freeze", "pillars", "neutral"]
    assert "freeze" in json.loads(Path(outputs["summary"]).read_text())
