"""Stage ``rules/rocks.smk``: rock sets (Eq. 3–6, 14), context consistency (Eq. 7–13), the windows W(v) and
the rock analysis that writes them, Figure 2.
"""
