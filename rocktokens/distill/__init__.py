"""Stage ``rules/distill.smk``: what the training rules run (pretraining of the embedded toy models, stage-1 KD,
stage-2 OPD with its checkpoints), and the config bound on OPD steps.
"""
