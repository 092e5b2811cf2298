"""Argument validation shared by the kernel functions: errors name the argument and the expected shape."""

from __future__ import annotations

import torch


def check_tensor(
    name: str, x: object, *, ndim_min: int = 1, ndim: int | None = None, complex_: bool | None = None
) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if x.ndim < ndim_min:
        raise ValueError(f"{name} must have at least {ndim_min} dimension(s), got shape {tuple(x.shape)}")
    if complex_ is True and not x.is_complex():
        raise TypeError(f"{name} must be complex (complex64 or complex128), got {x.dtype}")
    if complex_ is False and (x.is_complex() or not x.is_floating_point()):
        raise TypeError(f"{name} must be a real floating tensor, got {x.dtype}")
    return x


def check_length(name: str, L: object) -> int:
    if isinstance(L, torch.Tensor):
        L = int(L.item())
    if isinstance(L, bool) or not isinstance(L, int):
        raise TypeError(f"{name} must be an int, got {type(L).__name__}")
    if L < 1:
        raise ValueError(f"{name} must be >= 1, got {L}")
    return L


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return {torch.float32: torch.complex64, torch.float64: torch.complex128,
            torch.float16: torch.complex64, torch.bfloat16: torch.complex64}.get(dtype, dtype)


def chunk_size(rows: int, inner: int, budget: int = 1 << 21) -> int:
    """Chunk length along L so that a (rows, inner, chunk) temporary stays under ``budget`` elements."""
    return max(1, budget // max(1, rows * inner))
