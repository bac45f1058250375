"""Seeds (docs/methods.md §3.5): python, numpy, torch and CUDA; per-trial seed derivation."""
from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed every RNG the run touches and return a CPU generator for the batch shuffle.

    ref: the reference seeds random, numpy, torch and cuda; its shuffle order comes from the
    seeded main-process RNG. We give the loader its own generator so evaluation or a method's
    dropout never shifts the shuffle order.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def derive_seed(base: int, *parts: int | str) -> int:
    """A stable 31-bit seed from a base seed and labels (e.g. study seed and trial number)."""
    text = ":".join(str(p) for p in (base, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF
