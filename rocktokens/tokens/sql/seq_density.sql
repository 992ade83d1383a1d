-- Per-sequence rock density (paper §2.3, Fig. 2a/2b): for every sequence (benchmark, problem_id, sample)
-- its length, the number of its tokens whose token_id is in the rock set (n_rock, density), and the number of
-- those that are also context-consistent persistent high-loss occurrences o ∈ R(v) (Eq. 11; n_rock_ctx,
-- density_ctx) — the paper's "retained rock occurrences" (median density 18 % in §2.3).
--
-- Relations tokens: the token table; rock_set(token_id INTEGER, unique): the rock token types, a temp
--           table the caller fills with bound values; consistent_occ(benchmark, problem_id, sample, position),
--           unique: the context-consistent occurrences (empty: n_rock_ctx = 0).
-- Values    $scorer, $benchmark (NULL = every benchmark): bound. The scorer only picks one copy of the
--           trajectories (every scorer scores the same tokens).
SELECT
    t.benchmark,
    t.problem_id,
    t.sample,
    count(*)                                                       AS n_tokens,
    count(r.token_id)                                              AS n_rock,
    count(r.token_id) / count(*)                                   AS density,
    count(r.token_id) FILTER (WHERE c.position IS NOT NULL)        AS n_rock_ctx,
    count(r.token_id) FILTER (WHERE c.position IS NOT NULL) / count(*) AS density_ctx
FROM tokens AS t
LEFT JOIN rock_set AS r ON t.token_id = r.token_id
LEFT JOIN consistent_occ AS c
       ON t.benchmark = c.benchmark AND t.problem_id = c.problem_id AND t.sample = c.sample
      AND t.position = c.position
WHERE t.scorer = $scorer
  AND ($benchmark IS NULL OR t.benchmark = $benchmark)
GROUP BY t.benchmark, t.problem_id, t.sample
ORDER BY t.benchmark, t.problem_id, t.sample
