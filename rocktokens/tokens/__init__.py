"""Stage ``rules/tokens.smk``: on-policy trajectories, per-token KL scoring (Eq. 2) and the DuckDB aggregation
(``sql/*.sql``: Freq, mean loss, R(v), coverage, density).
"""
