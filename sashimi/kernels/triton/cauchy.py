"""Triton Cauchy kernels (conjugate-pair convention), forward and backward.

Notation (per pole n and node l): ``g1 = 1 / (z_l - w_n)``, ``g2 = 1 / (z_l - conj(w_n))``.

* forward: ``out[r, m, l] = sum_n v[r, m, n] g1 + conj(v[r, m, n]) g2``
* backward (PyTorch's conjugate-Wirtinger convention, ``G`` the incoming gradient):
  ``dv[r, m, n] = sum_l G[r, m, l] conj(g1) + conj(G[r, m, l]) g2`` and
  ``dw[r, m, n] = conj(v[r, m, n]) * sum_l (G conj(g1)^2 + conj(G) g2^2)`` (per row; rows that share
  poles are summed by autograd / :func:`cauchy_bwd`).

Complex numbers are carried as (real, imag) float pairs. One program owns one pole set ``m``, a
block of nodes (forward) or poles (backward) and a block of numerator rows: the reciprocals
``g1, g2`` of a (poles x nodes) tile are formed once in registers and contracted with every row
of the block, so the rows that share poles (the (c + r)(1 + r) numerators of the DPLR kernel)
never recompute them. Nothing of size N x L touches global memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sashimi.kernels.triton._common import Rows, as_real, finish, next_pow2, output_rows, reduce_to
from sashimi.kernels.triton._common import kahan_add as _kahan

__all__ = ["cauchy_bwd", "cauchy_fwd"]


@triton.jit
def _reciprocals(zr, zi, wr, wi, valid):
    """The four combinations of g1 = 1/(z - w), g2 = 1/(z - conj w) that the products need, on a (N, L) tile.

    Returns (g1r + g2r, g2i - g1i, g1i + g2i, g1r - g2r, g1r, g1i, g2r, g2i). Where ``valid`` is
    false (padding) the values are finite garbage: the caller's masked loads put zeros against them.
    """
    dr = zr[None, :] - wr[:, None]
    d1i = zi[None, :] - wi[:, None]
    d2i = zi[None, :] + wi[:, None]
    dr = tl.where(valid, dr, 0.0)
    d1i = tl.where(valid, d1i, 1.0)  # padding: finite reciprocals that get multiplied by zeros
    d2i = tl.where(valid, d2i, 1.0)
    dr2 = dr * dr
    inv1 = 1.0 / (dr2 + d1i * d1i)
    inv2 = 1.0 / (dr2 + d2i * d2i)
    g1r = dr * inv1
    g1i = -d1i * inv1
    g2r = dr * inv2
    g2i = -d2i * inv2
    return g1r + g2r, g2i - g1i, g1i + g2i, g1r - g2r, g1r, g1i, g2r, g2i


@triton.jit
def _cauchy_fwd_kernel(
    v_ptr, w_ptr, z_ptr, out_ptr,
    R, N2, L,
    s_vr, s_vm, s_vn,
    s_wm, s_wn,
    s_zl,
    s_or, s_om, s_ol,
    BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):
    pid_m = tl.program_id(0).to(tl.int64)
    pid_l = tl.program_id(1)
    pid_r = tl.program_id(2)
    offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_l = offs_l < L
    offs_r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    mask_r = offs_r < R
    offs_r64 = offs_r.to(tl.int64)

    zr = tl.load(z_ptr + offs_l * s_zl, mask=mask_l, other=0.0)
    zi = tl.load(z_ptr + offs_l * s_zl + 1, mask=mask_l, other=0.0)
    acc_r = tl.zeros((BLOCK_R, BLOCK_L), dtype=zr.dtype)
    acc_i = tl.zeros((BLOCK_R, BLOCK_L), dtype=zr.dtype)
    w_row = w_ptr + pid_m * s_wm
    v_rows = v_ptr + pid_m * s_vm + offs_r64[:, None] * s_vr
    for n0 in range(0, N2, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N2
        wr = tl.load(w_row + offs_n * s_wn, mask=mask_n, other=0.0)
        wi = tl.load(w_row + offs_n * s_wn + 1, mask=mask_n, other=0.0)
        valid = mask_n[:, None] & mask_l[None, :]
        p, q, s, d, _g1r, _g1i, _g2r, _g2i = _reciprocals(zr, zi, wr, wi, valid)
        vmask = mask_r[:, None] & mask_n[None, :]
        a = tl.load(v_rows + offs_n[None, :] * s_vn, mask=vmask, other=0.0)  # (R, N)
        b = tl.load(v_rows + offs_n[None, :] * s_vn + 1, mask=vmask, other=0.0)
        # v g1 + conj(v) g2 = (a p + b q) + i (a s + b d)
        acc_r += tl.sum(a[:, :, None] * p[None, :, :] + b[:, :, None] * q[None, :, :], axis=1)
        acc_i += tl.sum(a[:, :, None] * s[None, :, :] + b[:, :, None] * d[None, :, :], axis=1)

    o = out_ptr + pid_m * s_om + offs_r64[:, None] * s_or + offs_l[None, :] * s_ol
    omask = mask_r[:, None] & mask_l[None, :]
    tl.store(o, acc_r, mask=omask)
    tl.store(o + 1, acc_i, mask=omask)


@triton.jit
def _cauchy_bwd_kernel(
    v_ptr, w_ptr, z_ptr, g_ptr, dv_ptr, dw_ptr,
    R, N2, L,
    s_vr, s_vm, s_vn,
    s_wm, s_wn,
    s_zl,
    s_gr, s_gm, s_gl,
    s_dr, s_dm, s_dn,
    s_er, s_em, s_en,
    BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):
    pid_m = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    pid_r = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N2
    offs_r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    mask_r = offs_r < R
    offs_r64 = offs_r.to(tl.int64)

    w_row = w_ptr + pid_m * s_wm
    wr = tl.load(w_row + offs_n * s_wn, mask=mask_n, other=0.0)
    wi = tl.load(w_row + offs_n * s_wn + 1, mask=mask_n, other=0.0)
    # sums over l of G conj(g1) + conj(G) g2 (for dv) and of G conj(g1)^2 + conj(G) g2^2 (for dw)
    sv_r = tl.zeros((BLOCK_R, BLOCK_N), dtype=wr.dtype)
    sv_i = tl.zeros((BLOCK_R, BLOCK_N), dtype=wr.dtype)
    sw_r = tl.zeros((BLOCK_R, BLOCK_N), dtype=wr.dtype)
    sw_i = tl.zeros((BLOCK_R, BLOCK_N), dtype=wr.dtype)
    # Kahan compensation of the sums over L (up to L / BLOCK_L tiles)
    cv_r = tl.zeros((BLOCK_R, BLOCK_N), dtype=wr.dtype)
    cv_i = tl.zeros((BLOCK_R, BLOCK_N), dtype=wr.dtype)
    cw_r = tl.zeros((BLOCK_R, BLOCK_N), dtype=wr.dtype)
    cw_i = tl.zeros((BLOCK_R, BLOCK_N), dtype=wr.dtype)
    g_rows = g_ptr + pid_m * s_gm + offs_r64[:, None] * s_gr
    for l0 in range(0, L, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        mask_l = offs_l < L
        zr = tl.load(z_ptr + offs_l * s_zl, mask=mask_l, other=0.0)
        zi = tl.load(z_ptr + offs_l * s_zl + 1, mask=mask_l, other=0.0)
        valid = mask_n[:, None] & mask_l[None, :]
        p, q, s, d, g1r, g1i, g2r, g2i = _reciprocals(zr, zi, wr, wi, valid)
        # squares h1 = g1^2, h2 = g2^2 in the same four combinations
        h1r = g1r * g1r - g1i * g1i
        h1i = 2.0 * g1r * g1i
        h2r = g2r * g2r - g2i * g2i
        h2i = 2.0 * g2r * g2i
        hp = h1r + h2r
        hq = h2i - h1i
        hs = h1i + h2i
        hd = h1r - h2r
        gmask = mask_r[:, None] & mask_l[None, :]
        gp = tl.load(g_rows + offs_l[None, :] * s_gl, mask=gmask, other=0.0)  # (R, L) real part of G
        gq = tl.load(g_rows + offs_l[None, :] * s_gl + 1, mask=gmask, other=0.0)  # imag part
        # G conj(g1) + conj(G) g2 = (gp p + gq s) + i (gp q + gq d)
        gp3 = gp[:, None, :]
        gq3 = gq[:, None, :]
        sv_r, cv_r = _kahan(sv_r, cv_r, tl.sum(gp3 * p[None, :, :] + gq3 * s[None, :, :], axis=2))
        sv_i, cv_i = _kahan(sv_i, cv_i, tl.sum(gp3 * q[None, :, :] + gq3 * d[None, :, :], axis=2))
        sw_r, cw_r = _kahan(sw_r, cw_r, tl.sum(gp3 * hp[None, :, :] + gq3 * hs[None, :, :], axis=2))
        sw_i, cw_i = _kahan(sw_i, cw_i, tl.sum(gp3 * hq[None, :, :] + gq3 * hd[None, :, :], axis=2))

    vmask = mask_r[:, None] & mask_n[None, :]
    v_rows = v_ptr + pid_m * s_vm + offs_r64[:, None] * s_vr + offs_n[None, :] * s_vn
    a = tl.load(v_rows, mask=vmask, other=0.0)
    b = tl.load(v_rows + 1, mask=vmask, other=0.0)
    o = dv_ptr + pid_m * s_dm + offs_r64[:, None] * s_dr + offs_n[None, :] * s_dn
    tl.store(o, sv_r, mask=vmask)
    tl.store(o + 1, sv_i, mask=vmask)
    # dw = conj(v) * Sw = (a Swr + b Swi) + i (a Swi - b Swr)
    o = dw_ptr + pid_m * s_em + offs_r64[:, None] * s_er + offs_n[None, :] * s_en
    tl.store(o, a * sw_r + b * sw_i, mask=vmask)
    tl.store(o + 1, a * sw_i - b * sw_r, mask=vmask)


def _blocks(R: int, N2: int, L: int, dtype: torch.dtype, along_l: bool) -> tuple[int, int, int]:
    """Tile sizes: the (rows x poles x nodes) register tile stays near 4096 elements (2048 in float64)."""
    budget = 4096 if dtype == torch.float32 else 2048
    block_n = min(next_pow2(N2), 16)
    block_l = min(next_pow2(L), 64 if along_l else 32)
    block_r = max(1, min(next_pow2(R), budget // (block_n * block_l)))
    return block_r, block_n, block_l


def _prepare(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor):
    if not (v.is_complex() and z.is_complex() and w.is_complex()):
        raise TypeError("cauchy kernels take complex v, z and w")
    if not (v.dtype == z.dtype == w.dtype):
        raise TypeError(f"v, z and w must share one complex dtype, got {v.dtype}, {z.dtype}, {w.dtype}")
    if z.ndim != 1:
        raise ValueError(f"z must have shape (L,), got {tuple(z.shape)}")
    if v.shape[-1] != w.shape[-1]:
        raise ValueError(f"v and w must share the last dimension N/2, got {tuple(v.shape)} and {tuple(w.shape)}")
    batch = tuple(torch.broadcast_shapes(v.shape[:-1], w.shape[:-1]))
    n2 = v.shape[-1]
    ve = v.expand(*batch, n2)
    we = w.expand(*batch, n2)
    rows = Rows(batch, we)
    v3 = as_real(rows.rows(ve))  # (R, M, N2, 2)
    w2 = as_real(rows.shared(we))  # (M, N2, 2)
    zr = as_real(z)  # (L, 2)
    return batch, rows, v3, w2, zr


def cauchy_fwd(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """``out[..., l] = sum_n v[..., n] / (z[l] - w[..., n]) + conj(v[..., n]) / (z[l] - conj(w[..., n]))``.

    Args:
        v: (..., N/2) complex numerators. z: (L,) complex nodes. w: (..., N/2) complex poles whose
            leading dims broadcast with v's; batch dims along which w is broadcast (stride 0, e.g.
            ``w.expand``) become rows that share the poles' reciprocals inside one program.
        out: optional (broadcast(...), L) complex buffer to write into.

    Returns:
        (broadcast(...), L) complex, v's dtype.
    """
    batch, rows, v3, w2, zr = _prepare(v, z, w)
    L = z.shape[0]
    n2 = v.shape[-1]
    buf = output_rows(rows, out, (*batch, L), v.dtype, v.device)
    if rows.R * rows.M == 0:
        return finish(rows, buf, out)
    o = as_real(buf)
    br, bn, bl = _blocks(rows.R, n2, L, v3.dtype, along_l=True)
    grid = (rows.M, triton.cdiv(L, bl), triton.cdiv(rows.R, br))
    _cauchy_fwd_kernel[grid](
        v3, w2, zr, o,
        rows.R, n2, L,
        v3.stride(0), v3.stride(1), v3.stride(2),
        w2.stride(0), w2.stride(1),
        zr.stride(0),
        o.stride(0), o.stride(1), o.stride(2),
        BLOCK_R=br, BLOCK_N=bn, BLOCK_L=bl,
    )
    return finish(rows, buf, out)


def cauchy_bwd(
    v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, grad: torch.Tensor,
    *, out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of :func:`cauchy_fwd` w.r.t. v and w for the incoming gradient ``grad`` (PyTorch convention).

    Returns ``(dv, dw)`` shaped like ``v`` and ``w`` (summed over broadcast dims; when they are
    passed already expanded to the broadcast shape, as :class:`sashimi.kernels.CauchyFn` does, the
    per-row gradients are returned and autograd sums them). ``out`` optionally gives (dv, dw)
    buffers of the broadcast shape (..., N/2) for the kernel to write.
    """
    batch, rows, v3, w2, zr = _prepare(v, z, w)
    L = z.shape[0]
    n2 = v.shape[-1]
    grad = grad.to(v.dtype).expand(*batch, L)
    g3 = as_real(rows.rows(grad))  # (R, M, L, 2)
    shape = (*batch, n2)
    dv_out, dw_out = out if out is not None else (None, None)
    dv = output_rows(rows, dv_out, shape, v.dtype, v.device)
    dw = output_rows(rows, dw_out, shape, v.dtype, v.device)
    if rows.R * rows.M > 0:
        dvr, dwr = as_real(dv), as_real(dw)
        br, bn, bl = _blocks(rows.R, n2, L, v3.dtype, along_l=False)
        grid = (rows.M, triton.cdiv(n2, bn), triton.cdiv(rows.R, br))
        _cauchy_bwd_kernel[grid](
            v3, w2, zr, g3, dvr, dwr,
            rows.R, n2, L,
            v3.stride(0), v3.stride(1), v3.stride(2),
            w2.stride(0), w2.stride(1),
            zr.stride(0),
            g3.stride(0), g3.stride(1), g3.stride(2),
            dvr.stride(0), dvr.stride(1), dvr.stride(2),
            dwr.stride(0), dwr.stride(1), dwr.stride(2),
            BLOCK_R=br, BLOCK_N=bn, BLOCK_L=bl,
        )
    dv = finish(rows, dv, dv_out)
    dw = finish(rows, dw, dw_out)
    if out is not None:
        return dv, dw
    return reduce_to(dv, v.shape), reduce_to(dw, w.shape)
