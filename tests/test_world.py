"""Tests of the synthetic verifiable math world (rocktokens.world)."""

from __future__ import annotations

import hashlib
import os
import re
import runpy
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from rocktokens.world import (
    DEFAULT_WORLD_CONFIG,
    INSTRUCTION_RULES,
    SPLITS,
    all_texts,
    check_instruction,
    check_math,
    extract_answer,
    make_world,
    render,
    score,
    validate_world_config,
    world_problems,
)
from rocktokens.world.styles import (
    NUMBER_WORDS,
    RULE_NAMES,
    STUDENT_OPENERS,
    TEACHER_MARKERS,
    number_word,
)

REPO = Path(__file__).resolve().parents[1]

SMALL = dict(
    n_teacher_corpus=400,
    n_student_corpus=400,
    n_stage1_prompts=100,
    n_stage2_prompts=100,
    n_bench_math=100,
    n_bench_ifeval=50,
    n_bench_aime24=10,
    n_bench_aime25=10,
    n_bench_hmmt25=10,
    instruction_fraction=0.2,
)


@pytest.fixture(scope="module")
def world():
    return make_world(SMALL, 7)


@pytest.fixture(scope="module")
def problems():
    return world_problems(SMALL, 7)


def _digest(w: dict[str, pd.DataFrame]) -> str:
    h = hashlib.sha256()
    for name, df in w.items():
        h.update(name.encode())
        h.update(df.to_json(orient="split").encode())
    return h.hexdigest()


# ---- an independent reader of the problem statements ---------------------------------

_STATEMENT_RE = re.compile(r"^(?:Question: )?(.*?\?)")
_ACTIONS = [
    (re.compile(r"^(?:He|She|It) (?:buys|finds|gets) (\d+) more$"), lambda v, k: v + k),
    (re.compile(r"^(?:He|She|It) (?:gives away|loses|sells) (\d+)$"), lambda v, k: v - k),
    (re.compile(r"^(?:He|She|It) ends up with (\d+) times as many$"), lambda v, k: v * k),
]


def _statement(prompt: str) -> str:
    m = _STATEMENT_RE.match(prompt)
    assert m, prompt
    return m.group(1)


def _evaluate(statement: str) -> tuple[int, list[int], int]:
    """(answer, running values, number of steps) read off the statement text alone."""
    sentences = [s.strip() for s in re.split(r"(?<=[.?])\s", statement)]
    m = re.match(r"^(?:[A-Z][a-z]+|The [a-z]+) has (\d+) [a-z]+\.$", sentences[0])
    assert m, sentences[0]
    value = int(m.group(1))
    values = [value]
    assert sentences[-1].startswith("How many ") and sentences[-1].endswith(" have now?")
    for s in sentences[1:-1]:
        s = s.rstrip(".")
        for pat, f in _ACTIONS:
            mm = pat.match(s)
            if mm:
                value = f(value, int(mm.group(1)))
                break
        else:
            raise AssertionError(f"unparsed step sentence {s!r}")
        values.append(value)
    return value, values, len(values) - 1


# ---- config ------------------------------------------------------------------------


def test_default_config_is_valid_and_flat():
    full = validate_world_config(None)
    assert full == DEFAULT_WORLD_CONFIG
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in full.values())
    assert {f"n_{s}" for s in SPLITS} <= set(full)


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"n_bench_math": -1}, "n_bench_math"),
        ({"bogus_key": 3}, "bogus_key"),
        ({"min_steps": 4, "max_steps": 2}, "max_steps"),
        ({"instruction_fraction": 1.5}, "instruction_fraction"),
        ({"n_teacher_corpus": 2.5}, "n_teacher_corpus"),
        ({"n_teacher_corpus": True}, "n_teacher_corpus"),
        ({"operand_max": 60, "value_max": 99}, "value_max"),
        ({"hard_min_steps": 0}, "hard_min_steps"),
    ],
)
def test_bad_config_names_the_key(bad, key):
    with pytest.raises(ValueError, match=key):
        make_world(bad, 0)


def test_impossible_size_raises():
    tiny = dict(SMALL, min_steps=1, max_steps=1, operand_max=2, value_max=4, multiplier_max=0)
    with pytest.raises(ValueError, match="n_"):
        make_world(tiny, 0)


