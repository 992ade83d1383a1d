"""This run vs the paper: every headline number of the study, read from the run's artifacts, beside the paper's.

:func:`summary_table` turns the artifacts of the rock analysis, the gradient geometry, the knockout, the freeze
arms and the evaluation into one long table — one row per quantity: ``section``, ``quantity``, ``this_run``
(text), ``paper`` (text), ``value`` and ``paper_value`` (numbers, NaN where there is none), ``source`` (the
artifact it was read from, relative to ``results/<run>/``) and ``note`` (how the comparison was mapped).
:func:`summary_markdown` and :func:`summary_html` render it; :func:`write_summary` reads and writes the files.

Nothing is recomputed here: every number is read from an artifact, so the table says exactly what the run's
files say. The paper's numbers are :data:`PAPER` (section of the paper beside each).

Mapping the paper's cutoffs onto this run (the only judgement made here): the paper swept K ∈ {50, 100, 150,
200} and chose K* = 100, reporting "average Jaccard > 0.70 for K ≤ 100", "a ≈0.57 floor for K ≥ 150" and
"K = 50: J ≈ 0.81, coverage ≈ 49 %". Its cutoffs are read *relative to the chosen K*: K ≤ K*, K ≥ 1.5·K*,
K ≈ K*/2 — so a run whose grid is 5–20 with K* = 20 compares K ≤ 20, K ≥ 30 (none: said so) and K = 10.
"""
from __future__ import annotations

import html
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd

from rocktokens.core.formatting import NA, fnum, fp, fpct, isnum
from rocktokens.core.io import read_json
from rocktokens.geometry.gradients import GROUP_LABELS, GROUPS
from rocktokens.core.naming import opd_sorted
from rocktokens.freeze.arms import ArmSpec, rock_freeze_arm

COLUMNS = ["section", "quantity", "this_run", "paper", "value", "paper_value", "source", "note"]
SECTIONS = ["Rock Tokens (§2, App. E)", "Gradient geometry (§2.6, Fig. 3)", "Knockout (§3, App. D, Tables 1–2)",
            "Rock freeze (§4, Fig. 5)", "Accuracy (evaluation)"]
NOT_REPORTED = "not reported"

# The paper's reported numbers (arXiv 2605.09253v3), with where they are stated.
PAPER = {
    "K": 100,                       # §2.4 / App. E: K = 100 chosen from {50, 100, 150, 200}
    "K_grid": (50, 100, 150, 200),  # App. E sweep
    "coverage_K": 0.60,             # §2.4 / App. E: ≈60 % of the corpus KL at K = 100
    "vocab_share_K": 0.025,         # App. E: K = 100 ≈ 2.5 % of the observed vocabulary
    "median_density_ctx": 0.185,    # Fig. 2b: median context-consistent rock density 18.5 % (§2.3 text: 18 %)
    "token_share": 0.18,            # abstract/§1/§4: rock tokens up to ≈18 % of generated tokens
    "jaccard_small_min": 0.70,      # App. E: average Jaccard > 0.70 for K ≤ 100
    "jaccard_large_floor": 0.57,    # App. E: ≈0.57 floor for K ≥ 150
    "jaccard_half": 0.81,           # App. E: K = 50 → J ≈ 0.81
    "coverage_half": 0.49,          # App. E: K = 50 → coverage ≈ 49 %
    "grad_norm": {"rock": 0.016, "high_kl": 0.54, "random": None},          # §2.6 panel a
    "grad_norm_mw_p": 1e-30,                                                 # Mann–Whitney p < 1e-30
    "cos": {"rock": 0.040, "high_kl": 0.025, "random": 0.006},               # §2.6 panel b
    "kl_early_late": {"rock": (0.21, 0.19), "high_kl": (2.02, 0.85), "random": None},  # §2.6 panels c–d
    "kl_wilcoxon_p_high_kl": 1e-8,                                           # Wilcoxon p < 1e-8 (high-KL)
    # Table 2 (App. D.4): pillars / neutral / stumbling of 200 screened candidates, baseline accuracy (T = 1).
    "census": {"math": {"name": "MATH-500", "pillar": 7, "neutral": 193, "stumbling": 0, "n": 200, "acc": 0.750},
               "ifeval": {"name": "IFEval", "pillar": 3, "neutral": 197, "stumbling": 0, "n": 200, "acc": 0.752}},
    # Table 1: the largest |r| and the smallest p per benchmark (all |r| < 0.075, all p > 0.30).
    "table1": {"math": {"max_abs_r": 0.063, "predictor": "Teacher entropy", "min_p": 0.378},
               "ifeval": {"max_abs_r": 0.071, "predictor": "KL improvement", "min_p": 0.320}},
    # App. D.2: no token survives Bonferroni (α/200) or BH at q ≤ 0.20 (token-knockout family of 200 tests).
    "multiple_testing": {"math": (0, 0, 200), "ifeval": (0, 0, 200)},
    # App. D.2: sign test over the rejections, (negative, positive, two-sided exact binomial p).
    "sign_test": {("all", "math"): (7, 0, 0.016), ("all", "ifeval"): (3, 0, 0.25),
                  ("all", "combined"): (10, 0, 0.002), ("core", "combined"): (6, 0, 0.031)},
    "masked_share": (0.18, 0.30),   # §4: rock tokens ≈18 % of output tokens; "these 30 % high-cost tokens"
    "speedup": (1.4, 1.7),          # §4 / §7: 1.4× – 1.7× training wall-clock
}


