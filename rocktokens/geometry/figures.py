"""Figure 3 (gradient geometry and persistence, §2.6) and the optimizer-probe figure, from artifacts only.

Same conventions as :mod:`rocktokens.figures`: Matplotlib's object API on the Agg canvas, atomic PNG writes,
:class:`~rocktokens.figures.FigureInputError` for an empty frame or a missing column.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rocktokens.core.plotting import need, save
from rocktokens.geometry.gradients import GROUP_LABELS, GROUPS

GROUP_COLORS = {"rock": "#d62728", "high_kl": "#1f77b4", "random": "#7f7f7f", "control": "#7f7f7f"}
PROBE_GROUPS = ("rock", "high_kl", "control")
PROBE_LABELS = {"rock": "Rock tokens", "high_kl": "Rare high-KL", "control": "Freq-matched control"}
ARM_STYLES = ("-", "--", ":", "-.")


def _jitter(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.18, 0.18, n)


def _box_by_group(ax, values: dict, log: bool, seed: int = 0, offsets=None, hollow=False):
    """Box per group with the individual tokens as jittered points."""
    pos = np.arange(len(GROUPS), dtype=float) + (0 if offsets is None else offsets)
    data = [np.asarray(values[g], dtype=float) for g in GROUPS]
    data = [d[np.isfinite(d) & ((d > 0) if log else True)] for d in data]
    keep = [i for i, d in enumerate(data) if d.size]
    if keep:
        ax.boxplot([data[i] for i in keep], positions=pos[keep], widths=0.3 if offsets is not None else 0.5,
                   showfliers=False, medianprops={"color": "black"})
    for i, g in enumerate(GROUPS):
        d = data[i]
        face = "none" if hollow else GROUP_COLORS[g]
        ax.scatter(pos[i] + _jitter(d.size, seed + i) * (0.5 if offsets is not None else 1), d, s=10, alpha=0.6,
                   facecolors=face, edgecolors=GROUP_COLORS[g], linewidths=0.6)
    if log:
        ax.set_yscale("log")
    ax.set_xticks(np.arange(len(GROUPS)), [f"{GROUP_LABELS[g]}\n(n={len(values[g])})" for g in GROUPS], fontsize=8)


def figure3(geometry: pd.DataFrame, persistence: pd.DataFrame, out_path, early: str = "early", late: str = "late",
            dpi: int = 120) -> object:
    """The four panels of the paper's Figure 3 on this run.

    (a) ‖ḡ_t‖ by group (log); (b) cos(ḡ_t, G_balanced) by group, filled = with the token's own term, hollow =
    without it; (c) per-token mean KL at the early vs the late checkpoint (log–log, y = x dashed); (d) ΔKL =
    KL_late − KL_early by group. ``geometry``: token_id, group, n, grad_norm, cos_balanced, cos_balanced_excl
    (rows with n = 0 are not measured and skipped); ``persistence``: group, kl_early, kl_late, delta_kl.
    """
    geo = need(geometry, "geometry table", ["group", "n", "grad_norm", "cos_balanced", "cos_balanced_excl"])
    per = need(persistence, "persistence table", ["group", "kl_early", "kl_late", "delta_kl"])
    geo = geo[geo["n"] > 0]
    fig = Figure(figsize=(12, 9))
    ax = fig.subplots(2, 2)

    a = ax[0, 0]
    _box_by_group(a, {g: geo.loc[geo.group == g, "grad_norm"] for g in GROUPS}, log=True)
    a.set_ylabel(r"$\|\bar g_t\|$ (logit space)")
    a.set_title(r"(a) per-token gradient magnitude $\|\bar g_t\|$")

    b = ax[0, 1]
    _box_by_group(b, {g: geo.loc[geo.group == g, "cos_balanced"] for g in GROUPS}, log=False, offsets=-0.18)
    _box_by_group(b, {g: geo.loc[geo.group == g, "cos_balanced_excl"] for g in GROUPS}, log=False, offsets=0.18,
                  seed=10, hollow=True)
    b.axhline(0, color="black", lw=0.8)
    b.set_ylabel(r"$\cos(\bar g_t, G_{\mathrm{balanced}})$")
    b.set_title("(b) alignment with the balanced direction\n(filled: with own term; hollow: own term removed)",
                fontsize=10)

    c = ax[1, 0]
    pos = per[(per.kl_early > 0) & (per.kl_late > 0)]
    for g in GROUPS:
        s = pos[pos.group == g]
        c.scatter(s.kl_early, s.kl_late, s=12, alpha=0.7, color=GROUP_COLORS[g], label=f"{GROUP_LABELS[g]} ({len(s)})")
    if len(pos):
        lo = float(min(pos.kl_early.min(), pos.kl_late.min())) * 0.8
        hi = float(max(pos.kl_early.max(), pos.kl_late.max())) * 1.25
        c.plot([lo, hi], [lo, hi], ls="--", color="black", lw=0.8)
        c.set_xlim(lo, hi)
        c.set_ylim(lo, hi)
    c.set_xscale("log")
    c.set_yscale("log")
    c.set_xlabel(f"per-token mean KL at {early}")
    c.set_ylabel(f"per-token mean KL at {late}")
    c.set_title("(c) persistence: below the diagonal = learned")
    c.legend(fontsize=8)

    d = ax[1, 1]
    deltas = [per.loc[per.group == g, "delta_kl"].to_numpy(float) for g in GROUPS]
    keep = [i for i, x in enumerate(deltas) if x.size > 1]
    if keep:
        parts = d.violinplot([deltas[i] for i in keep], positions=np.array(keep, dtype=float), showmedians=True,
                             showextrema=False)
        for body, i in zip(parts["bodies"], keep):
            body.set_facecolor(GROUP_COLORS[GROUPS[i]])
            body.set_alpha(0.35)
    for i, g in enumerate(GROUPS):
        d.scatter(i + _jitter(deltas[i].size, 20 + i), deltas[i], s=8, alpha=0.6, color=GROUP_COLORS[g])
    d.axhline(0, color="black", lw=0.8)
    d.set_xticks(np.arange(len(GROUPS)), [GROUP_LABELS[g] for g in GROUPS], fontsize=8)
    d.set_ylabel(r"$\Delta$KL = KL$_{late}$ − KL$_{early}$")
    d.set_title(r"(d) $\Delta$KL by group")
    for axis in ax.flat:
        axis.grid(alpha=0.25)
    fig.tight_layout()
    return save(fig, out_path, dpi)


def figure_optimizer_probe(probes: dict, histories: dict, arms: pd.DataFrame, out_path, dpi: int = 120) -> object:
    """Is Adam the cause? (a) effective per-coordinate step lr/(√v̂+ε) (geometric mean) of each group's output rows per
    update in each adaptive arm (SGD arms: lr, flat); (b) gain ‖Δθ‖/(lr·‖g‖) per group and arm; (c) training
    loss per OPD step and arm; (d) relative KL reduction stage 1 → final checkpoint per group and arm
    (measurement split). ``probes``/``histories``: arm → frame (probe records; history with step, loss);
    ``arms``: the long arm table (group, arm, rel_reduction)."""
    if not probes:
        from rocktokens.core.plotting import FigureInputError

        raise FigureInputError("no probe records given")
    frames = {a: need(p, f"probe records of arm {a!r}", ["update", "group", "param", "eff_lr_gmean", "gain"])
              for a, p in probes.items()}
    tab = need(arms, "arm table", ["group", "arm", "rel_reduction"])
    fig = Figure(figsize=(13, 9))
    ax = fig.subplots(2, 2)
    for k, (arm, p) in enumerate(frames.items()):
        param = "tied" if (p["param"] == "tied").any() else "lm_head"
        p = p[p["param"] == param]
        for g in PROBE_GROUPS:
            s = p[p.group == g].sort_values("update")
            if s.empty:
                continue
            lab = f"{PROBE_LABELS[g]}, {arm}"
            ax[0, 0].plot(s["update"], s["eff_lr_gmean"], ARM_STYLES[k % 4], color=GROUP_COLORS[g], lw=1, label=lab)
            ax[0, 1].plot(s["update"], s["gain"], ARM_STYLES[k % 4], color=GROUP_COLORS[g], lw=1, label=lab)
    from matplotlib.ticker import MaxNLocator

    for axis in (ax[0, 0], ax[0, 1], ax[1, 0]):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax[0, 0].set_yscale("log")
    ax[0, 0].set_xlabel("update")
    ax[0, 0].set_ylabel(r"geometric mean of lr/($\sqrt{\hat v}+\epsilon$)  (SGD: lr)")
    ax[0, 0].set_title("(a) effective step size of the group's output rows")
    ax[0, 0].legend(fontsize=7)
    ax[0, 1].set_yscale("log")
    ax[0, 1].set_xlabel("update")
    ax[0, 1].set_ylabel(r"$\|\Delta\theta\| / (\mathrm{lr}\,\|g\|)$")
    ax[0, 1].set_title("(b) realised step per unit gradient")
    for k, (arm, h) in enumerate(histories.items()):
        if h is not None and len(h) and {"step", "loss"} <= set(h.columns):
            ax[1, 0].plot(h["step"], h["loss"], ARM_STYLES[k % 4], color="black", label=arm)
    ax[1, 0].set_xlabel("OPD step")
    ax[1, 0].set_ylabel("reverse-KL loss")
    ax[1, 0].set_title("(c) training loss per arm")
    ax[1, 0].legend(fontsize=8)
    d = ax[1, 1]
    arm_names = list(dict.fromkeys(tab["arm"]))
    width = 0.8 / max(len(arm_names), 1)
    for j, arm in enumerate(arm_names):
        for i, g in enumerate(GROUPS):
            x = tab.loc[(tab.arm == arm) & (tab.group == g), "rel_reduction"].to_numpy(float)
            x = x[np.isfinite(x)]
            if not x.size:
                continue
            p = i - 0.4 + width * (j + 0.5)
            d.boxplot([x], positions=[p], widths=width * 0.8, showfliers=False, patch_artist=True,
                      boxprops={"facecolor": GROUP_COLORS[g], "alpha": 0.3 + 0.4 * (j % 2)},
                      medianprops={"color": "black"})
            d.text(p, 1.02, arm, transform=d.get_xaxis_transform(), ha="center", fontsize=7)
    d.axhline(0, color="black", lw=0.8)
    d.set_xticks(np.arange(len(GROUPS)), [GROUP_LABELS[g] for g in GROUPS], fontsize=8)
    d.set_xlim(-0.6, len(GROUPS) - 0.4)
    d.set_ylabel("(KL$_{stage1}$ − KL$_{final}$) / KL$_{stage1}$")
    d.set_title("(d) relative KL reduction per arm (measurement split)", pad=14)
    for axis in ax.flat:
        axis.grid(alpha=0.25)
    fig.tight_layout()
    return save(fig, out_path, dpi)
