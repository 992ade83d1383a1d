"""Seeds derived from config seeds and positions — stable across processes, restarts and Python hash seeds."""
from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np


def derive_seed(*parts) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (ints/strings)."""
    h = hashlib.blake2b(repr(tuple(parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & 0x7FFF_FFFF_FFFF_FFFF


@lru_cache(maxsize=16)
def permutation(n: int, *parts) -> np.ndarray:
    """A seeded permutation of ``range(n)`` (cached: drivers ask for the same epoch's order per sample)."""
    p = np.random.default_rng(derive_seed(*parts)).permutation(n)
    p.flags.writeable = False
    return p
