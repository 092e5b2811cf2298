"""Compute every S4 kernel of a module once for a fixed input length, e.g. across the steps of diffusion sampling.

A bidirectional S4 layer's kernel depends only on its parameters and the sequence length. Diffusion sampling
runs the same network on inputs of one length tens to hundreds of times, so inside :func:`cached_kernels`
the kernels are computed at the first call and reused by the others (the official diffwave-sashimi code
recomputes all of them at every denoising step).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from sashimi.layers.s4_paper import PaperS4Kernel
from sashimi.layers.s4kernel import S4Kernel

__all__ = ["CACHING_KERNELS", "cached_kernels"]

#: the kernel modules that honour the cache (they keep ``_kernel_cache`` while it is active)
CACHING_KERNELS = (S4Kernel, PaperS4Kernel)


@contextmanager
def cached_kernels(module: nn.Module) -> Iterator[None]:
    """Within the ``with`` block, reuse the S4 kernels of ``module`` computed without autograd.

    Each :class:`~sashimi.layers.S4Kernel` / :class:`~sashimi.layers.s4_paper.PaperS4Kernel` in ``module``
    keeps the kernels it computes while gradients are disabled (``torch.no_grad()`` /
    ``torch.inference_mode()``), keyed by length, rate, backend, dtype and device; calls with autograd
    enabled bypass the cache. The parameters must not change inside the block. Nested use is allowed;
    the previous state is restored on exit.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    kernels = [m for m in module.modules() if isinstance(m, CACHING_KERNELS)]
    previous = [m.__dict__.get("_kernel_cache") for m in kernels]
    for m in kernels:
        m.__dict__["_kernel_cache"] = {}
    try:
        yield
    finally:
        for m, prev in zip(kernels, previous):
            if prev is None:
                m.__dict__.pop("_kernel_cache", None)
            else:
                m.__dict__["_kernel_cache"] = prev
