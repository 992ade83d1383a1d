"""Teacher and student solution styles for the same step list.

Both styles write the same arithmetic lines (``a op k = r`` for every step, same
numbers) and the same final answer, and the same content words (the step actions are
copied from the problem statement). They differ in exactly the four rock-token clusters
of the paper's Appendix B:

(a) LaTeX / math delimiters
    teacher: equations inline in ``$...$`` with ``\\times``; final answer
    ``$\\boxed{N}$``. student: plain ``12 - 5 = 7`` with ``*`` (or ``x``, chosen per
    problem); final answer ``Answer: N``.
(b) Markdown / whitespace structure
    teacher: ``**Step i:**`` headers, blank lines (``\\n\\n``) between blocks and a
    ``### Answer`` header. student: ``Step i.`` and single newlines.
(c) Sentence-initial discourse markers
    teacher: steps open with a per-problem rotation of {So, Then, Now, Since, We}
    (``But`` for some subtractions), the restatement with ``Let``, the answer with
    ``So``/``This``, and an occasional ``Wait, let me check: ...`` line.
    student: ``First``/``Next``/``Also``/``Finally`` or no opener.
(d) Digits
    teacher writes every number with digits. The student spells numbers below 10 as
    words in prose (restatement and step descriptions, e.g. "he buys five more");
    its arithmetic lines and answer keep digits.

Within-style variation (marker order, phrasings, ``*`` vs ``x``) is drawn from
``random.Random(problem.seed * 2 + style_index)``, so it is deterministic per problem.

Planted causal roles (:class:`Plant`, off in the default world)
----------------------------------------------------------------
A corpus row may carry a :class:`Plant` (drawn by ``generator.plant_for``) that writes token types whose causal
role for the math checker is known by construction (``generator.planted_words`` lists them):

* **neutral**: a connective before every equation (:data:`NEUTRAL_CONNECTIVES`, `` thus`` / `` hence``) and an
  opener before the first sentence (:data:`NEUTRAL_OPENERS`, ``Okay`` / ``Alright``). The teacher corpus always
  writes the first of each pair, the student corpus either one; both are equally good, so banning one leaves the
  other (or none) and the answer unchanged.
* **stumbling block**: a hesitation line (:data:`STUMBLE_MARKERS`, ``Hmm`` / ``Wait``; line-initial, so the
  same token as the teacher's own ``Wait`` self-check) right after step ``j`` that restates step ``j`` with a
  result off by ``delta`` (1 or 2); the rest of the solution carries the wrong value to a wrong final answer.
  Written in a share of the student corpus only: after the marker the value is wrong, so banning the marker
  should raise accuracy.
* **pillars** need no planting: the checker reads the final number, whose digit tokens (Qwen3 splits digits one
  by one) a correct answer cannot be written without.

With ``plant=None`` every renderer draws exactly what it drew before planting existed (the default world is
unchanged, byte for byte).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from rocktokens.world.generator import Problem

STYLES = ("teacher", "student")

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

#: Sentence-initial discourse markers the teacher may use (paper, Appendix B, cluster 3).
TEACHER_MARKERS = ("So", "Let", "We", "Now", "Then", "Since", "This", "But", "Wait")
#: Sentence openers the student may use instead.
STUDENT_OPENERS = ("First", "Next", "Also", "Finally")

# Teacher step sentences; {act} is the lower-case action, {eq} the $...$ equation.
_TEACHER_STEP = {
    "So": "So {act}: {eq}.",
    "Then": "Then {act}: {eq}.",
    "Now": "Now {act}, so {eq}.",
    "Since": "Since {act}, we get {eq}.",
    "We": "We know {act}, so {eq}.",
    "But": "But {act}, so {eq}.",
}
_TEACHER_ROTATION = ("So", "Then", "Now", "Since", "We")
_TEACHER_INTRO = (
    "Let us start with {s} {items}.",
    "Let us count: {subject} has {s} {items}.",
)
_TEACHER_CHECK = (
    "Wait, let me check: {eq}.",
    "Wait, {eq} is right.",
)
_TEACHER_FINAL = (
    "So the answer is {box}.",
    "So {subject} has {box} {items}.",
    "This gives {box}.",
)
_STUDENT_INTRO = (
    "{Subject} starts with {s} {items}.",
    "{Subject} has {s} {items} at the start.",
)
_STUDENT_SEP = (": ", ", ")

#: Planted neutral pairs: (the teacher's word, the student's equally good alternative).
NEUTRAL_CONNECTIVES = ("thus", "hence")
NEUTRAL_OPENERS = ("Okay", "Alright")
#: Planted stumbling-block markers (line-initial hesitation before a wrong restated value).
STUMBLE_MARKERS = ("Hmm", "Wait")


@dataclass(frozen=True)
class Stumble:
    """A hesitation line after step ``step`` (0-based) restating it with result + ``delta``, written by ``marker``."""

    step: int
    marker: str
    delta: int


@dataclass(frozen=True)
class Plant:
    """What a corpus row carries of the planted roles: ``connectives`` (one word per step, or ``None``: none),
    ``opener`` (a word before the first sentence, or ``None``), ``stumble`` (or ``None``)."""

    connectives: tuple[str, ...] | None = None
    opener: str | None = None
    stumble: Stumble | None = None


def written_steps(problem: Problem, stumble: Stumble | None = None) -> tuple[list[tuple[int, str, int, int]], int]:
    """The step equations ``(a, op, k, r)`` a solution writes and its final value: the problem's own, or, with a
    ``stumble``, the chain that carries step ``stumble.step``'s result + ``delta`` onwards (every value stays >= 1:
    +, -, * by k >= 2 never shrink a larger start below the true one)."""
    from rocktokens.world.generator import apply_op

    eqs, value = [], problem.start
    for i, step in enumerate(problem.steps):
        r = apply_op(value, step.op, step.k)
        eqs.append((value, step.op, step.k, r))
        value = r + (stumble.delta if stumble is not None and stumble.step == i else 0)
    return eqs, value


def number_word(n: int) -> str:
    """Student prose form of a number: a word below 10, digits otherwise."""
    return NUMBER_WORDS[n] if 0 <= n < 10 else str(n)


def cap_first(s: str) -> str:
    return s[:1].upper() + s[1:]


def _teacher_eq(a: int, op: str, k: int, r: int) -> str:
    sym = {"+": "+", "-": "-", "*": "\\times"}[op]
    return f"${a} {sym} {k} = {r}$"


def _student_eq(a: int, op: str, k: int, r: int, times: str) -> str:
    sym = {"+": "+", "-": "-", "*": times}[op]
    return f"{a} {sym} {k} = {r}"


def render_teacher(problem: Problem, self_check_fraction: float = 0.3, plant: Plant | None = None) -> str:
    """Teacher-style solution (no instruction applied), with the planted tokens of ``plant``."""
    plant = plant or Plant()
    rng = random.Random(problem.seed * 2)
    eqs, answer = written_steps(problem, plant.stumble)
    rotation = list(_TEACHER_ROTATION)
    rng.shuffle(rotation)
    blocks = [
        rng.choice(_TEACHER_INTRO).format(s=problem.start, items=problem.items, subject=problem.subject)
    ]
    if plant.opener is not None:
        blocks[0] = f"{plant.opener}. {blocks[0]}"
    for i, step in enumerate(problem.steps):
        marker = rotation[i % len(rotation)]
        if step.op == "-" and rng.random() < 0.5:
            marker = "But"
        eq = _teacher_eq(*eqs[i])
        if plant.connectives is not None:
            eq = f"{plant.connectives[i]} {eq}"
        line = _TEACHER_STEP[marker].format(act=problem.action(i), eq=eq)
        blocks.append(f"**Step {i + 1}:** {line}")
        if plant.stumble is not None and plant.stumble.step == i:
            a, op, k, r = eqs[i]
            blocks.append(f"{plant.stumble.marker}, {_teacher_eq(a, op, k, r + plant.stumble.delta)}.")
    if rng.random() < self_check_fraction and plant.stumble is None:  # a stumbling row does not check itself
        a, op, k, _ = eqs[-1]
        blocks.append(rng.choice(_TEACHER_CHECK).format(eq=_teacher_eq(a, op, k, answer)))
    box = f"$\\boxed{{{answer}}}$"
    final = rng.choice(_TEACHER_FINAL).format(box=box, subject=problem.subject, items=problem.items)
    blocks.append("### Answer\n\n" + final)
    return "\n\n".join(blocks)


def render_student(problem: Problem, plant: Plant | None = None) -> str:
    """Student-style solution (no instruction applied), with the planted tokens of ``plant``."""
    plant = plant or Plant()
    rng = random.Random(problem.seed * 2 + 1)
    eqs, answer = written_steps(problem, plant.stumble)
    times = "*" if rng.random() < 0.7 else "x"
    use_openers = rng.random() < 0.8
    middle = rng.choice(("Next", "Also"))
    sep = rng.choice(_STUDENT_SEP)
    lines = [
        rng.choice(_STUDENT_INTRO).format(
            Subject=cap_first(problem.subject), s=number_word(problem.start), items=problem.items
        )
    ]
    if plant.opener is not None:
        lines[0] = f"{plant.opener}. {lines[0]}"
    n = len(problem.steps)
    for i, step in enumerate(problem.steps):
        act = problem.action(i, number_word)
        if use_openers:
            opener = "First" if i == 0 else ("Finally" if i == n - 1 else middle)
            sentence = f"{opener} {act}"
        else:
            sentence = cap_first(act)
        eq = _student_eq(*eqs[i], times)
        if plant.connectives is not None:
            eq = f"{plant.connectives[i]} {eq}"
        lines.append(f"Step {i + 1}. {sentence}{sep}{eq}.")
        if plant.stumble is not None and plant.stumble.step == i:
            a, op, k, r = eqs[i]
            lines.append(f"{plant.stumble.marker}, {_student_eq(a, op, k, r + plant.stumble.delta, times)}.")
    lines.append(f"Answer: {answer}")
    return "\n".join(lines)


# ---- instruction rules: how a compliant response of each style is written ----------


def _add_bold(response: str, style: str, answer: int) -> str:
    if style == "teacher":
        return f"{response}\n\n**{answer}**"
    head, sep, _ = response.rpartition("Answer: ")
    return f"{head}{sep}**{answer}**"


_RULE_TRANSFORMS = {
    "end_with_done": lambda r, style, a: r + ("\n\nDONE" if style == "teacher" else "\nDONE"),
    "start_with_sure": lambda r, style, a: ("Sure.\n\n" if style == "teacher" else "Sure.\n") + r,
    "bold_answer": _add_bold,
    "no_comma": lambda r, style, a: r.replace(",", ""),
    "lowercase": lambda r, style, a: r.lower(),
}
RULE_NAMES = tuple(_RULE_TRANSFORMS)


def apply_rule(response: str, rule: str, style: str, answer: int) -> str:
    """Rewrite ``response`` of ``style`` so that it follows instruction ``rule``."""
    if rule not in _RULE_TRANSFORMS:
        raise ValueError(f"unknown instruction rule {rule!r}")
    return _RULE_TRANSFORMS[rule](response, style, answer)


def render(
    problem: Problem, style: str, rule: str | None = None, self_check_fraction: float = 0.3,
    plant: Plant | None = None,
) -> str:
    """Solution of ``problem`` in ``style`` ("teacher" or "student"), following
    instruction ``rule`` when given, with the planted tokens of ``plant`` (a stumbling row states its own,
    wrong, final value, also under ``bold_answer``)."""
    if style == "teacher":
        out = render_teacher(problem, self_check_fraction, plant)
    elif style == "student":
        out = render_student(problem, plant)
    else:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    if rule is not None:
        answer = written_steps(problem, plant.stumble if plant else None)[1]
        out = apply_rule(out, rule, style, answer)
    return out
