"""Rock-freeze training (paper §4, Eq. 18–19, Figure 5): the arms, their per-token weights, the matched
random-window control, the SGD learning-rate match, masked-share accounting and the accuracy table.

Arms (config ``arms:``) are full OPD runs from the stage-1 checkpoint that differ *only* in

* ``lam`` — λ of Eq. 19 on the frozen set; ``windows`` — which set: ``rock`` (x_t ∈ R or t ∈ W_R, Eq. 18–19,
  :class:`RockMasker`; W(v) is defined in ``rocktokens.rocks.windows``), ``tokens`` (x_t ∈ R only, no windows: beside
  ``rock`` it measures what the windows themselves add), ``random`` (the matched random windows,
  :func:`random_window_mask`) or ``none``;
* ``optimizer`` / ``lr`` / ``lr_match`` (the optimizer ablation of the "is Adam the cause?" question) and ``probe``.

Everything else is identical in every arm: the stage-1 start, the prompts and their order, the rollout seeds
(a pure function of (seed, step, prompt, rollout)), the lr schedule, the number of steps (``freeze.steps``) and
the loss normaliser Z (the count of response tokens of the global batch, independent of the weights — see
``rocktokens.core.losses``). λ enters the loss only as the weight of the frozen positions; positions of weight 0 skip
the output-layer projection and full-vocabulary KL of both models (``rocktokens.core.losses.chunked_loss_and_grads``).

Masks are indexed by the *label* x_t (the emitted token), never by the position of the logit predicting it
(``rocktokens.rocks.windows.freeze_weights``; the trainer maps label t to the logit at t−1, ``training.batches``).

**The random-window control** (§4.2 "Freq-Matched Window Freeze"). On every rollout of the random arm the rock
mask M_R (what the rock arm would freeze on this very trajectory) is computed and decomposed into its maximal
runs of frozen positions. The control mask places runs of *exactly the same lengths* at random positions of the
same response, non-overlapping and separated by at least one unfrozen position (so its runs are the same runs:
the window-length distribution is matched exactly and the masked share equals the rock mask's on every
trajectory). The token-frequency match: the frozen tokens' corpus-frequency histogram (:func:`frequency_bins`:
occurrence-weighted quantile bins of the token's frequency in the analysis corpus) should equal the rock mask's,
*without* freezing rock tokens (a rock token taken by the control counts in an extra bin of target 0 — the
control looks for other tokens as frequent as the rocks, as the type-level frequency-matched controls do).
:func:`random_window_mask` keeps the best of ``candidates`` uniformly random placements (random order of the runs,
uniformly random gaps) by L1 distance of the histograms, then shifts runs one position at a time while the
distance does not grow (``sweeps`` passes) — a random placement near the uniform one, better matched. Where the
rock mask covers nearly the whole response, no placement can avoid the rocks: the control then overlaps them,
its length and count match stay exact. The rock arm runs on its own trajectories, so its realised masked share is
reported beside the control's (history columns ``masked_share`` and ``rock_mask_share``).

**Timing** (the in-DAG speed-up, ``freeze/arms.tsv``, Figure 5c). Every arm is timed alike: ``Trainer.update``
excludes the optimizer probe's hooks and the update-norm copy from the timed region (they are reported as
``instrument_s``), and the cost is taken per response token of the step (update seconds / response tokens), since
each arm samples its own rollouts and their lengths drift apart. The arm's figure is the median over its steps;
``update_speedup`` is the reference arm's over the arm's. Jobs share the machine in the DAG, so this is a check, not
a benchmark: ``benchmarks/bench_freeze.py`` times the arms side by side on identical batches.

**The SGD learning-rate match** (:func:`lr_match_target`, :func:`next_lr`). An arm with ``lr_match: <ref>`` picks
its peak lr so that its mean parameter-update norm ‖θ_{k+1} − θ_k‖₂ over the first ``freeze.lr_match.steps`` OPD
steps equals the reference arm's mean over the same steps (read from the reference's history): starting from
η₀ (``lr`` or ``stage2.lr``), a throw-away run of those steps with η_i measures ū(η_i), and
η_{i+1} = η_i · ū_ref / ū(η_i), for ``freeze.lr_match.iterations`` iterations (the first update's norm is exactly
linear in η, later ones nearly so). The trace is recorded in the arm's ``arm.json``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from rocktokens.distill.steps import opd_steps_bound
from rocktokens.core.io import read_json
from rocktokens.core.seeding import derive_seed
from rocktokens.rocks.windows import (ContextIndex, contexts_by_token, elevated_by_token, freeze_weights, stored_windows,
                                window_union)

WINDOWS = ("rock", "tokens", "random", "none")
OPTIMIZERS = ("adamw", "sgd")
#: Roles an arm may freeze instead of R (``planted``; the embedded world's planted types, world/planted.parquet).
PLANTED_ROLES = ("pillar", "neutral", "stumbling")


class FreezeConfigError(ValueError):
    pass


# ----------------------------------------------------------------------------- arm specs
@dataclass(frozen=True)
class ArmSpec:
    """One training arm (config ``arms.<name>``)."""

    name: str
    lam: float
    windows: str = "rock"
    optimizer: str = "adamw"
    lr: float | None = None  # None: stage2.lr
    lr_match: str | None = None  # another arm whose first steps' update norm this arm's lr matches
    probe: bool = False
    planted: str | None = None  # freeze the planted types of this role (and their W(v)) in place of R

    @property
    def frozen(self) -> str:
        """What the arm's λ < 1 falls on, in words ("nothing" at λ = 1)."""
        if self.lam == 1:
            return "nothing"
        what = "R" if self.planted is None else f"planted {self.planted} types"
        return {"rock": f"{what} and their windows", "tokens": f"{what} only", "random": "matched random windows",
                "none": "nothing"}[self.windows]

    @classmethod
    def from_row(cls, row: Mapping) -> "ArmSpec":
        """The settings of one row of ``freeze/arms.tsv`` (:func:`freeze_tables`; a table written before the
        ``planted`` column reads as no planted role)."""
        p = row.get("planted")
        return cls(str(row["arm"]), float(row["lam"]), str(row["windows"]), str(row.get("optimizer", "adamw")),
                   planted=p if isinstance(p, str) and p else None)

    @property
    def needs_rocks(self) -> bool:
        return self.windows != "none" or self.probe

    def to_dict(self) -> dict:
        return asdict(self)


