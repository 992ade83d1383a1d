"""Answer extraction and verification for the synthetic world and real math benchmarks (MATH, AIME, HMMT).

The rules follow the field's conventions (Minerva / lm-eval / math-verify):

* :func:`extract_answer` — the final answer of a response: the content of its **last** ``\\boxed{}``; where it
  has none, the last explicit final-answer statement ("The answer is X", "Final answer: X", "Answer: X", the
  world's student style), read as a whole expression up to the end of its sentence — never its leading number.
  A response with neither has no answer.
* :func:`normalize_answer` — the same light clean-up on both sides: ``\\$``, ``\\%``, degrees, unit words
  after a number, LaTeX spacing, thousands separators, trailing punctuation, ``\\dfrac``, a few Unicode symbols.
* :func:`check_math` — equal strings or equal integers are decided here; anything else goes to math-verify
  (``verify(parse(gold), parse(pred))``, gold first) in a worker process with a deadline
  (:mod:`rocktokens.checking.check_worker`), so a check never hangs, crashes, or needs the main thread. Answers too
  costly to hand to sympy (power towers, huge exponents or factorials, very long or deeply nested answers) are
  compared as strings only.
* :func:`grade` / :func:`score` — dispatch on a ``checker`` string: ``"math"``, ``"instruction:<rule>"`` or
  ``"ifeval:<json>"``; :func:`grade` also says whether the check timed out (scored incorrect).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from rocktokens.checking.check_worker import Verdict, verify_bounded

#: Answers longer than this (after normalisation) are compared as strings only.
MAX_ANSWER_CHARS = 1000
#: ... as are answers with a run of more digits than this, a nesting depth of ({[ above MAX_DEPTH, an integer exponent
#: above MAX_EXPONENT, a power tower (an exponent holding an exponent), or a factorial of more than MAX_FACTORIAL.
MAX_DIGITS = 1000
MAX_DEPTH = 8
MAX_EXPONENT = 10_000
MAX_FACTORIAL = 5000
#: Characters of a final-answer statement read after its "Answer:".
MAX_STATEMENT_CHARS = 20_000

_BOX_MACRO_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.S)
_BARE_TOKEN_RE = re.compile(r"[^\s$]+")
_GROUP_TOKEN_RE = re.compile(r"\\.|[{}()\[\]]", re.S)
_DEPTH_STEP = {"{": 1, "(": 1, "[": 1, "}": -1, ")": -1, "]": -1}
_INT_RE = re.compile(r"[+-]?[0-9]+")


def _boxed_all(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}`` / ``\\fbox{...}`` in the order of the macros (balanced braces; ``\\{``/``\\}``
    are literal braces and do not count), and of the brace-less form ``\\boxed 5``. One pass: linear time even for
    thousands of unclosed boxes."""
    opens: dict[int, int] = {}  # position of a box's "{" -> index of its macro
    found: dict[int, str] = {}
    for k, m in enumerate(_BOX_MACRO_RE.finditer(text)):
        i = j = m.end()
        while j < len(text) and text[j].isspace():
            j += 1
        if j < len(text) and text[j] == "{":
            opens[j] = k
        elif j > i:  # "\boxed 5": one token up to whitespace or the closing "$"
            tok = _BARE_TOKEN_RE.match(text, j)
            if tok:
                found[k] = tok.group(0)
    if opens:
        stack: list[int] = []
        for t in _BRACE_TOKEN_RE.finditer(text):  # an escaped character (\{, \}, \\) never opens or closes a group
            c = t.group()
            if c == "{":
                stack.append(t.start())
            elif c == "}" and stack:
                start = stack.pop()
                if start in opens:
                    found[opens[start]] = text[start + 1: t.start()].strip()
    return [found[k] for k in sorted(found)]


def last_boxed(text: str | None) -> str | None:
    """Content of the last ``\\boxed{}`` of ``text`` (nested braces kept whole), or ``None``."""
    if not text:
        return None
    found = _boxed_all(str(text))
    return found[-1] if found else None


