"""Top layer, read by the rules at parse time: config checks, cluster placement, the GPU memory/time plan,
runs trained elsewhere (``source: checkpoints``).
"""
