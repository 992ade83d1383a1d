"""Stage ``rules/evaluate.smk``: the distillation table (pass@1 per checkpoint, paired gains, gap closed, the KL
curve) and its figure. Sampling and grading themselves are ``rocktokens.generation.sampling``.
"""