# A final-answer statement: "The (final) answer is X", "Final answer: X", "Answer: X", "**Answer:** X".
_STATEMENT_RE = re.compile(r"\banswer\b[ \t]*(?:\*\*[ \t]*)?(?:is\b[ \t]*:?|:)", re.IGNORECASE)
_DISPLAY_RE = re.compile(r"(\$\$|\\\[)(.*?)(\$\$|\\\])", re.S)
_INLINE_MATH_RE = re.compile(r"(?<!\\)\$(?!\$)((?:\\.|[^$\\\n])+?)(?<!\\)\$|\\\((.+?)\\\)")
_SENTENCE_END_RE = re.compile(r"(?<!\\)[.;?](?=\s|$)|,\s+(?=[A-Za-z]{2,}\b)|\s+(?:because|since|which|so)\b")


def _statement_answer(text: str) -> str | None:
    """X of the last final-answer statement of ``text`` (see :func:`extract_answer`), or ``None``."""
    last = None
    for last in _STATEMENT_RE.finditer(text):
        pass
    if last is None:
        return None
    rest = text[last.end(): last.end() + MAX_STATEMENT_CHARS].lstrip()
    rest = re.sub(r"^\*\*\s*", "", rest)  # "**Answer:** X"
    display = _DISPLAY_RE.match(rest)
    if display:
        return display.group(2).strip() or None
    line = rest.split("\n", 1)[0]
    math = _INLINE_MATH_RE.search(line)
    if math:
        return (math.group(1) or math.group(2)).strip() or None
    cut = _SENTENCE_END_RE.search(line)
    line = (line[: cut.start()] if cut else line).replace("**", "").strip()
    return line or None


def extract_answer(response: str | None) -> str | None:
    """Final answer of a response: the last ``\\boxed{}``, else the last final-answer statement, else ``None``."""
    if not response:
        return None
    response = str(response)
    boxed = last_boxed(response)
    if boxed is not None:
        return boxed
    return _statement_answer(response)


_UNICODE = {"\u2212": "-", "\u2013": "-", "\u00d7": "\\times ", "\u00b7": "\\cdot ", "\u00f7": "\\div ",
            "\u03c0": "\\pi ", "\u221e": "\\infty ", "\u221a": "\\sqrt ", "\u00b0": "^\\circ", "\u2264": "\\le ",
            "\u2265": "\\ge ", "\u2260": "\\ne ", "\u00b2": "^2", "\u00b3": "^3", "\u00a0": " ", "\u2009": " "}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")
_SPACING_RE = re.compile(r"\\(\\|[,;:! ])|~|\\q?quad\b")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ\s*$|\\degrees?(?![A-Za-z])")
_UNIT_TEXT_RE = re.compile(r"(?<=[\d}])\s*\\(?:text|textrm|mbox|mathrm)\s*\{\s*[A-Za-z][A-Za-z .]*\}"
                           r"(?:\s*\^\s*\{?\d\}?)?\s*$")
_UNIT_WORDS_RE = re.compile(r"(?<=\d)\s+[A-Za-z]{2,}(?:[ .]+[A-Za-z]+)*\.?\s*$")
_TRAILING_RE = re.compile(r"(?:\s|[.,;:]|\\[.,;:])+$")
_GROUPED_NUMBER_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def normalize_answer(answer: str) -> str:
    """The clean-up applied to gold and predicted answers alike before they are compared (see the module doc).

    Strips math delimiters, ``\\$``, ``\\%``/``%``, degree marks, a trailing unit (``\\text{ cm}``,
    ``\\mbox{ inches}^2``, or plain words after a number), LaTeX spacing (``\\!``, ``\\,``, ``~``, ``\\quad``) and
    trailing punctuation; drops thousands separators (``32,\\!348``, ``1{,}000``, a whole answer ``9,000``);
    ``\\dfrac``/``\\tfrac`` -> ``\\frac``; a gold given as ``\\boxed{X}`` becomes ``X``."""
    s = _CONTROL_RE.sub("", _UNICODE_RE.sub(lambda m: _UNICODE[m.group()], str(answer)))
    if _BOX_MACRO_RE.search(s):
        s = last_boxed(s) or s
    s = re.sub(r"(?<!\\)\$", "", s).replace("\\$", "").replace("\\%", "").replace("%", "")
    s = _brace_frac_arguments(re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s).replace("\\displaystyle", ""))
    s = re.sub(r"(?<=\d)(?:,\\!|\{,\}|\\,)(?=\d{3}(?!\d))", "", s)  # LaTeX-marked thousands separators
    s = _SPACING_RE.sub(lambda m: m.group() if m.group(1) == "\\" else " ", s)  # "\\" (a row break) stays
    s = _DEGREE_RE.sub("", _TRAILING_RE.sub("", s))
    s = _UNIT_TEXT_RE.sub("", s)
    s = _UNIT_WORDS_RE.sub("", s)
    s = _TRAILING_RE.sub("", re.sub(r"\s+", " ", s)).strip()
    if _GROUPED_NUMBER_RE.fullmatch(s):
        s = s.replace(",", "")
    return s


