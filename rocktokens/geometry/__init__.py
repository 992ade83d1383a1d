"""Stage ``rules/geometry.smk``: gradient geometry (Eq. 15–18, Figure 3), persistence (Figure 4), the optimizer
probe and the geometry finding.
"""