def rock_freeze_arm(arms: pd.DataFrame) -> str | None:
    """The paper's rock freeze among the rows of ``freeze/arms.tsv``: the first arm with λ = 0 on R ∪ W_R (not on a
    planted role) and AdamW; None if there is none."""
    for _, row in arms.iterrows():
        a = ArmSpec.from_row(row)
        if a.lam == 0 and a.windows == "rock" and a.optimizer == "adamw" and a.planted is None:
            return a.name
    return None


def arm_specs(arms: Mapping[str, Mapping]) -> dict[str, ArmSpec]:
    """Parse and cross-check the ``arms:`` section; raises :class:`FreezeConfigError` naming the arm and key."""
    if not arms:
        raise FreezeConfigError("config key 'arms': at least one arm is needed")
    out = {}
    for name, a in arms.items():
        key = f"arms.{name}"
        unknown = set(a) - {"lam", "windows", "optimizer", "lr", "lr_match", "probe", "planted"}
        if unknown:
            raise FreezeConfigError(f"config key '{key}': unknown keys {sorted(unknown)}")
        if "lam" not in a:
            raise FreezeConfigError(f"config key '{key}.lam': required")
        lam = float(a["lam"])
        if not 0.0 <= lam <= 1.0:
            raise FreezeConfigError(f"config key '{key}.lam': λ must lie in [0, 1], got {lam}")
        spec = ArmSpec(name=str(name), lam=lam, windows=a.get("windows", "rock"), optimizer=a.get("optimizer", "adamw"),
                       lr=a.get("lr"), lr_match=a.get("lr_match"), probe=bool(a.get("probe", False)),
                       planted=a.get("planted"))
        if spec.windows not in WINDOWS:
            raise FreezeConfigError(f"config key '{key}.windows': {spec.windows!r} not in {WINDOWS}")
        if spec.planted is not None:
            if spec.planted not in PLANTED_ROLES:
                raise FreezeConfigError(f"config key '{key}.planted': {spec.planted!r} not in {PLANTED_ROLES} (or null)")
            if spec.windows not in ("rock", "tokens") or spec.probe:
                raise FreezeConfigError(f"config key '{key}.planted': a planted arm freezes the planted types in place "
                                        "of R (windows rock or tokens, no probe)")
        if spec.optimizer not in OPTIMIZERS:
            raise FreezeConfigError(f"config key '{key}.optimizer': {spec.optimizer!r} not in {OPTIMIZERS}")
        if spec.lr is not None and not spec.lr > 0:
            raise FreezeConfigError(f"config key '{key}.lr': must be > 0 or null")
        out[spec.name] = spec
    for spec in out.values():
        ref = spec.lr_match
        if ref is None:
            continue
        key = f"arms.{spec.name}.lr_match"
        if ref not in out:
            raise FreezeConfigError(f"config key '{key}': no arm named {ref!r}")
        if ref == spec.name or out[ref].lr_match is not None:
            raise FreezeConfigError(f"config key '{key}': the reference arm must have a fixed lr (no lr_match chain)")
    return out