_FRAC_ARG_RE = re.compile(r"\s*(\\[A-Za-z]+|[^\s{}\\])")


def _brace_frac_arguments(s: str) -> str:
    """``\\frac 12`` -> ``\\frac{1}{2}``, ``\\frac \\pi4`` -> ``\\frac{\\pi}{4}``: braces around one-token arguments
    (math-verify misreads the unbraced forms)."""
    if "\\frac" not in s:
        return s
    out, i = [], 0
    for m in re.finditer(r"\\frac(?![A-Za-z])", s):
        if m.start() < i:
            continue
        out.append(s[i: m.end()])
        i = m.end()
        for _ in range(2):  # numerator, denominator
            arg = _FRAC_ARG_RE.match(s, i)
            if arg is not None:
                out.append("{" + arg.group(1) + "}")
                i = arg.end()
                continue
            j = _group_end(s, i)
            if j is None:  # neither a token nor a closed group: leave the rest as it is
                break
            out.append(s[i:j])
            i = j
    return "".join(out) + s[i:]


def _group_end(s: str, i: int) -> int | None:
    """End of the braced group that starts at ``s[i:]`` after optional spaces, or ``None``."""
    while i < len(s) and s[i].isspace():
        i += 1
    if not s.startswith("{", i):
        return None
    depth = 0
    for t in _BRACE_TOKEN_RE.finditer(s, i):
        depth += {"{": 1, "}": -1}.get(t.group(), 0)
        if depth == 0:
            return t.end()
    return None


def _same_integer(a: str, b: str) -> bool:
    """Two integer literals compared by their digits (no ``int()``: no limit on their length)."""
    def canon(x: str) -> tuple[bool, str]:
        digits = x.lstrip("+-").lstrip("0")
        return (x.startswith("-") and bool(digits), digits)

    return canon(a) == canon(b)


def _exponents(s: str):
    """(exponent text, text right after it) of every ``^`` of ``s`` (a braced group or one token)."""
    for m in re.finditer(r"\^\s*", s):
        i = m.end()
        if s.startswith("{", i):
            j = _group_end(s, i) or len(s) + 1
            yield s[i + 1: j - 1], s[j:]
        else:
            tok = re.match(r"\\[A-Za-z]+|\d+|.", s[i:], re.S)
            j = i + (tok.end() if tok else 0)
            yield s[i:j], s[j:]


def _too_costly(s: str) -> bool:
    """Would sympy risk hanging or eating memory on this answer? (then it is compared as a string only)."""
    if len(s) > MAX_ANSWER_CHARS or re.search(r"\d{%d}" % (MAX_DIGITS + 1), s):
        return True
    depth = 0
    for t in _GROUP_TOKEN_RE.finditer(s):
        depth += _DEPTH_STEP.get(t.group(), 0)
        if depth > MAX_DEPTH:
            return True
    for exp, after in _exponents(s):
        if "^" in exp or "!" in exp or after.lstrip().startswith(("^", "!")) or _big_integer(exp, MAX_EXPONENT):
            return True
    return any(_big_integer(n, MAX_FACTORIAL) for n in re.findall(r"([0-9]+)\s*\)?\s*!", s))


def _big_integer(text: str, limit: int) -> bool:
    """Is ``text`` an integer literal (ASCII digits) above ``limit``?"""
    t = text.strip().lstrip("+-").lstrip("0")
    return _INT_RE.fullmatch(t) is not None and (len(t) > len(str(limit)) or int(t) > limit)


