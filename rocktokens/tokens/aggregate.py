"""Token-table aggregation with DuckDB: Rock Scores, corpus loss, coverage and rock density (paper §2.2–2.4, App. E).

The token table has one row per response token (``benchmark, problem_id, sample`` is a sequence) and one
partition per scorer (``.../scorer=<name>/part-*.parquet``, or a ``scorer`` column in plain files). The SQL
lives in ``rocktokens/tokens/sql/*.sql``; this module only opens the input, checks it, binds values and runs it:

* values (scorer, benchmark, problem ids, rock token ids) are always bound parameters or rows of a temp table
  filled from bound parameters, never text in the SQL;
* the only text substituted into the SQL is an identifier (``{{loss}}``, ``{{source}}``) taken from a fixed
  allow-list and quoted.

    with Aggregator("results/x/tokens", threads=2, memory_limit="1GB") as agg:
        stats = agg.token_stats("final")            # rank, token_id, freq, mean_loss, R, ...
        cov = agg.coverage("final")                 # K, coverage
        dens = agg.seq_density("final", stats.token_id[:100])

One ``Aggregator`` owns one DuckDB connection: use it from one thread at a time.
"""
from __future__ import annotations

import glob as _glob
import re
from importlib import resources
from pathlib import Path
from typing import Iterable

import duckdb
import numpy as np
import pandas as pd

from rocktokens.core.io import atomic_file
from rocktokens.core.io import write_parquet

#: Columns a rock score may be computed from (the per-token loss ℓ_t). Default ``rkl`` (Eq. 15); ``log_ratio``
#: is Eq. 2's sampled-token estimator; ``fkl`` the forward KL.
LOSSES = ("rkl", "log_ratio", "fkl")
#: Relations the token-type query may read: the whole table, or the rows of the current problem subset.
SOURCES = ("tokens", "tokens_subset")
#: The token table's columns (``scorer`` may come from the hive path).
REQUIRED_COLUMNS = (
    "traj_ckpt", "scorer", "benchmark", "problem_id", "sample", "position", "token_id", "qwen3_id", "token",
    "logp_student", "logp_teacher", "log_ratio", "rkl", "fkl", "entropy_student", "entropy_teacher",
)
#: What ``token_stats(..., extras=False)`` returns.
CORE_COLUMNS = ["rank", "token_id", "freq", "mean_loss", "R"]
_ALLOWED = {"loss": LOSSES, "source": SOURCES}
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_GLOB_CHARS = re.compile(r"[*?\[]")


def load_sql(name: str) -> str:
    """The text of ``rocktokens/tokens/sql/<name>.sql`` (package data)."""
    if not re.fullmatch(r"\w+", name):
        raise ValueError(f"bad SQL file name {name!r}")
    try:
        return resources.files("rocktokens.tokens").joinpath("sql", f"{name}.sql").read_text(encoding="utf-8")
    except (NotADirectoryError, TypeError):  # editable installs can expose the package as a namespace
        return (Path(__file__).resolve().parent / "sql" / f"{name}.sql").read_text(encoding="utf-8")


def render_sql(text: str, **identifiers: str) -> str:
    """Substitute ``{{key}}`` placeholders with allow-listed, double-quoted identifiers.

    Raises ``ValueError`` for an identifier outside its allow-list or a placeholder without a value: nothing but
    the allow-listed names can reach the SQL text this way.
    """
    for key, value in identifiers.items():
        allowed = _ALLOWED.get(key)
        if allowed is None:
            raise ValueError(f"no allow-list for SQL identifier {key!r}")
        if value not in allowed:
            raise ValueError(f"{key} {value!r} is not allowed; choose one of {list(allowed)}")

    def sub(m: re.Match) -> str:
        key = m.group(1)
        if key not in identifiers:
            raise ValueError(f"SQL placeholder {{{{{key}}}}} has no value")
        return '"' + identifiers[key] + '"'

    return _PLACEHOLDER.sub(sub, text)


def resolve_inputs(parquet_glob_or_dir) -> tuple[list[str], bool]:
    """The parquet files of a directory (recursively), a glob or a single file, and whether they are
    hive-partitioned (``key=value`` directories). ``FileNotFoundError`` naming the glob when none match."""
    src = str(parquet_glob_or_dir)
    path = Path(src)
    if path.is_dir():
        pattern = str(path / "**" / "*.parquet")
    else:
        pattern = src
    if _GLOB_CHARS.search(pattern):
        files = sorted(f for f in _glob.glob(pattern, recursive=True) if Path(f).is_file())
    else:
        files = [src] if path.is_file() else []
    if not files:
        raise FileNotFoundError(f"token table: no parquet files match {pattern!r}")
    hive = any(re.search(r"[^/=]+=[^/]*$", str(Path(f).parent.name)) for f in files)
    return files, hive