class SummaryInputError(ValueError):
    """An artifact the summary reads is missing, unreadable or lacks a field (the message names it)."""


@dataclass
class Row:
    section: str
    quantity: str
    this_run: str
    paper: str
    value: float = math.nan
    paper_value: float = math.nan
    source: str = ""
    note: str = ""


def _num(x) -> float:
    return float(x) if isnum(x) else math.nan


# ----------------------------------------------------------------------------------------------------------------
# reading artifacts


def _need(obj: Mapping, keys, what: str):
    """``obj[k1][k2]...``; a missing key is one SummaryInputError naming the artifact and the key path."""
    cur, path = obj, []
    for k in keys:
        path.append(str(k))
        if not isinstance(cur, Mapping) or k not in cur:
            raise SummaryInputError(f"{what} lacks {'.'.join(path)}")
        cur = cur[k]
    return cur


def _cols(df: pd.DataFrame, cols, what: str) -> pd.DataFrame:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise SummaryInputError(f"{what} lacks column(s) {missing}")
    if not len(df):
        raise SummaryInputError(f"{what} is empty")
    return df


def _short(path) -> str:
    """``results/<run>/rocks/R.json`` → ``rocks/R.json`` (the name inside the run directory)."""
    p = Path(path)
    return "/".join(p.parts[-2:]) if len(p.parts) >= 2 else p.name


ARTIFACTS = {  # key -> (kind, required)
    "rocks": ("json", True), "gradients": ("json", True), "persistence": ("json", True),
    "table1": ("tsv", True), "table2": ("tsv", True), "sign_test": ("tsv", True),
    "multiple_testing": ("tsv", True), "freeze_arms": ("tsv", False), "freeze_accuracy": ("tsv", False),
    "accuracy": ("tsv", True), "probe": ("json", False), "distillation": ("json", False),
    "knockout_power": ("tsv", False), "recovery": ("json", False),
}


def load_artifacts(paths: Mapping[str, str | Path]) -> dict:
    """Read every artifact the summary uses: ``{key: (data, short name)}``; one clear error for a bad one."""
    unknown = sorted(set(paths) - set(ARTIFACTS))
    if unknown:
        raise SummaryInputError(f"unknown summary input(s) {unknown}; expected {sorted(ARTIFACTS)}")
    out = {}
    for key, (kind, required) in ARTIFACTS.items():
        if key not in paths:
            if required:
                raise SummaryInputError(f"summary input {key!r} not given")
            continue
        p = Path(paths[key])
        if not p.exists():
            raise SummaryInputError(f"{key} artifact not found: {p}")
        try:
            data = read_json(p) if kind == "json" else pd.read_csv(p, sep="\t")
        except (ValueError, pd.errors.ParserError) as e:
            raise SummaryInputError(f"{key} artifact {p} is not valid {kind}: {e}") from None
        out[key] = (data, _short(p))
    return out


# ----------------------------------------------------------------------------------------------------------------
# the sections


