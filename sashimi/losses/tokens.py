"""Cross-entropy of token models in bits (the paper's NLL metric), for training and evaluation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["LN2", "cross_entropy_bits"]

LN2 = math.log(2.0)


def cross_entropy_bits(
    logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean", mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy in bits per token.

    Args:
        logits: (B, L, C) scores (computed in at least float32; float64 stays float64).
        targets: (B, L) int classes.
        reduction: 'mean' (a scalar over all counted tokens), 'sequence' ((B,) the mean per row) or
            'none' ((B, L)).
        mask: optional (B, L) bool: only True positions count ('mean' and 'sequence').

    Returns:
        the cross-entropy in bits (nats / ln 2).
    """
    if logits.ndim != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"logits (B, L, C) and targets (B, L) do not match: {tuple(logits.shape)} vs "
                         f"{tuple(targets.shape)}")
    if reduction not in ("mean", "sequence", "none"):
        raise ValueError(f"reduction must be 'mean', 'sequence' or 'none', got {reduction!r}")
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    nll = F.cross_entropy(logits.transpose(1, 2), targets.long(), reduction="none") / LN2  # (B, L)
    if reduction == "none":
        return nll
    if mask is None:
        return nll.mean() if reduction == "mean" else nll.mean(dim=1)
    m = mask.to(nll.dtype)
    if reduction == "mean":
        return (nll * m).sum() / m.sum().clamp_min(1)
    return (nll * m).sum(dim=1) / m.sum(dim=1).clamp_min(1)
