-- Corpus-level loss of ONE scorer: L_corpus = Σ_t ℓ_t = Σ_v R(v)  (paper Eq. 3; Appendix E denominator).
--
-- Relation  tokens: the token table.   Values: $scorer, $benchmark (NULL = every benchmark), bound.
-- {{loss}} is an allow-listed column identifier (rocktokens/tokens/aggregate.py). NULL losses show as
-- n_loss < n_tokens, NaN / ±inf ones as a non-finite corpus_loss: the caller refuses both.
SELECT
    fsum(CAST({{loss}} AS DOUBLE))                                      AS corpus_loss,
    count(*)                                                            AS n_tokens,
    count(DISTINCT token_id)                                            AS n_types,
    count({{loss}})                                                     AS n_loss
FROM tokens
WHERE scorer = $scorer
  AND ($benchmark IS NULL OR benchmark = $benchmark)