def check_freeze_config(config: dict) -> dict[str, ArmSpec]:
    """Cross-field checks of ``freeze:`` and ``arms:`` that the schema cannot express; the arms this run trains (an
    arm that freezes planted types runs in the embedded world only)."""
    specs = arm_specs(config["arms"])
    f = config["freeze"]
    K = f["K"]
    if K != "chosen" and K not in config["rocks"]["Ks"]:
        raise FreezeConfigError(f"config key 'freeze.K': {K} is not one of rocks.Ks {config['rocks']['Ks']}")
    steps = f.get("steps")
    bound = opd_steps_bound(config)  # what one stage-2 epoch allows (an upper bound: long prompts drop at run time)
    if steps is not None and bound is not None and steps > bound[0]:
        raise FreezeConfigError(f"config key 'freeze.steps': {steps} exceeds the at most {bound[0]} OPD steps of "
                                f"one stage-2 epoch ({bound[1]})")
    if steps is not None and f["n_checkpoints"] > steps:
        raise FreezeConfigError(f"config key 'freeze.n_checkpoints': {f['n_checkpoints']} > freeze.steps {steps}")
    if steps is None and bound is not None and f["n_checkpoints"] > bound[0]:
        raise FreezeConfigError(f"config key 'freeze.n_checkpoints': {f['n_checkpoints']} checkpoints cannot be placed "
                                f"in the at most {bound[0]} OPD steps of stage 2 (freeze.steps null; {bound[1]})")
    if any(s.lr_match for s in specs.values()) and steps is not None and f["lr_match"]["steps"] > steps:
        raise FreezeConfigError("config key 'freeze.lr_match.steps': more than freeze.steps")
    if config.get("source", "world") != "world":  # only the embedded world has planted types: its planted arms
        specs = {n: s for n, s in specs.items() if s.planted is None}  # (config.yaml, merged under every run) drop out
        if not specs:
            raise FreezeConfigError("config key 'arms': every arm freezes planted types, and only the embedded world "
                                    "(source: world) has them")
    planted = [s for s in specs.values() if s.planted is not None]
    world = config.get("world") or {}
    for s in planted:
        off = {"neutral": "neutral_share", "stumbling": "stumble_fraction"}.get(s.planted)
        if off and not world.get(off, 0) > 0:
            raise FreezeConfigError(f"config key 'arms.{s.name}.planted': the world plants no {s.planted} types "
                                    f"(world.{off} is 0)")
    for b in f["eval"]["benchmarks"]:
        if b not in config["benchmarks"]:
            raise FreezeConfigError(f"config key 'freeze.eval.benchmarks': {b!r} is not in 'benchmarks'")
    return specs


def arm_inputs(spec: ArmSpec, rock_set: Mapping, scores, results: str, planted: str | None = None) -> dict:
    """What rule opd_arm reads beyond stage 1 (input keys of ``rocktokens.freeze.run.opd_arm``), when the arm freezes
    or probes: the rock set it freezes and its controls (``rock_set``: ``rocks``, ``controls`` and, for freeze.K
    "chosen", ``record`` = rocks/R.json; see :func:`frozen_set`), the token stats, and the occurrences from which W(v)
    is built when it masks windows (``scores``: the rock_scores rule's outputs); the planted types (``planted``:
    world/planted.parquet) when it freezes those instead of R; the reference arm's history when its lr is matched."""
    d = {}
    if spec.needs_rocks:
        d.update(rock_set, token_stats=scores.stats)
    if spec.windows != "none":
        d.update(occurrences=scores.occurrences, scores=scores.info)
    if spec.planted is not None:
        if planted is None:
            raise FreezeConfigError(f"arm {spec.name!r} freezes planted types, and this run has no planted table")
        d["planted"] = planted
    if spec.lr_match:
        d["lr_reference"] = f"{results}/arms/{spec.lr_match}/history.parquet"
    return d


def arm_freeze_settings(spec: ArmSpec, freeze: Mapping) -> dict:
    """The part of config ``freeze:`` an arm's run reads (rule opd_arm's params): K, steps and update_norm always,
    ``random`` only for the random control, ``lr_match`` only for an lr-matched arm — so editing the evaluation or
    the control's settings does not rerun the other arms."""
    out = {k: freeze[k] for k in ("K", "steps", "update_norm") if k in freeze}
    if spec.windows == "random":
        out["random"] = freeze["random"]
    if spec.lr_match is not None:
        out["lr_match"] = freeze["lr_match"]
    return out


def probe_settings(spec: ArmSpec, config: Mapping) -> dict:
    """The optimizer probe's settings (config ``geometry.probe``: every, min_freq) for an arm that runs it."""
    p = config.get("geometry", {}).get("probe", {})
    return {k: p[k] for k in ("every", "min_freq") if k in p} if spec.probe else {}


