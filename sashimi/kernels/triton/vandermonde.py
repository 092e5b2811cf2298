"""Triton log-Vandermonde kernels: ``2 Re sum_n v_n exp(x_n l)``, its transpose, and their gradients.

Phase accuracy at long L uses a two-level exponent ``z^(cT + j) = z^(cT) z^j`` with ``z = exp(x)``:

* ``z^j`` for ``j < T`` (T = the kernels' tile length along L, at most 64) is a small table
  evaluated on the host in float64 and cast to the working precision, O(N T) per pole set;
* ``z^(cT) = exp(x cT)`` is evaluated inside the kernel in float64 (x is passed as float64) once
  per (pole, tile) and then cast, so no float32 product ``x * l`` with a large ``l`` ever occurs.

The O(N L) products then run in the working precision (v's, or u's). As in the Cauchy kernels,
batch rows that share the nodes ``x`` (e.g. the channels of an S4D kernel) are handled by one
program per node set so the node powers are formed once for all of them.

Kernels:

* ``_vand_fwd_kernel``: ``s[r, m, l] = sum_n v[r, m, n] z[m, n]^l``, stored as ``2 Re s`` or as
  complex ``s``.
* ``_vand_t_kernel``: ``S0[r, m, n] = sum_l u[r, m, l] z[m, n]^l`` and
  ``S1[r, m, n] = sum_l u[r, m, l] l z[m, n]^l`` (u real or complex).

Gradients (PyTorch convention, ``G`` the incoming gradient):

* vandermonde: ``dv = 2 conj(S0(G))``, ``dx = 2 conj(v S1(G))``;
* transpose: ``du = conj(sum_n conj(G_n) z_n^l)`` (its real part for real u), ``dx = G conj(S1(u))``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sashimi.kernels.triton import _common
from sashimi.kernels.triton._common import (
    Rows,
    as_real,
    complex_of,
    finish,
    next_pow2,
    output_rows,
    reduce_to,
    work_real_dtype,
)
from sashimi.kernels.triton._common import kahan_add as _kahan

__all__ = ["vandermonde_bwd", "vandermonde_fwd", "vandermonde_transpose_bwd", "vandermonde_transpose_fwd"]


@triton.jit
def _node_power(x_row, offs_n, s_xn, mask_n, l0, out_ty: tl.constexpr):
    """z^l0 = exp(x l0) for a block of poles, evaluated in float64 (x is float64), cast to ``out_ty``."""
    xr = tl.load(x_row + offs_n * s_xn, mask=mask_n, other=0.0)
    xi = tl.load(x_row + offs_n * s_xn + 1, mask=mask_n, other=0.0)
    l0f = tl.cast(l0, tl.float64)
    mag = tl.exp(xr * l0f)
    ang = xi * l0f
    return (mag * tl.cos(ang)).to(out_ty), (mag * tl.sin(ang)).to(out_ty)


@triton.jit
def _vand_fwd_kernel(
    v_ptr, x_ptr, zj_ptr, out_ptr,
    R, N2, L,
    s_vr, s_vm, s_vn,
    s_xm, s_xn,
    s_jm, s_jn, s_jj,
    s_or, s_om, s_ol,
    COMPLEX_OUT: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, T: tl.constexpr,
):
    pid_m = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(1)
    pid_r = tl.program_id(2)
    offs_j = tl.arange(0, T)
    l0 = pid_c * T
    offs_l = l0 + offs_j
    mask_l = offs_l < L
    offs_r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    mask_r = offs_r < R
    offs_r64 = offs_r.to(tl.int64)
    ty = v_ptr.dtype.element_ty

    acc_r = tl.zeros((BLOCK_R, T), dtype=ty)
    acc_i = tl.zeros((BLOCK_R, T), dtype=ty)
    x_row = x_ptr + pid_m * s_xm
    v_rows = v_ptr + pid_m * s_vm + offs_r64[:, None] * s_vr
    zj_row = zj_ptr + pid_m * s_jm
    for n0 in range(0, N2, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N2
        cr, ci = _node_power(x_row, offs_n, s_xn, mask_n, l0, ty)
        vmask = mask_r[:, None] & mask_n[None, :]
        a = tl.load(v_rows + offs_n[None, :] * s_vn, mask=vmask, other=0.0)
        b = tl.load(v_rows + offs_n[None, :] * s_vn + 1, mask=vmask, other=0.0)
        # v z^l0, per row and pole
        ar = a * cr[None, :] - b * ci[None, :]
        ai = a * ci[None, :] + b * cr[None, :]
        jp = zj_row + offs_n[:, None] * s_jn + offs_j[None, :] * s_jj
        jmask = mask_n[:, None] & (offs_j[None, :] < T)
        zr = tl.load(jp, mask=jmask, other=0.0)  # (N, T)
        zi = tl.load(jp + 1, mask=jmask, other=0.0)
        acc_r += tl.sum(ar[:, :, None] * zr[None, :, :] - ai[:, :, None] * zi[None, :, :], axis=1)
        if COMPLEX_OUT:
            acc_i += tl.sum(ar[:, :, None] * zi[None, :, :] + ai[:, :, None] * zr[None, :, :], axis=1)

    o = out_ptr + pid_m * s_om + offs_r64[:, None] * s_or + offs_l[None, :] * s_ol
    omask = mask_r[:, None] & mask_l[None, :]
    if COMPLEX_OUT:
        tl.store(o, acc_r, mask=omask)
        tl.store(o + 1, acc_i, mask=omask)
    else:
        tl.store(o, 2.0 * acc_r, mask=omask)


@triton.jit
def _vand_t_kernel(
    u_ptr, x_ptr, zj_ptr, s0_ptr, s1_ptr,
    R, N2, L,
    s_ur, s_um, s_ul,
    s_xm, s_xn,
    s_jm, s_jn, s_jj,
    s_or, s_om, s_on,
    s_pr, s_pm, s_pn,
    U_COMPLEX: tl.constexpr, WITH_S0: tl.constexpr, WITH_S1: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, T: tl.constexpr,
):
    pid_m = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    pid_r = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N2
    offs_r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    mask_r = offs_r < R
    offs_r64 = offs_r.to(tl.int64)
    offs_j = tl.arange(0, T)
    ty = zj_ptr.dtype.element_ty

    jp = zj_ptr + pid_m * s_jm + offs_n[:, None] * s_jn + offs_j[None, :] * s_jj
    jmask = mask_n[:, None] & (offs_j[None, :] < T)
    zr = tl.load(jp, mask=jmask, other=0.0)[None, :, :]  # (1, N, T): z^j
    zi = tl.load(jp + 1, mask=jmask, other=0.0)[None, :, :]
    x_row = x_ptr + pid_m * s_xm
    a0r = tl.zeros((BLOCK_R, BLOCK_N), dtype=ty)
    a0i = tl.zeros((BLOCK_R, BLOCK_N), dtype=ty)
    a1r = tl.zeros((BLOCK_R, BLOCK_N), dtype=ty)
    a1i = tl.zeros((BLOCK_R, BLOCK_N), dtype=ty)
    # compensation terms: the sums over L run over up to L / T tiles (4096 at L = 256k)
    c0r = tl.zeros((BLOCK_R, BLOCK_N), dtype=ty)
    c0i = tl.zeros((BLOCK_R, BLOCK_N), dtype=ty)
    c1r = tl.zeros((BLOCK_R, BLOCK_N), dtype=ty)
    c1i = tl.zeros((BLOCK_R, BLOCK_N), dtype=ty)
    u_rows = u_ptr + pid_m * s_um + offs_r64[:, None] * s_ur
    for l0 in range(0, L, T):
        offs_l = l0 + offs_j
        mask_l = offs_l < L
        umask = mask_r[:, None] & mask_l[None, :]
        cr, ci = _node_power(x_row, offs_n, s_xn, mask_n, l0, ty)
        cr = cr[None, :]
        ci = ci[None, :]
        ur = tl.load(u_rows + offs_l[None, :] * s_ul, mask=umask, other=0.0)  # (R, T)
        if U_COMPLEX:
            ui = tl.load(u_rows + offs_l[None, :] * s_ul + 1, mask=umask, other=0.0)
        if WITH_S0:
            # sum_j u[l0 + j] z^j, then times z^l0
            if U_COMPLEX:
                pr = tl.sum(ur[:, None, :] * zr - ui[:, None, :] * zi, axis=2)
                pi = tl.sum(ur[:, None, :] * zi + ui[:, None, :] * zr, axis=2)
            else:
                pr = tl.sum(ur[:, None, :] * zr, axis=2)
                pi = tl.sum(ur[:, None, :] * zi, axis=2)
            a0r, c0r = _kahan(a0r, c0r, pr * cr - pi * ci)
            a0i, c0i = _kahan(a0i, c0i, pr * ci + pi * cr)
        if WITH_S1:
            lf = offs_l.to(ty)[None, :]
            wr = ur * lf
            if U_COMPLEX:
                wi = ui * lf
                qr = tl.sum(wr[:, None, :] * zr - wi[:, None, :] * zi, axis=2)
                qi = tl.sum(wr[:, None, :] * zi + wi[:, None, :] * zr, axis=2)
            else:
                qr = tl.sum(wr[:, None, :] * zr, axis=2)
                qi = tl.sum(wr[:, None, :] * zi, axis=2)
            a1r, c1r = _kahan(a1r, c1r, qr * cr - qi * ci)
            a1i, c1i = _kahan(a1i, c1i, qr * ci + qi * cr)

    omask = mask_r[:, None] & mask_n[None, :]
    if WITH_S0:
        o = s0_ptr + pid_m * s_om + offs_r64[:, None] * s_or + offs_n[None, :] * s_on
        tl.store(o, a0r, mask=omask)
        tl.store(o + 1, a0i, mask=omask)
    if WITH_S1:
        o = s1_ptr + pid_m * s_pm + offs_r64[:, None] * s_pr + offs_n[None, :] * s_pn
        tl.store(o, a1r, mask=omask)
        tl.store(o + 1, a1i, mask=omask)


# ----------------------------------------------------------------------------------------------
# launchers


def _tile(L: int) -> int:
    """The tile length T along L (also the size of the host-side z^j table)."""
    return min(64, max(16, next_pow2(L)))


def _small_powers(x2: torch.Tensor, T: int, real: torch.dtype) -> torch.Tensor:
    """z^j = exp(x j), j < T, evaluated in float64 and cast: (M, N2, T, 2) in ``real`` precision."""
    j = torch.arange(T, device=x2.device, dtype=torch.float64)
    zj = torch.exp(x2.to(torch.complex128).unsqueeze(-1) * j)  # (M, N2, T)
    return torch.view_as_real(zj.to(complex_of(real))).contiguous()


def _blocks(R: int, N2: int, T: int, real: torch.dtype) -> tuple[int, int]:
    budget = 4096 if real == torch.float32 else 2048
    block_n = min(next_pow2(N2), 16)
    block_r = max(1, min(next_pow2(R), budget // (block_n * T)))
    return block_r, block_n


def _launch_fwd(v3: torch.Tensor, x2: torch.Tensor, L: int, out3: torch.Tensor, complex_out: bool) -> None:
    """v3 (R, M, N2) complex, x2 (M, N2) complex128, out3 (R, M, L) real or complex (v3's precision)."""
    R, M, n2 = v3.shape
    if R * M == 0:
        return
    vr = as_real(v3)
    xr = as_real(x2)
    T = _tile(L)
    zj = _small_powers(x2, T, vr.dtype)
    o = as_real(out3) if complex_out else out3
    br, bn = _blocks(R, n2, T, vr.dtype)
    grid = (M, triton.cdiv(L, T), triton.cdiv(R, br))
    _vand_fwd_kernel[grid](
        vr, xr, zj, o,
        R, n2, L,
        vr.stride(0), vr.stride(1), vr.stride(2),
        xr.stride(0), xr.stride(1),
        zj.stride(0), zj.stride(1), zj.stride(2),
        o.stride(0), o.stride(1), o.stride(2),
        COMPLEX_OUT=complex_out, BLOCK_R=br, BLOCK_N=bn, T=T,
    )


def _launch_t(
    u3: torch.Tensor, x2: torch.Tensor, with_s0: bool, with_s1: bool, out0: torch.Tensor | None = None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """u3 (R, M, L) real or complex (working precision), x2 (M, N2) complex128 -> S0, S1 (R, M, N2) complex."""
    R, M, L = u3.shape
    n2 = x2.shape[-1]
    real = work_real_dtype(u3.dtype)
    cdt = complex_of(real)
    s0 = (out0 if out0 is not None else _common.alloc((R, M, n2), cdt, u3.device)) if with_s0 else None
    s1 = _common.alloc((R, M, n2), cdt, u3.device) if with_s1 else None
    if R * M == 0:
        return s0, s1
    ur = as_real(u3) if u3.is_complex() else u3
    xr = as_real(x2)
    T = _tile(L)
    zj = _small_powers(x2, T, real)
    o0 = as_real(s0) if s0 is not None else None
    o1 = as_real(s1) if s1 is not None else None
    o0 = o0 if o0 is not None else o1  # an unused output gets the other's pointer (never written)
    o1 = o1 if o1 is not None else o0
    br, bn = _blocks(R, n2, T, real)
    grid = (M, triton.cdiv(n2, bn), triton.cdiv(R, br))
    _vand_t_kernel[grid](
        ur, xr, zj, o0, o1,
        R, n2, L,
        ur.stride(0), ur.stride(1), ur.stride(2),
        xr.stride(0), xr.stride(1),
        zj.stride(0), zj.stride(1), zj.stride(2),
        o0.stride(0), o0.stride(1), o0.stride(2),
        o1.stride(0), o1.stride(1), o1.stride(2),
        U_COMPLEX=u3.is_complex(), WITH_S0=with_s0, WITH_S1=with_s1,
        BLOCK_R=br, BLOCK_N=bn, T=T,
    )
    return s0, s1


def _check_nodes(x: torch.Tensor) -> None:
    if not x.is_complex():
        raise TypeError(f"x must be complex, got {x.dtype}")


def _rows_v(v: torch.Tensor, x: torch.Tensor):
    """Broadcast (v, x), group the rows sharing x: returns batch, rows, v3 (R, M, N2), x2 (M, N2) complex128."""
    _check_nodes(x)
    if v.shape[-1] != x.shape[-1]:
        raise ValueError(f"v and x must share the last dimension N/2, got {tuple(v.shape)} and {tuple(x.shape)}")
    batch = tuple(torch.broadcast_shapes(v.shape[:-1], x.shape[:-1]))
    n2 = x.shape[-1]
    xe = x.expand(*batch, n2)
    rows = Rows(batch, xe)
    v3 = rows.rows(v.expand(*batch, n2))
    x2 = rows.shared(xe).to(torch.complex128)
    return batch, rows, v3, x2


def _rows_u(u: torch.Tensor, x: torch.Tensor):
    """Broadcast (u, x), group the rows sharing x: returns batch, rows, u3 (R, M, L), x2 (M, N2) complex128."""
    _check_nodes(x)
    batch = tuple(torch.broadcast_shapes(u.shape[:-1], x.shape[:-1]))
    n2 = x.shape[-1]
    xe = x.expand(*batch, n2)
    rows = Rows(batch, xe)
    real = work_real_dtype(u.dtype)
    u = u.to(complex_of(real) if u.is_complex() else real)
    u3 = rows.rows(u.expand(*batch, u.shape[-1]))
    x2 = rows.shared(xe).to(torch.complex128)
    return batch, rows, u3, x2


def vandermonde_fwd(v: torch.Tensor, x: torch.Tensor, L: int, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """``out[..., l] = 2 Re sum_n v[..., n] exp(x[..., n] l)`` for ``l < L``.

    Args:
        v: (..., N/2) complex64 / complex128 coefficients (the working precision).
        x: (..., N/2) complex log-nodes (any complex dtype; used in float64 for the node powers);
            leading dims broadcast with v's, and dims along which x is broadcast (stride 0) become
            rows sharing the node powers.
        L: output length >= 1.
        out: optional (broadcast(...), L) real buffer of v's precision.

    Returns:
        (broadcast(...), L) float32 / float64.
    """
    if not v.is_complex():
        raise TypeError(f"v must be complex, got {v.dtype}")
    L = int(L)
    if L < 1:
        raise ValueError(f"L must be >= 1, got {L}")
    batch, rows, v3, x2 = _rows_v(v, x)
    real = work_real_dtype(v.dtype)
    buf = output_rows(rows, out, (*batch, L), real, v.device)
    _launch_fwd(v3, x2, L, buf, complex_out=False)
    return finish(rows, buf, out)


def vandermonde_bwd(v: torch.Tensor, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of :func:`vandermonde_fwd` w.r.t. v and x for the real incoming gradient ``grad`` (..., L).

    Returns ``(dv, dx)`` shaped like v and x (x's dtype for dx), summed over broadcast dims.
    """
    batch, rows, v3, x2 = _rows_v(v, x)
    L = grad.shape[-1]
    real = work_real_dtype(v.dtype)
    g3 = rows.rows(grad.to(real).expand(*batch, L))
    s0, s1 = _launch_t(g3, x2, with_s0=True, with_s1=True)
    dv = 2 * s0.conj()
    dx = 2 * (v3 * s1).conj()
    dv = rows.unrows(dv).resolve_conj()
    dx = rows.unrows(dx).resolve_conj().to(x.dtype)
    return reduce_to(dv, v.shape), reduce_to(dx, x.shape)


def vandermonde_transpose_fwd(u: torch.Tensor, x: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """``out[..., n] = sum_l u[..., l] exp(x[..., n] l)``.

    Args:
        u: (..., L) real or complex sequence (its precision is the working precision).
        x: (..., N/2) complex log-nodes; leading dims broadcast with u's.
        out: optional (broadcast(...), N/2) complex buffer of u's precision.

    Returns:
        (broadcast(...), N/2) complex64 / complex128.
    """
    if not (u.is_complex() or u.is_floating_point()):
        raise TypeError(f"u must be a floating or complex tensor, got {u.dtype}")
    batch, rows, u3, x2 = _rows_u(u, x)
    cdt = complex_of(work_real_dtype(u.dtype))
    buf = output_rows(rows, out, (*batch, x.shape[-1]), cdt, u.device)
    _launch_t(u3, x2, with_s0=True, with_s1=False, out0=buf)
    return finish(rows, buf, out)


def vandermonde_transpose_bwd(
    u: torch.Tensor, x: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of :func:`vandermonde_transpose_fwd` w.r.t. u and x for the complex incoming gradient.

    Returns ``(du, dx)`` shaped like u (its dtype; the real part for real u) and x (its dtype).
    """
    batch, rows, u3, x2 = _rows_u(u, x)
    L = u.shape[-1]
    n2 = x.shape[-1]
    cdt = complex_of(work_real_dtype(u.dtype))
    G3 = rows.rows(grad.to(cdt).expand(*batch, n2))  # (R, M, N2)
    # du[l] = conj(sum_n conj(G_n) z_n^l)
    s = _common.alloc(G3.shape[:-1] + (L,), cdt, u.device)
    _launch_fwd(G3.conj(), x2, L, s, complex_out=True)
    du = rows.unrows(s.conj() if u.is_complex() else s.real)
    du = du.resolve_conj().to(u.dtype)
    _, s1 = _launch_t(u3, x2, with_s0=False, with_s1=True)
    dx = rows.unrows(G3 * s1.conj()).to(x.dtype)
    return reduce_to(du, u.shape), reduce_to(dx, x.shape)
