-- Per-token-type distillation burden of ONE scorer (paper §2.2, Eq. 3–4).
--
--   Freq(v) = number of occurrences of token type v in the sampled trajectories
--   ℓ̄_v     = mean token-level loss of v                       (loss = {{loss}})
--   R(v)    = ℓ̄_v · Freq(v) = Σ_{t : x_t = v} ℓ_t              (Eq. 4, the Rock Score)
--   Σ_v R(v) = Σ_t ℓ_t = corpus-level loss                      (Eq. 3; see corpus_kl.sql)
--
-- Ranked by R descending; ties broken by token_id ascending, so the ranking is a total order.
--
-- Relation  {{source}}: the token table (`tokens`) or its problem subset (`tokens_subset`, Appendix E resamples).
-- Values    $scorer (VARCHAR), $benchmark (VARCHAR, NULL = every benchmark): bound parameters, never interpolated.
-- {{loss}} / {{source}} are identifiers from the allow-lists in rocktokens/tokens/aggregate.py (quoted before use).
--
-- Sums are Kahan–Babuška (fsum) in DOUBLE over the float32 inputs: R does not depend on the thread count
-- beyond the last bit. Bad input shows as n_loss < freq (NULL losses) or a non-finite R (NaN / ±inf): the
-- caller refuses both.
WITH per_type AS (
    SELECT
        token_id,
        min(qwen3_id)                                   AS qwen3_id,
        min(token)                                      AS token,
        count(*)                                        AS freq,
        fsum(CAST({{loss}} AS DOUBLE))                  AS loss_sum,
        avg(CAST(entropy_student AS DOUBLE))            AS mean_entropy_student,
        avg(CAST(entropy_teacher AS DOUBLE))            AS mean_entropy_teacher,
        avg(CAST(rkl AS DOUBLE))                        AS mean_rkl,
        avg(CAST(fkl AS DOUBLE))                        AS mean_fkl,
        avg(CAST(log_ratio AS DOUBLE))                  AS mean_log_ratio,
        count({{loss}})                                 AS n_loss
    FROM {{source}}
    WHERE scorer = $scorer
      AND ($benchmark IS NULL OR benchmark = $benchmark)
    GROUP BY token_id
)
SELECT
    CAST(row_number() OVER (ORDER BY loss_sum DESC, token_id ASC) AS BIGINT) AS rank,
    token_id,
    qwen3_id,
    token,
    freq,                                   -- Freq(v)
    loss_sum / freq        AS mean_loss,    -- ℓ̄_v
    loss_sum               AS R,            -- R(v) = ℓ̄_v · Freq(v)   (Eq. 4)
    mean_entropy_student,
    mean_entropy_teacher,
    mean_rkl,
    mean_fkl,
    mean_log_ratio,
    n_loss
FROM per_type
ORDER BY rank