# ---- determinism -------------------------------------------------------------------


def test_same_seed_same_world_other_seed_other_world(world):
    again = make_world(SMALL, 7)
    assert list(again) == list(world) == list(SPLITS)
    for split in world:
        pd.testing.assert_frame_equal(world[split], again[split])
    other = make_world(SMALL, 8)
    for split in world:
        assert not world[split]["prompt"].equals(other[split]["prompt"]), split


def test_independent_of_python_hash_seed(world):
    code = (
        "import hashlib, sys; from rocktokens.world import make_world; "
        f"w = make_world({SMALL!r}, 7); h = hashlib.sha256()\n"
        "for n, df in w.items():\n"
        "    h.update(n.encode()); h.update(df.to_json(orient='split').encode())\n"
        "print(h.hexdigest())"
    )
    for hs in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hs)
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == _digest(world)


def test_benchmarks_do_not_move_when_corpus_sizes_change(world):
    bigger = make_world(dict(SMALL, n_teacher_corpus=500, n_student_corpus=300), 7)
    for split in ("bench_math", "bench_ifeval", "bench_aime24", "stage1_prompts"):
        pd.testing.assert_frame_equal(world[split], bigger[split])


# ---- schema, sizes, disjointness ----------------------------------------------------


def test_schema_and_sizes(world):
    for split, df in world.items():
        cols = ["id", "prompt", "answer", "checker"]
        if split in ("teacher_corpus", "student_corpus"):
            cols.append("response")
        assert list(df.columns) == cols, split
        assert len(df) == SMALL[f"n_{split}"]
        assert df["id"].is_unique
        assert all(i.startswith(split + "-") for i in df["id"])
        assert all(isinstance(x, str) for c in cols for x in df[c])
    ids = pd.concat([df["id"] for df in world.values()])
    assert ids.is_unique


def test_splits_are_disjoint_in_problem_text(world):
    seen: dict[str, str] = {}
    for split, df in world.items():
        for prompt in df["prompt"]:
            st = _statement(prompt)
            assert st not in seen, f"{st!r} in {seen.get(st)} and {split}"
            seen[st] = split


def test_answers_are_correct_and_within_bounds(world):
    cfg = validate_world_config(SMALL)
    for split, df in world.items():
        hard = split in ("bench_aime24", "bench_aime25", "bench_hmmt25")
        vmax = cfg["hard_value_max"] if hard else cfg["value_max"]
        lo = cfg["hard_min_steps"] if hard else cfg["min_steps"]
        hi = cfg["hard_max_steps"] if hard else cfg["max_steps"]
        for prompt, ans in zip(df["prompt"], df["answer"]):
            value, values, n = _evaluate(_statement(prompt))
            assert str(value) == ans, prompt
            assert all(1 <= v <= vmax for v in values), prompt
            assert lo <= n <= hi, prompt


def test_prompt_forms_and_checkers(world):
    ifeval = world["bench_ifeval"]
    assert all(p.startswith("Question: ") and "\nRespond following this rule: " in p for p in ifeval["prompt"])
    assert set(ifeval["checker"]) == {f"instruction:{r}" for r in INSTRUCTION_RULES}
    for split in ("bench_math", "bench_aime24", "bench_aime25", "bench_hmmt25"):
        assert set(world[split]["checker"]) == {"math"}
    for split in ("teacher_corpus", "student_corpus", "stage1_prompts", "stage2_prompts"):
        df = world[split]
        assert not any(p.startswith("Question:") or "Respond following" in p for p in df["prompt"])
        instr = df[df["checker"] != "math"]
        assert 0.1 < len(instr) / len(df) < 0.3, split
        for prompt, checker in zip(instr["prompt"], instr["checker"]):
            rule = checker.split(":", 1)[1]
            assert prompt.endswith(" " + INSTRUCTION_RULES[rule].instruction)


def test_corpus_responses_score_correct(world):
    for split in ("teacher_corpus", "student_corpus"):
        df = world[split]
        for resp, checker, ans in zip(df["response"], df["checker"], df["answer"]):
            assert score(resp, checker, ans), resp
            assert check_math(resp, ans), resp  # instruction rows still reach the answer
            assert not check_math(resp, str(int(ans) + 1))


