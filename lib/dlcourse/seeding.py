"""Reproducible randomness. Nothing is seeded at import time: call `seed_everything`."""
import random

import numpy as np
import torch


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python's, NumPy's and torch's global generators; return a fresh torch.Generator.

    Prefer passing the returned generator explicitly (``torch.randn(3, generator=g)``):
    code that takes a generator argument stays reproducible however it is called.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
