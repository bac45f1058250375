"""Query and sequence encoders assembled from the §2 building blocks.

``QueryEncoder``: q̄ = Pool(Enc(Pos_30(Lin(W))), mask) (docs/methods.md §4.2, "Query").
``SequenceEncoder``: Enc(Pos_128(Lin(X)), mask) for clip and frame sequences.
"""
from __future__ import annotations

from torch import Tensor, nn

from methods.layers.attention import SelfAttentionLayer
from methods.layers.pooling import AttentionPooling
from methods.layers.projection import InputProjection, TrainablePositionalEncoding


def project_valid(projection: nn.Module, x: Tensor, mask: Tensor | None,
                  rows: Tensor | None = None) -> Tensor:
    """``projection(x)``; with a mask, only at valid positions (zeros elsewhere), which saves
    the padded rows of the largest matrix product of an encoder. ``rows`` is ``x[mask.bool()]``
    when the caller already made it: encoders that project the same frames (DL-DKD's two
    branches) then share one copy of the valid rows instead of gathering one each.

    Shapes: x (N, T, d_in), mask (N, T) or None, rows (n_valid, d_in) -> (N, T, D).
    """
    if mask is None:
        return projection(x)                                           # (N, T, D)
    valid = mask.bool()                                                # (N, T)
    packed = projection(x[valid] if rows is None else rows)            # (n_valid, D)
    out = packed.new_zeros(x.shape[:2] + packed.shape[-1:])            # (N, T, D)
    return out.index_put((valid,), packed)


class QueryEncoder(nn.Module):
    """Token features -> one query vector per caption.

    Submodules: ``projection`` (InputProjection d_in→hidden), ``position`` (max_len positions),
    ``encoder`` (SelfAttentionLayer), ``pool`` (AttentionPooling).

    Shapes: tokens (Nq, L, d_in), mask (Nq, L) -> token_states (Nq, L, D), forward (Nq, D).
    """

    def __init__(self, d_in: int, hidden: int, heads: int, max_len: int = 30,
                 input_dropout: float = 0.1, dropout: float = 0.1, pack_valid: bool = False) -> None:
        super().__init__()
        self.projection = InputProjection(d_in, hidden, input_dropout)
        self.position = TrainablePositionalEncoding(max_len, hidden, input_dropout)
        self.encoder = SelfAttentionLayer(hidden, heads, dropout)
        self.pool = AttentionPooling(hidden)
        self.pack_valid = pack_valid   # see SequenceEncoder: project valid tokens only

    def token_states(self, tokens: Tensor, mask: Tensor, projection: nn.Module | None = None) -> Tensor:
        """Encoded tokens; ``projection`` replaces this encoder's own input projection (DL-DKD's
        exploration branch reuses the inheritance branch's projection, §5.2)."""
        projected = project_valid(projection or self.projection, tokens,
                                  mask if self.pack_valid else None)  # (Nq, L, D)
        return self.encoder(self.position(projected), mask)  # (Nq, L, D)

    def forward(self, tokens: Tensor, mask: Tensor, projection: nn.Module | None = None) -> Tensor:
        return self.pool(self.token_states(tokens, mask, projection), mask)  # (Nq, D)


class SequenceEncoder(nn.Module):
    """Clip or frame features -> contextualised states: projection → positions → attention.

    ``attention`` replaces the default SelfAttentionLayer (any module called as
    ``attention(x, mask)``, e.g. KDC-Net's DTA).

    ``pack_valid=True`` runs the input projection (the largest matrix product, d_in up to
    3072) on the valid positions only and leaves zeros at padded ones. Valid outputs are
    unchanged as long as the attention masks padded keys (the default layer's −1e4 gives them
    exactly zero weight in float32); padded outputs differ from the reference's and must be
    masked downstream, as MS-SL's KCGA does.

    Shapes: x (B, T, d_in), mask (B, T) or None -> (B, T, D).
    """

    def __init__(self, d_in: int, hidden: int, heads: int, max_len: int = 128,
                 input_dropout: float = 0.1, dropout: float = 0.1,
                 attention: nn.Module | None = None, pack_valid: bool = False) -> None:
        super().__init__()
        self.projection = InputProjection(d_in, hidden, input_dropout)
        self.position = TrainablePositionalEncoding(max_len, hidden, input_dropout)
        self.encoder = attention if attention is not None else SelfAttentionLayer(hidden, heads, dropout)
        self.pack_valid = pack_valid

    def forward(self, x: Tensor, mask: Tensor | None = None, rows: Tensor | None = None) -> Tensor:
        """``rows``: ``x[mask.bool()]`` made once by the caller (used with ``pack_valid``)."""
        projected = project_valid(self.projection, x, mask if self.pack_valid else None, rows)
        return self.encoder(self.position(projected), mask)  # (B, T, D)