def test_hard_sets_are_harder(world):
    def mean_max_operand(df):
        return sum(max(map(int, re.findall(r"\d+", _statement(p)))) for p in df["prompt"]) / len(df)

    hard = pd.concat([world[s] for s in ("bench_aime24", "bench_aime25", "bench_hmmt25")])
    assert mean_max_operand(hard) > mean_max_operand(world["bench_math"])


def test_all_texts(world):
    texts = all_texts(world)
    n = sum(len(df) for df in world.values()) + len(world["teacher_corpus"]) + len(world["student_corpus"])
    assert len(texts) == n
    as_set = set(texts)
    assert set(world["bench_ifeval"]["prompt"]) <= as_set
    assert set(world["student_corpus"]["response"]) <= as_set


# ---- styles ------------------------------------------------------------------------

_EQ_RE = re.compile(r"(\d+) (\+|-|\\times|\*|x) (\d+) = (\d+)")


def _equations(text: str) -> list[tuple[str, str, str, str]]:
    out = []
    for a, op, k, r in _EQ_RE.findall(text):
        out.append((a, "*" if op in ("\\times", "x") else op, k, r))
    return out


def _plain(problems):
    return [p for split in ("teacher_corpus", "student_corpus", "bench_math") for p, _ in problems[split]]


def test_styles_same_arithmetic_same_answer(problems):
    for p in _plain(problems):
        t, s = render(p, "teacher"), render(p, "student")
        vals = p.values
        expected = [
            (str(vals[i]), st.op, str(st.k), str(vals[i + 1])) for i, st in enumerate(p.steps)
        ]
        assert _equations(s) == expected
        teq = _equations(t)
        # the teacher may repeat its last line as a self-check
        assert teq[: len(expected)] == expected and all(e == expected[-1] for e in teq[len(expected):])
        assert extract_answer(t) == extract_answer(s) == str(p.answer)
        for resp in (t, s):
            assert score(resp, "math", str(p.answer))
            assert not score(resp, "math", str(p.answer + 1))


def test_style_difference_lies_in_the_four_clusters(problems):
    marker_start = re.compile(r"(?:^|\n|\*\* |\. )(" + "|".join(TEACHER_MARKERS) + r")\b")
    tw: set[str] = set()
    sw: set[str] = set()
    n_wait = n_word_digits = 0
    for p in _plain(problems):
        t, s = render(p, "teacher"), render(p, "student")
        # (a) math delimiters
        assert "$" in t and "\\boxed{" in t
        assert "$" not in s and "\\" not in s and "Answer: " in s
        # (b) markdown / whitespace
        assert "**Step 1:**" in t and "\n\n" in t and "### Answer" in t
        assert "**" not in s and "\n\n" not in s and "#" not in s and "Step 1." in s
        # (c) sentence-initial discourse markers
        assert len(marker_start.findall(t)) >= len(p.steps)
        assert not marker_start.findall(s)
        n_wait += "Wait," in t
        # (d) digits: the student spells small prose numbers; equations keep digits
        small = [st.k for st in p.steps if st.k < 10] + ([p.start] if p.start < 10 else [])
        for k in small:
            assert NUMBER_WORDS[k] in s
        n_word_digits += bool(small)
        # content words shared: every step action, with digits (teacher) or words (student)
        for i in range(len(p.steps)):
            assert p.action(i) in t
            assert p.action(i, number_word) in s.lower()
        tw |= set(re.findall(r"[A-Za-z]+", t))
        sw |= set(re.findall(r"[A-Za-z]+", s))
    assert n_wait > 0 and n_word_digits > 0
    # what differs at the word level is markers / openers / number words / small glue
    teacher_only = set(TEACHER_MARKERS) | {
        "so", "we", "let", "boxed", "answer", "check", "count", "get", "is", "know", "me", "right", "us",
    }
    student_only = set(STUDENT_OPENERS) | set(NUMBER_WORDS) | {"He", "She", "It", "The", "at", "starts", "x"}
    assert tw - sw <= teacher_only, tw - sw
    assert sw - tw <= student_only, sw - tw