def rock_rows(chosen: Mapping, src: str = "rocks/R.json") -> list[Row]:
    """Chosen K, coverage, vocabulary share, densities and Jaccard at the paper's cutoffs mapped to this run."""
    S, P = SECTIONS[0], PAPER
    K = int(_need(chosen, ["K"], src))
    ev = _need(chosen, ["evidence"], src)
    cands = {int(_need(c, ["K"], src)): c for c in _need(ev, ["candidates"], src)}
    grid = sorted(cands)
    rule_met = ev.get("rule_met")
    n_types = chosen.get("corpus", {}).get("n_types")
    score, cf = chosen.get("score"), chosen.get("context_filter") or {}
    rows = [
        Row(S, "rock score ranking the sets (rocks.score)",
            {"R": "R (Eq. 4)", "R_ctx": "R_ctx (Eq. 13)"}.get(score, NA if score is None else str(score)),
            "R (Eq. 4; Appendix E)", source=src,
            note=f"{cf['n_in_rock_vocab']} of the {cf['K']} chosen rocks pass Eq. 14 (R_ctx ≥ τ_R)" if cf else ""),
        Row(S, "chosen K (rock set R)", f"{K} of K ∈ {{{', '.join(map(str, grid))}}}"
            + ("" if rule_met is None else f" (rule {'met' if rule_met else 'NOT met: fallback'})"),
            f"{P['K']} of K ∈ {{{', '.join(map(str, P['K_grid']))}}}", K, P["K"], src,
            f"largest K whose average Jaccard ≥ {ev.get('min_jaccard', 0.7)}" if rule_met is not False else
            f"no K reaches average Jaccard {ev.get('min_jaccard', 0.7)}: the most stable K"),
        Row(S, f"coverage of the corpus KL at the chosen K (K={K})", fpct(cands[K].get("coverage")),
            f"≈{fpct(P['coverage_K'], 0)} at K={P['K']}", _num(cands[K].get("coverage")), P["coverage_K"], src),
        Row(S, "chosen K as share of the observed vocabulary",
            f"{fpct(K / n_types)} ({K} / {n_types} types)" if n_types else NA,
            f"≈{fpct(P['vocab_share_K'])} ({P['K']} types)", K / n_types if n_types else math.nan,
            P["vocab_share_K"], src),
        Row(S, "median rock density per sequence, context-consistent occurrences (density_ctx)",
            fpct(chosen.get("median_density_ctx")), fpct(P["median_density_ctx"]),
            _num(chosen.get("median_density_ctx")), P["median_density_ctx"], src,
            "the paper's 18.5 % counts only the retained (context-consistent) occurrences (§2.3, Fig. 2b)"),
        Row(S, "median rock density per sequence, all occurrences of rock types (density)",
            fpct(chosen.get("median_density")), f"{NOT_REPORTED} (rocks ≤ {fpct(P['token_share'], 0)} of output "
            "tokens, abstract)", _num(chosen.get("median_density")), math.nan, src),
    ]
    small = [k for k in grid if k <= K]
    j_small = min(float(cands[k]["jaccard_avg"]) for k in small)
    rows.append(Row(S, f"average Jaccard, K ≤ K* (min over K ∈ {{{', '.join(map(str, small))}}})", fnum(j_small),
                    f"> {P['jaccard_small_min']:.2f} for K ≤ {P['K']}", j_small, P["jaccard_small_min"], src,
                    "paper's K ≤ 100 read as K ≤ the chosen K"))
    large = [k for k in grid if k >= 1.5 * K]
    if large:
        j_large = min(float(cands[k]["jaccard_avg"]) for k in large)
        rows.append(Row(S, f"average Jaccard floor, K ≥ 1.5·K* (min over K ∈ {{{', '.join(map(str, large))}}})",
                        fnum(j_large), f"≈{P['jaccard_large_floor']} for K ≥ 150", j_large,
                        P["jaccard_large_floor"],
                        src, "paper's K ≥ 150 read as K ≥ 1.5 × the chosen K"))
    else:
        rows.append(Row(S, "average Jaccard floor, K ≥ 1.5·K*",
                        f"not measured: rocks.Ks tops out at {grid[-1]} < 1.5·K* = {1.5 * K:g}",
                        f"≈{P['jaccard_large_floor']} for K ≥ 150", math.nan, P["jaccard_large_floor"], src,
                        "paper's K ≥ 150 read as K ≥ 1.5 × the chosen K; add such a K to rocks.Ks to measure it"))
    below = [k for k in grid if k < K]
    if below:
        kh = min(below, key=lambda k: (abs(k - K / 2), k))
        c = cands[kh]
        rows += [Row(S, f"average Jaccard at K ≈ K*/2 (K={kh})", fnum(c["jaccard_avg"]),
                     f"≈{P['jaccard_half']} at K=50", float(c["jaccard_avg"]), P["jaccard_half"], src,
                     "paper's K = 50 read as the grid K nearest half the chosen K"),
                 Row(S, f"coverage at K ≈ K*/2 (K={kh})", fpct(c.get("coverage")),
                     f"≈{fpct(P['coverage_half'], 0)} at K=50", _num(c.get("coverage")), P["coverage_half"], src)]
    return rows


