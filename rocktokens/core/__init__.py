"""Layer 0, shared primitives every stage uses: io (atomic writes, parquet/json), seeding, statistics, the
divergences and losses (Eq. 1, 15–18), token sequences and batches, chat prompts, figure plumbing, number formatting.
"""