def frozen_set(K, rock_set_R, rock_set) -> dict:
    """The rock set the arms freeze, as files: ``freeze.K`` "chosen" = the study's rock set R as written
    (``rock_set_R``: that rule's outputs ``rocks``, ``controls``, ``record``), an integer K = that K's set (rule
    ``rock_set``'s output patterns ``rocks``, ``controls`` with K for ``{k}``), which does not depend on which K the
    stability analysis chooses."""
    if K == "chosen":
        return {"rocks": rock_set_R.rocks, "controls": rock_set_R.controls, "record": rock_set_R.record}
    return {"rocks": str(rock_set.rocks).format(k=int(K)), "controls": str(rock_set.controls).format(k=int(K))}


def frozen_K(K, record: Mapping | None) -> int:
    """The K of the frozen set: ``freeze.K`` when an integer, else the rock set R's (``rocks/R.json`` key "K")."""
    if K != "chosen":
        return int(K)
    if not record or "K" not in record:
        raise ValueError("freeze.K is 'chosen' but the rock set record (rocks/R.json) has no key 'K'")
    return int(record["K"])


def planted_set(planted: pd.DataFrame, role: str) -> pd.DataFrame:
    """The frozen set of a planted arm: the planted types of ``role`` in the model vocabulary (``token_id``, ``token``)
    from world/planted.parquet — in place of R in Eq. 19, with their windows W(v) built like R's."""
    need = {"token_id", "token", "role", "in_vocab"}
    missing = sorted(need - set(planted.columns))
    if missing:
        raise ValueError(f"the planted table lacks columns {missing}")
    out = planted[(planted["role"] == role) & planted["in_vocab"].astype(bool)]
    if out.empty:
        raise ValueError(f"the planted table has no {role} type in the vocabulary: the arm would freeze nothing")
    return out[["token_id", "token"]].reset_index(drop=True)


# ----------------------------------------------------------------------------- the rock mask (Eq. 18–19)
class RockMasker:
    """The frozen set of the rock arm on a response: x_t ∈ R or t ∈ W_R (Eq. 18–19, ``rocktokens.rocks.windows``).

    ``contexts``: the stored high-divergence contexts *with* their elevated flags (``rocktokens.rocks.windows.stored_windows``).
    """

    def __init__(self, rock_ids: Iterable[int], contexts: pd.DataFrame, w: int, gamma: float,
                 similarity: str = "positional", pad_policy: str = "never"):
        self.rock_ids = np.array(sorted({int(v) for v in rock_ids}), dtype=np.int64)
        if self.rock_ids.size == 0:
            raise ValueError("the rock set is empty")
        ids = self.rock_ids.tolist()
        self.index = ContextIndex(contexts_by_token(contexts, ids), w, gamma, similarity, pad_policy,
                                  elevated=elevated_by_token(contexts, ids))

    @classmethod
    def from_artifacts(cls, rocks: pd.DataFrame, occurrences: pd.DataFrame, scores: Mapping) -> "RockMasker":
        """From the frozen rock set, ``rocks/occurrences.parquet`` (the stored contexts and which of their
        neighbours were persistent high-loss) and the context parameters the analysis used (``rocks/scores.json``)."""
        p = scores.get("context_params", {})
        missing = [k for k in ("w", "gamma") if k not in p]
        if missing:
            raise ValueError(f"rocks/scores.json context_params lacks {missing}")
        return cls(rocks["token_id"], stored_windows(occurrences, int(p["w"])), int(p["w"]), float(p["gamma"]),
                   p.get("similarity", "positional"), p.get("pad_policy", "never"))

    def in_window(self, response_ids) -> np.ndarray:
        """t ∈ W_R (Eq. 18)."""
        return window_union(response_ids, self.index)

    def weights(self, response_ids, lam: float, in_window: np.ndarray | None = None) -> np.ndarray:
        """w(x_t, t) of Eq. 19, one per response token (label); ``in_window``: W_R if already computed."""
        in_window = self.in_window(response_ids) if in_window is None else in_window
        return freeze_weights(response_ids, self.rock_ids, in_window, lam)

    def mask(self, response_ids) -> np.ndarray:
        """The frozen positions: x_t ∈ R or t ∈ W_R."""
        return self.is_rock(response_ids) | self.in_window(response_ids)

    def is_rock(self, response_ids) -> np.ndarray:
        return np.isin(np.asarray(response_ids, dtype=np.int64), self.rock_ids)


