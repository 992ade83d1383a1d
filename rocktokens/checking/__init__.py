"""Layer 1: answer checking (math answers with a bounded worker pool, IFEval instructions).
"""
