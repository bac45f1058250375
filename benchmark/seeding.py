"""Seeds (docs/methods.md §3.5): python, numpy, torch and CUDA; per-trial seed derivation; the
RNG states a resumed run restores (``rng_state`` / ``restore_rng_state``)."""
from __future__ import annotations

import hashlib
import random
from typing import Any, cast

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


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG state a run reads: python, numpy, torch (CPU and each CUDA device) and the
    shuffle ``generator``, as tensors, numbers and tuples (``torch.load(weights_only=True)``
    reads them back). Reading a state consumes nothing.

    The numpy state ``('MT19937', keys (624,) uint32, pos, has_gauss, cached_gaussian)`` keeps
    its keys as an int64 tensor: numpy arrays are not among the types ``weights_only`` reads.
    """
    kind, keys, pos, has_gauss, cached_gaussian = cast(tuple[str, np.ndarray, int, int, float],
                                                       np.random.get_state(legacy=True))
    return {"python": random.getstate(),
            "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(cached_gaussian)},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "shuffle": generator.get_state()}


def restore_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Put back what ``rng_state`` read: the RNGs continue exactly where they were. CUDA states
    are restored when this machine has CUDA; a state saved without CUDA leaves them seeded."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["shuffle"])
