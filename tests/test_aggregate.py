"""rocktokens.tokens.aggregate: real DuckDB on small parquet token tables, every result against plain Python loops."""
from __future__ import annotations

import math
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pandas as pd
import pytest

from rocktokens.tokens.aggregate import LOSSES, Aggregator, load_sql, render_sql

FLOATS = ["logp_student", "logp_teacher", "log_ratio", "rkl", "fkl", "entropy_student", "entropy_teacher"]


def f32(x: float) -> float:
    return float(np.float32(x))


def make_rows(seed: int, n_seq: int = 24, n_types: int = 17) -> list[dict]:
    """Token rows of a few benchmarks / problems / samples; float values already rounded to float32."""
    rng = random.Random(seed)
    rows = []
    for s in range(n_seq):
        bench = "math" if s % 3 else "ifeval"
        problem, sample = f"q{s // 2}", s % 2
        for pos in range(rng.randint(5, 60)):
            tid = min(int(rng.paretovariate(1.2)) - 1, n_types - 1)   # Zipf-like, some types rare
            rkl = 0.0 if tid == 4 else rng.expovariate(1.0) * (1 + tid % 3)   # type 4: exactly zero loss
            lr = rng.gauss(0.1, 1.0)
            rows.append({
                "traj_ckpt": "opd-7", "benchmark": bench, "problem_id": problem, "sample": sample,
                "position": pos, "token_id": tid, "qwen3_id": 1000 + 7 * tid, "token": f"<{tid}>",
                "logp_student": f32(-rng.random()), "logp_teacher": f32(-rng.random() - lr),
                "log_ratio": f32(lr), "rkl": f32(rkl), "fkl": f32(rkl * 0.9 + 0.01),
                "entropy_student": f32(rng.random() * 2), "entropy_teacher": f32(rng.random()),
            })
    return rows


def to_table(rows: list[dict], with_scorer: str | None = None) -> pa.Table:
    cols = {
        "traj_ckpt": pa.array([r["traj_ckpt"] for r in rows]),
        "benchmark": pa.array([r["benchmark"] for r in rows]),
        "problem_id": pa.array([r["problem_id"] for r in rows]),
        "sample": pa.array([r["sample"] for r in rows], pa.int32()),
        "position": pa.array([r["position"] for r in rows], pa.int32()),
        "token_id": pa.array([r["token_id"] for r in rows], pa.int32()),
        "qwen3_id": pa.array([r["qwen3_id"] for r in rows], pa.int32()),
        "token": pa.array([r["token"] for r in rows]),
        **{c: pa.array([r[c] for r in rows], pa.float32()) for c in FLOATS},
    }
    if with_scorer is not None:
        cols["scorer"] = pa.array([with_scorer] * len(rows))
    return pa.table(cols)


def write_hive(root: Path, tables: dict[str, list[dict]], parts: int = 2) -> Path:
    for scorer, rows in tables.items():
        d = root / f"scorer={scorer}"
        d.mkdir(parents=True)
        step = math.ceil(len(rows) / parts)
        for k in range(parts):
            pq.write_table(to_table(rows[k * step:(k + 1) * step]), d / f"part-{k}.parquet", compression="zstd")
    return root


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    rows = {"final": make_rows(1), "early": make_rows(2)}
    root = write_hive(tmp_path_factory.mktemp("tokens") / "tokens", rows)
    return root, rows


@pytest.fixture(scope="module")
def agg(table):
    with Aggregator(table[0], threads=2) as a:
        yield a


