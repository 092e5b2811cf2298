"""Compute every S4 kernel of a module once for a fixed input length, e.g. across the steps of diffusion sampling.

A bidirectional S4 layer's kernel depends only on its parameters and the sequence length. Diffusion sampling
runs the same network on inputs of one length tens to hundreds of times, so inside :func:`cached_kernels`
the kernels are computed at the first call and reused by the others (the official diffwave-sashimi code
recomputes all of them at every denoising step). It extends :func:`~sashimi.layers.frozen_kernels` (the
:class:`~sashimi.layers.S4Kernel` cache) to the paper-branch kernels (:class:`~sashimi.layers.PaperS4Kernel`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from sashimi.layers.restricted import frozen_kernels
from sashimi.layers.s4_paper import PaperS4Kernel

__all__ = ["cached_kernels"]


@contextmanager
def cached_kernels(module: nn.Module) -> Iterator[nn.Module]:
    """Within the ``with`` block, reuse the S4 kernels of ``module`` computed without autograd.

    Each :class:`~sashimi.layers.S4Kernel` (through :func:`~sashimi.layers.frozen_kernels`) and
    :class:`~sashimi.layers.PaperS4Kernel` in ``module`` keeps the kernels it computes while gradients are
    disabled (``torch.no_grad()`` / ``torch.inference_mode()``); calls with autograd enabled bypass the cache.
    The parameters must not change inside the block. Nested use is allowed; the previous state is restored
    on exit.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    papers = [m for m in module.modules() if isinstance(m, PaperS4Kernel)]
    before = [m.kernel_cache for m in papers]
    for m in papers:
        m.kernel_cache = {}
    try:
        with frozen_kernels(module):
            yield module
    finally:
        for m, cache in zip(papers, before):
            m.kernel_cache = cache
