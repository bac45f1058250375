"""Reference weight initialisation shared by every method (docs/methods.md §2, "Initialization").

The reference applies one ``re_init`` to the whole model after building it, so modules that
were ``deepcopy``-ed from one another still get independent initial values.
"""
from __future__ import annotations

from torch import nn

#: ref: ms-sl method/config.py ``initializer_range``.
INITIALIZER_RANGE = 0.02


def _init_one(module: nn.Module, std: float) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def reference_init_(module: nn.Module, std: float = INITIALIZER_RANGE) -> nn.Module:
    """Re-initialise ``module`` and all its children in place, as the reference does.

    Linear and Embedding weights ~ N(0, std²) with std 0.02, Linear biases 0, LayerNorm
    weight 1 and bias 0. Other modules keep their values. Returns ``module``.
    """
    module.apply(lambda m: _init_one(m, std))
    return module