# ----------------------------------------------------------------------------- plain-Python references
def ref_token_stats(rows, loss, keep=lambda r: True):
    acc = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if keep(r):
            for c in ["rkl", "fkl", "log_ratio", "entropy_student", "entropy_teacher"]:
                acc[r["token_id"]][c].append(r[c])
            acc[r["token_id"]]["meta"] = (r["qwen3_id"], r["token"])
    out = {}
    for tid, a in acc.items():
        vals = a[loss]
        out[tid] = {"freq": len(vals), "R": math.fsum(vals), "mean_loss": math.fsum(vals) / len(vals),
                    "qwen3_id": a["meta"][0], "token": a["meta"][1],
                    **{f"mean_{c}": math.fsum(a[c]) / len(vals)
                       for c in ["rkl", "fkl", "log_ratio", "entropy_student", "entropy_teacher"]}}
    order = sorted(out, key=lambda t: (-out[t]["R"], t))
    return out, order


def check_stats(df, ref, order, extras=True):
    assert df["token_id"].tolist() == order
    assert df["rank"].tolist() == list(range(1, len(order) + 1))
    for row in df.itertuples(index=False):
        e = ref[row.token_id]
        assert row.freq == e["freq"]
        assert row.R == pytest.approx(e["R"], rel=1e-12, abs=1e-12)
        assert row.mean_loss == pytest.approx(e["mean_loss"], rel=1e-12, abs=1e-12)
        assert row.R == pytest.approx(row.mean_loss * row.freq, rel=1e-12, abs=1e-12)   # Eq. 4
        if extras:
            assert (row.qwen3_id, row.token) == (e["qwen3_id"], e["token"])
            for c in ["rkl", "fkl", "log_ratio", "entropy_student", "entropy_teacher"]:
                assert getattr(row, f"mean_{c}") == pytest.approx(e[f"mean_{c}"], rel=1e-9, abs=1e-12)


# ----------------------------------------------------------------------------- token stats, corpus, coverage
@pytest.mark.parametrize("loss", ["rkl", "log_ratio"])
def test_token_stats_match_python(agg, table, loss):
    for scorer in ("final", "early"):
        ref, order = ref_token_stats(table[1][scorer], loss)
        check_stats(agg.token_stats(scorer, loss), ref, order)


def test_core_columns_equal_full(agg):
    full = agg.token_stats("final")
    core = agg.token_stats("final", extras=False)
    assert list(core.columns) == ["rank", "token_id", "freq", "mean_loss", "R"]
    assert core.equals(full[core.columns])


def test_corpus_loss_is_sum_of_tokens_and_of_R(agg, table):
    for loss in LOSSES:
        rows = table[1]["final"]
        tot = agg.corpus_totals("final", loss)
        assert tot["n_tokens"] == len(rows)
        assert tot["n_types"] == len({r["token_id"] for r in rows})
        assert tot["corpus_loss"] == pytest.approx(math.fsum(r[loss] for r in rows), rel=1e-12)
        assert agg.corpus_loss("final", loss) == pytest.approx(agg.token_stats("final", loss).R.sum(), rel=1e-12)


def test_coverage_monotone_to_one(agg, table):
    cov = agg.coverage("final", "rkl")
    ref, order = ref_token_stats(table[1]["final"], "rkl")
    assert ref[4]["R"] == 0.0                            # a zero-loss type: a flat step at the tail
    assert cov["K"].tolist() == list(range(1, len(order) + 1))
    assert cov["token_id"].tolist() == order
    c = cov["coverage"].to_numpy()
    assert np.all(np.diff(c) >= 0)
    assert c[-1] == 1.0
    total = math.fsum(ref[t]["R"] for t in order)
    running = 0.0
    for k, t in enumerate(order):
        running += ref[t]["R"]
        assert c[k] == pytest.approx(running / total, abs=1e-12)
    assert c[-2] == 1.0                                  # the last type has R = 0: already complete


