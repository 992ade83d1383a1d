"""Stage ``rules/recovery.smk``: recovery of the planted causal roles (embedded world only).
"""