def geometry_rows(gradients: Mapping, persistence: Mapping, probe: Mapping | None = None,
                  src_g: str = "geometry/gradients.json", src_p: str = "geometry/persistence.json",
                  src_o: str = "geometry/optimizer_probe.json") -> list[Row]:
    """‖ḡ‖ and cosine medians per group, Mann–Whitney rock vs high-KL, KL early→late per group (Wilcoxon p)."""
    S, P = SECTIONS[1], PAPER
    rows = []
    ck = gradients.get("checkpoint", "?")
    for g in GROUPS:
        gg = _need(gradients, ["groups", g], src_g)
        pv = P["grad_norm"][g]
        rows.append(Row(S, f"median ‖ḡ‖ — {GROUP_LABELS[g]}", fnum(_need(gg, ["median_grad_norm"], src_g)),
                        fnum(pv) if pv is not None else NOT_REPORTED, _num(gg["median_grad_norm"]), _num(pv), src_g,
                        f"at checkpoint {ck}; measured on the split not used for selection"))
    mw = gradients.get("mann_whitney", {}).get("grad_norm:rock_vs_high_kl")
    if mw is not None:
        rows.append(Row(S, "Mann–Whitney p, ‖ḡ‖ rock vs rare high-KL", fp(mw.get("p")), "< 1e-30",
                        _num(mw.get("p")), P["grad_norm_mw_p"], src_g, f"{mw.get('n_a')} vs {mw.get('n_b')} types"))
    for g in GROUPS:
        gg = gradients["groups"][g]
        rows.append(Row(S, f"median cos(ḡ, G_balanced) — {GROUP_LABELS[g]}",
                        fnum(_need(gg, ["median_cos_balanced"], src_g)), fnum(P["cos"][g]),
                        _num(gg["median_cos_balanced"]), P["cos"][g], src_g))
    early, late = persistence.get("early", "early"), persistence.get("late", "late")
    for g in GROUPS:
        pg = _need(persistence, ["groups", g], src_p)
        e, l_ = _need(pg, ["median_kl_early"], src_p), _need(pg, ["median_kl_late"], src_p)
        pv = P["kl_early_late"][g]
        if pv is None:
            ptxt, prel = "no net change (no number given)", math.nan
        else:
            ptxt, prel = f"{pv[0]} → {pv[1]}", pv[1] / pv[0] - 1
            if g == "high_kl":
                ptxt += " (Wilcoxon p < 1e-8)"
        rows.append(Row(S, f"median KL early → late — {GROUP_LABELS[g]}",
                        f"{fnum(e)} → {fnum(l_)} (Wilcoxon p={fp(pg.get('wilcoxon_p'))})", ptxt,
                        l_ / e - 1 if e else math.nan, prel, src_p,
                        f"{early} → {late}; value = relative change of the median"
                        + (f"; selected by their KL at {gradients['high_kl_scorer']} on the other split"
                           if g == "high_kl" and gradients.get("high_kl_scorer") else "")))
    if probe is not None and "verdict" in probe:
        rows.append(Row(S, "Is Adam the cause? (optimizer probe, beyond the paper)", str(probe["verdict"]).upper(),
                        "hypothesis only (§2.6)", source=src_o, note="rule and numbers: geometry/finding.md"))
    return rows


def knockout_rows(table1: pd.DataFrame, table2: pd.DataFrame, sign_test: pd.DataFrame,
                  multiple_testing: pd.DataFrame, srcs: Mapping[str, str] | None = None) -> list[Row]:
    """Census per benchmark with baseline accuracy, Table 1's max |r| / min p, multiple testing, sign tests."""
    S, P = SECTIONS[2], PAPER
    src = {"table1": "knockout/table1.tsv", "table2": "knockout/table2.tsv", "sign_test": "knockout/sign_test.tsv",
           "multiple_testing": "knockout/multiple_testing.tsv", **(srcs or {})}
    _cols(table2, ["benchmark", "n_candidates", "strong_pillar", "neutral", "strong_stumbling", "baseline_acc"],
          src["table2"])
    _cols(table1, ["benchmark", "label", "r", "p"], src["table1"])
    _cols(sign_test, ["scope", "benchmark", "n_negative", "n_positive", "p_two_sided"], src["sign_test"])
    _cols(multiple_testing, ["benchmark", "family", "n_tests", "bonferroni_rejections"], src["multiple_testing"])
    # per-census tables (a `census` column, rocktokens.knockout.experiment.CENSUSES): the paper's census (token or global
    # window, Eq. 22) is set beside the paper below; the others get compact rows (_census_rows)
    table2, other_t2 = _split_census(table2)
    sign_test, other_st = _split_census(sign_test)
    rows = []
    for _, t in table2.iterrows():
        b, n = str(t["benchmark"]), int(t["n_candidates"])
        pc = P["census"].get(b)
        tag = f"{b} ↔ {pc['name']}" if pc else b
        for key, col, label in [("pillar", "strong_pillar", "Strong Pillars"), ("neutral", "neutral", "Neutral"),
                                ("stumbling", "strong_stumbling", "Strong Stumbling Blocks")]:
            k = int(t[col])
            share = k / n if n else math.nan
            rows.append(Row(S, f"{label} ({tag})", f"{k} / {n} ({fpct(share)})",
                            f"{pc[key]} / {pc['n']} ({fpct(pc[key] / pc['n'])})" if pc else NOT_REPORTED,
                            share, pc[key] / pc["n"] if pc else math.nan, src["table2"],
                            "value = share of screened candidates (Eq. 22: token or window, the paper's census)"))
        if isnum(t.get("mixed")) and int(t["mixed"]):
            rows.append(Row(S, f"mixed (pillar by one perturbation, stumbling by the other) ({tag})",
                            f"{int(t['mixed'])} / {n}", "not a category of the paper", int(t["mixed"]) / n,
                            source=src["table2"]))
        rows.append(Row(S, f"baseline accuracy of the post-OPD student ({tag})", fnum(t["baseline_acc"]),
                        fnum(pc["acc"]) if pc else NOT_REPORTED, float(t["baseline_acc"]),
                        pc["acc"] if pc else math.nan, src["table2"], "knockout sampling (T = 1)"))
    for b, g in table1.groupby("benchmark", sort=False):
        pt = P["table1"].get(str(b))
        ok = g.dropna(subset=["r"])
        undefined = len(g) - len(ok)
        note = f"r undefined for {undefined} of {len(g)} predictors (Δ or predictor constant)" if undefined else ""
        if len(ok):
            top = ok.loc[ok["r"].abs().idxmax()]
            txt, val = f"{abs(float(top['r'])):.3f} ({top['label']}, p={fp(top['p'])})", abs(float(top["r"]))
        else:
            txt, val = NA, math.nan
        rows.append(Row(S, f"Table 1: max |r| over the predictors ({b})", txt,
                        f"< 0.075 (max {pt['max_abs_r']}, {pt['predictor']})" if pt else NOT_REPORTED,
                        val, pt["max_abs_r"] if pt else math.nan, src["table1"], note))
        rows.append(Row(S, f"Table 1: min p over the predictors ({b})", fp(ok["p"].min()) if len(ok) else NA,
                        f"> 0.30 (min {pt['min_p']})" if pt else NOT_REPORTED,
                        float(ok["p"].min()) if len(ok) else math.nan, pt["min_p"] if pt else math.nan,
                        src["table1"], note))
    bh = sorted((c for c in multiple_testing.columns if re.fullmatch(r"bh_q[0-9.]+_rejections", c)),
                key=lambda c: float(c[4:-11]))
    for _, m in multiple_testing[multiple_testing["family"] == "token"].iterrows():
        b = str(m["benchmark"])
        pm = P["multiple_testing"].get(b)
        q = bh[-1][4:-11] if bh else None
        txt = f"Bonferroni {int(m['bonferroni_rejections'])}" + (f", BH(q={q}) {int(m[bh[-1]])}" if bh else "")
        rows.append(Row(S, f"token knockouts surviving multiple-testing correction ({b})",
                        f"{txt} of {int(m['n_tests'])} tests",
                        f"Bonferroni {pm[0]}, BH(q≤0.2) {pm[1]} of {pm[2]} tests" if pm else NOT_REPORTED,
                        float(m["bonferroni_rejections"]), pm[0] if pm else math.nan, src["multiple_testing"],
                        "value = Bonferroni survivors; family = token knockout (the paper's α/200)"))
    for _, s in sign_test.iterrows():
        key = (str(s["scope"]), str(s["benchmark"]))
        ps = P["sign_test"].get(key)
        rows.append(Row(S, f"sign test, Pillar : Stumbling rejections ({key[0]}, {key[1]})",
                        f"{int(s['n_negative'])} : {int(s['n_positive'])} (p={fp(s['p_two_sided'])})",
                        f"{ps[0]} : {ps[1]} (p={ps[2]})" if ps else NOT_REPORTED, float(s["p_two_sided"]),
                        ps[2] if ps else math.nan, src["sign_test"],
                        "value = two-sided exact binomial p" + ("; core = the chosen-K core" if key[0] == "core"
                                                                else "")))
    return rows + _census_rows(other_t2, other_st, multiple_testing, bh, src)