def test_coverage_exactly_monotone_over_many_magnitudes(tmp_path):
    """A DOUBLE window sum (a segment tree, not left to right) ends at 1.0000000000000002 on these values and
    can step down by an ulp; the exact DECIMAL sums cannot."""
    rng = np.random.default_rng(0)
    n = 4000
    base = {"traj_ckpt": "c", "benchmark": "b", "problem_id": "p", "sample": 0, "qwen3_id": 1, "token": "x",
            **{c: 0.5 for c in FLOATS}}
    vals = (rng.random(n) * 10.0 ** -rng.integers(0, 9, n)).astype(np.float32)
    rows = [dict(base, position=i, token_id=i, rkl=float(v)) for i, v in enumerate(vals)]
    write_hive(tmp_path / "t", {"s": rows}, parts=1)
    with Aggregator(tmp_path / "t") as a:
        c = a.coverage("s")["coverage"].to_numpy()
    assert np.all(np.diff(c) >= 0) and c[-1] == 1.0
    ref = np.cumsum(np.sort(vals.astype(np.float64))[::-1]) / vals.astype(np.float64).sum()
    np.testing.assert_allclose(c, ref, rtol=0, atol=1e-12)


def test_coverage_log_ratio_ends_at_one(agg):
    c = agg.coverage("final", "log_ratio")["coverage"].to_numpy()
    assert c[-1] == 1.0                                  # R may be negative here: not necessarily monotone


def test_ties_broken_by_token_id(tmp_path):
    base = {"traj_ckpt": "c", "benchmark": "b", "problem_id": "p", "sample": 0, "qwen3_id": 1, "token": "x",
            **{c: 0.25 for c in FLOATS}}
    rows = [dict(base, position=i, token_id=t, rkl=v) for i, (t, v) in
            enumerate([(9, 0.5), (3, 0.25), (3, 0.25), (7, 1.0), (5, 2.0)])]   # R: 9→.5, 3→.5, 7→1, 5→2
    write_hive(tmp_path / "t", {"s": rows}, parts=1)
    with Aggregator(tmp_path / "t") as a:
        assert a.token_stats("s")["token_id"].tolist() == [5, 7, 3, 9]


# ----------------------------------------------------------------------------- subsets and filters
def test_problem_subset(agg, table):
    rows = table[1]["final"]
    subset = ["q1", "q4", "q7", "q4"]                    # duplicates count once
    ref, order = ref_token_stats(rows, "rkl", keep=lambda r: r["problem_id"] in set(subset))
    check_stats(agg.token_stats("final", "rkl", problems=subset), ref, order)
    # the subset does not leak into later whole-table calls (nor the cache into the subset)
    ref_all, order_all = ref_token_stats(rows, "rkl")
    check_stats(agg.token_stats("final", "rkl"), ref_all, order_all)
    cov = agg.coverage("final", "rkl", problems=("q1", "q4", "q7"))
    assert cov["token_id"].tolist() == order and cov["coverage"].iloc[-1] == 1.0


def test_benchmark_filter(agg, table):
    ref, order = ref_token_stats(table[1]["final"], "rkl", keep=lambda r: r["benchmark"] == "ifeval")
    check_stats(agg.token_stats("final", "rkl", benchmark="ifeval"), ref, order)
    with pytest.raises(ValueError, match="unknown benchmark 'gsm8k'.*ifeval"):
        agg.token_stats("final", benchmark="gsm8k")


def test_subset_errors(agg):
    with pytest.raises(ValueError, match="not in the token table.*nope"):
        agg.token_stats("final", problems=["q1", "nope"])
    with pytest.raises(ValueError, match="problems is empty"):
        agg.token_stats("final", problems=[])