# ----------------------------------------------------------------------------- the random-window control
def masked_runs(mask) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of the maximal runs of True in a boolean mask."""
    m = np.asarray(mask, dtype=bool).ravel().astype(np.int8)
    d = np.diff(np.concatenate([[0], m, [0]]))
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1)
    return starts, ends - starts


def frequency_bins(token_stats: pd.DataFrame, n_bins: int, vocab_size: int) -> np.ndarray:
    """Frequency bin of every token id: occurrence-weighted quantile bins of its corpus frequency.

    Types sorted by ``freq`` (ties by id) fill ``n_bins`` bins of equal occurrence mass, bin n_bins−1 holding the most
    frequent; ids absent from the corpus get bin 0 (the rarest). Returns an int array of length ``vocab_size``.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if not {"token_id", "freq"} <= set(token_stats.columns):
        raise ValueError("token_stats needs columns token_id and freq")
    ts = token_stats[["token_id", "freq"]].sort_values(["freq", "token_id"], kind="stable")
    ids = ts["token_id"].to_numpy(np.int64)
    freq = ts["freq"].to_numpy(np.float64)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"token_stats has ids outside the vocabulary of {vocab_size}")
    before = np.cumsum(freq) - freq
    total = freq.sum()
    bins = np.zeros(vocab_size, dtype=np.int64)
    if total > 0:
        bins[ids] = np.minimum((before / total * n_bins).astype(np.int64), n_bins - 1)
    return bins