def test_style_variation_is_present_and_deterministic(problems):
    ps = _plain(problems)[:200]
    teachers = [render(p, "teacher") for p in ps]
    assert teachers == [render(p, "teacher") for p in ps]
    openers = {re.search(r"\*\*Step 1:\*\* (\w+)", t).group(1) for t in teachers}
    assert len(openers) >= 4
    students = [render(p, "student") for p in ps]
    assert any(" * " in s for s in students) and any(" x " in s for s in students)


def test_render_unknown_style_or_rule(problems):
    p = problems["bench_math"][0][0]
    with pytest.raises(ValueError, match="style"):
        render(p, "professor")
    with pytest.raises(ValueError, match="rule"):
        render(p, "teacher", rule="shout")


@pytest.mark.parametrize("rule", list(INSTRUCTION_RULES))
@pytest.mark.parametrize("style", ["teacher", "student"])
def test_rule_transforms_follow_their_rule(problems, rule, style):
    assert set(RULE_NAMES) == set(INSTRUCTION_RULES)
    for p in _plain(problems)[:50]:
        base = render(p, style)
        ruled = render(p, style, rule=rule)
        assert check_instruction(ruled, rule)
        assert score(ruled, f"instruction:{rule}", str(p.answer))
        assert check_math(ruled, str(p.answer))
        if rule != "no_comma":  # a base response may happen to have no comma
            assert not check_instruction(base, rule)


# ---- checkers ----------------------------------------------------------------------

RULE_CASES = {
    "end_with_done": (["All good.\nDONE", "x DONE  \n"], ["DONE. more text", "ABANDONED", "done"]),
    "start_with_sure": (["Sure.\nStep 1.", "  Sure, here it is"], ["Surely not", "I am Sure.", "sure."]),
    "bold_answer": (["Answer: **42**", "so\n\n**-3**"], ["**Step 1:** 4", "Answer: 42", "***42***"]),
    "no_comma": (["a b c. d", "12 + 5 = 17"], ["So, 3", "1,000"]),
    "lowercase": (["so the answer is $\\boxed{4}$.", "step 1. answer: 3"], ["Step 1.", "answer: 3 DONE", "123"]),
}


@pytest.mark.parametrize("rule", list(INSTRUCTION_RULES))
def test_instruction_checkers(rule):
    good, bad = RULE_CASES[rule]
    for r in good:
        assert check_instruction(r, rule), (rule, r)
    for r in bad + ["", "   "]:
        assert not check_instruction(r, rule), (rule, r)