# ----------------------------------------------------------------------------- rock density
def test_seq_density(agg, table):
    rock = {0, 2, 5, 16, 999}                             # 999 never occurs
    got = agg.seq_density("final", sorted(rock) + [2])
    ref = defaultdict(lambda: [0, 0])
    for r in table[1]["final"]:
        k = (r["benchmark"], r["problem_id"], r["sample"])
        ref[k][0] += 1
        ref[k][1] += r["token_id"] in rock
    assert len(got) == len(ref)
    for row in got.itertuples(index=False):
        n, n_rock = ref[(row.benchmark, row.problem_id, row.sample)]
        assert (row.n_tokens, row.n_rock) == (n, n_rock)
        assert row.density == pytest.approx(n_rock / n, rel=1e-15)
        assert row.n_rock_ctx == 0 and row.density_ctx == 0  # no consistent occurrences given
    # only the listed (context-consistent) occurrences of rock tokens count in n_rock_ctx
    rows = table[1]["final"]
    chosen = [r for i, r in enumerate(rows) if i % 3 == 0]
    cons = pd.DataFrame([{k: r[k] for k in ("benchmark", "problem_id", "sample", "position")} for r in chosen])
    got = agg.seq_density("final", sorted(rock), consistent=cons)
    ref_ctx = defaultdict(int)
    for r in chosen:
        ref_ctx[(r["benchmark"], r["problem_id"], r["sample"])] += r["token_id"] in rock
    assert sum(ref_ctx.values()) > 0
    for row in got.itertuples(index=False):
        k = (row.benchmark, row.problem_id, row.sample)
        assert row.n_rock_ctx == ref_ctx[k]
        assert row.density_ctx == pytest.approx(ref_ctx[k] / ref[k][0], rel=1e-15)
    with pytest.raises(ValueError, match="lack column"):
        agg.seq_density("final", [0], consistent=cons.drop(columns="position"))
    only = agg.seq_density("final", [0], benchmark="math")
    assert set(only.benchmark) == {"math"}
    with pytest.raises(ValueError, match="rock_ids is empty"):
        agg.seq_density("final", [])


# ----------------------------------------------------------------------------- inputs, settings, errors
def test_glob_and_single_file_inputs(tmp_path, table):
    rows = table[1]["final"]
    f = tmp_path / "flat.parquet"                         # no hive directories: scorer is a column
    pq.write_table(to_table(rows, with_scorer="final"), f)
    ref, order = ref_token_stats(rows, "rkl")
    with Aggregator(f) as a:
        assert a.scorers() == ["final"]
        check_stats(a.token_stats("final"), ref, order)
    with Aggregator(str(table[0] / "scorer=final" / "*.parquet")) as a:
        check_stats(a.token_stats("final"), ref, order)


def test_scorer_values_are_bound_not_interpolated(tmp_path):
    rows = make_rows(3, n_seq=4)
    write_hive(tmp_path / "t", {"it's": rows, "1": rows}, parts=1)
    with Aggregator(tmp_path / "t") as a:
        assert a.scorers() == ["1", "it's"]              # a numeric hive value stays a name
        assert a.token_stats("it's").freq.sum() == len(rows)
        assert a.token_stats("1").freq.sum() == len(rows)
        with pytest.raises(ValueError, match="unknown scorer"):
            a.token_stats("x' OR '1'='1")


def test_settings_applied(table, tmp_path):
    with Aggregator(table[0], threads=1, memory_limit="64MB", temp_directory=tmp_path / "spill") as a:
        threads, mem, tmp = a.con.execute("SELECT current_setting('threads'), current_setting('memory_limit'), "
                                          "current_setting('temp_directory')").fetchone()
        assert threads == 1 and mem.startswith("61") and tmp == str(tmp_path / "spill")   # 64 MB = 61.0 MiB
        assert a.token_stats("final").freq.sum() == len(table[1]["final"])
        assert a.n_rows == len(table[1]["final"]) + len(table[1]["early"])
    with pytest.raises(ValueError, match="threads"):
        Aggregator(table[0], threads=0)


def test_missing_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        Aggregator(tmp_path / "nothing_here")
    with pytest.raises(FileNotFoundError, match=r"\*\*/\*\.parquet"):
        Aggregator(tmp_path)                             # a directory without parquet files
    with pytest.raises(FileNotFoundError, match="part-\\*"):
        Aggregator(str(tmp_path / "scorer=a" / "part-*.parquet"))


