"""Log-Vandermonde products: the diagonal (S4D) kernel and forwarding a state through a chunk."""

from __future__ import annotations

import math

import torch

from sashimi.kernels._backend import resolve_backend
from sashimi.kernels._checks import check_length, check_tensor, real_dtype

__all__ = [
    "VandermondeFn",
    "VandermondeTransposeFn",
    "vandermonde",
    "vandermonde_ref",
    "vandermonde_transpose",
    "vandermonde_transpose_ref",
]


def _validate(v: torch.Tensor, x: torch.Tensor, name_v: str = "v") -> torch.Size:
    check_tensor("x", x, complex_=True)
    if x.shape[-1] == 0:
        raise ValueError("x must have a non-empty last dimension N/2")
    if name_v == "v":
        check_tensor("v", v, complex_=True)
        if v.shape[-1] != x.shape[-1]:
            raise ValueError(f"v must have last dimension N/2={x.shape[-1]} like x, got shape {tuple(v.shape)}")
        if v.dtype != x.dtype and not (v.dtype == torch.complex64 and x.dtype == torch.complex128):
            raise TypeError(
                f"v and x must share one complex dtype (or x complex128 with v complex64), got {v.dtype} and {x.dtype}"
            )
        lead_v = v.shape[:-1]
    else:
        check_tensor("u", v)
        if not (v.is_floating_point() or v.is_complex()):
            raise TypeError(f"u must be a floating or complex tensor, got {v.dtype}")
        if v.shape[-1] == 0:
            raise ValueError("u must have length L >= 1 in its last dimension, got 0")
        if real_dtype(v.dtype) != real_dtype(x.dtype) and x.dtype != torch.complex128:
            raise TypeError(f"u's precision {v.dtype} must match x's {x.dtype}")
        lead_v = v.shape[:-1]
    try:
        return torch.broadcast_shapes(lead_v, x.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"x's leading dimensions {tuple(x.shape[:-1])} must broadcast with {name_v}'s {tuple(lead_v)}"
        ) from None