def place_runs(lengths: Sequence[int], n: int, rng: np.random.Generator) -> np.ndarray:
    """Random non-overlapping placement of runs of the given lengths in ``n`` positions, ≥ 1 free position between
    runs: random order, and the free positions split into the k+1 gaps uniformly over compositions. Returns starts
    in the order of ``lengths``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    k = lengths.size
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    slack = n - int(lengths.sum()) - (k - 1)
    if slack < 0:
        raise ValueError(f"runs of total length {int(lengths.sum())} (+{k - 1} separators) do not fit in {n} positions")
    order = rng.permutation(k)
    cuts = np.sort(rng.choice(slack + k, size=k, replace=False))  # stars and bars: k bars among slack + k slots
    gaps = np.diff(np.concatenate([[-1], cuts])) - 1  # free positions before each run (in placement order)
    starts = np.empty(k, dtype=np.int64)
    pos = 0
    for j, i in enumerate(order):
        pos += int(gaps[j])
        starts[i] = pos
        pos += int(lengths[i]) + 1
    return starts


def _l1_delta(hist: np.ndarray, target: np.ndarray, out_bin: int, in_bin: int) -> int:
    """Change of the L1 distance |hist − target| when one position of ``out_bin`` leaves and one of ``in_bin`` enters."""
    if out_bin == in_bin:
        return 0
    return (abs(hist[out_bin] - 1 - target[out_bin]) - abs(hist[out_bin] - target[out_bin])
            + abs(hist[in_bin] + 1 - target[in_bin]) - abs(hist[in_bin] - target[in_bin]))


def random_window_mask(rock_mask, position_bins, rng: np.random.Generator, candidates: int = 16,
                       n_bins: int | None = None, avoid=None, sweeps: int = 8) -> np.ndarray:
    """The matched random-window control of one response (see the module docstring).

    ``rock_mask``: the rock arm's frozen positions on this response; ``position_bins``: the corpus-frequency bin of
    the token at each position; ``avoid``: positions the control should not take (the rock tokens themselves: a
    frozen rock token counts in an extra bin whose target is 0, so the control seeks *other* tokens of the same
    frequency). The runs of the result have exactly the rock mask's lengths (hence the same masked count), in
    random order at random places: the best of ``candidates`` uniform placements by the L1 distance of the frozen
    tokens' bin histogram to the rock mask's, then ``sweeps`` passes of a local search that shifts one run by one
    position at a time (runs in random order, direction at random) whenever that does not increase the distance.
    """
    rock_mask = np.asarray(rock_mask, dtype=bool).ravel()
    bins = np.asarray(position_bins, dtype=np.int64).ravel()
    if bins.size != rock_mask.size:
        raise ValueError(f"{bins.size} position bins for a response of {rock_mask.size} tokens")
    if candidates < 1 or sweeps < 0:
        raise ValueError(f"candidates must be >= 1 and sweeps >= 0, got {candidates}, {sweeps}")
    n = rock_mask.size
    _, lengths = masked_runs(rock_mask)
    if lengths.size == 0:
        return np.zeros(n, dtype=bool)
    nb = int(n_bins if n_bins is not None else (bins.max() + 1 if bins.size else 1))
    target = np.bincount(bins[rock_mask], minlength=nb + 1)
    cb = bins if avoid is None else np.where(np.asarray(avoid, dtype=bool).ravel(), nb, bins)  # control's bins

    def cover(starts):
        d = np.zeros(n + 1, dtype=np.int64)
        np.add.at(d, starts, 1)
        np.add.at(d, starts + lengths, -1)
        return np.cumsum(d[:n]) > 0

    best, best_d = None, math.inf
    for _ in range(candidates):
        starts = place_runs(lengths, n, rng)
        dist = int(np.abs(np.bincount(cb[cover(starts)], minlength=nb + 1) - target).sum())
        if dist < best_d:
            best, best_d = starts, dist
    order = np.argsort(best, kind="stable")
    st, ln = best[order].copy(), lengths[order]
    hist = np.bincount(cb[cover(best)], minlength=nb + 1)
    k = st.size
    for _ in range(sweeps):
        for i in rng.permutation(k):
            s, L = int(st[i]), int(ln[i])
            if rng.random() < 0.5:  # left: position s−1 joins, s+L−1 leaves
                lo = int(st[i - 1] + ln[i - 1] + 1) if i > 0 else 0
                if s - 1 < lo:
                    continue
                d = _l1_delta(hist, target, int(cb[s + L - 1]), int(cb[s - 1]))
                if d <= 0:
                    hist[cb[s + L - 1]] -= 1
                    hist[cb[s - 1]] += 1
                    st[i] = s - 1
            else:  # right: position s+L joins, s leaves
                hi = int(st[i + 1] - 1) if i < k - 1 else n
                if s + L + 1 > hi:
                    continue
                d = _l1_delta(hist, target, int(cb[s]), int(cb[s + L]))
                if d <= 0:
                    hist[cb[s]] -= 1
                    hist[cb[s + L]] += 1
                    st[i] = s + 1
    m = np.zeros(n, dtype=bool)
    for s, L in zip(st, ln):
        m[s: s + L] = True
    return m


# ----------------------------------------------------------------------------- the weight function of an arm
class ArmWeights:
    """``weight_fn`` of ``run_opd`` for one arm: w(x_t, t) per response token, plus the mask counts in ``seq.meta``.

    Counts (reported per step as shares of the step's response tokens): ``n_masked`` (this arm's frozen set),
    ``n_rock_mask`` (the rock mask on the same trajectory: for the random arm, what it is matched to),
    ``n_rock_tokens`` (x_t ∈ R), ``n_zero_weight`` (w = 0).
    """

    def __init__(self, spec: ArmSpec, masker: RockMasker | None = None, bins: np.ndarray | None = None,
                 candidates: int = 16, sweeps: int = 8):
        if spec.windows != "none" and masker is None:
            raise ValueError(f"arm {spec.name!r} freezes {spec.windows} windows: it needs the rock set and windows")
        if spec.windows == "random" and bins is None:
            raise ValueError(f"arm {spec.name!r}: the random control needs the token frequency bins")
        self.spec, self.masker, self.bins, self.candidates, self.sweeps = spec, masker, bins, candidates, sweeps
        self.n_bins = int(bins.max()) + 1 if bins is not None and bins.size else None

    def __call__(self, seq) -> list[float] | None:
        if self.spec.windows == "none":
            return None
        resp = np.asarray(seq.ids[seq.prompt_len:], dtype=np.int64)
        in_window = self.masker.in_window(resp)  # W_R: the costly part, once per rollout
        is_rock = self.masker.is_rock(resp)
        rock = is_rock | in_window
        seq.meta["n_rock_tokens"] = int(is_rock.sum())
        seq.meta["n_rock_mask"] = int(rock.sum())
        if self.spec.windows == "rock":
            masked, w = rock, self.masker.weights(resp, self.spec.lam, in_window)  # Eq. 19
        elif self.spec.windows == "tokens":  # Eq. 19 without W_R
            masked, w = is_rock, np.where(is_rock, self.spec.lam, 1.0)
        else:
            rng = np.random.default_rng(derive_seed(int(seq.meta["seed"]), "random-windows"))
            if resp.max(initial=0) >= self.bins.size:
                raise ValueError(f"token id {int(resp.max())} outside the frequency-bin table of {self.bins.size}")
            masked = random_window_mask(rock, self.bins[resp], rng, self.candidates, self.n_bins,
                                        avoid=is_rock, sweeps=self.sweeps)
            w = np.where(masked, self.spec.lam, 1.0)
        seq.meta["n_masked"] = int(masked.sum())
        seq.meta["n_zero_weight"] = int((w == 0).sum())  # rollout_step reports it as zero_weight_share
        return w.tolist()


# ----------------------------------------------------------------------------- the SGD lr match
def lr_match_target(history: pd.DataFrame, n_steps: int) -> float:
    """ū: a run's mean update norm over its first ``n_steps`` OPD steps (the reference arm's: the target ū_ref;
    a trial run's: ū(η))."""
    if "update_norm" not in history.columns:
        raise ValueError("the OPD history has no update_norm column (freeze.update_norm must be true)")
    h = history.sort_values("step")
    if len(h) < n_steps:
        raise ValueError(f"the OPD history has {len(h)} steps, fewer than lr_match.steps={n_steps}")
    return float(h["update_norm"].iloc[:n_steps].mean())


