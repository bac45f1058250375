"""Input projection and trainable positional encoding (docs/methods.md §2).

The LayerNorm attributes are named ``LayerNorm`` on purpose: the reference optimiser decides
weight decay by parameter name ("LayerNorm.weight"/"LayerNorm.bias" get none, §3.5), so keeping
the name keeps that rule working unchanged.
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from methods.layers.dropout import Dropout


class InputProjection(nn.Module):
    """``LinearLayer`` of the reference: x ↦ ReLU(W·Dropout(LN_{d_in}(x)) + b).

    The LayerNorm acts on the *input* size, before dropout and the linear map.

    Shapes: x (..., d_in) -> (..., d_out).
    """

    def __init__(self, d_in: int, d_out: int, dropout: float) -> None:
        super().__init__()
        self.LayerNorm = nn.LayerNorm(d_in)
        self.dropout = Dropout(dropout)
        self.linear = nn.Linear(d_in, d_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.linear(self.dropout(self.LayerNorm(x))))


class TrainablePositionalEncoding(nn.Module):
    """x_t ↦ Dropout(LN_D(x_t + P_t)) with P an ``nn.Embedding(max_len, hidden)``.

    Shapes: x (N, T, D) with T ≤ max_len -> (N, T, D).
    """

    def __init__(self, max_len: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.max_len = max_len
        self.position_embeddings = nn.Embedding(max_len, hidden)
        self.LayerNorm = nn.LayerNorm(hidden)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[1]
        if length > self.max_len:
            raise ValueError(f"TrainablePositionalEncoding: sequence length {length} exceeds "
                             f"max_len {self.max_len}")
        positions = self.position_embeddings.weight[:length]  # (T, D)
        return self.dropout(self.LayerNorm(x + positions))
