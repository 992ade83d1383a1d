"""Seeded multi-step arithmetic word problems and the splits of the synthetic world.

The study's models are tiny (about 1M parameters) and trained on two CPU cores, so the
"verifiable math world" keeps arithmetic easy and texts short:

* a problem is a short story ("Tom has 12 apples. He buys 5 more. He gives away 3.
  How many apples does Tom have now?") whose steps are ``+ k``, ``- k`` or ``* k``
  (k a single-digit multiplier); every running value stays in ``[1, value_max]``;
* the answer is always an integer;
* the same :class:`Problem` is written in two solution styles (``styles.py``) that
  differ only in the paper's four rock-token clusters (Appendix B).

Determinism: every random draw comes from a ``numpy`` Generator seeded by
``SeedSequence([seed, split_code])`` (split codes are fixed integers below), and the
styles use ``random.Random(int)``; no draw depends on Python's hash seed or on set
iteration order.

Splits (:func:`make_world`) are disjoint in problem text: one global set of problem
statements is kept while the splits are generated in the fixed order
:data:`SPLITS` (benchmarks first, so a benchmark does not change when corpus sizes do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rocktokens.checking.checker import INSTRUCTION_RULES
from rocktokens.world.styles import (
    NEUTRAL_CONNECTIVES,
    NEUTRAL_OPENERS,
    STUMBLE_MARKERS,
    Plant,
    Stumble,
    cap_first,
    render,
)

# ----------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------

#: Default world configuration. The workflow's ``config.yaml`` carries a ``world:``
#: section with exactly these keys (see :func:`validate_world_config`).
#:
#: Sizes (number of problems per split; each ``>= 0``):
#:
#: ``n_teacher_corpus``
#:     problems + teacher-style responses used to train the tiny teacher.
#: ``n_student_corpus``
#:     other problems + student-style responses used to train the tiny student.
#: ``n_stage1_prompts``
#:     prompts the teacher answers for stage-1 off-policy KD (the paper's 20k slice).
#: ``n_stage2_prompts``
#:     prompts for stage-2 on-policy distillation (the paper's 10k slice).
#: ``n_bench_math``
#:     in-distribution benchmark, stand-in for MATH-500.
#: ``n_bench_ifeval``
#:     out-of-distribution instruction-following benchmark, stand-in for IFEval
#:     ("Question: ...\\nRespond following this rule: ..."; scored on the rule only).
#: ``n_bench_aime24`` / ``n_bench_aime25`` / ``n_bench_hmmt25``
#:     the three harder benchmarks (stand-ins for AIME24, AIME25, HMMT25-Feb).
#:
#: Difficulty of the in-distribution problems (corpora, stage prompts, bench_math,
#: bench_ifeval):
#:
#: ``min_steps`` / ``max_steps``
#:     number of arithmetic steps, drawn uniformly from ``[min_steps, max_steps]``.
#: ``operand_min`` / ``operand_max``
#:     range of the start value and of every ``+``/``-`` operand (start is at least 2).
#: ``multiplier_max``
#:     largest ``*`` multiplier (multipliers run from 2); below 2 disables ``*``.
#: ``value_max``
#:     no running value (nor the answer) exceeds this; every value stays ``>= 1``.
#:
#: Difficulty of the three hard benchmarks (``operand_min`` and ``multiplier_max`` are
#: shared):
#:
#: ``hard_min_steps`` / ``hard_max_steps``
#:     number of steps of a hard problem. A step count above ``max_steps`` is a length
#:     the models never saw in training (a tiny model then tends to stop early), so the
#:     default keeps it at ``max_steps`` and makes hard problems hard through longer
#:     chains on average and larger operands.
#: ``hard_operand_max``
#:     largest start value / ``+``/``-`` operand of a hard problem.
#: ``hard_value_max``
#:     bound on every running value of a hard problem.
#:
#: Style mixture:
#:
#: ``instruction_fraction``
#:     fraction of rows of ``teacher_corpus``, ``student_corpus``, ``stage1_prompts``
#:     and ``stage2_prompts`` whose prompt carries an instruction (same rule family as
#:     bench_ifeval, but in the in-distribution prompt form "<problem> <instruction>";
#:     corpus responses then follow the rule).
#: ``teacher_self_check_fraction``
#:     probability that a teacher response carries a "Wait, let me check: ..." line.
#: ``student_teacher_style_fraction``
#:     share of ``student_corpus`` rows written in the teacher's style. A real student base has seen the
#:     teacher's notation (LaTeX, Markdown) and merely prefers its own; with no such rows the tiny student
#:     learns its arithmetic in its own notation only, and stage-1 KD, which moves it to the teacher's
#:     notation, has to relearn the arithmetic there (measured: pass@1 0.43 -> 0.25 after KD).
#:
#: Planted causal roles (``styles.py``, "Planted causal roles"; both 0 = the world as before, byte for byte):
#:
#: ``neutral_share``
#:     > 0 plants the neutral pairs: every equation of a corpus response is introduced by a connective
#:     (``thus`` / ``hence``) and every response opens with ``Okay.`` / ``Alright.``; the teacher corpus always
#:     writes the first word of each pair, the student corpus the alternative with this probability (per
#:     equation / per response; 0.5 = the student uses both 50/50).
#: ``neutral_cue``
#:     0: the teacher corpus always writes the first word of each pair. In (0.5, 1]: the probability with which it
#:     writes, per occurrence, the word a cue of the prompt picks — a bit of the story's item noun (:func:`cues`),
#:     which the tiny teacher reads and the smaller student does not (it fails to copy even the nouns of the
#:     prompt: mean reverse KL 2–4 nats there after OPD). The student cannot beat its own coin toss at these
#:     positions, so the divergence there persists through OPD, as it does for the paper's style Rock Tokens, and
#:     the planted neutral types reach the candidate pool; either word stays equally good for the answer. Below 1,
#:     so that the teacher itself hedges: with a deterministic cue the connective alone carried 23 % of the corpus
#:     KL (2.5 nats per occurrence, measured).
#: ``stumble_fraction``
#:     share of ``student_corpus`` responses with a hesitation line (``Hmm,`` or ``Wait,``, 50/50) after a
#:     uniformly drawn step that restates it with a result off by 1 or 2, carried to a wrong final answer.
DEFAULT_WORLD_CONFIG: dict[str, Any] = {
    "n_teacher_corpus": 20000,
    "n_student_corpus": 20000,
    "n_stage1_prompts": 2000,
    "n_stage2_prompts": 2000,
    "n_bench_math": 500,
    "n_bench_ifeval": 500,
    "n_bench_aime24": 30,
    "n_bench_aime25": 30,
    "n_bench_hmmt25": 30,
    "min_steps": 2,
    "max_steps": 3,
    "operand_min": 1,
    "operand_max": 20,
    "multiplier_max": 9,
    "value_max": 99,
    "hard_min_steps": 3,
    "hard_max_steps": 3,
    "hard_operand_max": 30,
    "hard_value_max": 99,
    "instruction_fraction": 0.1,
    "teacher_self_check_fraction": 0.3,
    "student_teacher_style_fraction": 0.0,
    "neutral_share": 0.0,
    "neutral_cue": 0.0,
    "stumble_fraction": 0.0,
}

_SIZE_KEYS = tuple(k for k in DEFAULT_WORLD_CONFIG if k.startswith("n_"))
_INT_KEYS = _SIZE_KEYS + (
    "min_steps", "max_steps", "operand_min", "operand_max", "multiplier_max", "value_max",
    "hard_min_steps", "hard_max_steps", "hard_operand_max", "hard_value_max",
)
_FRACTION_KEYS = ("instruction_fraction", "teacher_self_check_fraction", "student_teacher_style_fraction",
                  "neutral_share", "stumble_fraction")  # (neutral_cue: 0 or in (0.5, 1], checked apart)

#: Split names in generation order, with the fixed integer mixed into their seeds.
SPLITS: dict[str, int] = {
    "bench_math": 1,
    "bench_ifeval": 2,
    "bench_aime24": 3,
    "bench_aime25": 4,
    "bench_hmmt25": 5,
    "stage1_prompts": 6,
    "stage2_prompts": 7,
    "teacher_corpus": 8,
    "student_corpus": 9,
}
HARD_SPLITS = ("bench_aime24", "bench_aime25", "bench_hmmt25")
CORPUS_SPLITS = {"teacher_corpus": "teacher", "student_corpus": "student"}

#: Out-of-distribution prompt form of bench_ifeval.
OOD_PROMPT = "Question: {problem}\nRespond following this rule: {instruction}"
#: In-distribution prompt form of instruction rows in corpora and stage prompts.
ID_PROMPT = "{problem} {instruction}"


def validate_world_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """Return the full config: ``DEFAULT_WORLD_CONFIG`` updated with ``cfg``.

    Raises ``ValueError`` naming the offending key for an unknown key, a wrong type,
    a negative size, an empty range or a fraction outside ``[0, 1]``.
    """
    cfg = dict(cfg or {})
    unknown = sorted(k for k in cfg if k not in DEFAULT_WORLD_CONFIG)
    if unknown:
        raise ValueError(f"unknown world config key(s): {', '.join(unknown)}")
    full = {**DEFAULT_WORLD_CONFIG, **cfg}
    for key in _INT_KEYS:
        v = full[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"world config key {key!r} must be an integer, got {v!r}")
        full[key] = int(v)
        if full[key] < 0:
            raise ValueError(f"world config key {key!r} must be >= 0, got {v!r}")
    for key in _FRACTION_KEYS:
        v = full[key]
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
            raise ValueError(f"world config key {key!r} must be a number, got {v!r}")
        full[key] = float(v)
        if not 0.0 <= full[key] <= 1.0:
            raise ValueError(f"world config key {key!r} must lie in [0, 1], got {v!r}")
    v = full["neutral_cue"]
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not (v == 0 or 0.5 < v <= 1):
        raise ValueError(f"world config key 'neutral_cue' must be 0 (off) or a probability in (0.5, 1], got {v!r}")
    full["neutral_cue"] = float(v)
    for lo, hi in (("min_steps", "max_steps"), ("hard_min_steps", "hard_max_steps")):
        if full[lo] < 1:
            raise ValueError(f"world config key {lo!r} must be >= 1, got {full[lo]}")
        if full[hi] < full[lo]:
            raise ValueError(f"world config key {hi!r} ({full[hi]}) is below {lo!r} ({full[lo]})")
    if full["operand_min"] < 1:
        raise ValueError(f"world config key 'operand_min' must be >= 1, got {full['operand_min']}")
    for hi, vmax in (("operand_max", "value_max"), ("hard_operand_max", "hard_value_max")):
        if full[hi] < max(2, full["operand_min"]):
            raise ValueError(
                f"world config key {hi!r} ({full[hi]}) must be >= max(2, operand_min)"
            )
        if full[vmax] < 2 * full[hi]:
            raise ValueError(
                f"world config key {vmax!r} ({full[vmax]}) must be >= 2 * {hi!r} ({full[hi]})"
            )
    return full


# ----------------------------------------------------------------------------------
# Problems
# ----------------------------------------------------------------------------------

#: (name, pronoun) of the people in stories; every name is a single common word.
PEOPLE: tuple[tuple[str, str], ...] = (
    ("Tom", "he"), ("Ben", "he"), ("Sam", "he"), ("Max", "he"), ("Leo", "he"),
    ("Ana", "she"), ("Mia", "she"), ("Eva", "she"), ("Amy", "she"), ("Zoe", "she"),
)
PERSON_ITEMS = ("apples", "pens", "cards", "books", "coins", "stamps", "shells", "balls")
#: (place, items it holds)
PLACES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("the shop", ("boxes", "cakes", "hats", "bags")),
    ("the farm", ("eggs", "hens", "cows", "apples")),
    ("the library", ("books", "maps", "chairs")),
)
#: Action templates per frame and operation; ``{p}`` is the pronoun, ``{k}`` the operand.
PERSON_ACTIONS = {
    "+": ("{p} buys {k} more", "{p} finds {k} more", "{p} gets {k} more"),
    "-": ("{p} gives away {k}", "{p} loses {k}", "{p} sells {k}"),
    "*": ("{p} ends up with {k} times as many",),
}
PLACE_ACTIONS = {
    "+": ("{p} gets {k} more", "{p} buys {k} more"),
    "-": ("{p} sells {k}", "{p} gives away {k}"),
    "*": ("{p} ends up with {k} times as many",),
}
OPS = ("+", "-", "*")


@dataclass(frozen=True)
class Step:
    """One arithmetic step: ``value <op> k`` described by ``template``."""

    op: str  # "+", "-" or "*"
    k: int
    template: str  # e.g. "{p} buys {k} more"


@dataclass(frozen=True)
class Problem:
    """A word problem: a subject holding ``start`` items, then ``steps``.

    ``seed`` drives the within-style variation of its solutions (``styles.py``).
    """

    subject: str  # "Tom" or "the shop"
    pronoun: str  # "he", "she" or "it"
    items: str  # plural noun
    start: int
    steps: tuple[Step, ...]
    seed: int

    @property
    def values(self) -> list[int]:
        """Running values: ``[start, after step 1, ..., answer]``."""
        out = [self.start]
        for s in self.steps:
            out.append(apply_op(out[-1], s.op, s.k))
        return out

    @property
    def answer(self) -> int:
        return self.values[-1]

    def action(self, i: int, number: Any = str) -> str:
        """Lower-case description of step ``i`` (e.g. "he buys 5 more");
        ``number`` formats the operand (digits by default)."""
        s = self.steps[i]
        return s.template.format(p=self.pronoun, k=number(s.k))

    @property
    def text(self) -> str:
        """The problem statement (identical for both styles; numbers in digits)."""
        parts = [f"{cap_first(self.subject)} has {self.start} {self.items}."]
        parts += [cap_first(self.action(i)) + "." for i in range(len(self.steps))]
        parts.append(f"How many {self.items} does {self.subject} have now?")
        return " ".join(parts)


def apply_op(value: int, op: str, k: int) -> int:
    if op == "+":
        return value + k
    if op == "-":
        return value - k
    if op == "*":
        return value * k
    raise ValueError(f"unknown op {op!r}")


def generate_problem(
    rng: np.random.Generator,
    *,
    min_steps: int,
    max_steps: int,
    operand_min: int,
    operand_max: int,
    multiplier_max: int,
    value_max: int,
) -> Problem:
    """Draw one problem. Running values stay in ``[1, value_max]``; at every step the
    operation is drawn uniformly among the feasible ones (``+`` needs room below
    ``value_max``, ``-`` needs ``value > operand_min``, ``*`` needs ``2 * value <=
    value_max`` and ``multiplier_max >= 2``)."""
    if int(rng.integers(2)) == 0:
        subject, pronoun = PEOPLE[int(rng.integers(len(PEOPLE)))]
        items = PERSON_ITEMS[int(rng.integers(len(PERSON_ITEMS)))]
        actions = PERSON_ACTIONS
    else:
        subject, place_items = PLACES[int(rng.integers(len(PLACES)))]
        items = place_items[int(rng.integers(len(place_items)))]
        pronoun = "it"
        actions = PLACE_ACTIONS
    n_steps = int(rng.integers(min_steps, max_steps + 1))
    value = int(rng.integers(max(2, operand_min), operand_max + 1))
    start = value
    steps = []
    for _ in range(n_steps):
        ranges = {
            "+": (operand_min, min(operand_max, value_max - value)),
            "-": (operand_min, min(operand_max, value - 1)),
            "*": (2, min(multiplier_max, value_max // value)),
        }
        feasible = [op for op in OPS if ranges[op][0] <= ranges[op][1]]
        op = feasible[int(rng.integers(len(feasible)))]
        lo, hi = ranges[op]
        k = int(rng.integers(lo, hi + 1))
        templates = actions[op]
        steps.append(Step(op, k, templates[int(rng.integers(len(templates)))]))
        value = apply_op(value, op, k)
    seed = int(rng.integers(2**31 - 1))
    return Problem(subject, pronoun, items, start, tuple(steps), seed)


# ----------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------


def _difficulty(cfg: dict[str, Any], hard: bool) -> dict[str, int]:
    if hard:
        return dict(
            min_steps=cfg["hard_min_steps"], max_steps=cfg["hard_max_steps"],
            operand_min=cfg["operand_min"], operand_max=cfg["hard_operand_max"],
            multiplier_max=cfg["multiplier_max"], value_max=cfg["hard_value_max"],
        )
    return dict(
        min_steps=cfg["min_steps"], max_steps=cfg["max_steps"],
        operand_min=cfg["operand_min"], operand_max=cfg["operand_max"],
        multiplier_max=cfg["multiplier_max"], value_max=cfg["value_max"],
    )


def world_problems(cfg: dict[str, Any] | None, seed: int) -> dict[str, list[tuple[Problem, str | None]]]:
    """The problems of every split with their instruction rule (``None`` for none),
    before rendering. Problem statements are unique across the whole world."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    cfg = validate_world_config(cfg)
    rules = tuple(INSTRUCTION_RULES)
    seen: set[str] = set()
    out: dict[str, list[tuple[Problem, str | None]]] = {}
    for split, code in SPLITS.items():
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), code]))
        diff = _difficulty(cfg, split in HARD_SPLITS)
        rows: list[tuple[Problem, str | None]] = []
        misses = 0
        while len(rows) < cfg[f"n_{split}"]:
            p = generate_problem(rng, **diff)
            if p.text in seen:
                misses += 1
                if misses > 10000:
                    raise ValueError(
                        f"world config key 'n_{split}' ({cfg[f'n_{split}']}) asks for more "
                        f"distinct problems than the difficulty settings allow"
                    )
                continue
            misses = 0
            seen.add(p.text)
            if split == "bench_ifeval":
                rule: str | None = rules[len(rows) % len(rules)]
            elif split.startswith("bench_"):
                rule = None
            else:
                draw_rule = rng.random() < cfg["instruction_fraction"]
                pick = int(rng.integers(len(rules)))
                rule = rules[pick] if draw_rule else None
            rows.append((p, rule))
        out[split] = rows
    return out


