"""Query and sequence encoders assembled from the §2 building blocks.

``QueryEncoder``: q̄ = Pool(Enc(Pos_30(Lin(W))), mask) (docs/methods.md §4.2, "Query").
``SequenceEncoder``: Enc(Pos_128(Lin(X)), mask) for clip and frame sequences.
"""
from __future__ import annotations

from torch import Tensor, nn

from methods.layers.attention import SelfAttentionLayer
from methods.layers.pooling import AttentionPooling
from methods.layers.projection import InputProjection, TrainablePositionalEncoding


class QueryEncoder(nn.Module):
    """Token features -> one query vector per caption.

    Submodules: ``projection`` (InputProjection d_in→hidden), ``position`` (max_len positions),
    ``encoder`` (SelfAttentionLayer), ``pool`` (AttentionPooling).

    Shapes: tokens (Nq, L, d_in), mask (Nq, L) -> token_states (Nq, L, D), forward (Nq, D).
    """

    def __init__(self, d_in: int, hidden: int, heads: int, max_len: int = 30,
                 input_dropout: float = 0.1, dropout: float = 0.1) -> None:
        super().__init__()
        self.projection = InputProjection(d_in, hidden, input_dropout)
        self.position = TrainablePositionalEncoding(max_len, hidden, input_dropout)
        self.encoder = SelfAttentionLayer(hidden, heads, dropout)
        self.pool = AttentionPooling(hidden)

    def token_states(self, tokens: Tensor, mask: Tensor, projection: nn.Module | None = None) -> Tensor:
        """Encoded tokens; ``projection`` replaces this encoder's own input projection (DL-DKD's
        exploration branch reuses the inheritance branch's projection, §5.2)."""
        projected = (projection or self.projection)(tokens)  # (Nq, L, D)
        return self.encoder(self.position(projected), mask)  # (Nq, L, D)

    def forward(self, tokens: Tensor, mask: Tensor, projection: nn.Module | None = None) -> Tensor:
        return self.pool(self.token_states(tokens, mask, projection), mask)  # (Nq, D)


class SequenceEncoder(nn.Module):
    """Clip or frame features -> contextualised states: projection → positions → attention.

    ``attention`` replaces the default SelfAttentionLayer (any module called as
    ``attention(x, mask)``, e.g. KDC-Net's DTA).

    Shapes: x (B, T, d_in), mask (B, T) or None -> (B, T, D).
    """

    def __init__(self, d_in: int, hidden: int, heads: int, max_len: int = 128,
                 input_dropout: float = 0.1, dropout: float = 0.1,
                 attention: nn.Module | None = None) -> None:
        super().__init__()
        self.projection = InputProjection(d_in, hidden, input_dropout)
        self.position = TrainablePositionalEncoding(max_len, hidden, input_dropout)
        self.encoder = attention if attention is not None else SelfAttentionLayer(hidden, heads, dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.encoder(self.position(self.projection(x)), mask)  # (B, T, D)