def _split_census(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the paper's census rows, the other censuses' rows) of a per-census knockout table; a table without a
    ``census`` column is the paper's census alone."""
    from rocktokens.knockout.experiment import PAPER_CENSUS  # Eq. 22 with the global window (Table 2)

    if "census" not in df.columns:
        return df, df.iloc[:0]
    return df[df["census"] == PAPER_CENSUS], df[df["census"] != PAPER_CENSUS]


def _census_rows(table2: pd.DataFrame, sign_test: pd.DataFrame, multiple_testing: pd.DataFrame, bh: list[str],
                 src: Mapping[str, str]) -> list[Row]:
    """Compact rows of the censuses the paper does not report (token only first, window only, local only, token or
    local): P / N / S per benchmark, the other multiple-testing families, the sign tests per scope."""
    S, rows = SECTIONS[2], []
    for _, t in table2.iterrows():
        n, c = int(t["n_candidates"]), str(t["census"])
        mixed = f", {int(t['mixed'])} pillar-and-stumbling" if isnum(t.get("mixed")) and int(t["mixed"]) else ""
        rows.append(Row(S, f"census {c}: Strong Pillar / Neutral / Strong Stumbling ({t['benchmark']})",
                        f"{int(t['strong_pillar'])} / {int(t['neutral'])} / {int(t['strong_stumbling'])} of {n}{mixed}",
                        NOT_REPORTED, int(t["strong_pillar"]) / n if n else math.nan, source=src["table2"],
                        note=f"value = Strong Pillar share; {t.get('label', c)}"))
    q = bh[-1][4:-11] if bh else None
    for _, m in multiple_testing[multiple_testing["family"] != "token"].iterrows():
        txt = f"Bonferroni {int(m['bonferroni_rejections'])}" + (f", BH(q={q}) {int(m[bh[-1]])}" if bh else "")
        shared = int(m["n_shared"]) if isnum(m.get("n_shared")) else 0
        rows.append(Row(S, f"multiple testing, {m['family']} family ({m['benchmark']}): survivors",
                        f"{txt} of {int(m['n_tests'])} tests", NOT_REPORTED, float(m["bonferroni_rejections"]),
                        source=src["multiple_testing"],
                        note="value = Bonferroni survivors" + (f"; {shared} shared arm(s) counted once" if shared else "")))
    for (c, scope), g in (sign_test.groupby(["census", "scope"], sort=False) if len(sign_test) else ()):
        comb = g[g["benchmark"] == "combined"]
        rows.append(Row(S, f"sign test per census, {c} ({scope}): Pillar : Stumbling rejections",
                        ", ".join(f"{r.benchmark} {int(r.n_negative)} : {int(r.n_positive)}" for r in g.itertuples())
                        + (f" (combined p={fp(comb['p_two_sided'].iloc[0])})" if len(comb) else ""), NOT_REPORTED,
                        float(comb["p_two_sided"].iloc[0]) if len(comb) else math.nan, source=src["sign_test"],
                        note="value = two-sided exact binomial p of the combined rejections"))
    return rows


