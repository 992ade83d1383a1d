"""Recovery of the planted causal roles (embedded world only): does the knockout census find what was planted?

The world plants token types whose role for the math checker is known by construction
(:func:`rocktokens.world.generator.planted_words`; ``world/planted.parquet`` maps them to token ids with
:func:`planted_table`): *pillars* (answer digits), *neutral* (interchangeable connectives / openers) and
*stumbling blocks* (hesitation markers that precede a wrong value in the student base's corpus).
:func:`recovery_table` sets every planted type beside what the knockout (rules/knockout.smk) called it:

* ``in_pool`` — whether the type entered the screening pool (``knockout/candidates.parquet``: top K_screen by R);
  a type outside it was never knocked out and is reported as such, never counted in the confusion matrix;
* per **policy** — ``token`` (Eq. 20: ban v), ``window`` (Eq. 21: ban W(v)) and ``eq22`` (the paper's category
  combining both, ``knockout/categories.parquet``) — Δ with its paired-bootstrap interval and p
  (``knockout/effects.parquet``), the Benjamini–Hochberg adjusted p (``q_bh``) within the family of that policy's
  tests on that benchmark (all screened candidates, as ``knockout/multiple_testing.tsv`` counts them), and the
  category twice: ``category`` at the per-candidate level α (the census), ``category_bh`` with BH at level q in
  place of α (:func:`rocktokens.core.stats.classify` on the adjusted p-values).

:func:`confusion` counts planted role × called category per (benchmark, policy, test) with the sensitivity
(called as planted / planted in the pool) and the false-discovery rate of each role's call (called as that role
but planted otherwise / called as that role, among planted types). :func:`target` checks the issue's target:
every planted pillar and stumbling block in the pool classified as such by the token policy (census level α),
and no planted neutral type called a pillar or stumbling block after BH at q. Planted roles concern the world's
math checker, so only knockout benchmarks scored by it (:data:`MATH_BENCHMARKS`) are used.
"""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from rocktokens.core.stats import CATEGORIES, MIXED, NEUTRAL, STRONG_PILLAR, STRONG_STUMBLING, bh_adjusted, classify
from rocktokens.freeze.arms import ArmSpec, rock_freeze_arm

log = logging.getLogger("rocktokens.recovery.planted")

ROLES = ("pillar", "neutral", "stumbling")
#: The census category a planted role should be called.
EXPECTED = {"pillar": STRONG_PILLAR, "neutral": NEUTRAL, "stumbling": STRONG_STUMBLING}
ROLE_OF = {v: k for k, v in EXPECTED.items()}
POLICIES = ("token", "window", "eq22")
TESTS = ("raw", "bh")
#: Knockout benchmarks of the world scored by its math checker (the planted roles are defined for it).
MATH_BENCHMARKS = ("math", "aime24", "aime25", "hmmt25")
PLANTED_COLUMNS = ["token_id", "qwen3_id", "token", "role", "why", "answer_share", "in_vocab"]
RECOVERY_COLUMNS = ["benchmark", "token_id", "qwen3_id", "token", "role", "expected", "in_pool", "rank", "freq", "R",
                    "policy", "n_banned", "delta", "ci_lo", "ci_hi", "p", "q_bh", "category", "category_bh",
                    "recovered", "recovered_bh", "why"]


class RecoveryInputError(ValueError):
    """Bad recovery input: a missing column, an unknown role, a planted token the tokenizer cannot place, ..."""