def next_lr(lr: float, measured: float, target: float) -> float:
    """One fixed-point step of the lr match: η · ū_ref / ū(η)."""
    if not (measured > 0 and math.isfinite(measured)):
        raise ValueError(f"cannot match the lr: measured update norm {measured}")
    return lr * target / measured


# ----------------------------------------------------------------------------- accounting and tables
SHARE_COLUMNS = ("masked_share", "rock_mask_share", "rock_tokens_share", "zero_weight_share")


def share_summary(history: pd.DataFrame) -> dict:
    """Token-weighted shares over a run (steps weighted by their response tokens: the mean masked share of the
    arm's response tokens), and the arm's update cost per response token: the median over steps of
    update_s / response_tokens (``update_s_per_token``, instrumentation excluded; the median is robust to the first
    update's one-off costs and to the load of jobs running beside it)."""
    if history.empty:
        return {}
    wts = history["mean_response_len"].to_numpy(np.float64)
    out = {}
    for c in SHARE_COLUMNS:
        if c in history.columns:
            out[c] = float(np.average(history[c].to_numpy(np.float64), weights=wts))
    if "update_s_per_token" in history.columns:
        out["update_s_per_token"] = float(history["update_s_per_token"].median())
    return out


def probe_frame(probe=None) -> pd.DataFrame:
    """probe.parquet: the probe's records (``rocktokens.geometry.probe.PROBE_COLUMNS``), empty with those columns when the
    arm runs no probe."""
    if probe is not None:
        return probe.frame()
    from rocktokens.geometry.probe import PROBE_COLUMNS

    return pd.DataFrame({c: pd.Series(dtype=float) for c in PROBE_COLUMNS})


def checkpoint_steps_of(arm_json: Mapping) -> dict[str, int]:
    return {str(k): int(v) for k, v in arm_json["checkpoints"].items()}


def arm_accuracy(evals: Sequence[pd.DataFrame], points: pd.DataFrame, hard: Sequence[str], z: float = 1.96) -> pd.DataFrame:
    """pass@1 per (arm, step) pooled over the hard benchmarks as in the paper, with a 95 % interval.

    ``evals``: ``rocktokens.generation.sampling.evaluate`` frames whose ``checkpoint`` column names an evaluation point;
    ``points``: columns checkpoint, arm, step. The point estimate is ``sampling.accuracy_table``'s hard average
    (the mean over the pooled problems of the per-problem mean over seeds); the interval is mean ± z·SE with SE the
    standard error over problems of the per-problem means (seeds are averaged within a problem first, so the
    interval reflects problem-to-problem variation, the unit the paper averages over).
    """
    from rocktokens.generation.sampling import accuracy_table

    df = pd.concat(evals, ignore_index=True)
    df = df[df["benchmark"].isin(hard)]
    if df.empty:
        raise ValueError(f"no evaluation rows on the benchmarks {list(hard)}")
    table = accuracy_table([df], hard)
    table = table[table["benchmark"] == "hard_avg"][["checkpoint", "pass@1", "n_problems"]]
    per_problem = df.groupby(["checkpoint", "benchmark", "id"], sort=False)["correct"].mean()
    se = per_problem.groupby(level="checkpoint", sort=False).agg(lambda x: x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else float("nan"))
    seeds = df.groupby("checkpoint", sort=False)["sample"].nunique()
    table = table.merge(se.rename("se").reset_index(), on="checkpoint").merge(seeds.rename("n_seeds").reset_index(),
                                                                            on="checkpoint")
    table["ci_low"] = (table["pass@1"] - z * table["se"]).clip(lower=0.0)
    table["ci_high"] = (table["pass@1"] + z * table["se"]).clip(upper=1.0)
    missing = set(points["checkpoint"]) - set(table["checkpoint"])
    if missing:
        raise ValueError(f"no evaluation for {sorted(missing)}")
    out = points.merge(table, on="checkpoint", how="left")
    return out.sort_values(["arm", "step"], kind="stable").reset_index(drop=True)


