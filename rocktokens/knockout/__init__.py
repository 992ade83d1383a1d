"""Stage ``rules/knockout.smk``: token / window / local knockout (Eq. 20–22), effects, census, predictors
(Table 1), the tables and Figure 5/6 panels.
"""
