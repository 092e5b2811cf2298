"""Helpers for comparing outputs in tests and examples."""

from __future__ import annotations

import torch

__all__ = ["rel_err"]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max |b|`` in float64 (``b`` is the reference)."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max())
