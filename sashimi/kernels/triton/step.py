"""Triton kernel for one recurrent step of a diagonal SSM layer, fused: state update, output, D skip.

For a batch of states ``x`` (B, H, M) complex, updated **in place**::

    x[b, h, n] <- dA[h, n] x[b, h, n] + dB[h, n] u[b, h]
    y[b, c, h]  = s * Re(sum_n dC[c, h, n] x[b, h, n]) + D[c, h] u[b, h]      (s = 2 or 1)

(``s = 2`` for the conjugate-pair S4D convention, ``two_re``; the D term only when D is given).
This is the ``'diagonal'`` branch of :func:`sashimi.layers.s4block.ssm_step` plus the block's D
skip, in one launch instead of about six PyTorch ops.

Complex tensors are passed as their ``torch.view_as_real`` float views; the state is written
through the real view of ``x`` itself, so the caller's tensor is updated without a copy.

Grid: (B, H / BLOCK_H). A program owns one batch row and BLOCK_H channels, loops over the state
in BLOCK_M blocks, writes each updated block back as soon as it is formed, and keeps the output
accumulators of *all* C kernel channels (BLOCK_C = next_pow2(C) >= C, a compile-time size) in
registers, so each state element is read and written exactly once. The accumulation order is a
blocked tree sum over M in the working precision (float32 or float64), like PyTorch's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl

from sashimi.kernels.triton._common import as_real, next_pow2, work_real_dtype

__all__ = ["diag_step_fwd"]


@triton.jit
def _diag_step_kernel(
    x_ptr, a_ptr, b_ptr, c_ptr, u_ptr, d_ptr, y_ptr,
    C, H, M,
    s_xb, s_xh, s_xm,
    s_ah, s_am,
    s_bh, s_bm,
    s_cc, s_ch, s_cm,
    s_ub, s_uh,
    s_dc, s_dh,
    s_yb, s_yc, s_yh,
    SCALE: tl.constexpr, HAS_D: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_M: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_h = tl.program_id(1)
    offs_h = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    mask_h = offs_h < H
    offs_c = tl.arange(0, BLOCK_C)
    mask_c = offs_c < C

    u = tl.load(u_ptr + pid_b * s_ub + offs_h * s_uh, mask=mask_h, other=0.0)  # (BH,)
    acc = tl.zeros((BLOCK_C, BLOCK_H), dtype=u.dtype)
    x_row = x_ptr + pid_b * s_xb
    for m0 in range(0, M, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        mask = mask_h[:, None] & (offs_m < M)[None, :]  # (BH, BM)
        xp = x_row + offs_h[:, None] * s_xh + offs_m[None, :] * s_xm
        xr = tl.load(xp, mask=mask, other=0.0)
        xi = tl.load(xp + 1, mask=mask, other=0.0)
        ap = a_ptr + offs_h[:, None] * s_ah + offs_m[None, :] * s_am
        ar = tl.load(ap, mask=mask, other=0.0)
        ai = tl.load(ap + 1, mask=mask, other=0.0)
        bp = b_ptr + offs_h[:, None] * s_bh + offs_m[None, :] * s_bm
        br = tl.load(bp, mask=mask, other=0.0)
        bi = tl.load(bp + 1, mask=mask, other=0.0)
        # x <- dA x + dB u
        uu = u[:, None]
        nr = ar * xr - ai * xi + br * uu
        ni = ar * xi + ai * xr + bi * uu
        tl.store(xp, nr, mask=mask)
        tl.store(xp + 1, ni, mask=mask)
        # Re(dC x), all channels at once: (BC, BH, BM) summed over the state
        cmask = mask_c[:, None, None] & mask[None, :, :]
        cp = c_ptr + offs_c[:, None, None] * s_cc + offs_h[None, :, None] * s_ch + offs_m[None, None, :] * s_cm
        cr = tl.load(cp, mask=cmask, other=0.0)
        ci = tl.load(cp + 1, mask=cmask, other=0.0)
        acc += tl.sum(cr * nr[None, :, :] - ci * ni[None, :, :], axis=2)

    y = acc * SCALE
    if HAS_D:
        dmask = mask_c[:, None] & mask_h[None, :]
        d = tl.load(d_ptr + offs_c[:, None] * s_dc + offs_h[None, :] * s_dh, mask=dmask, other=0.0)
        y += d * u[None, :]
    yp = y_ptr + pid_b * s_yb + offs_c[:, None] * s_yc + offs_h[None, :] * s_yh
    tl.store(yp, y, mask=mask_c[:, None] & mask_h[None, :])


def _blocks(C: int, H: int, M: int, real: torch.dtype) -> tuple[int, int, int]:
    """Tile sizes: the (channels x H x state) tile of dC stays within 2048 elements (1024 in float64);
    about ten such tiles (state, dA, dB, dC, real and imaginary parts) live in registers at once."""
    budget = 2048 if real == torch.float32 else 1024
    block_c = next_pow2(C)
    block_m = min(next_pow2(M), 64)
    while block_m > 16 and block_c * block_m > budget:
        block_m //= 2
    block_h = max(1, min(next_pow2(H), budget // (block_c * block_m), 64))
    return block_c, block_h, block_m


def _operands(x, dA, dB, dC, u, D):
    """Validate and broadcast; returns the real views and sizes the kernel needs (no data copied for x)."""
    if not isinstance(x, torch.Tensor) or not x.is_complex() or x.ndim != 3:
        raise TypeError(f"x must be a complex (B, H, M) state tensor, got {getattr(x, 'dtype', type(x))}"
                        f" of shape {tuple(getattr(x, 'shape', ()))}")
    if x.is_conj() or x.is_neg():
        raise ValueError("x must not be a lazily conjugated / negated view: it is updated in place")
    B, H, M = x.shape
    cdt = x.dtype
    for name, t in (("dA", dA), ("dB", dB), ("dC", dC)):
        if not isinstance(t, torch.Tensor) or t.dtype != cdt:
            raise TypeError(f"{name} must be a {cdt} tensor like the state x, got {getattr(t, 'dtype', type(t))}")
    if dC.ndim != 3:
        raise ValueError(f"dC must have shape (C, H, M), got {tuple(dC.shape)}")
    if not isinstance(u, torch.Tensor) or not u.is_floating_point():
        raise TypeError(f"u must be a real floating (B, H) tensor, got {getattr(u, 'dtype', type(u))}")
    if D is not None and (not isinstance(D, torch.Tensor) or not D.is_floating_point()):
        raise TypeError(f"D must be a real floating (C, H) tensor or None, got {getattr(D, 'dtype', type(D))}")
    real = work_real_dtype(cdt)
    C = dC.shape[0]
    try:
        a = as_real(dA.expand(H, M))
        b = as_real(dB.expand(H, M))
        c = as_real(dC.expand(C, H, M))
        uu = u.to(real).expand(B, H)
        d = D.to(real).expand(C, H) if D is not None else None
    except RuntimeError as e:
        raise ValueError(
            f"shapes do not broadcast to x (B, H, M) = {(B, H, M)}: dA {tuple(dA.shape)}, dB {tuple(dB.shape)}, "
            f"dC {tuple(dC.shape)}, u {tuple(u.shape)}, D {None if D is None else tuple(D.shape)} ({e})"
        ) from None
    return (B, H, M, C, real), as_real(x), a, b, c, uu, d


def launch_diag_step(
    x: torch.Tensor, dA: torch.Tensor, dB: torch.Tensor, dC: torch.Tensor, u: torch.Tensor,
    D: torch.Tensor | None, two_re: bool, y: torch.Tensor | None = None,
    wrap: Callable = lambda k: k,
) -> torch.Tensor:
    """Launch the fused step writing ``x`` in place and ``y`` (B, C, H) real (allocated when None);
    ``wrap`` wraps the kernel (``torch.library.wrap_triton`` for the registered op, identity
    otherwise). Returns ``y``."""
    (B, H, M, C, real), xr, a, b, c, uu, d = _operands(x, dA, dB, dC, u, D)
    if y is None:
        y = torch.empty((B, C, H), dtype=real, device=x.device)
    elif tuple(y.shape) != (B, C, H) or y.dtype != real or y.device != x.device:
        raise ValueError(
            f"out must be a {real} tensor of shape {(B, C, H)} on {x.device}, "
            f"got {y.dtype} {tuple(y.shape)} on {y.device}"
        )
    if B * H * C == 0:
        return y
    if M == 0:
        y.copy_(d * uu.unsqueeze(1) if d is not None else torch.zeros_like(y))
        return y
    bc, bh, bm = _blocks(C, H, M, real)
    dd = d if d is not None else uu  # an unused pointer when HAS_D is false (never read)
    grid = (B, triton.cdiv(H, bh))
    wrap(_diag_step_kernel)[grid](
        xr, a, b, c, uu, dd, y,
        C, H, M,
        xr.stride(0), xr.stride(1), xr.stride(2),
        a.stride(0), a.stride(1),
        b.stride(0), b.stride(1),
        c.stride(0), c.stride(1), c.stride(2),
        uu.stride(0), uu.stride(1),
        dd.stride(0), dd.stride(1),
        y.stride(0), y.stride(1), y.stride(2),
        SCALE=2.0 if two_re else 1.0, HAS_D=d is not None,
        BLOCK_C=bc, BLOCK_H=bh, BLOCK_M=bm,
    )
    return y


def diag_step_fwd(
    x: torch.Tensor, dA: torch.Tensor, dB: torch.Tensor, dC: torch.Tensor, u: torch.Tensor,
    D: torch.Tensor | None = None, *, two_re: bool = True, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """One fused diagonal-SSM step: updates ``x`` in place and returns the output ``y``.

    Args:
        x: (B, H, M) complex64 / complex128 state, updated in place (any strides; not a lazy conj view).
        dA, dB: (H, M) complex (x's dtype; broadcastable to (H, M)).
        dC: (C, H, M) complex (x's dtype; leading dims broadcastable).
        u: (B, H) real input (cast to x's real precision).
        D: optional (C, H) real skip (cast likewise); adds ``D[c, h] u[b, h]``.
        two_re: output ``2 Re(dC . x)`` (conjugate-pair S4D state) instead of ``Re(dC . x)``.
        out: optional (B, C, H) real buffer of x's real precision for y.

    Returns:
        y: (B, C, H) float32 / float64.
    """
    return launch_diag_step(x, dA, dB, dC, u, D, two_re, out)