def test_extract_answer():
    assert extract_answer("so $\\boxed{3}$ then $\\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"
    assert extract_answer("Step 1. 2 + 2 = 4.\nAnswer: 4") == "4"
    assert extract_answer("step 1.\nanswer: **12**") == "12"
    assert extract_answer("The answer is 7.") == "7"
    assert extract_answer("2 + 2 = 4") is None
    assert extract_answer("") is None and extract_answer(None) is None
    assert extract_answer("\\boxed{unclosed") is None


@pytest.mark.parametrize(
    "response, gold, ok",
    [
        ("The answer is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", True),
        ("$\\boxed{0.5}$", "\\frac{1}{2}", True),
        ("$\\boxed{\\frac{2}{4}}$", "\\frac{1}{2}", True),
        ("$\\boxed{\\frac{1}{3}}$", "\\frac{1}{2}", False),
        ("$\\boxed{2\\sqrt{2}}$", "\\sqrt{8}", True),
        ("$\\boxed{3\\pi}$", "3\\pi", True),
        ("$\\boxed{\\pi}$", "3\\pi", False),
        ("$\\boxed{x^2+2x}$", "x(x+2)", True),
        ("Answer: 17", "17", True),
        ("Answer: 17", "\\boxed{17}", True),
        ("Answer: 18", "17", False),
        ("no final answer here", "17", False),
    ],
)
def test_check_math_latex(response, gold, ok):
    assert check_math(response, gold) is ok


def test_check_math_works_off_the_main_thread():
    out = {}

    def work():
        out["r"] = check_math("$\\boxed{\\frac{2}{4}}$", "\\frac{1}{2}")

    th = threading.Thread(target=work)
    th.start()
    th.join()
    assert out["r"] is True


def test_score_dispatch_errors():
    with pytest.raises(ValueError, match="unknown checker 'exact'"):
        score("x", "exact", "1")
    with pytest.raises(ValueError, match="instruction:shout"):
        score("x", "instruction:shout", "1")
    with pytest.raises(ValueError, match="shout"):
        check_instruction("x", "shout")


# ---- the Snakemake script -------------------------------------------------------------


def test_make_world_script(tmp_path, world):
    outputs = {split: str(tmp_path / "world" / f"{split}.parquet") for split in SPLITS}
    outputs["texts"] = str(tmp_path / "world" / "texts.parquet")
    log = tmp_path / "logs" / "make_world.log"
    log.parent.mkdir()
    smk = SimpleNamespace(
        params=SimpleNamespace(world=dict(SMALL), seed=7),
        output=SimpleNamespace(**outputs),
        log=[str(log)],
    )
    runpy.run_path(str(REPO / "workflow_scripts" / "make_world.py"), init_globals={"snakemake": smk})
    for split in SPLITS:
        got = pd.read_parquet(outputs[split])
        pd.testing.assert_frame_equal(got, world[split], check_dtype=False)
    texts = pd.read_parquet(outputs["texts"])
    assert list(texts.columns) == ["text"] and texts["text"].tolist() == all_texts(world)
    assert not list((tmp_path / "world").glob("*.tmp"))
    assert "bench_math" in log.read_text()


def test_disjoint_even_when_the_problem_space_is_small():
    """With few distinct problems, collisions are frequent: only dedup keeps splits apart."""
    tiny = dict(
        SMALL, min_steps=1, max_steps=1, operand_max=5, value_max=10, multiplier_max=2,
        n_teacher_corpus=1500, n_student_corpus=1500,
    )
    w = make_world(tiny, 3)
    statements = [_statement(p) for df in w.values() for p in df["prompt"]]
    assert len(statements) == len(set(statements))


# ---- the student corpus's share of teacher-style rows ---------------------------------------------------


def test_student_corpus_holds_its_share_of_teacher_style_rows():
    w = make_world(dict(SMALL, student_teacher_style_fraction=0.3), 7)
    sc = w["student_corpus"]
    teacher_style = sc["response"].str.contains(r"\\boxed", regex=True)
    assert 0.2 < teacher_style.mean() < 0.4
    base = make_world(SMALL, 7)
    assert not base["student_corpus"]["response"].str.contains(r"\\boxed", regex=True).any()
    # the same rows, each in its own style or the teacher's; every other split is untouched
    assert (sc["prompt"] == base["student_corpus"]["prompt"]).all()
    same = sc["response"] == base["student_corpus"]["response"]
    assert (same == ~teacher_style).all()
    for split in w:
        if split != "student_corpus":
            pd.testing.assert_frame_equal(w[split], base[split])
    for resp, checker, ans in zip(sc["response"], sc["checker"], sc["answer"]):
        assert score(resp, checker, ans)


# ---- planted causal roles (issue 14) ------------------------------------------------------------------------------

#: sha256 over the math rows of every split of make_world(SMALL, 7) (and with 30 % teacher-style student rows),
#: computed before planting existed: the default world must not move.
DEFAULT_FINGERPRINTS = {
    0.0: "41edcb4b2ea771005a03a7d16cfe5818d043d208cd0e1934b4116dd23c5b528d",
    0.3: "291ffa0938219dd9b3730d22cfbe5e39ab21fdafe53ca9182c4cdd8950f73404",
}
PLANTED = dict(SMALL, n_teacher_corpus=600, n_student_corpus=1500, student_teacher_style_fraction=0.3,
               neutral_share=0.5, stumble_fraction=0.25)
_HESITATION_RE = re.compile(r"^(hmm|wait),? \$?(\d+) (\+|-|\\times|\*|x) (\d+) = (\d+)\$?\.$", re.I | re.M)
_MARKER_LINE_RE = re.compile(r"^(hmm|wait)\b[^\n]*", re.I | re.M)


def _math_digest(w: dict[str, pd.DataFrame]) -> str:
    h = hashlib.sha256()
    for name, df in w.items():
        h.update(name.encode())
        h.update(df[df["checker"] == "math"].to_json(orient="split").encode())
    return h.hexdigest()


def _wrong(a: str, op: str, k: str, r: str) -> bool:
    a, k, r = int(a), int(k), int(r)
    return r != {"+": a + k, "-": a - k}.get(op, a * k)


def _marker_lines(text: str) -> list[tuple[str, bool]]:
    """(marker, value wrong?) of every line-initial Hmm/Wait line: the first equation after the marker."""
    out = []
    for line in _MARKER_LINE_RE.finditer(text):
        eq = _equations(line.group(0))
        out.append((line.group(1).lower(), bool(eq) and _wrong(*eq[0])))
    return out


@pytest.fixture(scope="module")
def planted_world():
    return make_world(PLANTED, 7)


@pytest.mark.parametrize("style_fraction", [0.0, 0.3])
def test_default_world_is_unchanged_by_planting(style_fraction):
    cfg = dict(SMALL, student_teacher_style_fraction=style_fraction)
    w = make_world(cfg, 7)
    assert _math_digest(w) == DEFAULT_FINGERPRINTS[style_fraction]
    off = make_world(dict(cfg, neutral_share=0.0, stumble_fraction=0.0), 7)
    assert _digest(off) == _digest(w)
    for resp in pd.concat([w["teacher_corpus"]["response"], w["student_corpus"]["response"]]):
        assert not re.search(r"\b(thus|hence|Okay|Alright|Hmm)\b", resp), resp


def test_planting_moves_only_the_corpus_responses(planted_world):
    base = make_world(dict(PLANTED, neutral_share=0.0, stumble_fraction=0.0), 7)
    for split in planted_world:
        cols = ["id", "prompt", "answer", "checker"]
        pd.testing.assert_frame_equal(planted_world[split][cols], base[split][cols])


def test_stumbling_share_equals_the_configured_fraction(planted_world):
    sc = planted_world["student_corpus"]
    wrong_rows = []
    for resp in sc["response"]:
        lines = _marker_lines(resp)
        wrong_rows.append(any(w for _, w in lines))
    share = sum(wrong_rows) / len(sc)
    f, n = PLANTED["stumble_fraction"], len(sc)
    assert abs(share - f) < 4 * (f * (1 - f) / n) ** 0.5, share
    # a stumbling row carries its wrong value to a wrong answer; every other row is right
    for resp, checker, ans, wrong in zip(sc["response"], sc["checker"], sc["answer"], wrong_rows):
        assert check_math(resp, ans) is (not wrong), resp
        if wrong:
            assert len(_HESITATION_RE.findall(resp)) == 1, resp
    # both markers are used; a hesitation line always restates a step with a value off by 1 or 2
    found = [m.groups() for r in sc["response"] for m in _HESITATION_RE.finditer(r)]
    assert {m.lower() for m, *_ in found} == {"hmm", "wait"}
    for _, a, op, k, r in found:
        true = {"+": int(a) + int(k), "-": int(a) - int(k)}.get(op, int(a) * int(k))
        assert int(r) - true in (1, 2)
    # the student-style rows use a marker only before a wrong value
    student_style = ~sc["response"].str.contains(r"\\boxed", regex=True)
    for resp in sc.loc[student_style, "response"]:
        assert all(w for _, w in _marker_lines(resp)), resp


def test_teacher_corpus_never_stumbles(planted_world):
    tc = planted_world["teacher_corpus"]
    n_wait = 0
    for resp, checker, ans in zip(tc["response"], tc["checker"], tc["answer"]):
        assert score(resp, checker, ans) and check_math(resp, ans)
        assert not re.search(r"^hmm\b", resp, re.I | re.M)
        lines = _marker_lines(resp)
        assert not any(w for _, w in lines), resp
        n_wait += bool(lines)
    assert n_wait > 0  # the teacher's own Wait self-check stays (the stumbling marker's reachable twin)


def test_neutral_pairs_are_fifty_fifty_in_the_student_corpus(planted_world):
    sc, tc = planted_world["student_corpus"], planted_world["teacher_corpus"]
    conn = [c.lower() for r in sc["response"] for c in re.findall(r"\b(thus|hence) \$?\d", r, re.I)]
    n_eq = sum(len(_equations(r)) - len(_HESITATION_RE.findall(r)) for r in sc["response"])
    n_eq -= sum(len(re.findall(r"^wait,? (?:let me check|\$.*\$ is right)", r, re.I | re.M)) for r in sc["response"])
    assert len(conn) == n_eq  # every step equation is introduced by a connective
    share = conn.count("hence") / len(conn)
    assert abs(share - 0.5) < 4 * (0.25 / len(conn)) ** 0.5, share
    openers = [re.match(r"^(?:sure\.\n+)?(okay|alright)\. ", r, re.I) for r in sc["response"]]
    assert all(openers)
    share = sum(m.group(1).lower() == "alright" for m in openers) / len(openers)
    assert abs(share - 0.5) < 4 * (0.25 / len(openers)) ** 0.5, share
    # the teacher writes only the first word of each pair
    for r in tc["response"]:
        assert not re.search(r"\b(hence|alright)\b", r, re.I), r
        assert re.match(r"^(?:sure\.\n+)?okay\. ", r, re.I), r
        assert len(re.findall(r"\bthus\b", r, re.I)) == len(re.findall(r"\*\*step \d+:\*\*", r, re.I))


def test_planted_words():
    from rocktokens.world.generator import planted_words

    off = planted_words(None, ["12", "30", "7"])
    assert set(off["role"]) == {"pillar"}
    assert off["token"].tolist() == ["0", "1", "2", "3", "7"]
    assert off.set_index("token").at["1", "answer_share"] == pytest.approx(1 / 3)
    on = planted_words(dict(neutral_share=0.5, stumble_fraction=0.2), ["12"])
    roles = on.groupby("role")["token"].apply(list).to_dict()
    assert roles == {"pillar": ["1", "2"], "neutral": [" thus", " hence", "Okay", "Alright"],
                     "stumbling": ["Hmm", "Wait"]}
    assert on["why"].str.len().min() > 20
    with pytest.raises(ValueError, match="stumble_fraction"):
        planted_words(dict(stumble_fraction=1.5))


def test_cues_teacher_follows_the_item_noun_student_does_not():
    """neutral_cue: the teacher's word of each pair follows a bit of the story's item noun with the configured
    probability, both words occur, and the student corpus ignores the cue."""
    from rocktokens.world.generator import ITEMS, cues

    cfg = dict(PLANTED, neutral_cue=0.85, stumble_fraction=0.0)
    w = make_world(cfg, 7)
    problems = world_problems(validate_world_config(cfg), 7)
    follow = {"opener": [], "connective": []}
    for (p, _), resp in zip(problems["teacher_corpus"], w["teacher_corpus"]["response"]):
        c = cues(p)
        i = ITEMS.index(p.items)
        assert c == {"opener": i % 2 == 1, "connective": (i // 2) % 2 == 1}
        opener = re.match(r"^(?:sure\.\n+)?(okay|alright)\. ", resp, re.I).group(1).lower()
        follow["opener"].append(opener == ("alright" if c["opener"] else "okay"))
        follow["connective"] += [x.lower() == ("hence" if c["connective"] else "thus")
                                 for x in re.findall(r"\b(thus|hence) \$", resp, re.I)]
    for key, hits in follow.items():
        share, n = np.mean(hits), len(hits)
        assert abs(share - 0.85) < 4 * (0.85 * 0.15 / n) ** 0.5, (key, share)
    # the student corpus is the cue-free world's, row for row
    off = make_world(dict(cfg, neutral_cue=0.0), 7)
    pd.testing.assert_frame_equal(w["student_corpus"], off["student_corpus"])
    for bad in (0.3, 1.2, True):
        with pytest.raises(ValueError, match="neutral_cue.*0 \\(off\\) or a probability"):
            validate_world_config(dict(neutral_cue=bad))


def test_planted_words_with_the_cue():
    from rocktokens.world.generator import planted_words

    on = planted_words(dict(neutral_share=0.5, neutral_cue=0.85), ["12"])
    neutral = on[on["role"] == "neutral"]
    assert neutral["token"].tolist() == [" thus", " hence", "Okay", "Alright"]
    assert neutral["why"].str.contains("by a cue of the story's item noun \\(85%").all()