def _split(L: int) -> tuple[int, int]:
    """Two-level split L <= C * T with T a power of two near sqrt(L)."""
    T = 1 << max(0, math.ceil(math.log2(max(1, L)) / 2))
    return T, -(-L // T)


def _powers(x: torch.Tensor, T: int, C: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(x * j) for j < T and exp(x * T * c) for c < C, evaluated in float64 (accurate nodes), cast to dtype."""
    x64 = x.to(torch.complex128)
    j = torch.arange(T, device=x.device, dtype=torch.float64)
    c = torch.arange(C, device=x.device, dtype=torch.float64) * T
    zj = torch.exp(x64.unsqueeze(-1) * j)  # (..., N2, T)
    zc = torch.exp(x64.unsqueeze(-1) * c)  # (..., N2, C)
    return zj.to(dtype), zc.to(dtype)


def vandermonde_ref(v: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
    """Dense specification of :func:`vandermonde` (builds the (..., N/2, L) matrix exp(x * l))."""
    ell = torch.arange(L, device=x.device, dtype=real_dtype(x.dtype))
    vand = torch.exp(x.unsqueeze(-1) * ell).to(v.dtype)  # (..., N2, L)
    return 2 * torch.einsum("...n,...nl->...l", v, vand).real


def vandermonde_transpose_ref(u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Dense specification of :func:`vandermonde_transpose`."""
    ell = torch.arange(u.shape[-1], device=x.device, dtype=real_dtype(x.dtype))
    cdt = torch.complex64 if real_dtype(u.dtype) == torch.float32 else torch.complex128
    vand = torch.exp(x.unsqueeze(-1) * ell).to(cdt)  # (..., N2, L)
    return torch.einsum("...l,...nl->...n", u.to(cdt), vand)


def _vandermonde_torch(v: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
    """Two-level exponent z^(cT+j) = (z^T)^c z^j: one batched real GEMM per call.

    out[..., c, j] = 2 Re sum_n (v z^{cT})[..., n, c] (z^j)[n, j]; memory O(M * N * sqrt(L) + M * L).
    """
    batch = torch.broadcast_shapes(v.shape[:-1], x.shape[:-1])
    n2 = x.shape[-1]
    xb = x.expand(*batch, n2).reshape(-1, n2)  # (M, N2)
    vb = v.expand(*batch, n2).reshape(-1, n2)  # (M, N2)
    T, C = _split(L)
    zj, zc = _powers(xb, T, C, v.dtype)  # (M, N2, T), (M, N2, C)
    a = (vb.unsqueeze(-1) * zc).transpose(1, 2)  # (M, C, N2)
    # Re(a @ zj) = a_r @ zj_r - a_i @ zj_i, as one GEMM on stacked real blocks
    lhs = torch.cat([a.real, -a.imag], dim=-1)  # (M, C, 2 N2)
    rhs = torch.cat([zj.real, zj.imag], dim=-2)  # (M, 2 N2, T)
    out = 2 * torch.bmm(lhs, rhs)  # (M, C, T)
    return out.reshape(-1, C * T)[:, :L].reshape(*batch, L)


def _vandermonde_transpose_torch(u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_l u[l] z^l = sum_c (z^T)^c sum_j u[cT + j] z^j: one batched GEMM and a short reduction."""
    L = u.shape[-1]
    n2 = x.shape[-1]
    batch = torch.broadcast_shapes(u.shape[:-1], x.shape[:-1])
    # rows of u that share one x: u (R, M, L) with x (M, N2)
    xm = x.expand(*batch[len(batch) - (x.ndim - 1):], n2) if x.ndim > 1 else x
    M = max(1, xm.numel() // n2)
    ub = u.expand(*batch, L).reshape(-1, M, L)  # (R, M, L)
    R = ub.shape[0]
    xb = xm.reshape(M, n2)
    T, C = _split(L)
    zj, zc = _powers(xb, T, C, torch.complex64 if real_dtype(u.dtype) == torch.float32 else torch.complex128)
    ub = torch.nn.functional.pad(ub, (0, C * T - L)).reshape(R, M, C, T).permute(1, 0, 2, 3)  # (M, R, C, T)
    ub = ub.reshape(M, R * C, T)
    if ub.is_complex():
        s = torch.bmm(ub, zj.transpose(1, 2))  # (M, R*C, N2)
    else:
        s2 = torch.bmm(ub, torch.cat([zj.real, zj.imag], dim=-2).transpose(1, 2))  # (M, R*C, 2 N2)
        s = torch.complex(s2[..., :n2], s2[..., n2:])
    s = s.reshape(M, R, C, n2)
    out = torch.einsum("mrcn,mnc->rmn", s, zc)  # (R, M, N2)
    return out.reshape(*batch, n2)


class VandermondeFn(torch.autograd.Function):
    """Autograd wrapper for the Triton log-Vandermonde kernel."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
        from sashimi.kernels.triton import vandermonde_fwd

        ctx.save_for_backward(v, x)
        return vandermonde_fwd(v, x, L)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        from sashimi.kernels.triton import vandermonde_bwd

        v, x = ctx.saved_tensors
        dv, dx = vandermonde_bwd(v, x, grad)
        return dv, dx, None


class VandermondeTransposeFn(torch.autograd.Function):
    """Autograd wrapper for the Triton transposed log-Vandermonde kernel."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        from sashimi.kernels.triton import vandermonde_transpose_fwd

        ctx.save_for_backward(u, x)
        return vandermonde_transpose_fwd(u, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        from sashimi.kernels.triton import vandermonde_transpose_bwd

        u, x = ctx.saved_tensors
        du, dx = vandermonde_transpose_bwd(u, x, grad)
        return du, dx


def vandermonde(v: torch.Tensor, x: torch.Tensor, L: int, *, backend: str | None = None) -> torch.Tensor:
    """Log-Vandermonde product over conjugate pairs.

    ``out[..., l] = 2 * Re(sum_n v[..., n] * exp(x[..., n] * l))`` for ``0 <= l < L``: the sum
    over a conjugate-symmetric N-dimensional system of which ``v`` and ``x`` hold the N/2
    stored modes (the S4D kernel is ``vandermonde(C * dB, log(dA), L)``).

    Args:
        v: (..., N/2) complex64 or complex128 coefficients.
        x: (..., N/2) log-nodes, v's dtype or complex128 (then the nodes keep float64 phase
            accuracy for long L while the product runs in v's precision); leading dims
            broadcast against ``v``'s.
        L: output length, >= 1.
        backend: ``'torch'`` (two-level exponent, nodes evaluated in float64, one GEMM),
            ``'triton'`` or ``'ref'`` (dense spec); default per call from the device.

    Returns:
        (broadcast(...), L) real tensor (float32 for complex64 inputs, float64 for complex128).
    """
    _validate(v, x)
    L = check_length("L", L)
    which = resolve_backend(backend, v)
    if which == "ref":
        return vandermonde_ref(v, x, L)
    if which == "triton":
        batch = torch.broadcast_shapes(v.shape[:-1], x.shape[:-1])
        n2 = x.shape[-1]
        return VandermondeFn.apply(v.expand(*batch, n2), x.expand(*batch, n2), L)
    return _vandermonde_torch(v, x, L)


def vandermonde_transpose(u: torch.Tensor, x: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """Transposed log-Vandermonde product: ``out[..., n] = sum_l u[..., l] * exp(x[..., n] * l)``.

    Forwards a diagonal SSM's state through a chunk: with dA = exp(x),
    ``sum_l dA^(L-1-l) u[l] = vandermonde_transpose(u.flip(-1), x)``. It is also the adjoint
    that the backward pass of :func:`vandermonde` needs.

    Args:
        u: (..., L) real or complex sequence, the same precision as ``x`` (or ``x`` complex128).
        x: (..., N/2) complex log-nodes; leading dims broadcast against ``u``'s.
        backend: as for :func:`vandermonde`.

    Returns:
        (broadcast(...), N/2) complex tensor in ``u``'s precision.
    """
    _validate(u, x, name_v="u")
    which = resolve_backend(backend, u)
    if which == "ref":
        return vandermonde_transpose_ref(u, x)
    if which == "triton":
        batch = torch.broadcast_shapes(u.shape[:-1], x.shape[:-1])
        return VandermondeTransposeFn.apply(u.expand(*batch, u.shape[-1]), x.expand(*batch, x.shape[-1]))
    return _vandermonde_transpose_torch(u, x)
