"""Answer extraction and verification for the synthetic world (and real MATH answers).

* :func:`extract_answer` — the last ``\\boxed{...}`` (teacher style, MATH-style LaTeX),
  else the last ``Answer: N`` / ``answer is N`` line (student style), else ``None``.
* :func:`check_math` — ``math_verify.verify(parse(gold), parse(pred))`` (gold first, as
  the library requires), with timeouts disabled so it also works outside the main thread
  (math_verify's timeouts use ``signal.alarm``). Two plain integers are compared
  directly, which is what ``verify`` would conclude, without the sympy round trip.
* :func:`check_instruction` — the rule checkers of the IFEval stand-in.
* :func:`score` — dispatch on a ``checker`` string: ``"math"`` or ``"instruction:<rule>"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

_INT_RE = re.compile(r"^[+-]?\d+$")
_ANSWER_LINE_RE = re.compile(
    r"answer\s*(?:is|:)\s*(?:\*\*)?\s*\$?\s*([+-]?\d+(?:\.\d+)?)", re.IGNORECASE
)


_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _boxed_all(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces; ``\\{``/``\\}`` are
    literal braces and do not count), and of the brace-less form ``\\boxed 5``."""
    out: list[str] = []
    for m in _BOXED_RE.finditer(text):
        i = m.end()
        while i < len(text) and text[i].isspace():
            i += 1
        if i < len(text) and text[i] == "{":
            depth, j = 1, i + 1
            while j < len(text) and depth:
                c = text[j]
                if c == "\\":
                    j += 2  # an escaped character (\{, \}, \\) never opens or closes a group
                    continue
                if c == "{":
                    depth += 1
                elif c == "}":
                    depth -= 1
                j += 1
            if depth == 0:
                out.append(text[i + 1 : j - 1].strip())
        elif i > m.end():  # "\boxed 5": one token up to whitespace or the closing "$"
            tok = re.match(r"[^\s$]+", text[i:])
            if tok:
                out.append(tok.group(0))
    return out


def last_boxed(text: str | None) -> str | None:
    """Content of the last ``\\boxed{}`` of ``text`` (nested braces kept whole), or ``None``."""
    if not text:
        return None
    found = _boxed_all(str(text))
    return found[-1] if found else None


def extract_answer(response: str | None) -> str | None:
    """Final answer of a response: last ``\\boxed{}``, else last student answer line."""
    if not response:
        return None
    boxed = last_boxed(response)
    if boxed is not None:
        return boxed
    lines = _ANSWER_LINE_RE.findall(response)
    if lines:
        return lines[-1]
    return None


def _as_latex(expr: str) -> str:
    expr = expr.strip()
    if "$" in expr or "\\boxed" in expr or "\\(" in expr or "\\[" in expr:
        return expr
    return f"${expr}$"


def check_math(response: str | None, gold: str) -> bool:
    """True iff the final answer of ``response`` equals ``gold`` (a LaTeX or plain answer).

    Gold is parsed first (``verify(parse(gold), parse(pred))``); both are wrapped as
    ``$...$`` unless they already carry math delimiters. Timeouts are disabled
    (``parsing_timeout=None``, ``timeout_seconds=None``), so this works in threads.
    """
    pred = extract_answer(response)
    if pred is None or not pred.strip():
        return False
    gold = str(gold).strip()
    if _INT_RE.match(gold) and _INT_RE.match(pred.strip()):
        return int(gold) == int(pred.strip())
    from math_verify import parse, verify

    gold_parsed = parse(_as_latex(gold), parsing_timeout=None)
    pred_parsed = parse(_as_latex(pred), parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


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


def score(response: str | None, checker: str, gold: str) -> bool:
    """Correctness of ``response`` under ``checker``: ``"math"`` -> :func:`check_math`
    against ``gold``; ``"instruction:<rule>"`` -> :func:`check_instruction` (the
    instruction alone decides, as in IFEval); ``"ifeval:<json>"`` (hub IFEval) ->
    :func:`rocktokens.ifeval.check_ifeval`."""
    if checker == "math":
        return check_math(response, gold)
    if checker.startswith("ifeval:"):  # a hub IFEval row: the real IFEval checks (lm-eval's port)
        from rocktokens.ifeval import check_ifeval

        return check_ifeval(response, checker[len("ifeval:"):])
    if checker.startswith("instruction:"):
        rule = checker.split(":", 1)[1]
        if rule not in INSTRUCTION_RULES:
            raise ValueError(f"unknown checker {checker!r}: no instruction rule {rule!r}")
        return check_instruction(response, rule)
    raise ValueError(f"unknown checker {checker!r}; expected 'math', 'instruction:<rule>' or 'ifeval:<json>'")
