-- Cumulative loss coverage of the top-K token types, for every K (paper §2.4, Appendix E):
--
--   coverage(K) = Σ_{rank(v) ≤ K} R(v) / L_corpus,     L_corpus = Σ_v R(v) = Σ_t ℓ_t  (Eq. 3)
--
-- Relation  stats: the output of token_stats.sql (rank, token_id, R, ...), one row per token type.
--
-- Exactness: R is cast to DECIMAL(38, 12) so the running sums are exact 128-bit integer sums. A DOUBLE
-- window sum is evaluated through a segment tree, not left to right, and can step down by an ulp where
-- R(v) ≈ 0; with exact sums coverage is monotone whenever every R(v) ≥ 0 (rkl, fkl) and the last row is
-- exactly 1.0. (R below 1e-12 rounds to 0; |R| must stay below 1e26.)
WITH cum AS (
    SELECT
        rank,
        token_id,
        R,
        sum(CAST(R AS DECIMAL(38, 12))) OVER (ORDER BY rank ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
            AS cum_R,
        sum(CAST(R AS DECIMAL(38, 12))) OVER () AS total_R
    FROM stats
)
SELECT
    rank                                        AS K,
    token_id,
    R,
    CAST(cum_R AS DOUBLE)                       AS cum_R,
    CAST(cum_R AS DOUBLE) / CAST(total_R AS DOUBLE) AS coverage
FROM cum
ORDER BY K
