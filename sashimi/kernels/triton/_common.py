"""Helpers shared by the Triton launchers (row grouping, complex <-> real views, output buffers) and kernels."""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to jit functions here)


@triton.jit
def kahan_add(acc, comp, term):
    """Compensated (Kahan) accumulation ``acc += term`` inside a kernel; returns the new (acc, comp)."""
    y = term - comp
    t = acc + y
    return t, (t - acc) - y


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def alloc(shape, dtype: torch.dtype, device) -> torch.Tensor:
    """Every buffer a kernel writes is allocated here (the tests patch it to hand out NaN-filled memory)."""
    return torch.empty(shape, dtype=dtype, device=device)


def as_real(t: torch.Tensor) -> torch.Tensor:
    """A float view (..., 2) of a complex tensor, with any lazy conjugate / negation resolved first."""
    return torch.view_as_real(t.resolve_conj().resolve_neg())


def work_real_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for complex64 / float32 data, float64 for everything else (the kernels' two precisions)."""
    return torch.float32 if dtype in (torch.complex64, torch.float32) else torch.float64


def complex_of(real: torch.dtype) -> torch.dtype:
    return torch.complex64 if real == torch.float32 else torch.complex128


class Rows:
    """Group a broadcast batch into numerator rows that share one set of poles / nodes.

    ``shared`` is a tensor of shape (*batch, K) that was expanded from fewer rows: the batch
    dimensions along which its stride is 0 become the row axis R, all others the axis M. Tensors
    of shape (*batch, K) map to (R, M, K) with :meth:`rows`, the shared one to (M, K) with
    :meth:`shared`, and results come back with :meth:`unrows`.
    """

    def __init__(self, batch: tuple[int, ...], shared: torch.Tensor):
        nb = len(batch)
        self.nb = nb
        rows_dims = [i for i in range(nb) if batch[i] > 1 and shared.stride(i) == 0]
        other = [i for i in range(nb) if i not in rows_dims]
        self.n_rows_dims = len(rows_dims)
        self.perm = rows_dims + other
        self.inv = [self.perm.index(i) for i in range(nb)]
        self.pshape = [batch[i] for i in self.perm]
        self.R = math.prod(batch[i] for i in rows_dims)
        self.M = math.prod(batch[i] for i in other)

    def _permute(self, t: torch.Tensor) -> torch.Tensor:
        return t.permute(*self.perm, self.nb)

    def rows(self, t: torch.Tensor) -> torch.Tensor:
        """(*batch, K) -> (R, M, K) (a view when possible, else a copy)."""
        return self._permute(t).reshape(self.R, self.M, t.shape[-1])

    def rows_view(self, t: torch.Tensor) -> torch.Tensor | None:
        """(*batch, K) -> (R, M, K) as a view of the same memory, or None if that is impossible."""
        try:
            return self._permute(t).view(self.R, self.M, t.shape[-1])
        except RuntimeError:
            return None

    def shared(self, t: torch.Tensor) -> torch.Tensor:
        """(*batch, K) with stride 0 along the row dims -> (M, K)."""
        p = self._permute(t)
        return p[(0,) * self.n_rows_dims].reshape(self.M, t.shape[-1])

    def unrows(self, t: torch.Tensor) -> torch.Tensor:
        """(R, M, K) -> (*batch, K)."""
        return t.reshape(*self.pshape, t.shape[-1]).permute(*self.inv, self.nb)


def output_rows(rows: Rows, out: torch.Tensor | None, shape, dtype, device) -> torch.Tensor:
    """An (R, M, K) buffer for a kernel to write; pass it with ``out`` to :func:`finish` afterwards.

    When ``out`` is given and can be viewed as (R, M, K), the buffer is that view of ``out``.
    """
    if out is not None:
        if tuple(out.shape) != tuple(shape):
            raise ValueError(f"out must have shape {tuple(shape)}, got {tuple(out.shape)}")
        if out.dtype != dtype:
            raise TypeError(f"out must have dtype {dtype}, got {out.dtype}")
        if out.device != torch.device(device):
            raise ValueError(f"out must live on {device}, got {out.device}")
        if out.is_complex() and (out.is_conj() or out.is_neg()):
            raise ValueError("out must not be a lazily conjugated / negated view")
        view = rows.rows_view(out)
        if view is not None:
            return view
    return alloc((rows.R, rows.M, shape[-1]), dtype, device)


def finish(rows: Rows, buf: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """The (*batch, K) result: ``out`` when one was given (filled from ``buf`` unless the kernel wrote into it)."""
    res = rows.unrows(buf)
    if out is None:
        return res
    if res.data_ptr() != out.data_ptr() or res.stride() != out.stride():
        out.copy_(res)
    return out


def reduce_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum a per-row gradient of the broadcast shape back to an input's shape (no-op when equal)."""
    if tuple(grad.shape) == tuple(shape):
        return grad
    return grad.sum_to_size(shape)
