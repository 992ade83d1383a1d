"""Gradient geometry of token types (paper §2.6, Eq. 16, Figure 3 a–b) and the group tests of §2.6.

What is measured, and where
---------------------------
For every response occurrence i of token type t (the emitted label x_i), the per-occurrence gradient of the
reverse KL D_KL(πθ(·|x_<i) ‖ π_T(·|x_<i)) with respect to the student's *logits* at the position that predicts
x_i is g_i = p_s ⊙ (A − E_{p_s}[A]), A = log p_s − log p_t (:func:`rocktokens.core.losses.reverse_kl_grad`, at the
OPD temperature τ: g = ∇_z D(z/τ)/τ). Per type ḡ_t = (1/n_t) Σ_{i: x_i = t} g_i. The reference direction is
G_balanced = Σ_t ḡ_t over *every* type observed in the measured trajectories (each type weight 1).

Checkpoint: the paper does not name it. Rocks are defined by their loss at the final OPD checkpoint on that
checkpoint's own trajectories (§2.2, Eq. 4), and §2.6 asks whether they still carry a useful signal *then*, so
the default (``geometry.checkpoint: post``) is the post-OPD student teacher-forced on the post-OPD
trajectories — the token table's corpus, on its measurement split.

Memory (paper scale: V = 151,936): ḡ_t is never held for all types. One pass streams chunks of positions;
per chunk the ``[n, V]`` gradient is reduced into (a) one V-vector G_balanced = Σ_i g_i / n_{x_i}, with the
counts n_t known up front from the token ids, and (b) one V-row per *group* type (rocks, high-KL, random:
a few hundred rows, float64 ≈ 1.2 MB per row at paper scale). Nothing else of size V survives a chunk.

Splits (FACTS, mistake 5): groups are selected on one split of the analysis problems and measured on the
other (:func:`split_problems`), so selecting on high loss cannot pass regression to the mean off as a finding.

Checkpoint of the high-KL selection (``geometry.high_kl.select_on``, default ``early``): the rare high-KL types
are chosen by their mean KL at the *early* checkpoint of the persistence pair, the start of the early → late
test, and the selection reads no other scorer (:func:`build_groups`). Chosen by post-OPD KL (``post``, the
authors' order) the group would be the types still hard at the end, and "high-KL tokens are learned" would be
weakened by construction. The rocks (and their frequency-matched controls) stay defined at the post-OPD
checkpoint (§2.2: persistent high loss *after* OPD) and are ranked by ``rocks.score`` as everywhere else.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from rocktokens.tokens.aggregate import Aggregator
from rocktokens.core.losses import reverse_kl_grad
from rocktokens.rocks.analysis import paired_losses, rock_scores
from rocktokens.rocks.sets import frequency_matched_controls, rock_set
from rocktokens.core.seeding import permutation

log = logging.getLogger("rocktokens.geometry.gradients")

#: The three groups of §2.6, in plotting order.
GROUPS = ("rock", "high_kl", "random")
GROUP_LABELS = {"rock": "Rock tokens", "high_kl": "Rare high-KL", "random": "Random (freq-matched)"}


# ============================================================================ split and groups
def split_problems(problem_ids: Iterable, fraction: float, seed: int) -> tuple[list, list]:
    """(selection, measurement): a seeded split of the *problems* (all samples of a problem stay together).

    The order of ``problem_ids`` does not matter (they are sorted first); the same (ids, fraction, seed) always
    gives the same split; both parts are non-empty and disjoint.
    """
    ids = sorted({str(p) for p in problem_ids})
    if len(ids) < 2:
        raise ValueError(f"need at least 2 problems to split into selection and measurement, got {len(ids)}")
    if not 0 < fraction < 1:
        raise ValueError(f"selection fraction must lie strictly between 0 and 1, got {fraction}")
    n_sel = min(max(1, int(round(fraction * len(ids)))), len(ids) - 1)
    perm = permutation(len(ids), int(seed), "geometry-split")
    sel = sorted(ids[int(i)] for i in perm[:n_sel])
    meas = sorted(ids[int(i)] for i in perm[n_sel:])
    return sel, meas


def high_kl_tokens(stats: pd.DataFrame, n: int, min_freq: int, exclude: Iterable[int] = ()) -> pd.DataFrame:
    """Rare high-KL tokens: the ``n`` types of highest mean loss among those with ``freq >= min_freq``
    (ties by token_id), excluding ``exclude``. Fewer than ``n`` eligible types is an error naming the count.
    Reads only token_id, freq and mean_loss of ``stats`` (one scorer's per-type table)."""
    ex = {int(i) for i in exclude}
    stats = stats[["token_id", "freq", "mean_loss"]]
    ok = stats[(stats["freq"] >= min_freq) & ~stats["token_id"].isin(ex)]
    if len(ok) < n:
        raise ValueError(f"only {len(ok)} token types have >= {min_freq} occurrences on the selection split "
                         f"(outside the rocks); {n} high-KL tokens were asked for — lower geometry.high_kl.min_freq "
                         "or geometry.high_kl.n")
    idx = np.lexsort((ok["token_id"].to_numpy(), -ok["mean_loss"].to_numpy(dtype=float)))
    return ok.iloc[idx[:n]].reset_index(drop=True)


GROUP_COLUMNS = ["token_id", "qwen3_id", "token", "group", "sel_freq", "sel_mean_loss", "sel_R"]


def select_groups(sel_stats: pd.DataFrame, K: int, *, seed: int, min_freq: int, n_high_kl: int | None = None,
                  control_tol: float = 0.10, hk_stats: pd.DataFrame | None = None,
                  score: str | None = None) -> tuple[pd.DataFrame, dict]:
    """The three disjoint groups of §2.6, from per-type stats of the *selection* split only.

    * rock: the top-K of ``sel_stats`` (post-OPD scorer) by the rock score ``score`` (``rocks.score``: R, Eq. 4,
      or R_ctx, Eq. 13) — :func:`rocktokens.rocks.sets.rock_set`, the definitional rule, on this split;
    * high_kl: :func:`high_kl_tokens` (``n_high_kl`` = K by default), rocks excluded, on ``hk_stats`` — the
      per-type stats of the checkpoint ``geometry.high_kl.select_on`` names (None: ``sel_stats``, i.e. select
      on the post-OPD checkpoint). Nothing of ``sel_stats`` but the rock ids reaches this choice;
    * random: :func:`rocktokens.rocks.sets.frequency_matched_controls` for the rocks (one per rock, total occurrences
      matched within ``control_tol`` when the vocabulary allows; the achieved ratio is returned), rocks and
      high-KL excluded.

    ``sel_mean_loss`` is the mean loss each group was selected on (high_kl: from ``hk_stats``; rock, random:
    from ``sel_stats``); ``sel_R`` is R of ``sel_stats`` for every group. Returns (frame with
    :data:`GROUP_COLUMNS`, info dict).
    """
    rocks = rock_set(sel_stats, K, score=score)
    n_hk = K if n_high_kl is None else int(n_high_kl)
    hk_src = sel_stats if hk_stats is None else hk_stats
    hk = high_kl_tokens(hk_src, n_hk, min_freq, exclude=rocks["token_id"])
    ctrl = frequency_matched_controls(sel_stats, rocks, seed=seed, tol=control_tol, exclude=hk["token_id"].tolist(),
                                      strict=False)
    by_id = sel_stats.set_index("token_id")
    loss_of = {"rock": by_id["mean_loss"], "high_kl": hk_src.set_index("token_id")["mean_loss"],
               "random": by_id["mean_loss"]}
    parts = []
    for group, ids in (("rock", rocks["token_id"]), ("high_kl", hk["token_id"]), ("random", ctrl["control_token_id"])):
        sub = by_id.loc[list(ids)]
        parts.append(pd.DataFrame({
            "token_id": np.asarray(ids, dtype=np.int64),
            "qwen3_id": sub["qwen3_id"].to_numpy() if "qwen3_id" in sub else np.asarray(ids),
            "token": sub["token"].to_numpy() if "token" in sub else "",
            "group": group, "sel_freq": sub["freq"].to_numpy(np.int64),
            "sel_mean_loss": loss_of[group].loc[list(ids)].to_numpy(float), "sel_R": sub["R"].to_numpy(float)}))
    out = pd.concat(parts, ignore_index=True)
    if out["token_id"].duplicated().any():  # by construction impossible: a bug, not bad input
        raise AssertionError("geometry groups overlap")
    info = {"K": int(K), "n_high_kl": n_hk, "min_freq": int(min_freq),
            "control_total_ratio": float(ctrl["total_ratio"].iloc[0]),
            "control_within_tol": bool(ctrl["within_tol"].iloc[0])}
    return out[GROUP_COLUMNS], info


# ============================================================================ Eq. 16 and its pieces
def cosine(a, b) -> float:
    """cos(a, b) = ⟨a, b⟩ / (‖a‖‖b‖); NaN when either vector is zero."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return math.nan
    return float(np.dot(a, b) / (na * nb))


def contrib(n_t, grad_norm, cos):
    """Eq. 16: contrib(t) = n_t · ‖ḡ_t‖ · cos(ḡ_t, G_balanced) (element-wise on arrays)."""
    return np.asarray(n_t, dtype=np.float64) * np.asarray(grad_norm, dtype=np.float64) * np.asarray(cos, dtype=np.float64)


class GradientAccumulator:
    """Streams per-occurrence logit gradients into ḡ_t for the ``group_ids`` and G_balanced = Σ_t ḡ_t.

    ``counts``: n_t for every type of the vocabulary (``[V]``), counted over exactly the occurrences that will
    be :meth:`add`-ed (G_balanced weights each occurrence by 1/n_{x_i}). Sums are float64.
    """

    def __init__(self, vocab: int, group_ids: Sequence[int], counts, device="cpu"):
        ids = [int(i) for i in group_ids]
        if len(set(ids)) != len(ids):
            raise ValueError("group_ids has duplicates")
        if any(i < 0 or i >= vocab for i in ids):
            raise ValueError(f"group id outside the vocabulary [0, {vocab})")
        counts = torch.as_tensor(np.asarray(counts), dtype=torch.float64, device=device)
        if counts.shape != (vocab,):
            raise ValueError(f"counts must have shape ({vocab},), got {tuple(counts.shape)}")
        self.vocab, self.group_ids, self.device = vocab, ids, torch.device(device)
        self.counts = counts
        self.inv = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
        self.slot = torch.full((vocab,), -1, dtype=torch.long, device=device)
        self.slot[torch.tensor(ids, dtype=torch.long, device=device)] = torch.arange(len(ids), device=device)
        self.sums = torch.zeros(len(ids), vocab, dtype=torch.float64, device=device)
        self.occ_norm = torch.zeros(len(ids), dtype=torch.float64, device=device)
        self.rkl = torch.zeros(vocab, dtype=torch.float64, device=device)
        self.seen = torch.zeros(vocab, dtype=torch.float64, device=device)
        self.G = torch.zeros(vocab, dtype=torch.float64, device=device)

    def add(self, logp_s: torch.Tensor, logp_t: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0):
        """One chunk: ``logp_*`` ``[n, V]`` log-softmax of logits/τ, ``labels`` ``[n]`` the emitted tokens."""
        g, rkl = reverse_kl_grad(logp_s, logp_t, return_kl=True)
        if temperature != 1.0:
            g = g / temperature
        labels = labels.to(self.device)
        if (self.counts[labels] == 0).any():
            raise ValueError("an added occurrence has count 0 in `counts`: the counts must cover every occurrence")
        g = g.to(self.device)
        # one [n]·[n, V] product in the chunk's precision, accumulated in float64 (no float64 copy of [n, V])
        self.G += (self.inv[labels].to(g.dtype) @ g).double()
        self.seen.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))
        self.rkl.index_add_(0, labels, rkl.to(self.device, torch.float64))
        slot = self.slot[labels]
        m = slot >= 0
        if m.any():
            gm = g[m].double()
            self.sums.index_add_(0, slot[m], gm)
            self.occ_norm.index_add_(0, slot[m], gm.norm(dim=-1))
        return g

    def result(self) -> "GeometryResult":
        if not torch.equal(self.seen, self.counts):
            bad = int(torch.nonzero(self.seen != self.counts)[0, 0])
            raise ValueError(f"token {bad}: {int(self.seen[bad])} occurrences added but counts says "
                             f"{int(self.counts[bad])}: counts and the streamed occurrences disagree")
        n = self.counts[torch.tensor(self.group_ids, dtype=torch.long, device=self.device)]
        gbar = self.sums / n.clamp(min=1)[:, None]
        return GeometryResult(self.group_ids, n.cpu().numpy(), gbar.cpu().numpy(),
                              (self.occ_norm / n.clamp(min=1)).cpu().numpy(), self.G.cpu().numpy(),
                              int((self.counts > 0).sum()), (self.rkl / self.counts.clamp(min=1)).cpu().numpy(),
                              self.counts.cpu().numpy())


@dataclass
class GeometryResult:
    token_ids: list[int]
    n: np.ndarray              # n_t of each group type (0: absent from the measured split)
    gbar: np.ndarray           # [n_group, V] ḡ_t
    mean_occ_norm: np.ndarray  # mean_i ‖g_i‖ per group type (before averaging: no cancellation)
    G: np.ndarray              # [V] G_balanced
    n_types: int               # types in the balanced sum
    mean_rkl: np.ndarray       # [V] mean reverse KL per type over the streamed occurrences
    counts: np.ndarray         # [V]

    def table(self) -> pd.DataFrame:
        """One row per group type: n, grad_norm = ‖ḡ_t‖, cos_balanced = cos(ḡ_t, G), cos_balanced_excl =
        cos(ḡ_t, G − ḡ_t) (the token's own term removed), contrib (Eq. 16), mean_occ_grad_norm, mean_rkl.
        Types absent from the measured split get n = 0 and NaN geometry."""
        rows = []
        for k, t in enumerate(self.token_ids):
            g = self.gbar[k]
            present = self.n[k] > 0
            norm = float(np.linalg.norm(g)) if present else math.nan
            c = cosine(g, self.G) if present else math.nan
            cx = cosine(g, self.G - g) if present else math.nan
            rows.append((int(t), int(self.n[k]), norm, c, cx, float(contrib(self.n[k], norm, c)),
                         float(self.mean_occ_norm[k]) if present else math.nan,
                         float(self.mean_rkl[t]) if present else math.nan))
        return pd.DataFrame(rows, columns=["token_id", "n", "grad_norm", "cos_balanced", "cos_balanced_excl",
                                           "contrib", "mean_occ_grad_norm", "mean_rkl"])


def stream_gradient_geometry(student, teacher, seqs, group_ids: Sequence[int], *, chunk: int = 1024,
                             batch_size: int = 8, max_len: int | None = None, temperature: float = 1.0,
                             progress: bool = True) -> GeometryResult:
    """ḡ_t for ``group_ids`` and G_balanced over every type of ``seqs``' responses, in one streamed pass.

    Teacher-forced like :func:`rocktokens.tokens.kl.score_many` (same alignment, same output-layer projection, logits
    never beyond ``chunk`` positions). The accumulators live on the student's device.
    """
    from tqdm.auto import tqdm

    from rocktokens.tokens.kl import Workspace, check_inputs, eval_mode, output_head, project
    from rocktokens.models.core import final_hidden, output_weight
    from rocktokens.core.sequences import collate

    check_inputs({"student": student}, teacher, seqs, chunk, batch_size, max_len)
    V = int(output_weight(teacher).shape[0])
    dev_s = next(student.parameters()).device
    dev_t = next(teacher.parameters()).device
    counts = np.zeros(V, dtype=np.int64)
    for s in seqs:
        counts += np.bincount(np.asarray(s.ids[s.prompt_len:], dtype=np.int64), minlength=V)
    acc = GradientAccumulator(V, group_ids, counts, device=dev_s)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i].ids))
    batches = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    ws = Workspace(chunk, V)
    with torch.inference_mode(), eval_mode([student, teacher]):
        head_s, head_t = output_head(student), output_head(teacher)
        head_t = tuple(None if x is None else x.to(dev_s) for x in head_t)
        for batch in tqdm(batches, desc="gradient geometry", unit="mb", disable=not progress):
            mb = collate([seqs[i] for i in batch], pad_id=0)
            h_t = final_hidden(teacher, mb.input_ids.to(dev_t), mb.attention_mask.to(dev_t))
            h_t = h_t[mb.rows.to(dev_t), mb.cols.to(dev_t)].to(dev_s)
            h_s = final_hidden(student, mb.input_ids.to(dev_s), mb.attention_mask.to(dev_s))
            h_s = h_s[mb.rows.to(dev_s), mb.cols.to(dev_s)]
            labels = mb.labels.to(dev_s)
            for start in range(0, h_s.shape[0], chunk):
                sl = slice(start, start + chunk)
                n = h_s[sl].shape[0]
                z_s = project(h_s[sl], head_s, ws.get("z_s", dev_s, n))
                z_t = project(h_t[sl], head_t, ws.get("z_t", dev_s, n))
                lp_s = F.log_softmax(z_s / temperature, -1)
                lp_t = F.log_softmax(z_t / temperature, -1)
                if not (torch.isfinite(lp_s).all() and torch.isfinite(lp_t).all()):
                    raise FloatingPointError("non-finite logits in the gradient-geometry pass")
                acc.add(lp_s, lp_t, labels[sl], temperature)
                del z_s, z_t, lp_s, lp_t
    return acc.result()


# ============================================================================ tests between groups
def mann_whitney(a, b) -> dict:
    """Two-sided Mann–Whitney U test of two independent samples (NaNs dropped): U (of ``a``), p, sizes,
    medians. Fewer than one value in either sample gives p = NaN."""
    from scipy.stats import mannwhitneyu

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    out = {"n_a": int(a.size), "n_b": int(b.size), "median_a": float(np.median(a)) if a.size else math.nan,
           "median_b": float(np.median(b)) if b.size else math.nan, "U": math.nan, "p": math.nan}
    if a.size and b.size:
        r = mannwhitneyu(a, b, alternative="two-sided")
        out.update(U=float(r.statistic), p=float(r.pvalue))
    return out


def wilcoxon_paired(x, y) -> dict:
    """Two-sided Wilcoxon signed-rank test of paired samples (y − x; pairs with a NaN dropped; zero
    differences handled by scipy's default ``zero_method='wilcox'``). ``p`` is NaN when every difference is 0
    or fewer than one pair remains."""
    from scipy.stats import wilcoxon

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.shape} vs {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    d = y - x
    out = {"n": int(d.size), "median_x": float(np.median(x)) if d.size else math.nan,
           "median_y": float(np.median(y)) if d.size else math.nan,
           "median_diff": float(np.median(d)) if d.size else math.nan, "W": math.nan, "p": math.nan}
    if d.size and np.any(d != 0):
        r = wilcoxon(x, y, alternative="two-sided")
        out.update(W=float(r.statistic), p=float(r.pvalue))
    return out


GEOMETRY_METRICS = ("grad_norm", "cos_balanced", "cos_balanced_excl", "contrib")


def geometry_summary(table: pd.DataFrame, info: Mapping | None = None) -> dict:
    """Per group: count measured and the median of each metric; Mann–Whitney rock vs high_kl and rock vs
    random for each metric. ``table``: :meth:`GeometryResult.table` joined with ``group``."""
    meas = table[table["n"] > 0]
    groups = {}
    for gname in GROUPS:
        sub = meas[meas["group"] == gname]
        groups[gname] = {"n_types": int(len(sub)), "n_selected": int((table["group"] == gname).sum()),
                         "occurrences": int(sub["n"].sum()),
                         **{f"median_{m}": float(sub[m].median()) if len(sub) else math.nan for m in GEOMETRY_METRICS},
                         "share_cos_gt_0.3": float((sub["cos_balanced"] > 0.3).mean()) if len(sub) else math.nan}
    tests = {}
    for other in ("high_kl", "random"):
        for m in GEOMETRY_METRICS:
            tests[f"{m}:rock_vs_{other}"] = mann_whitney(meas.loc[meas["group"] == "rock", m],
                                                         meas.loc[meas["group"] == other, m])
    return {"groups": groups, "mann_whitney": tests, **(dict(info) if info else {})}


# ============================================================================ pipeline glue (called by the rules)
def analysis_problems(token_dir, scorer: str) -> list[str]:
    """The problem ids of the token table (one scorer's partition)."""
    import pyarrow.parquet as pq

    t = pq.read_table(f"{token_dir}/scorer={scorer}", columns=["problem_id"])
    ids = sorted({str(x) for x in t.column("problem_id").to_pylist()})
    if not ids:
        raise ValueError(f"token table {token_dir} has no rows for scorer {scorer!r}")
    return ids


def build_groups(token_dir, K: int, cfg: Mapping, rocks_cfg: Mapping, post: str, seed: int, *,
                 high_kl_scorer: str | None = None, pre: str | None = None):
    """Split the analysis problems and select the three groups on the selection split (loss ``rocks.loss``).

    Rocks and random controls: the post-OPD scorer ``post``, ranked by ``rocks.score`` (R_ctx needs the pre-OPD
    scorer ``pre``: the detection of §2.2 runs on the selection split). High-KL: the ONE scorer
    ``high_kl_scorer`` (``geometry.high_kl.select_on`` resolved, e.g. the early checkpoint; None: ``post``) —
    its per-type table on the selection split is all the choice reads besides the rock ids to exclude.
    Returns (split frame: problem_id, split; groups frame; info dict)."""
    problems = analysis_problems(token_dir, post)
    sel, meas = split_problems(problems, cfg["selection_fraction"], seed)
    loss, score = rocks_cfg["loss"], rocks_cfg["score"]
    hk_scorer = post if high_kl_scorer is None else high_kl_scorer
    with Aggregator.from_config(token_dir, rocks_cfg) as agg:
        if score == "R":
            stats = agg.token_stats(post, loss, problems=sel)
        else:
            if pre is None:
                raise ValueError(f"rocks.score {score!r} needs the pre-OPD scorer (Eq. 5) to select the rocks")
            stats = rock_scores(agg, paired_losses(token_dir, pre, post, loss), post, loss, rocks_cfg["context"],
                                problems=sel)[0]
        hk_stats = agg.token_stats(hk_scorer, loss, problems=sel)
    if K > len(stats):
        raise ValueError(f"chosen K={K} exceeds the {len(stats)} token types seen on the selection split "
                         f"({len(sel)} problems)")
    hk = cfg["high_kl"]
    groups, info = select_groups(stats, K, seed=seed, min_freq=hk["min_freq"], n_high_kl=hk.get("n"),
                                 control_tol=rocks_cfg["control_tol"], hk_stats=hk_stats, score=score)
    split = pd.DataFrame({"problem_id": sel + meas, "split": ["selection"] * len(sel) + ["measurement"] * len(meas)})
    info.update(n_selection_problems=len(sel), n_measurement_problems=len(meas), scorer=post,
                loss=loss, selection_fraction=cfg["selection_fraction"], rock_score=score,
                high_kl_select_on=hk.get("select_on"), high_kl_scorer=hk_scorer)
    log.info("groups on %d selection problems: %s (rocks by %s at %s; high-KL by mean %s at %s)", len(sel),
             groups.groupby("group").size().to_dict(), score, post, loss, hk_scorer)
    return split, groups, info


def measurement_problems(split: pd.DataFrame) -> list[str]:
    for c in ("problem_id", "split"):
        if c not in split.columns:
            raise ValueError(f"split table lacks column {c!r}")
    meas = split.loc[split["split"] == "measurement", "problem_id"].astype(str).tolist()
    sel = set(split.loc[split["split"] == "selection", "problem_id"].astype(str))
    if not meas:
        raise ValueError("split table has no measurement problems")
    if sel & set(meas):
        raise ValueError("split table: selection and measurement problems overlap")
    return sorted(meas)


def measurement_rollouts(rollouts: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """The analysis rollouts of the measurement problems (rows in their original order)."""
    meas = set(measurement_problems(split))
    out = rollouts[rollouts["problem_id"].astype(str).isin(meas)].reset_index(drop=True)
    if out.empty:
        raise ValueError("no rollouts belong to the measurement problems")
    return out


def run_gradient_geometry(student, teacher, rollouts: pd.DataFrame, split: pd.DataFrame, groups: pd.DataFrame, *,
                          chunk: int, batch_size: int, temperature: float, checkpoint: str,
                          token_dir=None, rocks_cfg: Mapping | None = None, progress: bool = True):
    """ḡ_t, cosines and Eq. 16 for the group tokens on the measurement split. When ``token_dir`` is given and
    holds ``checkpoint`` as a scorer, the streamed per-type mean reverse KL is checked against its table
    (the two passes must agree). Returns (table, summary)."""
    from rocktokens.tokens.trajectories import trajectories

    ro = measurement_rollouts(rollouts, split)
    res = stream_gradient_geometry(student, teacher, trajectories(ro), groups["token_id"].tolist(), chunk=chunk,
                                   batch_size=batch_size, max_len=int(teacher.config.max_position_embeddings),
                                   temperature=temperature, progress=progress)
    table = groups[["token_id", "token", "group"]].merge(res.table(), on="token_id", how="left")
    info = {"checkpoint": checkpoint, "n_measurement_problems": int(ro["problem_id"].nunique()),
            "n_tokens": int(res.counts.sum()), "n_types_balanced": res.n_types,
            "G_balanced_norm": float(np.linalg.norm(res.G)), "temperature": temperature}
    if token_dir is not None and rocks_cfg is not None:
        with Aggregator.from_config(token_dir, rocks_cfg) as agg:
            if checkpoint in agg.scorers():
                st = agg.token_stats(checkpoint, "rkl", problems=measurement_problems(split))
                mine = res.mean_rkl[st["token_id"].to_numpy()]
                info["rkl_check_max_abs_diff"] = float(np.max(np.abs(mine - st["mean_loss"].to_numpy())))
                if not np.array_equal(res.counts[st["token_id"].to_numpy()], st["freq"].to_numpy()):
                    raise ValueError("gradient pass and token table count different occurrences per type")
    sel = {g: int((groups["group"] == g).sum()) for g in GROUPS}
    info["n_selected"] = sel
    return table, geometry_summary(table, info)