def freeze_rows(arms: pd.DataFrame, accuracy: pd.DataFrame, srcs: Mapping[str, str] | None = None) -> list[Row]:
    """Masked share per arm, rock-token share, the update-time ratio per response token and the final pooled pass@1
    per arm."""
    S, P = SECTIONS[3], PAPER
    src = {"freeze_arms": "freeze/arms.tsv", "freeze_accuracy": "freeze/accuracy.tsv", **(srcs or {})}
    _cols(arms, ["arm", "lam", "windows", "optimizer", "K", "masked_share", "update_speedup"], src["freeze_arms"])
    _cols(accuracy, ["arm", "step", "pass@1", "ci_low", "ci_high"], src["freeze_accuracy"])
    ref = str(arms["speedup_reference"].iloc[0]) if "speedup_reference" in arms else "baseline"
    rows = []
    lo, hi = P["masked_share"]
    name = rock_freeze_arm(arms)
    f = arms[arms["arm"] == name].iloc[0] if name is not None else None
    for _, a in arms.iterrows():  # the masked share of every arm that reweights (λ < 1), beside the paper's
        if a["windows"] == "none" or a["lam"] == 1:
            continue
        if a["windows"] == "random":
            ratio = a.get("matched_ratio")
            rows.append(Row(S, f"masked share, frequency/window-matched random control (arm {a['arm']})",
                            fpct(a["masked_share"]) + (f" (matched ratio {fnum(ratio)})" if isnum(ratio) else ""),
                            f"matched to the rock freeze (no number; its mask ≈{fpct(lo, 0)}–{fpct(hi, 0)})",
                            float(a["masked_share"]), source=src["freeze_arms"]))
            continue
        spec = ArmSpec.from_row(a)
        planted = spec.planted
        what = ("rock freeze" if f is not None and a["arm"] == f["arm"] else
                f"{spec.frozen} at λ={fnum(a['lam'])}" if planted else
                f"{'rock tokens only' if a['windows'] == 'tokens' else 'rock mask'} at λ={fnum(a['lam'])}, {a['optimizer']}")
        rows.append(Row(S, f"masked share of response tokens, {what} (arm {a['arm']}, K={int(a['K'])})",
                        fpct(a["masked_share"]), f"≈{fpct(lo, 0)}–{fpct(hi, 0)}", float(a["masked_share"]), math.nan,
                        src["freeze_arms"],
                        ("x_t ∈ R only (no windows)" if a["windows"] == "tokens" else "x_t ∈ R or t ∈ W_R (Eq. 18–19)")
                        + (f", R = the planted {planted} types" if planted else "")
                        + ", over the arm's steps (token-weighted)"))
    if f is not None:
        ref_row = arms[arms["arm"] == ref]
        per_tok = "update_s_per_token" in arms
        ref_us = fnum(1e6 * ref_row["update_s_per_token"].iloc[0]) if per_tok and len(ref_row) else NA
        rows += [
            Row(S, f"rock-token share of response tokens (arm {f['arm']})", fpct(f.get("rock_tokens_share")),
                f"≈{fpct(P['token_share'], 0)}", _num(f.get("rock_tokens_share")), P["token_share"],
                src["freeze_arms"], "x_t ∈ R only, without the windows"),
            Row(S, f"freeze speed-up: in-DAG update-time ratio per response token, {ref} / {f['arm']} (NOT a benchmark)",
                f"{float(f['update_speedup']):.2f}×"
                + (f" ({ref_us} vs {fnum(1e6 * f['update_s_per_token'])} µs per response token)" if per_tok else ""),
                f"{P['speedup'][0]}–{P['speedup'][1]}× training wall-clock", float(f["update_speedup"]),
                math.nan, src["freeze_arms"],
                "update seconds / response tokens of a step, median over steps, probe instrumentation not timed, "
                "as the arms ran in the DAG (shared CPU, jobs side by side); the side-by-side measurement is "
                "benchmarks/bench_freeze.py, not an artifact of the DAG"),
        ]
    start = accuracy[accuracy["step"] == 0]
    s0 = f"{float(start['pass@1'].iloc[0]):.3f}" if len(start) else NA
    qual = {"baseline": NOT_REPORTED + " (Fig. 5 curve)", "freeze": "close to the baseline (Fig. 5, no number)",
            "random": "severe degradation (Fig. 5, no number)"}
    for _, a in arms.iterrows():
        acc = accuracy[accuracy["arm"] == a["arm"]]
        if not len(acc):
            continue
        last = acc.loc[acc["step"].idxmax()]
        kind = ("baseline" if a["arm"] == ref else "freeze" if a["lam"] == 0 and a["windows"] == "rock"
                else "random" if a["windows"] == "random" else None)
        spec = ArmSpec.from_row(a)
        planted = spec.planted
        vs = ""
        if a["arm"] != ref and isnum(a.get("delta_vs_reference")):
            vs = f"; vs {ref} {float(a['delta_vs_reference']):+.3f} (detectable ≥ {fnum(a.get('mde_vs_reference'))})"
        rows.append(Row(S, f"pooled pass@1 of the hard benchmarks after {int(last['step'])} steps — arm {a['arm']} "
                        f"(λ={fnum(a['lam'])}, "
                        + (f"{spec.frozen}, " if planted else f"{a['windows']} windows, ") + f"{a['optimizer']})",
                        f"{float(last['pass@1']):.3f} [{float(last['ci_low']):.3f}, {float(last['ci_high']):.3f}]"
                        f" (step 0: {s0}{vs})",
                        "beyond the paper: a planted role frozen (known by construction)" if planted
                        else qual.get(kind, "beyond the paper"), float(last["pass@1"]),
                        source=src["freeze_accuracy"], note="95 % interval over problems"
                        + (f"; Δ vs {ref} paired over problems" if vs else "")))
    if "mde_vs_reference" in arms.columns and arms["mde_vs_reference"].notna().any():
        mde = arms["mde_vs_reference"].dropna()
        rows.append(Row(S, f"minimum detectable difference of an arm's final pass@1 from {ref}'s (80 % power, α = 0.05)",
                        f"{float(mde.median()):.3f} (median over arms; {float(mde.min()):.3f}–{float(mde.max()):.3f})",
                        NOT_REPORTED, float(mde.median()), source=src["freeze_arms"],
                        note="paired over the pooled hard problems (mean over seeds per problem)"))
    return rows