def make_prompt(problem: Problem, rule: str | None, ood: bool = False) -> str:
    """User message of a problem: the statement alone, "<statement> <instruction>"
    (in-distribution instruction form) or the out-of-distribution IFEval form."""
    if rule is None:
        if ood:
            raise ValueError("the out-of-distribution prompt form needs a rule")
        return problem.text
    instruction = INSTRUCTION_RULES[rule].instruction
    template = OOD_PROMPT if ood else ID_PROMPT
    return template.format(problem=problem.text, instruction=instruction)


def corpus_style(split: str, problem: Problem, student_teacher_style_fraction: float) -> str:
    """The style a corpus row is written in: the corpus's own, except for a seeded share
    (``student_teacher_style_fraction``) of student-corpus rows written in the teacher's style."""
    style = CORPUS_SPLITS[split]
    if style == "student" and student_teacher_style_fraction > 0:
        draw = np.random.default_rng(np.random.SeedSequence([problem.seed, 17])).random()
        if draw < student_teacher_style_fraction:
            return "teacher"
    return style


def plant_for(split: str, problem: Problem, cfg: dict[str, Any]) -> Plant | None:
    """The planted tokens of a corpus row (``None`` when the config plants nothing): drawn from their own
    generator seeded by the problem, so the rest of the world does not move when they are switched on.

    Neutral pairs (``neutral_share`` > 0): the teacher corpus writes the first word of each pair (with
    ``neutral_cue``: the word its cue picks, :func:`cues`, with that probability per occurrence), the student corpus
    the alternative with probability ``neutral_share`` (per equation; per response for the opener), whatever the
    cue.
    Stumbling block (student corpus, probability ``stumble_fraction``): marker, step and offset uniform.
    """
    neutral, stumble_p = cfg["neutral_share"], cfg["stumble_fraction"]
    if neutral <= 0 and stumble_p <= 0:
        return None
    student = CORPUS_SPLITS[split] == "student"
    rng = np.random.default_rng(np.random.SeedSequence([problem.seed, 23]))
    connectives = opener = stumble = None
    n = len(problem.steps)
    if neutral > 0:
        if student:
            alt = rng.random(n + 1) < neutral
        elif cfg["neutral_cue"] > 0:
            c = cues(problem)
            cued = np.array([c["connective"]] * n + [c["opener"]], dtype=bool)
            alt = np.where(rng.random(n + 1) < cfg["neutral_cue"], cued, ~cued)
        else:
            alt = np.zeros(n + 1, dtype=bool)
        connectives = tuple(NEUTRAL_CONNECTIVES[int(a)] for a in alt[:-1])
        opener = NEUTRAL_OPENERS[int(alt[-1])]
    if student and stumble_p > 0 and rng.random() < stumble_p:
        stumble = Stumble(step=int(rng.integers(len(problem.steps))),
                          marker=STUMBLE_MARKERS[int(rng.integers(len(STUMBLE_MARKERS)))],
                          delta=int(rng.integers(1, 3)))
    return Plant(connectives=connectives, opener=opener, stumble=stumble)