def _need(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise RecoveryInputError(f"{what} lacks column(s) {missing}")


# ----------------------------------------------------------------------------------------------- planted ids
def planted_table(words: pd.DataFrame, id_map: pd.DataFrame) -> pd.DataFrame:
    """``world/planted.parquet``: the planted words with their token ids — ``token_id`` (the compact id the models,
    token statistics and knockout candidates use), ``qwen3_id`` (the real Qwen3 id), ``token``, ``role``, ``why``,
    ``answer_share`` and ``in_vocab`` (False: the world's texts never produced the token, so no id; then the ids
    are -1).

    ``words``: :func:`rocktokens.world.generator.planted_words`; ``id_map``: the compact tokenizer's
    ``id_map.parquet`` (``compact_id``, ``qwen3_id``, ``token``: the decoded string of each id). A planted string
    is one token by construction; two ids decoding to it are an error.
    """
    _need(words, ["token", "role", "why"], "planted words")
    _need(id_map, ["compact_id", "qwen3_id", "token"], "id map")
    bad = sorted(set(words["role"]) - set(ROLES))
    if bad:
        raise RecoveryInputError(f"unknown planted role(s) {bad}; expected {list(ROLES)}")
    by_token = id_map.groupby("token")
    rows = []
    for w in words.itertuples(index=False):
        hit = by_token.get_group(w.token) if w.token in by_token.groups else id_map.iloc[:0]
        if len(hit) > 1:
            raise RecoveryInputError(f"planted token {w.token!r} decodes from {len(hit)} ids: {hit['compact_id'].tolist()}")
        found = len(hit) == 1
        rows.append({"token_id": int(hit["compact_id"].iloc[0]) if found else -1,
                     "qwen3_id": int(hit["qwen3_id"].iloc[0]) if found else -1,
                     "token": w.token, "role": w.role, "why": w.why,
                     "answer_share": float(getattr(w, "answer_share", np.nan)), "in_vocab": found})
    out = pd.DataFrame(rows, columns=PLANTED_COLUMNS)
    if not out["in_vocab"].all():
        log.warning("planted token(s) not in the world's vocabulary: %s", out.loc[~out["in_vocab"], "token"].tolist())
    return out.astype({"token_id": "int64", "qwen3_id": "int64", "in_vocab": "bool"})


# ----------------------------------------------------------------------------------------------- table
def recovery_table(planted: pd.DataFrame, candidates: pd.DataFrame, effects: pd.DataFrame,
                   categories: pd.DataFrame, eps: float, alpha: float, q: float,
                   benchmarks: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (benchmark, planted type, policy) — see the module docstring; columns :data:`RECOVERY_COLUMNS`.

    ``benchmarks``: the knockout benchmarks to read (default: those of ``effects`` in :data:`MATH_BENCHMARKS`).
    A planted type outside the pool has ``in_pool`` False and NaN effects and categories.
    """
    _need(planted, ["token_id", "token", "role"], "planted table")
    _need(candidates, ["token_id"], "knockout candidates")
    _need(effects, ["benchmark", "token_id", "policy", "delta", "p", "ci_lo", "ci_hi", "n_banned"], "knockout effects")
    _need(categories, ["benchmark", "token_id", "category"], "knockout categories")
    bad = sorted(set(planted["role"]) - set(ROLES))
    if bad:
        raise RecoveryInputError(f"unknown planted role(s) {bad}; expected {list(ROLES)}")
    if benchmarks is None:
        benchmarks = [b for b in dict.fromkeys(effects["benchmark"]) if b in MATH_BENCHMARKS]
    eff = effects[effects["benchmark"].isin(benchmarks)].copy()
    eff["q_bh"] = np.nan
    for _, idx in eff.groupby(["benchmark", "policy"], sort=False).groups.items():
        eff.loc[idx, "q_bh"] = bh_adjusted(eff.loc[idx, "p"].to_numpy())
    pool = candidates.set_index("token_id")
    rows = []
    for b in benchmarks:
        e = eff[eff["benchmark"] == b].set_index(["token_id", "policy"])
        cat = categories[categories["benchmark"] == b].set_index("token_id")["category"]
        for t in planted.itertuples(index=False):
            v = int(t.token_id)
            in_pool = v in pool.index and (v, "token") in e.index
            base = {"benchmark": b, "token_id": v, "qwen3_id": getattr(t, "qwen3_id", pd.NA), "token": t.token,
                    "role": t.role, "expected": EXPECTED[t.role], "in_pool": bool(in_pool),
                    "rank": pool.at[v, "rank"] if v in pool.index and "rank" in pool else np.nan,
                    "freq": pool.at[v, "freq"] if v in pool.index and "freq" in pool else np.nan,
                    "R": pool.at[v, "R"] if v in pool.index and "R" in pool else np.nan,
                    "why": getattr(t, "why", "")}
            for policy in POLICIES:
                row = dict(base, policy=policy, n_banned=np.nan, delta=np.nan, ci_lo=np.nan, ci_hi=np.nan, p=np.nan,
                           q_bh=np.nan, category=None, category_bh=None)
                if in_pool and policy in ("token", "window") and (v, policy) in e.index:
                    r = e.loc[(v, policy)]
                    row.update(n_banned=r["n_banned"], delta=r["delta"], ci_lo=r["ci_lo"], ci_hi=r["ci_hi"], p=r["p"],
                               q_bh=r["q_bh"])
                    row["category"] = classify([r["delta"]], [r["p"]], [np.nan], [np.nan], eps, alpha)[0]
                    row["category_bh"] = classify([r["delta"]], [r["q_bh"]], [np.nan], [np.nan], eps, q)[0]
                elif in_pool and policy == "eq22":
                    tk, wk = e.loc[(v, "token")], e.loc[(v, "window")] if (v, "window") in e.index else None
                    row["category"] = cat.get(v, None)
                    row["category_bh"] = classify([tk["delta"]], [tk["q_bh"]],
                                                  [np.nan if wk is None else wk["delta"]],
                                                  [np.nan if wk is None else wk["q_bh"]], eps, q)[0]
                rows.append(row)
    out = pd.DataFrame(rows, columns=[c for c in RECOVERY_COLUMNS if c not in ("recovered", "recovered_bh")])
    for c in ("category", "category_bh"):  # None outside the pool (a nullable string column in parquet and TSV)
        out[c] = out[c].astype("string")
    for c, cat in (("recovered", "category"), ("recovered_bh", "category_bh")):
        out[c] = (out[cat] == out["expected"]).astype("boolean").where(out["in_pool"], pd.NA)
    return out[RECOVERY_COLUMNS].astype({"qwen3_id": "Int64", "in_pool": "bool"})


# ----------------------------------------------------------------------------------------------- confusion
def confusion(rec: pd.DataFrame) -> pd.DataFrame:
    """Planted role × called category per (benchmark, policy, test): one row per role with ``n_in_pool``,
    ``n_not_in_pool``, the counts called ``strong_pillar`` / ``neutral`` / ``strong_stumbling`` / ``mixed``,
    ``sensitivity`` (called as planted / in the pool; NaN when none is in the pool), ``n_called`` (planted types in
    the pool called as this role's category) and ``fdr`` (the share of those planted otherwise; NaN when none)."""
    _need(rec, ["benchmark", "policy", "role", "in_pool", "category", "category_bh"], "recovery table")
    rows = []
    for (b, policy), g in rec.groupby(["benchmark", "policy"], sort=False):
        pool = g[g["in_pool"].astype(bool)]
        for test, col in zip(TESTS, ("category", "category_bh")):
            for role in ROLES:
                mine = pool[pool["role"] == role]
                row = {"benchmark": b, "policy": policy, "test": test, "role": role, "n_in_pool": len(mine),
                       "n_not_in_pool": int(((g["role"] == role) & ~g["in_pool"].astype(bool)).sum())}
                for c in CATEGORIES:
                    row[f"called_{c}"] = int((mine[col] == c).sum())
                hit = row[f"called_{EXPECTED[role]}"]
                row["sensitivity"] = hit / len(mine) if len(mine) else np.nan
                called = pool[pool[col] == EXPECTED[role]]
                row["n_called"] = len(called)
                row["fdr"] = float((called["role"] != role).mean()) if len(called) else np.nan
                rows.append(row)
    cols = ["benchmark", "policy", "test", "role", "n_in_pool", "n_not_in_pool", *(f"called_{c}" for c in CATEGORIES),
            "sensitivity", "n_called", "fdr"]
    return pd.DataFrame(rows, columns=cols)


# ----------------------------------------------------------------------------------------------- target
def _names(df: pd.DataFrame, col: str | None = None) -> str:
    if not len(df):
        return "none"
    return ", ".join(f"{t!r}" + (f" ({c})" if col else "") for t, c in
                     zip(df["token"], df[col] if col else [None] * len(df)))


def target(rec: pd.DataFrame, q: float) -> pd.DataFrame:
    """The issue's target per benchmark, one row per check (``benchmark``, ``check``, ``met``, ``detail``):
    ``hits`` — every planted pillar and stumbling block in the pool called so by the token policy (level α);
    ``neutral_clean_<policy>`` — no planted neutral type in the pool called a pillar or stumbling block after BH
    at ``q`` (token policy: the target; window and eq22 shown beside it); ``reach_<role>`` — which planted types
    entered the pool (met when all did)."""
    rows = []
    for b, g in rec.groupby("benchmark", sort=False):
        pool = g[g["in_pool"].astype(bool)]
        tok = pool[(pool["policy"] == "token") & pool["role"].isin(["pillar", "stumbling"])]
        miss = tok[tok["category"] != tok["expected"]]
        rows.append({"benchmark": b, "check": "hits",
                     "met": bool(len(tok) and not len(miss)),
                     "detail": f"{len(tok) - len(miss)} of {len(tok)} planted pillars/stumbling blocks in the pool "
                               f"called so by the token policy; missed: {_names(miss, 'category')}"})
        for policy in POLICIES:
            neu = pool[(pool["policy"] == policy) & (pool["role"] == "neutral")]
            wrong = neu[neu["category_bh"].isin([STRONG_PILLAR, STRONG_STUMBLING, MIXED])]
            rows.append({"benchmark": b, "check": f"neutral_clean_{policy}", "met": not len(wrong),
                         "detail": f"{len(wrong)} of {len(neu)} planted neutral types in the pool called pillar or "
                                   f"stumbling by the {policy} policy after BH at q = {q:g}: {_names(wrong, 'category_bh')}"})
        one = g[g["policy"] == "token"]
        for role in ROLES:
            r = one[one["role"] == role]
            out = r[~r["in_pool"].astype(bool)]
            rows.append({"benchmark": b, "check": f"reach_{role}", "met": not len(out),
                         "detail": f"{len(r) - len(out)} of {len(r)} planted {role} types in the pool; "
                                   f"outside: {_names(out)}"})
    return pd.DataFrame(rows, columns=["benchmark", "check", "met", "detail"])


# ----------------------------------------------------------------------------------------------- freeze arms
FREEZE_COLUMNS = ["arm", "frozen", "lam", "masked_share", "step", "pass@1", "ci_low", "ci_high", "delta_vs_reference",
                  "mde_vs_reference", "expected", "reading"]
#: What freezing a planted role's types (λ = 0 on them and their windows) should do to OPD's gain, by construction.
FREEZE_EXPECTED = {"pillar": "below the reference (the digits' training is OPD's arithmetic gain)",
                   "neutral": "as the reference (an equally good word either way)",
                   "stumbling": "as or above the reference"}


def freeze_recovery(arms: pd.DataFrame, accuracy: pd.DataFrame, reference: str = "baseline") -> pd.DataFrame:
    """The freeze arms restricted to planted roles (``arms.<name>.planted``) beside the reference arm and the rock
    freeze (λ = 0 on R ∪ W_R): per arm its final pooled pass@1 with the 95 % interval (``freeze/accuracy``), masked
    share, Δ against the reference paired over problems with the minimum detectable difference (``freeze/arms.tsv``)
    and a ``reading``: "below"/"above" the reference when |Δ| reaches the MDE, else "no detectable difference".
    Empty when the run has no planted arm."""
    _need(arms, ["arm", "lam", "windows", "optimizer", "masked_share"], "freeze arms table")
    _need(accuracy, ["arm", "step", "pass@1", "ci_low", "ci_high"], "freeze accuracy table")
    specs = [ArmSpec.from_row(a) for _, a in arms.iterrows()]
    if not any(s.planted for s in specs):
        return pd.DataFrame(columns=FREEZE_COLUMNS)
    shown = {reference, rock_freeze_arm(arms)} | {s.name for s in specs if s.planted}
    rows = []
    for spec, (_, a) in zip(specs, arms.iterrows()):
        if spec.name not in shown:
            continue
        last = accuracy[accuracy["arm"] == a["arm"]].sort_values("step").iloc[-1]
        role = spec.planted or ""
        d, mde = a.get("delta_vs_reference", np.nan), a.get("mde_vs_reference", np.nan)
        if a["arm"] == reference:
            reading = "reference"
        elif pd.isna(d) or pd.isna(mde):
            reading = "no comparison"
        else:
            reading = ("below" if d < 0 else "above") if abs(d) >= mde else "no detectable difference"
        rows.append({"arm": a["arm"], "frozen": spec.frozen,
                     "lam": a["lam"], "masked_share": a["masked_share"], "step": int(last["step"]),
                     "pass@1": last["pass@1"], "ci_low": last["ci_low"], "ci_high": last["ci_high"],
                     "delta_vs_reference": d, "mde_vs_reference": mde, "expected": FREEZE_EXPECTED.get(role, ""),
                     "reading": reading})
    return pd.DataFrame(rows, columns=FREEZE_COLUMNS)


# ----------------------------------------------------------------------------------------------- summary
def summary(rec: pd.DataFrame, conf: pd.DataFrame, tgt: pd.DataFrame, q: float,
            freeze: pd.DataFrame | None = None) -> dict:
    """JSON-able digest for the run summary (``recovery/summary.json``)."""
    out: dict = {"q": q, "benchmarks": {}}
    if freeze is not None and len(freeze):
        out["freeze"] = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
                         for r in freeze.to_dict("records")]
    for b, g in tgt.groupby("benchmark", sort=False):
        c = conf[(conf["benchmark"] == b) & (conf["policy"] == "token")]
        sens = {f"{r.test}:{r.role}": (None if pd.isna(r.sensitivity) else float(r.sensitivity))
                for r in c.itertuples()}
        fdr = {f"{r.test}:{r.role}": (None if pd.isna(r.fdr) else float(r.fdr)) for r in c.itertuples()}
        out["benchmarks"][b] = {"checks": {r.check: {"met": bool(r.met), "detail": r.detail} for r in g.itertuples()},
                                "sensitivity_token": sens, "fdr_token": fdr}
    return out


def summary_rows(s: Mapping) -> list[tuple[str, str, float]]:
    """(quantity, text, value) lines of the run summary: the target checks and the token policy's sensitivity."""
    rows = []
    for b, d in s["benchmarks"].items():
        for check, c in d["checks"].items():
            rows.append((f"planted roles ({b}): {check}", ("met" if c["met"] else "not met") + f" — {c['detail']}",
                         float(c["met"])))
        for role in ROLES:
            v = d["sensitivity_token"].get(f"raw:{role}")
            f = d["fdr_token"].get(f"raw:{role}")
            rows.append((f"planted {role} recovered by token knockout ({b}, level α)",
                         ("n/a (none in the pool)" if v is None else f"sensitivity {v:.0%}")
                         + ("" if f is None else f", FDR {f:.0%}"), np.nan if v is None else float(v)))
    for r in s.get("freeze", []):
        if r["reading"] == "reference":
            continue
        vs = ("" if r["delta_vs_reference"] is None else f"; Δ vs reference {r['delta_vs_reference']:+.3f}"
              + ("" if r["mde_vs_reference"] is None else f" (detectable ≥ {r['mde_vs_reference']:.3f})"))
        rows.append((f"freeze arm {r['arm']} (λ={r['lam']:g} on {r['frozen']}, masked {r['masked_share']:.1%})",
                     f"pass@1 {r['pass@1']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] after {r['step']} steps{vs}: "
                     f"{r['reading']}" + (f" (expected: {r['expected']})" if r["expected"] else ""),
                     float(r["pass@1"])))
    return rows


# ----------------------------------------------------------------------------------------------- figure
_ROLE_COLOURS = {"pillar": "#c0392b", "neutral": "#7f8c8d", "stumbling": "#2471a3"}


def plot_recovery(rec: pd.DataFrame, conf: pd.DataFrame, path, test: str = "bh", dpi: int = 110,
                  freeze: pd.DataFrame | None = None, accuracy: pd.DataFrame | None = None) -> None:
    """Per benchmark (rows): Δ with its 95 % interval of every planted type in the pool under the token policy,
    coloured by planted role (left), and the confusion matrix planted role × called category of each policy
    (right, at ``test``); with ``freeze`` (:func:`freeze_recovery`) and ``accuracy`` (freeze/accuracy), a last row
    with the pooled pass@1 vs step of the planted-role arms beside the reference and the rock freeze. From the
    artifacts only; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rocktokens.core.io import atomic_file

    benches = list(dict.fromkeys(rec["benchmark"])) or ["(none)"]
    arms_row = freeze is not None and accuracy is not None and len(freeze) > 0
    n_rows = len(benches) + int(arms_row)
    fig, axes = plt.subplots(n_rows, 1 + len(POLICIES), figsize=(4.2 * (1 + len(POLICIES)), 3.6 * n_rows),
                             squeeze=False)
    if arms_row:
        ax = axes[-1, 0]
        for r in freeze.itertuples():
            a = accuracy[accuracy["arm"] == r.arm].sort_values("step")
            line = ax.plot(a["step"], a["pass@1"], "o-", ms=3, label=f"{r.arm} ({r.frozen})")[0]
            ax.fill_between(a["step"], a["ci_low"], a["ci_high"], color=line.get_color(), alpha=0.12)
        ax.set_xlabel("OPD step")
        ax.set_ylabel("pooled pass@1 (hard, 95 % CI)")
        ax.set_title("freeze arms: planted roles frozen (λ = 0)", fontsize=9)
        ax.legend(fontsize=6, loc="best")
        for ax in axes[-1, 1:]:
            ax.axis("off")
    called = [STRONG_PILLAR, NEUTRAL, STRONG_STUMBLING, MIXED]
    for i, b in enumerate(benches):
        ax = axes[i, 0]
        d = rec[(rec["benchmark"] == b) & (rec["policy"] == "token") & rec["in_pool"].astype(bool)]
        d = d.sort_values(["role", "delta"], kind="stable").reset_index(drop=True)
        for j, r in d.iterrows():
            c = _ROLE_COLOURS[r["role"]]
            ax.errorbar(r["delta"], j, xerr=[[r["delta"] - r["ci_lo"]], [r["ci_hi"] - r["delta"]]], fmt="o",
                        color=c, ms=4, capsize=2)
        ax.axvline(0, color="k", lw=0.6)
        ax.set_yticks(range(len(d)), [repr(t)[1:-1] for t in d["token"]], fontsize=7)
        ax.set_xlabel("Δ token knockout (95 % CI)")
        ax.set_title(f"{b}: planted types in the pool", fontsize=9)
        for role, c in _ROLE_COLOURS.items():
            ax.plot([], [], "o", color=c, label=role)
        ax.legend(fontsize=7, loc="best")
        for k, policy in enumerate(POLICIES):
            ax = axes[i, k + 1]
            c = conf[(conf["benchmark"] == b) & (conf["policy"] == policy) & (conf["test"] == test)].set_index("role")
            m = np.array([[int(c.at[r, f"called_{cat}"]) if r in c.index else 0 for cat in called] for r in ROLES])
            ax.imshow(m, cmap="Blues", vmin=0, vmax=max(1, m.max()))
            for (y, x), n in np.ndenumerate(m):
                ax.text(x, y, str(n), ha="center", va="center", fontsize=9,
                        color="white" if n > m.max() / 2 and n else "black")
            ax.set_xticks(range(len(called)), ["pillar", "neutral", "stumbling", "mixed"], fontsize=7)
            ax.set_yticks(range(len(ROLES)), ROLES, fontsize=7)
            ax.set_xlabel("called (census)")
            ax.set_ylabel("planted")
            ax.set_title(f"{b}: {policy} policy ({'BH' if test == 'bh' else 'level α'})", fontsize=9)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


def run(planted: pd.DataFrame, candidates: pd.DataFrame, effects: pd.DataFrame, categories: pd.DataFrame,
        ko: Mapping, freeze_arms: pd.DataFrame | None = None, freeze_accuracy: pd.DataFrame | None = None
        ) -> dict[str, object]:
    """Rule recovery's body: the table, the confusion matrix, the target, the planted-role freeze arms beside the
    reference (:func:`freeze_recovery`, when the freeze tables are given) and the summary digest. The BH level is
    0.05 when ``ko["fdr_q"]`` holds it (the issue's target), else its smallest level."""
    qs = list(ko.get("fdr_q") or [0.05])
    q = 0.05 if any(abs(x - 0.05) < 1e-12 for x in qs) else min(qs)
    benches = [b for b in ko["benchmarks"] if b in MATH_BENCHMARKS]
    rec = recovery_table(planted, candidates, effects, categories, ko["epsilon"], ko["alpha"], q, benches)
    conf = confusion(rec)
    tgt = target(rec, q)
    frz = (freeze_recovery(freeze_arms, freeze_accuracy) if freeze_arms is not None and freeze_accuracy is not None
           else pd.DataFrame(columns=FREEZE_COLUMNS))
    return {"table": rec, "confusion": conf, "target": tgt, "freeze": frz,
            "summary": summary(rec, conf, tgt, q, frz), "q": q}