def test_empty_table(tmp_path):
    write_hive(tmp_path / "t", {"final": []}, parts=1)
    with pytest.raises(ValueError, match="empty"):
        Aggregator(tmp_path / "t")


def test_missing_column(tmp_path):
    f = tmp_path / "x.parquet"
    pq.write_table(to_table(make_rows(4, n_seq=2), with_scorer="s").drop(["entropy_teacher"]), f)
    with pytest.raises(ValueError, match="entropy_teacher"):
        Aggregator(f)


def test_unknown_scorer_and_loss(agg):
    with pytest.raises(ValueError, match=r"unknown scorer 'late'.*\['early', 'final'\]"):
        agg.token_stats("late")
    with pytest.raises(ValueError, match=r"unknown scorer"):
        agg.seq_density("late", [1])
    for bad in ["entropy_student", 'rkl"; DROP TABLE x; --', "RKL"]:
        with pytest.raises(ValueError, match="unknown loss column"):
            agg.token_stats("final", bad)
        with pytest.raises(ValueError, match="unknown loss column"):
            agg.corpus_loss("final", bad)


def test_render_sql_allow_list():
    sql = load_sql("token_stats")
    assert "Eq. 3–4" in sql
    assert '"rkl"' in render_sql(sql, loss="rkl", source="tokens")
    with pytest.raises(ValueError, match="not allowed"):
        render_sql(sql, loss="rkl) FROM x --", source="tokens")
    with pytest.raises(ValueError, match="no value"):
        render_sql(sql, loss="rkl")
    with pytest.raises(ValueError, match="bad SQL file name"):
        load_sql("../x")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None])
def test_bad_loss_is_refused(tmp_path, bad):
    rows = make_rows(5, n_seq=3)
    rows[2]["rkl"] = bad
    write_hive(tmp_path / "t", {"s": rows}, parts=1)
    with Aggregator(tmp_path / "t") as a:
        with pytest.raises(ValueError, match="NULL/NaN/inf"):
            a.token_stats("s", "rkl")
        with pytest.raises(ValueError, match="NULL/NaN/inf"):
            a.corpus_loss("s", "rkl")
        assert len(a.token_stats("s", "fkl"))           # other columns are fine


# ----------------------------------------------------------------------------- output
def test_write_parquet(agg, tmp_path):
    stats = agg.token_stats("final")
    agg.write_parquet(stats, tmp_path / "a" / "stats.parquet")
    back = pq.read_table(tmp_path / "a" / "stats.parquet").to_pandas()
    assert back["token_id"].tolist() == stats["token_id"].tolist()

    agg.write_parquet("SELECT token_id, position FROM tokens WHERE scorer = $s AND problem_id = $p",
                      tmp_path / "q.parquet", {"s": "final", "p": "q3"})
    q = pq.read_table(tmp_path / "q.parquet")
    assert q.num_rows > 0 and q.column_names == ["token_id", "position"]

    agg.write_parquet(pa.table({"x": [1, 2]}), tmp_path / "t.parquet")
    assert pq.read_table(tmp_path / "t.parquet").num_rows == 2

    with pytest.raises(Exception):
        agg.write_parquet("SELECT no_such_column FROM tokens", tmp_path / "bad.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "q.parquet", "t.parquet"]   # nothing half-written
    with pytest.raises(TypeError):
        agg.write_parquet(42, tmp_path / "x.parquet")


def test_coverage_of_zero_corpus_loss_is_refused(tmp_path):
    rows = make_rows(6, n_seq=2)
    for r in rows:
        r["rkl"] = 0.0
    write_hive(tmp_path / "t", {"s": rows}, parts=1)
    with Aggregator(tmp_path / "t") as a:
        assert a.corpus_loss("s") == 0.0
        with pytest.raises(ValueError, match="sums to 0"):
            a.coverage("s")
