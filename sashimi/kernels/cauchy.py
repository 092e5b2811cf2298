"""Cauchy matrix-vector product with conjugate pairs, the core of the DPLR (S4) kernel."""

from __future__ import annotations

import torch

from sashimi.kernels._backend import resolve_backend
from sashimi.kernels._checks import check_tensor, chunk_size

__all__ = ["cauchy", "cauchy_ref", "CauchyFn"]


def _validate(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> None:
    check_tensor("v", v, complex_=True)
    check_tensor("z", z, ndim=1, complex_=True)
    check_tensor("w", w, complex_=True)
    if z.shape[0] == 0:
        raise ValueError("z must hold at least one node, got shape (0,)")
    if v.shape[-1] == 0:
        raise ValueError("v must have a non-empty last dimension N/2")
    if w.shape[-1] != v.shape[-1]:
        raise ValueError(f"w must have last dimension N/2={v.shape[-1]} like v, got shape {tuple(w.shape)}")
    try:
        torch.broadcast_shapes(v.shape[:-1], w.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"w's leading dimensions {tuple(w.shape[:-1])} must broadcast with v's {tuple(v.shape[:-1])}"
        ) from None
    if not (v.dtype == z.dtype == w.dtype):
        raise TypeError(f"v, z and w must share one complex dtype, got {v.dtype}, {z.dtype}, {w.dtype}")


def cauchy_ref(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Dense specification of :func:`cauchy` (the naive algorithm: builds the (..., N, L) matrix)."""
    vf = torch.cat([v, v.conj()], dim=-1)  # (..., N)
    wf = torch.cat([w, w.conj()], dim=-1)  # (..., N)
    return (vf.unsqueeze(-1) / (z - wf.unsqueeze(-1))).sum(dim=-2)  # (..., L)


def _split_rows(v: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """Reshape to numerator rows sharing poles: v (R, M, N2), w (M, N2), and the output batch shape."""
    batch = torch.broadcast_shapes(v.shape[:-1], w.shape[:-1])
    n2 = v.shape[-1]
    wb = tuple(w.shape[:-1])
    while wb and wb[0] == 1:
        wb = wb[1:]
    k = len(wb)
    if k == 0 or batch[len(batch) - k:] == wb:
        v3 = v.expand(*batch, n2).reshape(-1, max(1, _prod(wb)), n2)
        return v3, w.reshape(-1, n2)[: max(1, _prod(wb))], batch
    return v.expand(*batch, n2).reshape(1, -1, n2), w.expand(*batch, n2).reshape(-1, n2), batch


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def _cauchy_torch(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Real-arithmetic reciprocals shared by all numerator rows, contracted with one batched GEMM.

    For each chunk of nodes, G[m, n, l] = 1 / (z[l] - w_full[m, n]) is formed once in real
    arithmetic (conj(d) / |d|^2) over the full N = 2 * N/2 poles and then multiplied by every
    numerator row at once: out[r, m, l] = sum_n v_full[r, m, n] G[m, n, l]. Temporaries are
    O(M * N * chunk), never (R, M, N, L).
    """
    v3, w2, batch = _split_rows(v, w)  # (R, M, N2), (M, N2)
    R, M, _ = v3.shape
    vf = torch.cat([v3, v3.conj()], dim=-1)  # (R, M, N)
    wf = torch.cat([w2, w2.conj()], dim=-1)  # (M, N)
    n = wf.shape[-1]
    # real form of the complex product: [out_r; out_i] = [[vr, -vi], [vi, vr]] @ [G_r; G_i]
    vb = torch.cat(
        [torch.cat([vf.real, -vf.imag], dim=-1), torch.cat([vf.imag, vf.real], dim=-1)], dim=0
    ).transpose(0, 1)  # (M, 2R, 2N)
    wr = wf.real.unsqueeze(-1)  # (M, N, 1)
    wi = wf.imag.unsqueeze(-1)
    L = z.shape[0]
    out = torch.empty(M, 2 * R, L, dtype=vb.dtype, device=v.device)
    step = chunk_size(M, n, budget=1 << 19)
    for s in range(0, L, step):
        zc = z[s : s + step]
        dr = zc.real - wr  # (M, N, Lc)
        di = zc.imag - wi
        inv = torch.addcmul(dr * dr, di, di).reciprocal_()
        g = torch.cat([dr * inv, -(di * inv)], dim=1)  # (M, 2N, Lc)
        out[:, :, s : s + step] = torch.bmm(vb, g)
    out = out.view(M, 2, R, L)
    res = torch.complex(out[:, 0], out[:, 1]).transpose(0, 1)  # (R, M, L)
    return res.reshape(*batch, L)


class CauchyFn(torch.autograd.Function):
    """Autograd wrapper for the Triton Cauchy kernel (forward and backward are both kernels)."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        from sashimi.kernels.triton import cauchy_fwd

        ctx.save_for_backward(v, z, w)
        return cauchy_fwd(v, z, w)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        from sashimi.kernels.triton import cauchy_bwd

        v, z, w = ctx.saved_tensors
        dv, dw = cauchy_bwd(v, z, w, grad)
        return dv, None, dw


def cauchy(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """Cauchy product over conjugate pairs.

    ``out[..., l] = sum_n v[..., n] / (z[l] - w[..., n]) + conj(v[..., n]) / (z[l] - conj(w[..., n]))``

    This is the reference's conjugate-pair convention: ``v`` and ``w`` hold one member of each
    conjugate pair (the N/2 stored modes of an N-dimensional system whose other half is the
    complex conjugate), and the sum runs over the full system. Note that the result is complex
    in general (``z`` need not be real).

    Args:
        v: (..., N/2) complex64 or complex128 numerators.
        z: (L,) nodes, same dtype.
        w: (..., N/2) poles, same dtype; leading dims broadcast against ``v``'s, so a batch of
            numerator rows can share one set of poles, e.g. v (R, H, N/2) with w (H, N/2).
        backend: ``'torch'`` (chunked, O(batch * (N + L)) memory), ``'triton'`` or ``'ref'``
            (dense spec); default per call from the device (see :func:`available_backends`).

    Returns:
        (broadcast(...), L) complex tensor.
    """
    _validate(v, z, w)
    which = resolve_backend(backend, v)
    if which == "ref":
        return cauchy_ref(v, z, w)
    if which == "triton":
        batch = torch.broadcast_shapes(v.shape[:-1], w.shape[:-1])
        return CauchyFn.apply(v.expand(*batch, v.shape[-1]), z, w.expand(*batch, w.shape[-1]))
    return _cauchy_torch(v, z, w)
