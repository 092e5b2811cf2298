"""Convolution kernels of continuous-time SSMs (S4 / DPLR and S4D / diagonal) and their discretizations."""

from __future__ import annotations

import math

import torch

from sashimi.kernels._checks import check_length, check_tensor, real_dtype
from sashimi.kernels.cauchy import cauchy
from sashimi.kernels.vandermonde import vandermonde

__all__ = [
    "bilinear",
    "c_tilde",
    "discretize_diag",
    "dplr_matrix",
    "full_pairs",
    "ssm_kernel",
    "ssm_kernel_ref",
    "truncation_factor",
]

DISCRETIZATIONS = ("zoh", "bilinear")


def full_pairs(x: torch.Tensor) -> torch.Tensor:
    """(..., N/2) -> (..., N): append the conjugate half, ``[x, conj(x)]``."""
    return torch.cat([x, x.conj()], dim=-1)


def dplr_matrix(A: torch.Tensor, P: torch.Tensor, Q: torch.Tensor | None = None) -> torch.Tensor:
    """The full N x N state matrix ``diag([A, conj A]) - sum_r Pf_r Qf_r^H``.

    With ``Q=None`` (Q = P) this is the stable (Hurwitz) DPLR form of the SaShiMi paper.

    Args:
        A: (H, N/2) complex diagonal (Lambda).
        P: (rank, H, N/2) complex low-rank factor.
        Q: (rank, H, N/2) complex, or None for Q = P.

    Returns:
        (H, N, N) complex.
    """
    Af = full_pairs(A)  # (H, N)
    Pf = full_pairs(P)  # (r, H, N)
    Qf = Pf if Q is None else full_pairs(Q)
    low = torch.einsum("rhm,rhn->hmn", Pf, Qf.conj())  # (H, N, N)
    return torch.diag_embed(Af) - low