def _power_vs_reference(evals: Sequence[pd.DataFrame], arms: Sequence[str], infos: Sequence[Mapping],
                        hard: Sequence[str], ref: str, alpha: float = 0.05, power: float = 0.80) -> pd.DataFrame:
    """Per arm: its final checkpoint's pooled pass@1 minus the reference arm's, paired over the hard problems
    (``delta_vs_reference``), and the minimum detectable difference of that comparison at ``power`` and level
    ``alpha`` (``mde_vs_reference``, :func:`rocktokens.core.stats.minimum_detectable_effect` on the SD of the
    per-problem differences)."""
    from rocktokens.core.stats import minimum_detectable_effect

    df = pd.concat(evals, ignore_index=True)
    df = df[df["benchmark"].isin(hard)]
    per_problem = df.groupby(["checkpoint", "benchmark", "id"])["correct"].mean().unstack(["benchmark", "id"])
    finals = {name: f"{name}/{max(checkpoint_steps_of(info).items(), key=lambda kv: kv[1])[0]}"
              for name, info in zip(arms, infos)}
    base = per_problem.loc[finals[ref]]
    rows = []
    for name in arms:
        d = (per_problem.loc[finals[name]] - base).dropna().to_numpy()
        rows.append({"arm": name, "delta_vs_reference": float(d.mean()),
                     "mde_vs_reference": float(minimum_detectable_effect(d.std(ddof=1), len(d), alpha, power))
                     if name != ref else np.nan})
    return pd.DataFrame(rows)


def freeze_tables(start_eval: pd.DataFrame, arm_evals: Sequence[pd.DataFrame], arm_jsons: Sequence,
                  histories: Sequence[pd.DataFrame], arms: Sequence[str], hard: Sequence[str],
                  reference: str = "baseline") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two tables of rule freeze_table.

    * accuracy: one row per (arm, step) — step 0 is the shared stage-1 start — with pooled pass@1 and its interval
      (:func:`arm_accuracy`);
    * arms: one row per arm — its settings (λ, windows, optimizer, lr, K), the token-weighted masked shares over its
      run (``masked_share``: the mean share of its response tokens in the frozen set; the paper's 18–30 %), its
      update seconds per response token (median over steps, probe / update-norm instrumentation excluded, so
      arms with and without the probe and with rollouts of different lengths compare alike) and
      ``update_speedup`` = the reference arm's per-token cost over this arm's (``reference``; the first arm if
      there is no arm of that name), its final pass@1, and for random-window arms the relative difference of
      their realised masked share from the rock arm of the same λ (``share_vs_rock``; on each trajectory the
      control is matched exactly: ``matched_ratio`` = masked / rock-mask share on the control's own rollouts), and
      its final pass@1 against the reference arm's, paired over problems, with the minimum detectable difference
      of that comparison (``delta_vs_reference``, ``mde_vs_reference``: 80 % power, α = 0.05).
    """
    infos = [a if isinstance(a, Mapping) else read_json(a) for a in arm_jsons]
    if not (len(infos) == len(histories) == len(arms)):
        raise ValueError("one arm.json and one history per arm are needed")
    rows = []
    for name, info in zip(arms, infos):
        rows.append({"checkpoint": "stage1", "arm": name, "step": 0})
        rows += [{"checkpoint": f"{name}/{c}", "arm": name, "step": s} for c, s in checkpoint_steps_of(info).items()]
    acc = arm_accuracy([start_eval, *arm_evals], pd.DataFrame(rows), hard)
    table = []
    for name, info, hist in zip(arms, infos, histories):
        a = info["arm"]
        row = {"arm": name, "lam": a["lam"], "windows": a["windows"], "planted": a.get("planted"),
               "optimizer": a["optimizer"], "lr": info["lr"],
               "K": info.get("K"), "steps": info["steps"], **share_summary(hist)}
        last = acc[acc["arm"] == name].sort_values("step").iloc[-1]
        row["final_pass@1"] = float(last["pass@1"])
        table.append(row)
    out = pd.DataFrame(table)
    ref = reference if reference in set(out["arm"]) else out["arm"].iloc[0]
    out = out.merge(_power_vs_reference([start_eval, *arm_evals], arms, infos, hard, ref), on="arm", how="left")
    if "update_s_per_token" in out.columns:
        out["update_speedup"] = float(out.loc[out["arm"] == ref, "update_s_per_token"].iloc[0]) / out["update_s_per_token"]
        out["speedup_reference"] = ref
    out["share_vs_rock"] = np.nan
    out["matched_ratio"] = np.nan
    for i, r in out.iterrows():
        if r["windows"] != "random" or "masked_share" not in out.columns:
            continue
        if r.get("rock_mask_share", 0) > 0:
            out.loc[i, "matched_ratio"] = r["masked_share"] / r["rock_mask_share"]
        rock = out[(out["windows"] == "rock") & (out["lam"] == r["lam"])]
        if len(rock) and rock["masked_share"].iloc[0] > 0:
            out.loc[i, "share_vs_rock"] = r["masked_share"] / rock["masked_share"].iloc[0] - 1.0
    return acc, out
