"""Cauchy matrix-vector product with conjugate pairs, the core of the DPLR (S4) kernel."""

from __future__ import annotations

import torch

from sashimi.kernels._backend import resolve_backend
from sashimi.kernels._checks import check_tensor, chunk_size

__all__ = ["CauchyFn", "cauchy", "cauchy_ref"]


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


class _CauchyImagFn(torch.autograd.Function):
    """Cauchy sum over conjugate pairs at purely imaginary nodes ``z = i y``, pair by pair.

    For ``z = i y`` and a pole pair ``w = a + i b``, ``conj(w)`` the two terms combine into one
    fraction with a real numerator pattern::

        v / (i y - w) + conj(v) / (i y - conj(w)) = (alpha + i y beta) / D,
        alpha = -2 Re(v conj(w)),  beta = 2 Re(v),  D = (|w|^2 - y^2) - 2 i a y,

    so the reciprocals ``1 / D`` (shared by all numerator rows) are needed over the N/2 stored poles
    only (half the work of the general path, which forms ``1 / (z - w)`` for all N poles), and the
    contraction is one real batched GEMM of the (alpha, beta) rows with ``[Re 1/D, -Im 1/D]``. Forward and backward
    loop over node chunks without recording autograd (no saved (M, N/2, L) temporaries: the backward recomputes the
    reciprocals chunk by chunk).

    Shapes: v (R, M, N2) complex, y (L,) real, w (M, N2) complex -> (R, M, L) complex.
    """

    @staticmethod
    def _coefficients(v: torch.Tensor, w: torch.Tensor):
        vr, vi, wr, wi = v.real, v.imag, w.real, w.imag
        alpha = -2 * (vr * wr + vi * wi)  # (R, M, N2)
        beta = 2 * vr
        pole = torch.stack([wr * wr, wi.abs(), -2 * wr], dim=0).unsqueeze(-1)  # (3, M, N2, 1): a^2, |b|, -2a
        return alpha, beta, pole

    @staticmethod
    def _reciprocals(pole, yc, G, buf):
        """G[..., :Lc] = Re(1/D), G[..., Lc:] = -Im(1/D) = Im(D) / |D|^2 (note the sign).

        ``Re D = a^2 + (|b| - |y|)(|b| + |y|)``: the near-pole difference is formed directly (exact
        for close values), not as the difference of the rounded squares ``|w|^2`` and ``y^2``.
        """
        Lc = yc.shape[0]
        a_sq, b_abs, a_m2 = pole
        y_abs = yc.abs()
        q, p, t = buf[0], buf[1], buf[2]
        torch.sub(b_abs, y_abs, out=t)
        torch.add(b_abs, y_abs, out=p)
        torch.addcmul(a_sq, t, p, out=q)  # Re D
        torch.mul(a_m2, yc, out=p)  # Im D = -2 a y
        inv = torch.mul(q, q, out=G[..., Lc:])
        inv.addcmul_(p, p).reciprocal_()  # 1 / |D|^2
        torch.mul(q, inv, out=G[..., :Lc])
        inv.mul_(p)  # Im D / |D|^2 = -Im(1/D)
        return G

    @staticmethod
    def _chunks(L: int, M: int, n2: int):
        """(start, length, fresh) of the chunks of the L nodes; ``fresh``: the chunk length differs from
        the previous one's (first or last chunk), so the work buffers must be (re)allocated."""
        step = min(L, chunk_size(M, n2, budget=1 << 18))
        for st in range(0, L, step):
            Lc = min(step, L - st)
            yield st, Lc, st == 0 or Lc != step

    @staticmethod
    def _buffers(M: int, n2: int, Lc: int, dtype: torch.dtype, device: torch.device):
        """The work buffers of :meth:`_reciprocals` for a chunk of Lc nodes: (scratch, G)."""
        return (torch.empty(3, M, n2, Lc, dtype=dtype, device=device),
                torch.empty(M, n2, 2 * Lc, dtype=dtype, device=device))

    @staticmethod
    def forward(ctx, v: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        R, M, n2 = v.shape
        L = y.shape[0]
        alpha, beta, pole = _CauchyImagFn._coefficients(v, w)
        coef = torch.cat([alpha, beta], dim=0).transpose(0, 1).contiguous()  # (M, 2R, N2)
        rd = alpha.dtype
        out_r = torch.empty(M, R, L, dtype=rd, device=v.device)
        out_i = torch.empty(M, R, L, dtype=rd, device=v.device)
        for st, Lc, fresh in _CauchyImagFn._chunks(L, M, n2):
            if fresh:
                buf, G = _CauchyImagFn._buffers(M, n2, Lc, rd, v.device)
                res = torch.empty(M, 2 * R, 2 * Lc, dtype=rd, device=v.device)
            yc = y[st : st + Lc]
            _CauchyImagFn._reciprocals(pole, yc, G, buf)
            torch.bmm(coef, G, out=res)  # rows: alpha | beta; columns: Re(1/D) | -Im(1/D)
            ar, am = res[:, :R, :Lc], res[:, :R, Lc:]  # sum alpha Re(1/D), -sum alpha Im(1/D)
            br, bm = res[:, R:, :Lc], res[:, R:, Lc:]
            # out = sum_n (alpha + i y beta) / D = (ar + y bm) + i (y br - am)
            torch.addcmul(ar, bm, yc, out=out_r[..., st : st + Lc])
            torch.mul(br, yc, out=out_i[..., st : st + Lc]).sub_(am)
        ctx.save_for_backward(v, y, w)
        return torch.complex(out_r, out_i).transpose(0, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        """Real parameters: alpha, beta (per row), s = |w|^2 and a = Re w (per pole); with
        ``E = 1 / D^2`` (``dD/ds = 1``, ``dD/da = -2 i y``) and ``gc = conj(grad)``::

            dL/dalpha = sum_l Re(gc / D)           dL/dbeta = sum_l Re(i y gc / D)
            dL/ds = -sum_l Re(T E)                 dL/da = -2 sum_l y Im(T E),
            T = sum_r gc_r (alpha_r + i y beta_r).

        Every sum over l is a batched GEMM of l-weighted gradient rows with ``[Re, Im]`` of 1/D or
        E, so no (M, N/2, L) product with the gradient is formed.
        """
        v, y, w = ctx.saved_tensors
        R, M, n2 = v.shape
        L = y.shape[0]
        alpha, beta, pole = _CauchyImagFn._coefficients(v, w)
        rd = alpha.dtype
        grad = grad.resolve_conj()
        gr, gi = grad.real.transpose(0, 1), grad.imag.transpose(0, 1)  # (M, R, L)
        d_ab = torch.zeros(M, 2 * R, n2, dtype=rd, device=v.device)  # sums against 1/D
        d_e = torch.zeros(M, 3 * R, n2, dtype=rd, device=v.device)  # sums against E
        for st, Lc, fresh in _CauchyImagFn._chunks(L, M, n2):
            if fresh:
                buf, G = _CauchyImagFn._buffers(M, n2, Lc, rd, v.device)
                E = torch.empty(M, n2, 2 * Lc, dtype=rd, device=v.device)
            yc = y[st : st + Lc]
            _CauchyImagFn._reciprocals(pole, yc, G, buf)
            Gr, Gm = G[..., :Lc], G[..., Lc:]  # Re(1/D), -Im(1/D)
            # E = 1/D^2 = (Gr - i Gm)^2: Re = Gr^2 - Gm^2, Im = -2 Gr Gm
            Er, Ei = E[..., :Lc], E[..., Lc:]
            torch.mul(Gr, Gm, out=Ei).mul_(-2)
            torch.mul(Gr, Gr, out=Er).addcmul_(Gm, Gm, value=-1)
            a, b = gr[..., st : st + Lc], gi[..., st : st + Lc]  # (M, R, Lc)
            ya, yb = a * yc, b * yc
            # Re(gc/D) = a Gr - b Gm; Re(i y gc/D) = y (b Gr + a Gm)
            d_ab.baddbmm_(torch.cat([torch.cat([a, -b], -1), torch.cat([yb, ya], -1)], 1), G.transpose(1, 2))
            # X1 = sum Re(gc E) = a Er + b Ei; X2 = sum y Im(gc E) = y (a Ei - b Er); X3 = sum y^2 Re(gc E)
            rows = torch.cat([torch.cat([a, b], -1), torch.cat([-yb, ya], -1), torch.cat([ya * yc, yb * yc], -1)], 1)
            d_e.baddbmm_(rows, E.transpose(1, 2))
        d_alpha = d_ab[:, :R].transpose(0, 1)  # (R, M, N2)
        d_beta = d_ab[:, R:].transpose(0, 1)
        X1, X2, X3 = (d_e[:, i * R : (i + 1) * R].transpose(0, 1) for i in range(3))
        # Re(T E) = alpha X1 - beta X2;  y Im(T E) = alpha X2 + beta X3  (summed over rows)
        ds = -(alpha * X1 - beta * X2).sum(0)
        da = -2 * (alpha * X2 + beta * X3).sum(0)
        vr, vi, wr, wi = v.real, v.imag, w.real, w.imag
        dv = torch.complex(-2 * d_alpha * wr + 2 * d_beta, -2 * d_alpha * wi)
        dwr = (-2 * d_alpha * vr).sum(0) + 2 * ds * wr + da
        dwi = (-2 * d_alpha * vi).sum(0) + 2 * ds * wi
        return dv, None, torch.complex(dwr, dwi)


def _cauchy_torch(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Real-arithmetic reciprocals shared by all numerator rows, contracted with one batched GEMM.

    For each chunk of nodes, G[m, n, l] = 1 / (z[l] - w_full[m, n]) is formed once in real
    arithmetic (conj(d) / |d|^2) over the full N = 2 * N/2 poles and then multiplied by every
    numerator row at once: out[r, m, l] = sum_n v_full[r, m, n] G[m, n, l]. Temporaries are
    O(M * N * chunk), never (R, M, N, L).
    """
    v3, w2, batch = _split_rows(v, w)  # (R, M, N2), (M, N2)
    if not z.requires_grad and bool((z.real == 0).all()):  # the DPLR kernel's nodes: pair by pair
        res = _CauchyImagFn.apply(v3, z.imag.contiguous(), w2)  # (R, M, L)
        return res.reshape(*batch, z.shape[0])
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