class Aggregator:
    """One DuckDB connection over a token table, with the rock-token aggregations as methods.

    ``threads``, ``memory_limit`` (e.g. ``"2GB"``) and ``temp_directory`` (where DuckDB spills past the
    limit) are DuckDB settings; ``None`` keeps DuckDB's default (all cores, 80 % of RAM, ``.tmp``).
    """

    def __init__(self, parquet_glob_or_dir, threads: int | None = None, memory_limit: str | None = None,
                 temp_directory=None):
        self.files, self.hive = resolve_inputs(parquet_glob_or_dir)
        self.source = str(parquet_glob_or_dir)
        config: dict[str, object] = {"preserve_insertion_order": False}
        if threads is not None:
            if int(threads) < 1:
                raise ValueError(f"threads must be >= 1, got {threads!r}")
            config["threads"] = int(threads)
        if memory_limit is not None:
            config["memory_limit"] = str(memory_limit)
        if temp_directory is not None:
            Path(temp_directory).mkdir(parents=True, exist_ok=True)
            config["temp_directory"] = str(temp_directory)
        try:
            self.con = duckdb.connect(":memory:", config=config)
        except duckdb.Error as e:
            raise ValueError(f"bad DuckDB settings {config}: {e}") from e
        try:
            self.con.execute("SET enable_progress_bar = false")
            self._open()
        except BaseException:
            self.con.close()
            raise
        self._cache: dict[tuple, pd.DataFrame] = {}
        self._scorers: list[str] | None = None
        self._benchmarks: dict[str, list[str]] = {}
        self._problems: dict[tuple, set[str]] = {}

    # ------------------------------------------------------------------ setup
    @classmethod
    def from_config(cls, parquet_glob_or_dir, rocks_cfg) -> "Aggregator":
        """An aggregator with the DuckDB settings of the config's ``rocks.duckdb`` section."""
        db = rocks_cfg.get("duckdb", {})
        return cls(parquet_glob_or_dir, threads=db.get("threads"), memory_limit=db.get("memory_limit"),
                   temp_directory=db.get("temp_directory"))

    def _open(self) -> None:
        # The relation API quotes the file names itself (a view cannot hold bound parameters).
        self.con.read_parquet(self.files, hive_partitioning=self.hive).create_view("tokens_raw")
        types = {r[0]: r[1] for r in self.con.execute("DESCRIBE tokens_raw").fetchall()}
        if types.get("scorer", "VARCHAR") == "VARCHAR":
            self.con.execute("CREATE TEMP VIEW tokens AS SELECT * FROM tokens_raw")
        else:  # a hive value such as scorer=1 is read as a number: the scorer stays a name
            self.con.execute("CREATE TEMP VIEW tokens AS "
                             "SELECT * REPLACE (CAST(scorer AS VARCHAR) AS scorer) FROM tokens_raw")
        cols = set(types)
        missing = [c for c in REQUIRED_COLUMNS if c not in cols]
        if missing:
            raise ValueError(f"token table {self.source!r} lacks column(s) {missing}")
        (n,) = self.con.execute("SELECT count(*) FROM tokens").fetchone()
        if n == 0:
            raise ValueError(f"token table {self.source!r} is empty ({len(self.files)} file(s), 0 rows)")
        self.n_rows = int(n)
        self.con.execute("CREATE TEMP TABLE problem_subset (problem_id VARCHAR)")
        self.con.execute("CREATE TEMP VIEW tokens_subset AS "
                         "SELECT * FROM tokens WHERE problem_id IN (SELECT problem_id FROM problem_subset)")
        self.con.execute("CREATE TEMP TABLE rock_set (token_id INTEGER)")

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Aggregator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ checks
    def scorers(self) -> list[str]:
        if self._scorers is None:
            rows = self.con.execute("SELECT DISTINCT scorer FROM tokens ORDER BY scorer").fetchall()
            self._scorers = [r[0] for r in rows]
        return self._scorers

    def benchmarks(self, scorer: str) -> list[str]:
        self._check_scorer(scorer)
        if scorer not in self._benchmarks:
            rows = self.con.execute("SELECT DISTINCT benchmark FROM tokens WHERE scorer = $scorer ORDER BY 1",
                                    {"scorer": scorer}).fetchall()
            self._benchmarks[scorer] = [r[0] for r in rows]
        return self._benchmarks[scorer]

    def _check_scorer(self, scorer: str) -> None:
        if scorer not in self.scorers():
            raise ValueError(f"unknown scorer {scorer!r} in {self.source!r}; available: {self.scorers()}")

    def _check(self, scorer: str, loss: str | None = None, benchmark: str | None = None) -> None:
        if loss is not None and loss not in LOSSES:
            raise ValueError(f"unknown loss column {loss!r}; choose one of {list(LOSSES)}")
        self._check_scorer(scorer)
        if benchmark is not None and benchmark not in self.benchmarks(scorer):
            raise ValueError(f"unknown benchmark {benchmark!r} for scorer {scorer!r}; "
                             f"available: {self.benchmarks(scorer)}")

    def problems(self, scorer: str, benchmark: str | None = None) -> list[str]:
        """The problem ids ``scorer`` has token rows for, sorted."""
        self._check(scorer, None, benchmark)
        return sorted(self._known_problems(scorer, benchmark))

    def _known_problems(self, scorer: str, benchmark: str | None) -> set[str]:
        key = (scorer, benchmark)
        if key not in self._problems:
            rows = self.con.execute(
                "SELECT DISTINCT problem_id FROM tokens WHERE scorer = $scorer "
                "AND ($benchmark IS NULL OR benchmark = $benchmark)",
                {"scorer": scorer, "benchmark": benchmark}).fetchall()
            self._problems[key] = {r[0] for r in rows}
        return self._problems[key]

    def _run(self, name: str, params: dict, **identifiers) -> pd.DataFrame:
        return self.con.execute(render_sql(load_sql(name), **identifiers), params).df()

    # ------------------------------------------------------------------ aggregations
    def token_stats(self, scorer: str, loss: str = "rkl", problems: Iterable | None = None, *,
                    benchmark: str | None = None, extras: bool = True) -> pd.DataFrame:
        """Per token type, ranked by R descending (ties by token_id): rank, token_id, freq = Freq(v),
        mean_loss = ℓ̄_v, R = ℓ̄_v·Freq(v) (Eq. 3–4); with ``extras`` also qwen3_id, token, mean entropies
        and mean rkl / fkl / log_ratio. ``extras=False`` reads only token_id and the loss column.

        ``problems``: restrict to these problem ids (a set: duplicates count once; every id must exist), as
        for the Appendix E stability resamples. ``benchmark``: restrict to one benchmark.
        """
        self._check(scorer, loss, benchmark)
        if problems is None:
            full = (scorer, loss, benchmark, True)
            key = (scorer, loss, benchmark, extras)
            if full in self._cache:      # the full table holds the core columns too
                df = self._cache[full]
                return (df if extras else df[CORE_COLUMNS]).copy()
            if key not in self._cache:
                self._cache[key] = self._token_stats(scorer, loss, benchmark, "tokens", extras)
            return self._cache[key].copy()
        subset = sorted({str(p) for p in problems})
        if not subset:
            raise ValueError("problems is empty: give at least one problem id (or None for all)")
        unknown = sorted(set(subset) - self._known_problems(scorer, benchmark))
        if unknown:
            raise ValueError(f"{len(unknown)} problem id(s) not in the token table for scorer {scorer!r}"
                             f"{'' if benchmark is None else f' / benchmark {benchmark!r}'}: {unknown[:10]}")
        self.con.execute("DELETE FROM problem_subset")
        self.con.execute("INSERT INTO problem_subset SELECT unnest($ids::VARCHAR[])", {"ids": subset})
        return self._token_stats(scorer, loss, benchmark, "tokens_subset", extras)

    def _token_stats(self, scorer, loss, benchmark, source, extras) -> pd.DataFrame:
        sql = render_sql(load_sql("token_stats"), loss=loss, source=source)
        if not extras:  # DuckDB drops the unused aggregates: the scan reads token_id and the loss only
            sql = f"SELECT {', '.join(CORE_COLUMNS)}, n_loss FROM ({sql}) ORDER BY rank"
        df = self.con.execute(sql, {"scorer": scorer, "benchmark": benchmark}).df()
        bad = df[(df.n_loss < df.freq) | ~np.isfinite(df.R)]
        if len(bad):
            raise ValueError(f"NULL/NaN/inf value(s) in column {loss!r} for scorer {scorer!r}, in "
                             f"{len(bad)} token type(s), e.g. token_id(s) {bad.token_id.head(5).tolist()}")
        return df.drop(columns="n_loss")

    def corpus_totals(self, scorer: str, loss: str = "rkl", *, benchmark: str | None = None) -> dict:
        """``corpus_loss`` = Σ_t ℓ_t (= Σ_v R(v), Eq. 3), ``n_tokens``, ``n_types`` of one scorer."""
        self._check(scorer, loss, benchmark)
        row = self._run("corpus_kl", {"scorer": scorer, "benchmark": benchmark}, loss=loss).iloc[0]
        if row.n_loss < row.n_tokens or not np.isfinite(row.corpus_loss):
            raise ValueError(f"NULL/NaN/inf value(s) in column {loss!r} for scorer {scorer!r}")
        return {"corpus_loss": float(row.corpus_loss), "n_tokens": int(row.n_tokens), "n_types": int(row.n_types)}

    def corpus_loss(self, scorer: str, loss: str = "rkl", *, benchmark: str | None = None) -> float:
        """Corpus-level loss Σ_t ℓ_t of one scorer (the denominator of Appendix E's coverage)."""
        return self.corpus_totals(scorer, loss, benchmark=benchmark)["corpus_loss"]

    def coverage(self, scorer: str, loss: str = "rkl", problems: Iterable | None = None, *,
                 benchmark: str | None = None) -> pd.DataFrame:
        """Cumulative coverage Σ_{rank ≤ K} R(v) / Σ_v R(v) for every K (Appendix E): columns K, token_id,
        R, cum_R, coverage. Built on :meth:`token_stats` (cached for the whole table: one scan serves both)."""
        stats = self.token_stats(scorer, loss, problems, benchmark=benchmark, extras=False)
        stats = stats[["rank", "token_id", "R"]]
        self.con.register("stats", stats)
        try:
            cov = self._run("coverage", {})
        finally:
            self.con.unregister("stats")
        if cov["coverage"].isna().any() or not np.isfinite(cov["coverage"]).all():
            raise ValueError(f"coverage is undefined: the corpus {loss!r} of scorer {scorer!r} sums to 0")
        return cov

    def seq_density(self, scorer: str, rock_ids: Iterable[int], *, benchmark: str | None = None,
                    consistent: pd.DataFrame | None = None) -> pd.DataFrame:
        """Per sequence: benchmark, problem_id, sample, n_tokens, n_rock (tokens whose token_id is in
        ``rock_ids``), density = n_rock / n_tokens, and n_rock_ctx / density_ctx counting only the rock
        occurrences listed in ``consistent`` (rows benchmark, problem_id, sample, position: the context-consistent
        occurrences o ∈ R(v), Eq. 11; ``None``: none) (Fig. 2a/2b)."""
        self._check(scorer, None, benchmark)
        ids = sorted({int(i) for i in rock_ids})
        if not ids:
            raise ValueError("rock_ids is empty: give at least one token id")
        self.con.execute("DELETE FROM rock_set")
        self.con.execute("INSERT INTO rock_set SELECT unnest($ids::INTEGER[])", {"ids": ids})
        keys = ["benchmark", "problem_id", "sample", "position"]
        if consistent is None:
            consistent = pd.DataFrame({"benchmark": pd.Series([], dtype=str), "problem_id": pd.Series([], dtype=str),
                                       "sample": pd.Series([], dtype="int32"), "position": pd.Series([], dtype="int32")})
        missing = [k for k in keys if k not in consistent.columns]
        if missing:
            raise ValueError(f"consistent occurrences lack column(s) {missing}")
        self.con.register("consistent_occ", consistent[keys].drop_duplicates())
        try:
            return self._run("seq_density", {"scorer": scorer, "benchmark": benchmark})
        finally:
            self.con.unregister("consistent_occ")

    # ------------------------------------------------------------------ output
    def write_parquet(self, df_or_query, path, params: dict | list | None = None) -> None:
        """Write a DataFrame, a pyarrow Table, or the result of a SQL query on this connection (``params``
        bound; streamed in record batches) to ``path`` as zstd parquet, atomically."""
        if isinstance(df_or_query, pd.DataFrame):
            write_parquet(df_or_query, path)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        if isinstance(df_or_query, pa.Table):
            with atomic_file(path) as tmp:
                pq.write_table(df_or_query, tmp, compression="zstd")
            return
        if not isinstance(df_or_query, str):
            raise TypeError(f"write_parquet takes a DataFrame, a pyarrow Table or a SQL string, "
                            f"not {type(df_or_query).__name__}")
        rel = self.con.sql(df_or_query, params=params)
        if rel is None:
            raise ValueError("write_parquet: the SQL statement returns no rows to write")
        reader = rel.to_arrow_reader(batch_size=1 << 17)
        with atomic_file(path) as tmp:
            with pq.ParquetWriter(tmp, reader.schema, compression="zstd") as w:
                for batch in reader:
                    w.write_batch(batch)