def bilinear(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear (Tustin) discretization of a dense system.

    ``Abar = (I - dt/2 A)^-1 (I + dt/2 A)``, ``Bbar = (I - dt/2 A)^-1 dt B``.

    Args:
        dt: (H,) real step sizes.
        A: (H, N, N) complex.
        B: (H, N) complex.

    Returns:
        Abar (H, N, N), Bbar (H, N).
    """
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    half = (dt / 2).to(A.dtype)[:, None, None]  # (H, 1, 1)
    back = eye - half * A
    rhs = torch.cat([eye + half * A, (dt.to(A.dtype)[:, None] * B).unsqueeze(-1)], dim=-1)  # (H, N, N+1)
    sol = torch.linalg.solve(back, rhs)
    return sol[..., :-1], sol[..., -1]


def discretize_diag(
    dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, discretization: str = "zoh"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Discretize a diagonal SSM elementwise.

    ZOH: ``dA = exp(dt A)``, ``dB = (exp(dt A) - 1) / A * B``.
    Bilinear: ``dA = (1 + dt A / 2) / (1 - dt A / 2)``, ``dB = dt / (1 - dt A / 2) * B``.

    Args:
        dt: (H,) real. A: (H, N/2) complex. B: (H, N/2) complex.

    Returns:
        dA (H, N/2), dB (H, N/2), log_dA (H, N/2) (the exponent that :func:`vandermonde` takes).
    """
    dtA = dt.to(A.dtype).unsqueeze(-1) * A  # (H, N2)
    if discretization == "zoh":
        dA = torch.exp(dtA)
        return dA, torch.expm1(dtA) / A * B, dtA
    if discretization == "bilinear":
        den = 1 - dtA / 2
        dA = (1 + dtA / 2) / den
        return dA, dt.to(A.dtype).unsqueeze(-1) / den * B, torch.log(dA)
    raise ValueError(f"discretization must be one of {DISCRETIZATIONS}, got {discretization!r}")


def _matrix_power(M: torch.Tensor, n: int) -> torch.Tensor:
    """M^n for (..., N, N) by repeated squaring (log2 n products)."""
    result = None
    base = M
    while n:
        if n & 1:
            result = base if result is None else result @ base
        n >>= 1
        if n:
            base = base @ base
    return result


def truncation_factor(dA: torch.Tensor, L: int) -> torch.Tensor:
    """``I - dA^L`` for the dense (H, N, N) transition: the factor of the truncation correction."""
    eye = torch.eye(dA.shape[-1], dtype=dA.dtype, device=dA.device)
    return eye - _matrix_power(dA, L)


def _real_pair(z: torch.Tensor) -> torch.Tensor:
    """(..., N/2) complex -> (..., N) real ``[Re z, Im z]`` (a conjugate-pair vector in real coordinates)."""
    return torch.cat([z.real, z.imag], -1)


def _real_bilinear(dt: torch.Tensor, A: torch.Tensor, P: torch.Tensor, Q: torch.Tensor | None) -> torch.Tensor:
    """The bilinear transition ``Abar = (I - dt/2 A)^-1 (I + dt/2 A) = 2 (I - dt/2 A)^-1 - I`` of the full
    DPLR system in real coordinates ``y = [Re x, Im x]`` of the conjugate-pair state.

    There ``diag(A)`` acts as the complex product with A on ``Re x + i Im x`` and ``Pf Qf^H x_full =
    Pf * 2 Re(Q^H x)``, so ``I - dt/2 A_r = D + dt/2 U W^T`` with D the complex product with
    ``d = 1 - dt/2 A``, ``U = [Re P; Im P]`` and ``W = 2 [Re Q; Im Q]`` (rank r); the inverse is
    Woodbury's ``D^-1 - D^-1 U (2/dt I + W^T D^-1 U)^-1 W^T D^-T`` (O(H N^2 r), no dense solve).
    Returns (H, N, N) real.
    """
    Q = P if Q is None else Q
    h = (dt / 2).to(A.real.dtype)  # (H,)
    dinv = 1 / (1 - h[:, None] * A)  # (H, N2) complex: D^-1 is the product with dinv
    Dr, Di = torch.diag_embed(dinv.real), torch.diag_embed(dinv.imag)
    Dinv = torch.cat([torch.cat([Dr, -Di], -1), torch.cat([Di, Dr], -1)], -2)  # (H, N, N)
    Ut = _real_pair(dinv * P).permute(1, 2, 0)  # D^-1 U: (H, N, r)
    Wt = 2 * _real_pair(dinv.conj() * Q).permute(1, 2, 0)  # D^-T W: (H, N, r)
    r = P.shape[0]
    S = torch.diag_embed((1 / h)[:, None].expand(-1, r)) + 2 * _real_pair(Q).transpose(0, 1) @ Ut  # (H, r, r)
    inv = Dinv - Ut @ torch.linalg.solve(S, Wt.transpose(1, 2))  # (I - dt/2 A_r)^-1
    eye = torch.eye(inv.shape[-1], dtype=inv.dtype, device=inv.device)
    return 2 * inv - eye


#: ``u M^L`` uses ``floor(log2 L) - _MATVEC_BITS`` squarings and then 2**_MATVEC_BITS to
#: 2**(_MATVEC_BITS + 1) - 1 vector-matrix products (one squaring of the (H, N, N) batch costs
#: about as much as 30 vector-matrix products, forward and backward)
_MATVEC_BITS = 6


class _RepeatedVecMat(torch.autograd.Function):
    """``u @ M^m`` by m vector-matrix products; the backward forms ``dM = sum_j u_j^T g_{j+1}`` as one
    batched GEMM over the stacked steps instead of accumulating m (H, N, N) outer products."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, M: torch.Tensor, m: int) -> torch.Tensor:
        steps = [u]
        for _ in range(m):
            steps.append(steps[-1] @ M)
        ctx.save_for_backward(torch.stack(steps[:-1], dim=1), M)  # (H, m, c, N): u_0 .. u_{m-1}
        return steps[-1]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        U, M = ctx.saved_tensors
        H, m, c, N = U.shape
        Mt = M.transpose(-1, -2)
        grads = [grad]  # g_m, g_{m-1}, ..., g_1: the gradient at the output of step j
        for _ in range(m - 1):
            grads.append(grads[-1] @ Mt)
        gu = grads[-1] @ Mt
        Gs = torch.stack(grads[::-1], dim=1)  # (H, m, c, N): g_1 .. g_m
        gM = U.reshape(H, m * c, N).transpose(1, 2) @ Gs.reshape(H, m * c, N)
        return gu, gM, None


def _vec_matrix_power(u: torch.Tensor, M: torch.Tensor, L: int) -> torch.Tensor:
    """``u @ M^L`` for u (H, c, N), M (H, N, N), L >= 1: squarings for the high bits of L, then a
    short chain of vector-matrix products (the low bits of L apply the squares they need)."""
    k = max(0, L.bit_length() - 1 - _MATVEC_BITS)
    base = M
    for j in range(k):
        if (L >> j) & 1:
            u = u @ base
        base = base @ base
    m = L >> k
    if torch.is_grad_enabled() and (u.requires_grad or base.requires_grad):
        return _RepeatedVecMat.apply(u, base, m)
    for _ in range(m):
        u = u @ base
    return u


def c_tilde(
    dt: torch.Tensor, A: torch.Tensor, P: torch.Tensor, C: torch.Tensor, L: int, Q: torch.Tensor | None = None
) -> torch.Tensor:
    """``C~ = C (I - Abar^L)`` on the full system, returned as its first N/2 entries (lossless).

    Evaluated in real coordinates ``y = [Re x, Im x]`` (where the full system is real: a quarter of
    the complex arithmetic): ``Cf Abar_f^L = (Cf T^-1) Abar_r^L T`` with ``Cf T^-1 = [2 Re C, -2 Im C]``
    and the first N/2 columns of T ``[I/2; -i I/2]``. ``Abar_r`` comes from Woodbury's identity
    (:func:`_real_bilinear`), and the row vector times ``Abar_r^L`` from a few squarings followed by
    a short chain of vector-matrix products (:func:`_vec_matrix_power`). Equal to the dense complex
    formula ``Cf (I - Abar^L)`` (:func:`bilinear`, :func:`truncation_factor`) to float64 rounding.

    Args:
        dt (H,), A (H, N/2), P (rank, H, N/2), C (c, H, N/2); L >= 1; Q as in :func:`dplr_matrix`.

    Returns:
        (c, H, N/2) complex.
    """
    n2 = A.shape[-1]
    dA = _real_bilinear(dt, A, P, Q)  # (H, N, N) real
    u = torch.cat([2 * C.real, -2 * C.imag], -1).to(dA.dtype).transpose(0, 1)  # (H, c, N)
    u = _vec_matrix_power(u, dA, L).transpose(0, 1)  # (c, H, N): Cf T^-1 Abar_r^L
    return C - torch.complex(u[..., :n2], -u[..., n2:]).to(C.dtype) / 2


def _validate(dt, A, B, C, P, L, discretization, Q=None):
    check_tensor("A", A, ndim=2, complex_=True)
    H, n2 = A.shape
    if n2 == 0 or H == 0:
        raise ValueError(f"A must have shape (H, N/2) with H, N/2 >= 1, got {tuple(A.shape)}")
    check_tensor("dt", dt, ndim=1, complex_=False)
    if dt.shape != (H,):
        raise ValueError(f"dt must have shape (H,)=({H},), got {tuple(dt.shape)}")
    check_tensor("B", B, ndim=2, complex_=True)
    if B.shape != (H, n2):
        raise ValueError(f"B must have shape (H, N/2)=({H}, {n2}), got {tuple(B.shape)}")
    check_tensor("C", C, ndim=3, complex_=True)
    if C.shape[1:] != (H, n2):
        raise ValueError(f"C must have shape (channels, H, N/2)=(c, {H}, {n2}), got {tuple(C.shape)}")
    if P is not None:
        check_tensor("P", P, ndim=3, complex_=True)
        if P.shape[1:] != (H, n2):
            raise ValueError(f"P must have shape (rank, H, N/2)=(r, {H}, {n2}), got {tuple(P.shape)}")
    if Q is not None:
        if P is None:
            raise ValueError("Q needs P (the unconstrained DPLR form diag(A) - P Q^*)")
        check_tensor("Q", Q, ndim=3, complex_=True)
        if Q.shape != P.shape:
            raise ValueError(f"Q must have P's shape (rank, H, N/2)={tuple(P.shape)}, got {tuple(Q.shape)}")
    for name, t in (
        (("B", B), ("C", C)) + ((("P", P),) if P is not None else ()) + ((("Q", Q),) if Q is not None else ())
    ):
        if t.dtype != A.dtype:
            raise TypeError(f"{name} must have A's dtype {A.dtype}, got {t.dtype}")
    if dt.dtype != real_dtype(A.dtype):
        raise TypeError(f"dt must have dtype {real_dtype(A.dtype)} (the precision of A), got {dt.dtype}")
    L = check_length("L", L)
    if discretization not in DISCRETIZATIONS:
        raise ValueError(f"discretization must be one of {DISCRETIZATIONS}, got {discretization!r}")
    if P is not None and discretization != "bilinear":
        raise ValueError("the DPLR kernel (P given) supports discretization='bilinear' only")
    if not torch.all(dt > 0):
        raise ValueError("dt must be positive")
    return L


def ssm_kernel(
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    L: int,
    P: torch.Tensor | None = None,
    discretization: str | None = None,
    *,
    Q: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """The length-L convolution kernel of a continuous-time SSM given canonical parameters.

    ``K[c, h, l] = Cf[c, h] . (Abar_h^l Bbar_h)`` for ``0 <= l < L`` over the full N-dimensional
    system built from the stored conjugate halves (``Xf = [X, conj X]``); C is a plain row vector.

    * ``P is None``: diagonal SSM (S4D), ``discretization`` 'zoh' (default) or 'bilinear',
      evaluated as ``vandermonde(C * dB, log dA, L)`` (= 2 Re of the half system, exact here).
    * ``P`` given: the stable DPLR (S4) form ``A = diag(Lambda) - sum_r Pf_r Pf_r^H`` with bilinear
      discretization, evaluated through :func:`cauchy` at the bilinear images of the L-th roots of
      unity, a Woodbury correction for the low rank, and an inverse real FFT. The truncation
      correction ``C~ = C (I - Abar^L)`` is applied, so the result is exactly the truncated kernel.
      (2 Re of the half-size system is *not* this kernel: the low-rank term couples the halves.)

    Args:
        dt: (H,) real, positive step sizes (float32 or float64, matching A's precision).
        A: (H, N/2) complex diagonal Lambda (S4) or A (S4D).
        B: (H, N/2) complex.
        C: (channels, H, N/2) complex, canonical (not tilded).
        L: kernel length, >= 1.
        P: (rank, H, N/2) complex, or None for a diagonal SSM.
        discretization: 'zoh' or 'bilinear'; default 'zoh' for S4D and 'bilinear' for DPLR.
        Q: (rank, H, N/2) complex: the unconstrained form ``diag(A) - P Q^*`` (research use; not
            Hurwitz by construction). None (default) ties Q = P.
        backend: kernel backend for the Cauchy / Vandermonde op (see :func:`available_backends`).

    Returns:
        K: (channels, H, L) real, float32 for complex64 parameters, float64 for complex128.
    """
    if discretization is None:
        discretization = "bilinear" if P is not None else "zoh"
    L = _validate(dt, A, B, C, P, L, discretization, Q)
    # Discretization runs in float64 (H * N work): float32 rounding of dt * A or of C (I - Abar^L)
    # would otherwise dominate the kernel's error. The O(N L) part runs in the parameters' precision.
    if P is None:
        _, dB, log_dA = discretize_diag(dt.double(), A.to(torch.complex128), B.to(torch.complex128), discretization)
        v = (C.to(torch.complex128) * dB).to(C.dtype)  # (c, H, N2)
        return vandermonde(v, log_dA, L, backend=backend)  # (c, H, L)
    return _dplr_kernel(dt, A, B, C, P, L, backend, Q)


def _nodes(L: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear images of the roots of unity w_k = exp(-2 pi i k / L), k < L/2 (the Nyquist node excluded).

    Returns ``z_k = 2 (1 - w_k) / (1 + w_k) = 2 i tan(pi k / L)`` and ``s_k = 2 / (1 + w_k) = 1 + i tan(pi k / L)``,
    computed in float64 from the angle directly (accurate at any L), then cast.
    """
    k = torch.arange((L + 1) // 2, dtype=torch.float64, device=device)
    t = torch.tan(math.pi * k / L)
    z = torch.complex(torch.zeros_like(t), 2 * t).to(dtype)
    s = torch.complex(torch.ones_like(t), t).to(dtype)
    return z, s


def _dplr_kernel(dt, A, B, C, P, L, backend, Q=None):
    work = A.dtype
    c = C.shape[0]
    r = P.shape[0]
    c128 = torch.complex128
    dt, A, B, C, P = dt.double(), A.to(c128), B.to(c128), C.to(c128), P.to(c128)
    Q = P if Q is None else Q.to(c128)
    Ct = c_tilde(dt, A, P, C, L, Q)  # (c, H, N2)
    z, s = _nodes(L, work, A.device)  # (L',)
    # Woodbury for (g - A)^-1 with A = diag - P Q^*: rows [C~, conj Q] against columns [B, P]
    a = torch.cat([Ct, Q.conj()], dim=0)  # (c + r, H, N2)
    b = torch.cat([B.unsqueeze(0), P], dim=0)  # (1 + r, H, N2)
    v = a.unsqueeze(1) * b.unsqueeze(0) * dt[:, None]  # (c + r, 1 + r, H, N2)
    k = cauchy(v.to(work), z, (dt[:, None] * A).to(work), backend=backend)  # (c + r, 1 + r, H, L')
    k00, k01 = k[:c, 0], k[:c, 1:]  # (c, H, L'), (c, r, H, L')
    k10, k11 = k[c:, 0], k[c:, 1:]  # (r, H, L'), (r, r, H, L')
    if r == 1:
        khat = k00 - k01[:, 0] * k10[0] / (1 + k11[0, 0])
    else:
        eye = torch.eye(r, dtype=k.dtype, device=k.device)
        m = k11.permute(2, 3, 0, 1) + eye  # (H, L', r, r)
        sol = torch.linalg.solve(m, k10.permute(1, 2, 0).unsqueeze(-1)).squeeze(-1)  # (H, L', r)
        khat = k00 - torch.einsum("cjhl,hlj->chl", k01, sol)
    khat = khat * s  # (c, H, L')
    if L % 2 == 0:
        # Nyquist node w = -1, where z is infinite: K^(-1) = C~ (I + Abar)^-1 Bbar = dt/2 Cf~ . Bf
        nyq = (dt * (Ct * B).sum(-1).real).to(khat.real.dtype)  # (c, H)
        khat = torch.cat([khat, nyq.unsqueeze(-1).to(khat.dtype)], dim=-1)
    return torch.fft.irfft(khat, n=L, dim=-1)  # (c, H, L)


def ssm_kernel_ref(
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    L: int,
    P: torch.Tensor | None = None,
    discretization: str | None = None,
    *,
    Q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dense specification of :func:`ssm_kernel`: discretize the full N x N system and unroll it."""
    if discretization is None:
        discretization = "bilinear" if P is not None else "zoh"
    L = _validate(dt, A, B, C, P, L, discretization, Q)
    if P is None:
        dA, dB, _ = discretize_diag(dt, A, B, discretization)
        dA, dB = torch.diag_embed(full_pairs(dA)), full_pairs(dB)
    else:
        dA, dB = bilinear(dt, dplr_matrix(A, P, Q), full_pairs(B))
    x = dB  # (H, N)
    out = []
    Cf = full_pairs(C)  # (c, H, N)
    for _ in range(L):
        out.append(torch.einsum("chn,hn->ch", Cf, x).real)
        x = torch.einsum("hmn,hn->hm", dA, x)
    return torch.stack(out, dim=-1)  # (c, H, L)
