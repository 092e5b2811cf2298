"""Context managers over every :class:`~sashimi.layers.S4Kernel` of a module: a restricted context
(MAGNeT's local window for the streams above the first) and a kernel cache for repeated no-grad passes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from sashimi.layers.s4kernel import S4Kernel

__all__ = ["frozen_kernels", "restricted_context"]


def _kernels(module: nn.Module) -> list[S4Kernel]:
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    return [m for m in module.modules() if isinstance(m, S4Kernel)]


@contextmanager
def restricted_context(module: nn.Module, taps: int | None) -> Iterator[nn.Module]:
    """Within the block, every S4 kernel of ``module`` only connects positions at most ``taps`` apart.

    Each S4 layer's output at position i then depends on its inputs at ``|i - j| <= taps`` only (the
    D skip is lag 0); the network's receptive field still grows with depth and pooling, like a
    per-layer attention window. ``taps=None`` leaves the kernels unrestricted. Restores the previous
    windows on exit (nesting is allowed).

    Args:
        module: any module holding S4 kernels.
        taps: w >= 0, or None.
    """
    if taps is not None and (isinstance(taps, bool) or not isinstance(taps, int) or taps < 0):
        raise ValueError(f"taps must be an int >= 0 or None, got {taps!r}")
    kernels = _kernels(module)
    before = [k.window for k in kernels]
    for k in kernels:
        k.window = taps
    try:
        yield module
    finally:
        for k, w in zip(kernels, before):
            k.window = w


@contextmanager
def frozen_kernels(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, no-grad passes compute each S4 kernel once per (length, rate, window) and reuse it.

    For loops of inference passes over the same length (iterative decoding): the kernels are computed
    on the first pass only. The parameters must not change inside the block. Passes with gradients
    enabled are not cached. The cache is dropped on exit.
    """
    kernels = _kernels(module)
    before = [k.kernel_cache for k in kernels]
    for k in kernels:
        k.kernel_cache = {}
    try:
        yield module
    finally:
        for k, c in zip(kernels, before):
            k.kernel_cache = c