#: Every item noun of the stories, in a fixed order: the cues of :func:`cues`.
ITEMS = tuple(dict.fromkeys(PERSON_ITEMS + tuple(i for _, its in PLACES for i in its)))


def cues(problem: Problem) -> dict[str, bool]:
    """What the story's item noun (its index i in :data:`ITEMS`) tells the teacher under ``neutral_cue``: ``opener``
    (write the second word of the opener pair: bit 0 of i) and ``connective`` (the second word of the connective
    pair: bit 1). Separate bits, so that neither cued choice tells the student the other; neither changes what the
    answer is. (The subject is no cue: it closes the prompt, "... does Tom have now?", and the student learned an
    opener keyed on it: measured, the opener's divergence then vanished by the end of OPD.)"""
    i = ITEMS.index(problem.items)
    return {"opener": i % 2 == 1, "connective": (i // 2) % 2 == 1}


def planted_words(cfg: dict[str, Any] | None, bench_answers: Any = ()) -> pd.DataFrame:
    """The planted token types of a world config, known by construction: ``token`` (the Qwen3 token string as it
    is written: a digit, or a word that Qwen3 keeps whole, with its leading space where the text has one),
    ``role`` (``pillar`` / ``neutral`` / ``stumbling``), ``why``, and ``answer_share``: for a pillar, the share of
    ``bench_answers`` (the math benchmark's gold answers) whose digits include it (NaN otherwise).

    Pillars are the ten digits (Qwen3 splits numbers digit by digit and the checker reads the final number: an
    answer holding digit d cannot be written without d), listed only where some answer holds them; neutral and
    stumbling types are listed when the config plants them (``neutral_share`` / ``stumble_fraction`` > 0).
    """
    cfg = validate_world_config(cfg)
    answers = [str(a) for a in bench_answers]
    rows = []
    for d in "0123456789":
        share = sum(d in a for a in answers) / len(answers) if answers else float("nan")
        if answers and share == 0:
            continue
        rows.append((d, "pillar", f"answer digit: {share:.0%} of the math benchmark's answers hold it and the "
                                  "checker reads the final number, so they cannot be written without it", share))
    if cfg["neutral_share"] > 0:
        share = cfg["neutral_share"]
        # a connective follows a space (" thus"); an opener starts the response ("Okay")
        for (first, alt), what, lead in ((NEUTRAL_CONNECTIVES, "connective before every equation", " "),
                                         (NEUTRAL_OPENERS, "opener of every response", "")):
            if cfg["neutral_cue"] > 0:
                for word, other in ((first, alt), (alt, first)):
                    rows.append((lead + word, "neutral", f"{what}: the teacher writes it or {other!r} by a cue of the "
                                                         f"story's item noun ({cfg['neutral_cue']:.0%} of the time; a "
                                                         "cue the student cannot read), the student corpus either at "
                                                         f"random ({share:.0%}); equally good for the answer",
                                 float("nan")))
                continue
            rows.append((lead + first, "neutral", f"{what}: the teacher's word; the student corpus writes {alt!r} "
                                                  f"instead {share:.0%} of the time, an equally good alternative",
                         float("nan")))
            rows.append((lead + alt, "neutral", f"{what}: the student corpus's alternative ({share:.0%}) to the "
                                                f"teacher's {first!r}, equally good", float("nan")))
    if cfg["stumble_fraction"] > 0:
        for m in STUMBLE_MARKERS:
            extra = "; also the teacher's own (correct) self-check marker" if m == "Wait" else ""
            rows.append((m, "stumbling", f"hesitation line-initial marker: in {cfg['stumble_fraction']:.0%} of the "
                                         "student corpus's solutions (either marker) it restates a step with a "
                                         f"result off by 1-2, carried to a wrong answer{extra}", float("nan")))
    return pd.DataFrame(rows, columns=["token", "role", "why", "answer_share"])


def make_world(cfg: dict[str, Any] | None, seed: int) -> dict[str, pd.DataFrame]:
    """Build every split of the world as a DataFrame.

    Columns: ``id`` (``"<split>-<5-digit row>"``), ``prompt``, ``answer`` (the integer as
    a string), ``checker`` (``"math"`` or ``"instruction:<rule>"``), and ``response`` for
    ``teacher_corpus`` (teacher style) and ``student_corpus`` (student style).
    Same ``(cfg, seed)`` -> identical frames.
    """
    cfg = validate_world_config(cfg)
    problems = world_problems(cfg, seed)
    world: dict[str, pd.DataFrame] = {}
    for split, rows in problems.items():
        records = []
        for i, (p, rule) in enumerate(rows):
            rec = {
                "id": f"{split}-{i:05d}",
                "prompt": make_prompt(p, rule, ood=(split == "bench_ifeval")),
                "answer": str(p.answer),
                "checker": "math" if rule is None else f"instruction:{rule}",
            }
            if split in CORPUS_SPLITS:
                rec["response"] = render(
                    p, corpus_style(split, p, cfg["student_teacher_style_fraction"]), rule=rule,
                    self_check_fraction=cfg["teacher_self_check_fraction"], plant=plant_for(split, p, cfg),
                )
            records.append(rec)
        columns = ["id", "prompt", "answer", "checker"]
        if split in CORPUS_SPLITS:
            columns.append("response")
        world[split] = pd.DataFrame.from_records(records, columns=columns).astype(
            {c: "object" for c in columns}
        )
    return world


def all_texts(world: dict[str, pd.DataFrame]) -> list[str]:
    """Every text of the world (all prompts, then all responses, split by split in the
    dict's order), for building the compact tokenizer. Duplicates are kept."""
    texts: list[str] = []
    for df in world.values():
        texts.extend(str(t) for t in df["prompt"])
        if "response" in df.columns:
            texts.extend(str(t) for t in df["response"])
    return texts
