"""Stage ``rules/report.smk``: the summary table (this run beside the paper).
"""