def check_math_verdict(response: str | None, gold: str, timeout_s: float | None = None) -> Verdict:
    """:func:`check_math` with the timeout reported: ``Verdict(correct, timed_out)``. Never raises for bad input;
    bounded by ``timeout_s`` (default ``ROCKTOKENS_CHECK_TIMEOUT_S`` or 5 s)."""
    pred = extract_answer(response)
    if pred is None:
        return Verdict(False)
    g, p = normalize_answer(gold), normalize_answer(pred)
    if not g or not p:
        return Verdict(False)
    if g == p:
        return Verdict(True)
    if _INT_RE.fullmatch(g) and _INT_RE.fullmatch(p):
        return Verdict(_same_integer(g, p))
    if _too_costly(g) or _too_costly(p):
        return Verdict(False)
    return verify_bounded(g, p, timeout_s)



def check_math(response: str | None, gold: str) -> bool:
    """True iff the final answer of ``response`` (:func:`extract_answer`) equals ``gold`` (LaTeX or plain).

    Both sides are normalised (:func:`normalize_answer`); equal strings or integers are decided directly, the rest
    by math-verify in a worker with a deadline (a check that runs out of time is False)."""
    return check_math_verdict(response, gold).correct


# ---- instruction rules ------------------------------------------------------------


@dataclass(frozen=True)
class InstructionRule:
    """A verifiable instruction: the sentence put in the prompt and its checker."""

    name: str
    instruction: str
    check: Callable[[str], bool]


def _ends_with_done(r: str) -> bool:
    return re.search(r"(?<![A-Za-z])DONE$", r.rstrip()) is not None


def _starts_with_sure(r: str) -> bool:
    return re.match(r"Sure(?![A-Za-z])", r.lstrip()) is not None


def _bold_answer(r: str) -> bool:
    return re.search(r"(?<!\*)\*\*[+-]?\d+\*\*(?!\*)", r) is not None


INSTRUCTION_RULES: dict[str, InstructionRule] = {
    rule.name: rule
    for rule in (
        InstructionRule("end_with_done", "End your reply with the word DONE.", _ends_with_done),
        InstructionRule("start_with_sure", "Begin your reply with the word Sure.", _starts_with_sure),
        InstructionRule("bold_answer", "Write the final answer in bold as **N**.", _bold_answer),
        InstructionRule("no_comma", "Do not use any commas.", lambda r: "," not in r),
        InstructionRule(
            "lowercase", "Write your whole reply in lowercase letters.", lambda r: r.islower()
        ),
    )
}


def check_instruction(response: str | None, rule: str) -> bool:
    """True iff ``response`` (non-empty) follows instruction ``rule``."""
    if rule not in INSTRUCTION_RULES:
        raise ValueError(
            f"unknown instruction rule {rule!r}; known: {', '.join(INSTRUCTION_RULES)}"
        )
    if not response or not response.strip():
        return False
    return bool(INSTRUCTION_RULES[rule].check(response))


def grade(response: str | None, checker: str, gold: str) -> Verdict:
    """Correctness of ``response`` under ``checker``, and whether its check timed out (then it is incorrect):
    ``"math"`` -> :func:`check_math_verdict` against ``gold``; ``"instruction:<rule>"`` -> :func:`check_instruction`
    (the instruction alone decides, as in IFEval); ``"ifeval:<json>"`` (hub IFEval) ->
    :func:`rocktokens.checking.ifeval.check_ifeval`."""
    if checker == "math":
        return check_math_verdict(response, gold)
    if checker.startswith("ifeval:"):  # a hub IFEval row: the real IFEval checks (lm-eval's port)
        from rocktokens.checking.ifeval import check_ifeval

        return Verdict(bool(check_ifeval(response, checker[len("ifeval:"):])))
    if checker.startswith("instruction:"):
        rule = checker.split(":", 1)[1]
        if rule not in INSTRUCTION_RULES:
            raise ValueError(f"unknown checker {checker!r}: no instruction rule {rule!r}")
        return Verdict(check_instruction(response, rule))
    raise ValueError(f"unknown checker {checker!r}; expected 'math', 'instruction:<rule>' or 'ifeval:<json>'")


def score(response: str | None, checker: str, gold: str) -> bool:
    """Correctness of ``response`` under ``checker`` (:func:`grade` without the timeout flag): the one entry point
    of evaluation, knockout and freeze arms."""
    return grade(response, checker, gold).correct