def power_rows(power: pd.DataFrame, src: str = "knockout/power.tsv") -> list[Row]:
    """Per knockout benchmark (token policy): the minimum detectable Δ and the problems a 10-point Δ needs."""
    _cols(power, ["benchmark", "policy", "n_problems", "m", "mde", "effect", "n_for_effect"], src)
    rows = []
    for _, r in power[power["policy"] == "token"].iterrows():
        name = PAPER["census"].get(r["benchmark"], {}).get("name", r["benchmark"])
        rows.append(Row(SECTIONS[2], f"minimum detectable Δ of a token knockout, 80 % power ({r['benchmark']} ↔ {name})",
                        f"{float(r['mde']):.3f} with {int(r['n_problems'])} problems × {int(r['m'])} samples "
                        f"({int(r['n_for_effect'])} problems for Δ = {float(r['effect']):.2f})",
                        NOT_REPORTED, float(r["mde"]), source=src,
                        note="median SD of the paired per-problem differences over the arms"))
    return rows


def accuracy_rows(accuracy: pd.DataFrame, src: str = "eval/accuracy.tsv") -> list[Row]:
    """Per benchmark: teacher, student base, stage 1 and the final OPD checkpoint (value = final OPD)."""
    S = SECTIONS[4]
    _cols(accuracy, ["checkpoint", "benchmark", "pass@1"], src)
    opd = opd_sorted(set(accuracy["checkpoint"]))
    final = opd[-1] if opd else None
    shown = [c for c in ("teacher", "student_base", "stage1") if (accuracy["checkpoint"] == c).any()]
    shown += [final] if final else []
    rows = []
    for b in dict.fromkeys(accuracy["benchmark"]):
        sub = accuracy[accuracy["benchmark"] == b].set_index("checkpoint")["pass@1"]
        parts = [f"{c} {float(sub[c]):.3f}" for c in shown if c in sub.index]
        val = float(sub[final]) if final in sub.index else math.nan
        rows.append(Row(S, f"pass@1 on {b}" + (" (pooled hard benchmarks)" if b == "hard_avg" else ""),
                        " · ".join(parts), "curves only (Fig. 5)" if b == "hard_avg" else NOT_REPORTED, val,
                        source=src, note=f"value = final OPD checkpoint ({final})" if final else ""))
    return rows


def distillation_rows(summary: Mapping, src: str = "eval/distillation.json") -> list[Row]:
    """Does the distillation work? Paired gains, the gap closed and the OPD KL curve (``rocktokens.evaluate.distillation``)."""
    from rocktokens.evaluate.distillation import summary_rows

    return [Row(SECTIONS[4], q, text, NOT_REPORTED, value, source=src) for q, text, value in summary_rows(summary)]


def recovery_rows(summary: Mapping, src: str = "recovery/summary.json") -> list[Row]:
    """Embedded world: are the planted roles recovered by the knockout census? (``rocktokens.recovery.planted``)."""
    from rocktokens.recovery.planted import summary_rows

    return [Row(SECTIONS[2], q, text, NOT_REPORTED, value, source=src) for q, text, value in summary_rows(summary)]


