"""Stage ``rules/freeze.smk``: rock-freeze and optimizer arms (Eq. 19), their run (``run``), table and figure.
"""
