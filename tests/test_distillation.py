"""Does distillation work? The per-checkpoint table, paired gains and the KL curve (rocktokens.evaluate.distillation)."""
import numpy as np
import pandas as pd
import pytest

from rocktokens.evaluate.distillation import distillation_table, kl_curve, opd_order, summary_rows
from rocktokens.evaluate.figures import figure_distillation


def _evals(acc: dict[str, np.ndarray], k: int = 2, bench: str = "math") -> pd.DataFrame:
    rows = []
    for ckpt, per_problem in acc.items():
        for i, c in enumerate(per_problem):
            for s in range(k):
                rows.append({"checkpoint": ckpt, "benchmark": bench, "id": f"p{i:03d}", "sample": s,
                             "correct": bool(s < round(c * k))})
    return pd.DataFrame(rows)


@pytest.fixture()
def evals():
    rng = np.random.default_rng(0)
    n = 200
    base = (rng.random(n) < 0.3).astype(float)
    stage1 = np.maximum(base, (rng.random(n) < 0.3).astype(float))
    opd = np.maximum(stage1, (rng.random(n) < 0.3).astype(float))
    return _evals({"teacher": np.ones(n), "student_base": base, "stage1": stage1, "opd-2": stage1, "opd-10": opd,
                   "opd-5": base})


def test_table_pairs_the_gains_over_problems(evals):
    table, gains, summary = distillation_table(evals, "math", n_resamples=2000, seed=1)
    assert table["checkpoint"].tolist() == ["teacher", "student_base", "stage1", "opd-2", "opd-5", "opd-10"]
    wide = evals.groupby(["id", "checkpoint"])["correct"].mean().unstack()
    g = gains.set_index("gain")
    assert g.loc["OPD", "to"] == "opd-10" == summary["final"]  # the last OPD checkpoint in training order
    assert g.loc["OPD", "delta"] == pytest.approx((wide["opd-10"] - wide["stage1"]).mean())
    assert g.loc["KD + OPD", "delta"] == pytest.approx(g.loc["stage-1 KD", "delta"] + g.loc["OPD", "delta"])
    for r in gains.itertuples():
        assert r.ci_lo <= r.delta <= r.ci_hi and r.delta > 0 and r.p < 0.01
    for r in gains.to_dict("records"):  # the smallest gain the paired comparison detects (80 % power, α = 0.05)
        d = wide[r["to"]] - wide[r["from"]]
        assert r["mde"] == pytest.approx(2.8016 * d.std(ddof=1) / np.sqrt(len(d)), rel=1e-3)
    acc = dict(zip(table["checkpoint"], table["pass@1"]))
    assert summary["gap_closed"] == pytest.approx((acc["opd-10"] - acc["student_base"]) / (1 - acc["student_base"]))
    assert all(r.ci_lo <= r._2 <= r.ci_hi for r in table.itertuples())


def test_no_gain_is_not_significant():
    rng = np.random.default_rng(3)
    x = (rng.random(300) < 0.5).astype(float)
    ev = _evals({"teacher": np.ones(300), "student_base": x, "stage1": x, "opd-1": x}, k=1)
    _, gains, _ = distillation_table(ev, "math", n_resamples=500, seed=0)
    assert (gains.set_index("gain").loc["OPD", ["delta", "ci_lo", "ci_hi"]] == 0).all()
    assert gains.set_index("gain").loc["OPD", "p"] == 1.0


def test_missing_checkpoints_or_unpaired_problems_fail_clearly(evals):
    with pytest.raises(ValueError, match="stage1"):
        distillation_table(evals[evals["checkpoint"] != "stage1"], "math")
    with pytest.raises(ValueError, match="no OPD checkpoint"):
        distillation_table(evals[~evals["checkpoint"].str.startswith("opd")], "math")
    with pytest.raises(ValueError, match="every problem"):
        distillation_table(evals[~((evals["checkpoint"] == "opd-10") & (evals["id"] == "p000"))], "math")
    with pytest.raises(ValueError, match="ifeval"):
        distillation_table(evals, "ifeval")


def test_kl_curve_and_summary_rows(evals, tmp_path):
    h = pd.DataFrame({"step": np.arange(1, 21), "loss": np.linspace(0.5, 0.1, 20)})
    kl = kl_curve(h.sample(frac=1, random_state=0))  # order by step, whatever the row order
    assert kl["falling"] and kl["quarter_steps"] == 5
    assert kl["rkl_first_quarter"] == pytest.approx(h["loss"][:5].mean())
    assert not kl_curve(h.assign(loss=h["loss"][::-1].to_numpy()))["falling"]
    with pytest.raises(ValueError, match="step and loss"):
        kl_curve(h.drop(columns="loss"))
    table, _, summary = distillation_table(evals, "math", n_resamples=200)
    summary["kl_curve"] = kl
    names = [q for q, _, _ in summary_rows(summary)]
    assert len(names) == 5 and any("gap closed" in q for q in names) and any("reverse KL" in q for q in names)
    out = figure_distillation(table, h, tmp_path / "d.png", benchmark="math")
    assert out.stat().st_size > 10_000
    assert opd_order(["opd-10", "stage1", "opd-9", "opd-x"]) == ["opd-9", "opd-10"]