# ----------------------------------------------------------------------------------------------------------------
# table and renderings


def summary_table(artifacts: Mapping) -> pd.DataFrame:
    """The long "this run vs the paper" table from :func:`load_artifacts`' output."""
    a = {k: v[0] for k, v in artifacts.items()}
    s = {k: v[1] for k, v in artifacts.items()}
    rows = [*rock_rows(a["rocks"], s["rocks"]),
            *geometry_rows(a["gradients"], a["persistence"], a.get("probe"), s["gradients"], s["persistence"],
                           s.get("probe", "geometry/optimizer_probe.json")),
            *knockout_rows(a["table1"], a["table2"], a["sign_test"], a["multiple_testing"], s),
            *(power_rows(a["knockout_power"], s["knockout_power"]) if "knockout_power" in a else []),
            *(recovery_rows(a["recovery"], s["recovery"]) if "recovery" in a else []),  # world: planted roles
            *(freeze_rows(a["freeze_arms"], a["freeze_accuracy"], s) if "freeze_arms" in a else []),  # BYO: no arms
            *accuracy_rows(a["accuracy"], s["accuracy"]),
            *(distillation_rows(a["distillation"], s["distillation"]) if "distillation" in a else [])]
    return pd.DataFrame([asdict(r) for r in rows], columns=COLUMNS)


def _preamble(run: str, table: pd.DataFrame) -> list[str]:
    K = table.loc[table["quantity"] == "chosen K (rock set R)", "value"]
    k = f"K* = {int(K.iloc[0])}" if len(K) else "the chosen K"
    return [f"Run `{run}`. Every number of *this run* is read from the run's artifacts (column *from*, relative to "
            f"`results/{run}/`); the paper's are arXiv 2605.09253v3 (Qwen3-30B-A3B → Qwen3-4B, MATH-500 "
            "trajectories). "
            f"The paper's cutoffs are mapped relative to the chosen K ({k}; the paper's K* = 100 of 50–200): "
            "K ≤ 100 → K ≤ K*, K ≥ 150 → K ≥ 1.5·K*, K = 50 → the grid K nearest K*/2.",
            "Below paper scale (configs/paper.yaml) the study runs on a synthetic world with tiny models: the "
            "table checks that the pipeline measures what the paper measures, not that the paper's values come out."]


def summary_markdown(table: pd.DataFrame, run: str) -> str:
    """The table as markdown, one table per section."""
    esc = lambda x: str(x).replace("|", "\\|")  # noqa: E731
    L = ["# This run vs the paper", "", *(p + "\n" for p in _preamble(run, table))]
    for sec, g in table.groupby("section", sort=False):
        L += [f"## {sec}", "", "| quantity | this run | paper | from | note |", "|---|---|---|---|---|"]
        L += [f"| {esc(r.quantity)} | {esc(r.this_run)} | {esc(r.paper)} | `{r.source}` | {esc(r.note)} |"
              for r in g.itertuples()]
        L.append("")
    return "\n".join(L)


def summary_html(table: pd.DataFrame, run: str) -> str:
    """The table as one self-contained HTML page (rendered inside the Snakemake report)."""
    e = html.escape
    css = ("body{font-family:sans-serif;font-size:13px;margin:1em}table{border-collapse:collapse;margin-bottom:1.5em}"
           "th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}th{background:#eee}"
           "td.n{white-space:nowrap}code{font-size:12px}")
    H = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>This run vs the paper</title>",
         f"<style>{css}</style></head><body>", "<h1>This run vs the paper</h1>",
         *(f"<p>{e(p)}</p>" for p in _preamble(run, table))]
    for sec, g in table.groupby("section", sort=False):
        H += [f"<h2>{e(sec)}</h2>", "<table><tr><th>quantity</th><th>this run</th><th>paper</th><th>from</th>"
              "<th>note</th></tr>"]
        H += [f"<tr><td>{e(r.quantity)}</td><td class='n'>{e(r.this_run)}</td><td class='n'>{e(r.paper)}</td>"
              f"<td><code>{e(r.source)}</code></td><td>{e(r.note)}</td></tr>" for r in g.itertuples()]
        H.append("</table>")
    H.append("</body></html>")
    return "\n".join(H) + "\n"


def write_summary(inputs: Mapping[str, str | Path], outputs: Mapping[str, str | Path], run: str) -> pd.DataFrame:
    """Read the artifacts, build the table, write ``md``, ``tsv``, ``parquet`` and ``html`` atomically."""
    from rocktokens.core.io import write_parquet, write_text, write_tsv

    need = {"md", "tsv", "parquet", "html"}
    if need - set(outputs):
        raise SummaryInputError(f"summary outputs {sorted(need - set(outputs))} not given")
    table = summary_table(load_artifacts(inputs))
    # all four are rendered before the first is written: a failure leaves none of them
    md, page = summary_markdown(table, run), summary_html(table, run)
    write_tsv(table, outputs["tsv"])
    write_parquet(table, outputs["parquet"])
    write_text(page, outputs["html"])
    write_text(md, outputs["md"])
    return table
