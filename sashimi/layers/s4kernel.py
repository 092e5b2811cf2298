"""S4Kernel: the trainable state-space kernel (stable DPLR S4 or diagonal S4D) with its step constants."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import repeat
from torch import nn

from sashimi.kernels import bilinear, discretize_diag, dplr_matrix, full_pairs, ssm_kernel, vandermonde

__all__ = ["SSM_PARAM_NAMES", "STEP_MODES", "S4Kernel", "StepConstants", "check_rate", "hippo_legs_dplr"]

#: parameters of S4Kernel that belong to the SSM optimizer group (lower lr, no weight decay)
SSM_PARAM_NAMES = ("log_dt", "A_real_log", "A_imag", "B", "P", "Q")
#: recurrent step discretizations ('auto' = diagonal when its self-check passes -- in the model's
#: precision, else with a complex128 state -- else linear)
STEP_MODES = ("auto", "dense", "linear", "diagonal", "diagonal64")
INITS = ("legs", "diag-lin", "diag-inv", "diag-legs")


def check_rate(rate: object, name: str = "rate") -> float:
    """Validate a step-size multiplier: a finite number > 0 (TypeError for a bool or a tensor, ValueError for
    NaN, inf or <= 0); returns it as float."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise TypeError(f"{name} must be a positive finite number (int or float), got {type(rate).__name__}")
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {rate!r}")
    return float(rate)


def hippo_legs_dplr(N: int, rank: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HiPPO-LegS in the stable DPLR form ``A = diag(Lambda) - P P^*``, half-size (float64).

    LegS: ``A_nk = -sqrt((2n+1)(2k+1))`` (n > k), ``-(n+1)`` (n = k), 0 (n < k); ``B_n = sqrt(2n+1)``.
    With ``p_n = sqrt(n + 1/2)``, ``A + p p^T = -I/2 + S`` with S skew-symmetric, so in the
    eigenbasis V of S, ``A = V (diag(Lambda) - (V^* p)(V^* p)^*) V^*`` with ``Re(Lambda) = -1/2``.
    Of each conjugate pair the mode with negative imaginary part is kept (the reference's convention);
    B's imaginary part is clipped to [-2, 2] as in the reference's init. Extra ranks (rank > 1) are zero.

    Returns:
        Lambda (N/2,), P (rank, N/2), B (N/2,), all complex128.
    """
    if N % 2:
        raise ValueError(f"d_state must be even (conjugate pairs), got {N}")
    n = torch.arange(N, dtype=torch.float64)
    q = torch.sqrt(2 * n + 1)
    S = 0.5 * torch.outer(q, q)
    S = torch.tril(S, -1) * -1 + torch.triu(S, 1)  # skew part: -q_n q_k / 2 below, +q_n q_k / 2 above
    p = torch.sqrt(n + 0.5)
    omega, V = torch.linalg.eigh(-1j * S.to(torch.complex128))  # S = V diag(i omega) V^*
    keep = torch.argsort(omega)[: N // 2]  # omega < 0: Im(Lambda) < 0
    V = V[:, keep]
    Lam = torch.complex(torch.full((N // 2,), -0.5, dtype=torch.float64), omega[keep])
    Pt = V.conj().T @ p.to(torch.complex128)
    Bt = V.conj().T @ q.to(torch.complex128)
    Bt = torch.complex(Bt.real, Bt.imag.clamp(-2, 2))
    P = torch.zeros(rank, N // 2, dtype=torch.complex128)
    P[0] = Pt
    return Lam, P, Bt


def _diag_init(N: int, init: str) -> tuple[torch.Tensor, torch.Tensor]:
    n = torch.arange(N // 2, dtype=torch.float64)
    real = torch.full_like(n, -0.5)
    if init == "diag-lin":
        imag = math.pi * n
    elif init == "diag-inv":
        imag = N / math.pi * (N / (2 * n + 1) - 1)
    else:  # diag-legs: the diagonal part of the LegS DPLR form (S4D-LegS)
        lam, _, B = hippo_legs_dplr(N)
        return lam, B
    return torch.complex(real, imag), torch.ones(N // 2, dtype=torch.complex128)


@dataclass
class StepConstants:
    """Discretized constants for one recurrent step mode; computed by :meth:`S4Kernel.step_constants`.

    Shapes (H = d_model, N = d_state, c = channels):
      * ``dense``: dA (H, N, N), dB (H, N), dC (c, H, N); state (B, H, N).
      * ``linear``: with a = 1 + dt/2 Lambda and d = (1 - dt/2 Lambda)^-1: da = d a (H, N/2),
        dhP = d dt/2 P (r, H, N/2), ddtB = d dt B (H, N/2), Pc2 = 2 conj(P) (r, H, N/2), dP = d P,
        Winv (H, r, r) real, C2 = 2 C (c, H, N/2); state (B, H, N/2) holding one member of each
        conjugate pair.
      * ``diagonal``: dA (H, M), dB (H, M), dC (c, H, M) with M = N/2 for S4D (outputs use 2 Re);
        for an eigendecomposed DPLR system, one member of each conjugate eigenvalue pair plus the
        real eigenvalues (N/2 <= M <= N; the pair weight 2 is in dC; outputs use Re); state (B, H, M).

    The state's dtype is :attr:`state_dtype`, the dtype of the constants: normally the complex dtype
    of the model's precision, complex128 for a float32 model in the 'diagonal64' form (a float64
    state whose ill-conditioned eigenbasis still meets the float32 tolerance).
    """

    mode: str
    tensors: dict[str, torch.Tensor]
    state_size: int
    two_re: bool
    #: optional dense-form conversions of the state (x_full = to_full @ x, x = from_full @ x_full); the
    #: eigendecomposed DPLR form keeps one member of each conjugate pair and leaves them None
    to_full: torch.Tensor | None = None
    from_full: torch.Tensor | None = None
    #: relative max error of the diagonal kernel measured by the self-check (None when not run)
    check_error: float | None = None

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    @property
    def state_dtype(self) -> torch.dtype:
        """The complex dtype of the state these constants step."""
        return next(t.dtype for t in self.tensors.values() if t.is_complex())

    def to(self, dtype: torch.dtype) -> StepConstants:
        cdt = torch.complex64 if dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.complex128
        rdt = torch.float32 if cdt == torch.complex64 else torch.float64

        def cast(t):
            if t is None:
                return None
            return t.to(cdt) if t.is_complex() else t.to(rdt)

        return StepConstants(
            self.mode, {k: cast(v) for k, v in self.tensors.items()}, self.state_size, self.two_re,
            cast(self.to_full), cast(self.from_full), self.check_error,
        )


class S4Kernel(nn.Module):
    """Trainable SSM convolution kernel: stable DPLR (S4, ``A = Lambda - P P^*``) or diagonal (S4D).

    Parametrization: ``dt = exp(log_dt)`` (log-uniform init in [dt_min, dt_max]);
    ``Re(Lambda) = -exp(A_real_log) < 0`` by construction (the Hurwitz property: every discretized
    transition has spectral radius < 1, so generation cannot blow up); ``Im(Lambda) = A_imag``;
    ``B``, ``P``, ``C`` complex, stored as real views (..., 2). ``n_ssm`` distinct SSMs (A, B, P)
    are tiled over the ``d_model`` channels; each channel has its own dt and C.

    Args:
        d_model: H, number of independent channels.
        d_state: N, full state size (even); N/2 conjugate-pair modes are stored.
        channels: number of output kernels per channel (c).
        mode: 'dplr' (S4) or 'diag' (S4D).
        init: 'legs' (HiPPO-LegS, DPLR default), 'diag-lin', 'diag-inv', 'diag-legs' (S4D inits).
        rank: low-rank size r of P (DPLR).
        n_ssm: number of distinct SSMs tiled over H (None = H: one per channel).
        dt_min, dt_max: range of the log-uniform dt init; must satisfy 0 < dt_min <= dt_max.
        discretization: S4D only: 'zoh' (default) or 'bilinear'. DPLR is always bilinear.
        bidirectional: a second kernel for the time-reversed sequence (``2 * channels`` kernels).
        unconstrained: research option: untie Q from P (``A = Lambda - P Q^*``); loses the
            Hurwitz guarantee.
        ssm_lr: learning-rate hint for the SSM parameters (read by :func:`sashimi.optim.param_groups`).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        channels: int = 1,
        mode: str = "dplr",
        init: str | None = None,
        rank: int = 1,
        n_ssm: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        discretization: str | None = None,
        bidirectional: bool = False,
        unconstrained: bool = False,
        ssm_lr: float | None = None,
    ) -> None:
        super().__init__()
        for name, val in (("d_model", d_model), ("d_state", d_state), ("channels", channels), ("rank", rank)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if d_state % 2:
            raise ValueError(f"d_state must be even (conjugate pairs), got {d_state}")
        if mode not in ("dplr", "diag"):
            raise ValueError(f"mode must be 'dplr' or 'diag', got {mode!r}")
        init = init or ("legs" if mode == "dplr" else "diag-lin")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if mode == "dplr" and init != "legs":
            raise ValueError(f"mode='dplr' uses init='legs', got {init!r}")
        if mode == "diag" and init == "legs":
            raise ValueError("mode='diag' takes a diagonal init: 'diag-lin', 'diag-inv' or 'diag-legs'")
        if not (isinstance(dt_min, (int, float)) and isinstance(dt_max, (int, float))) or not 0 < dt_min <= dt_max:
            raise ValueError(f"dt bounds must satisfy 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        n_ssm = d_model if n_ssm is None else n_ssm
        if isinstance(n_ssm, bool) or not isinstance(n_ssm, int) or n_ssm < 1 or d_model % n_ssm:
            raise ValueError(f"n_ssm must be a positive divisor of d_model={d_model}, got {n_ssm!r}")
        if discretization is None:
            discretization = "bilinear" if mode == "dplr" else "zoh"
        if mode == "dplr" and discretization != "bilinear":
            raise ValueError("mode='dplr' uses discretization='bilinear'")
        if discretization not in ("zoh", "bilinear"):
            raise ValueError(f"discretization must be 'zoh' or 'bilinear', got {discretization!r}")
        if unconstrained and mode != "dplr":
            raise ValueError("unconstrained=True applies to mode='dplr' only")

        self.d_model, self.d_state, self.channels = d_model, d_state, channels
        self.mode, self.init, self.rank, self.n_ssm = mode, init, rank, n_ssm
        self.discretization, self.bidirectional, self.unconstrained = discretization, bidirectional, unconstrained
        self.dt_min, self.dt_max = float(dt_min), float(dt_max)
        n2 = d_state // 2

        if mode == "dplr":
            lam, P, B = hippo_legs_dplr(d_state, rank)
        else:
            lam, B = _diag_init(d_state, init)
            P = None
        log_dt = torch.rand(d_model, dtype=torch.float64) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        C = torch.randn(channels * (2 if bidirectional else 1), d_model, n2, dtype=torch.complex128)

        dtype = torch.get_default_dtype()
        self.log_dt = nn.Parameter(log_dt.to(dtype))
        self.A_real_log = nn.Parameter(repeat(torch.log(-lam.real), "n -> s n", s=n_ssm).to(dtype).clone())
        self.A_imag = nn.Parameter(repeat(lam.imag, "n -> s n", s=n_ssm).to(dtype).clone())
        self.B = nn.Parameter(repeat(torch.view_as_real(B), "n t -> s n t", s=n_ssm).to(dtype).clone())
        if P is not None:
            self.P = nn.Parameter(repeat(torch.view_as_real(P), "r n t -> r s n t", s=n_ssm).to(dtype).clone())
            if unconstrained:
                self.Q = nn.Parameter(self.P.detach().clone())
        self.C = nn.Parameter(torch.view_as_real(C).to(dtype).contiguous())
        for name in SSM_PARAM_NAMES:
            p = getattr(self, name, None)
            if isinstance(p, nn.Parameter):
                p._optim = {"lr": ssm_lr, "weight_decay": 0.0}
        #: restricted context: None (default) or w >= 0, keep only the taps that connect positions at most w
        #: apart (set by :func:`sashimi.layers.restricted_context`)
        self.window: int | None = None
        #: None, or a dict in which no-grad kernels are kept per (L, rate, window, backend) (set by
        #: :func:`sashimi.layers.frozen_kernels`; the parameters must not change while it is set)
        self.kernel_cache: dict | None = None

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, channels={self.channels}, mode={self.mode!r}, "
            f"init={self.init!r}, rank={self.rank}, n_ssm={self.n_ssm}, bidirectional={self.bidirectional}"
        )

    # ---- canonical parameters -------------------------------------------------------------
    def ssm_params(self, rate: float = 1.0, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor | None]:
        """Canonical complex parameters, tiled to H: dt (H,), A (H, N/2), B (H, N/2), C (c', H, N/2),
        P and Q (r, H, N/2) or None. ``dtype`` is the real precision (default: at least float32)."""
        check_rate(rate)
        rdt = dtype or (torch.float64 if self.log_dt.dtype == torch.float64 else torch.float32)
        tile = self.d_model // self.n_ssm

        def tiled(x: torch.Tensor) -> torch.Tensor:  # (..., n_ssm, N2, 2) -> complex (..., H, N2)
            x = torch.view_as_complex(x.to(rdt).contiguous())
            return x.repeat(*([1] * (x.ndim - 2)), tile, 1)

        A = torch.complex(-torch.exp(self.A_real_log.to(rdt)), self.A_imag.to(rdt)).repeat(tile, 1)
        P = tiled(self.P) if hasattr(self, "P") else None
        Q = tiled(self.Q) if hasattr(self, "Q") else None
        return {
            "dt": torch.exp(self.log_dt.to(rdt)) * rate,
            "A": A,
            "B": tiled(self.B),
            "C": torch.view_as_complex(self.C.to(rdt).contiguous()),
            "P": P,
            "Q": Q,
        }

    @torch.no_grad()
    def load_canonical(
        self,
        dt: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
        P: torch.Tensor | None = None,
    ) -> None:
        """Set the parameters from canonical values (the inverse of :meth:`ssm_params` at rate 1).

        Args:
            dt: (H,) positive. A: (n_ssm, N/2) complex with Re(A) < 0. B: (n_ssm, N/2) complex.
            C: (c', H, N/2) complex, canonical (not C~). P: (rank, n_ssm, N/2) complex (DPLR only).
        """
        n2 = self.d_state // 2
        expect = {"dt": (dt, (self.d_model,)), "A": (A, (self.n_ssm, n2)), "B": (B, (self.n_ssm, n2)),
                  "C": (C, tuple(self.C.shape[:-1]))}
        if hasattr(self, "P"):
            if P is None:
                raise ValueError("P is required for a DPLR kernel")
            expect["P"] = (P, (self.rank, self.n_ssm, n2))
        elif P is not None:
            raise ValueError("P was given but this kernel is diagonal (mode='diag')")
        for name, (t, shape) in expect.items():
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{name} must have shape {shape}, got {got}")
        if not torch.all(dt > 0):
            raise ValueError("dt must be positive")
        if not torch.all(A.real < 0):
            raise ValueError("A must have a negative real part (the stable parametrization stores log(-Re A))")
        self.log_dt.copy_(torch.log(dt))
        self.A_real_log.copy_(torch.log(-A.real))
        self.A_imag.copy_(A.imag)
        self.B.copy_(torch.view_as_real(B.to(torch.complex128)))
        self.C.copy_(torch.view_as_real(C.to(torch.complex128)))
        if P is not None:
            self.P.copy_(torch.view_as_real(P.to(torch.complex128)))
            if hasattr(self, "Q"):
                self.Q.copy_(self.P)

    def forward(self, L: int, rate: float = 1.0, *, backend: str | None = None) -> torch.Tensor:
        """The convolution kernel of length L.

        Args:
            L: kernel length (follows the input length; no fixed maximum).
            rate: step-size multiplier: ``dt -> dt * rate``. A model trained at sample rate ``sr``
                runs on audio at ``sr'`` with ``rate = sr / sr'`` (e.g. 0.5 for twice the rate).

        Returns:
            K: (c', H, L), float32 at least (float64 for a float64 module), where
            c' = channels (2 * channels when bidirectional: forward kernels first). With
            :attr:`window` w set, taps beyond it are zero: forward kernels keep lags 0..w, backward
            kernels (applied one step shifted, at lags -1, -2, ...) their first w taps.
        """
        key = (L, check_rate(rate), self.window, backend)  # validated before any cache lookup
        cache = None if torch.is_grad_enabled() else self.kernel_cache
        if cache is not None and key in cache:
            return cache[key]
        with torch.autocast(device_type=self.log_dt.device.type, enabled=False):
            p = self.ssm_params(rate)
            K = ssm_kernel(
                p["dt"], p["A"], p["B"], p["C"], L, p["P"], self.discretization, Q=p["Q"], backend=backend
            )
        if self.window is not None:
            keep = torch.arange(L, device=K.device) <= self.window  # (L,) forward lags 0..w
            if self.bidirectional:
                keep = torch.stack([keep, torch.arange(L, device=K.device) < self.window])  # (2, L)
                keep = keep.repeat_interleave(self.channels, dim=0).unsqueeze(1)  # (c', 1, L)
            K = K * keep
        if cache is not None:
            cache[key] = K
        return K

    # ---- recurrent mode ---------------------------------------------------------------------
    @torch.no_grad()
    def dense_system(self, rate: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The discretized full system in float64: dA (H, N, N), dB (H, N), dC (c', H, N)."""
        p = self.ssm_params(rate, torch.float64)
        if p["P"] is None:
            dA, dB, _ = discretize_diag(p["dt"], p["A"], p["B"], self.discretization)
            return torch.diag_embed(full_pairs(dA)), full_pairs(dB), full_pairs(p["C"])
        dA, dB = bilinear(p["dt"], dplr_matrix(p["A"], p["P"], p["Q"]), full_pairs(p["B"]))
        return dA, dB, full_pairs(p["C"])

    @torch.no_grad()
    def step_constants(
        self,
        mode: str = "auto",
        rate: float = 1.0,
        *,
        dtype: torch.dtype = torch.float64,
        tol: float | None = None,
        on_fail: str = "fallback",
        check_length: int = 2048,
    ) -> StepConstants:
        """Discretize once for recurrent stepping: computed in float64, returned cast to ``dtype``.

        Modes: 'dense' (O(N^2) per step), 'linear' (Woodbury, O(N r); DPLR), 'diagonal'
        (elementwise in the eigenbasis: exact for S4D; for DPLR its error is measured once, with
        the constants rounded to ``dtype``, against the exact kernel over ``check_length`` steps),
        'diagonal64' (DPLR: the diagonal form with complex128 constants and state whatever
        ``dtype`` is, checked against the tolerance of ``dtype``), 'auto' (S4D: diagonal; DPLR:
        diagonal if its self-check passes, else -- ``dtype`` below float64 -- 'diagonal64' if its
        check passes, else linear). When the check fails (relative max error > ``tol``; default
        1e-10 for float64, 1e-5 for float32), ``on_fail='fallback'`` uses 'linear' and
        ``on_fail='raise'`` raises.
        """
        if mode not in STEP_MODES:
            raise ValueError(f"step mode must be one of {STEP_MODES}, got {mode!r}")
        if on_fail not in ("fallback", "raise"):
            raise ValueError(f"on_fail must be 'fallback' or 'raise', got {on_fail!r}")
        if self.bidirectional:
            raise RuntimeError("a bidirectional S4 kernel is non-causal and has no recurrent step mode")
        tol = (1e-10 if dtype == torch.float64 else 1e-5) if tol is None else tol
        n2 = self.d_state // 2
        if self.mode == "diag" and mode in ("auto", "diagonal", "diagonal64", "linear"):
            p = self.ssm_params(rate, torch.float64)
            dA, dB, _ = discretize_diag(p["dt"], p["A"], p["B"], self.discretization)
            # S4D is exactly diagonal: its state stays in the model's precision
            return StepConstants("diagonal", {"dA": dA, "dB": dB, "dC": p["C"]}, n2, True).to(dtype)
        if mode == "dense":
            dA, dB, dC = self.dense_system(rate)
            return StepConstants("dense", {"dA": dA, "dB": dB, "dC": dC}, self.d_state, False).to(dtype)
        if mode in ("auto", "diagonal", "diagonal64"):
            if mode == "diagonal64":
                precisions = [torch.float64]
            elif mode == "auto" and dtype != torch.float64:
                precisions = [dtype, torch.float64]
            else:
                precisions = [dtype]
            candidates = self._diagonal_constants(rate, check_length, precisions)
            for consts in candidates:
                if consts.check_error <= tol:
                    return consts
            if mode != "auto" and on_fail == "raise":
                err = min(c.check_error for c in candidates)
                raise RuntimeError(
                    f"{mode} step mode is inaccurate for these parameters: its kernel differs from the exact "
                    f"kernel by {err:.2e} (relative, > tol={tol:.1e}); the eigenvectors are too "
                    "ill-conditioned (typical of the HiPPO-LegS init). Use mode='linear' or 'dense'."
                )
            lin = self._linear_constants(rate).to(dtype)
            lin.check_error = candidates[0].check_error
            return lin
        return self._linear_constants(rate).to(dtype)

    def _linear_constants(self, rate: float) -> StepConstants:
        p = self.ssm_params(rate, torch.float64)
        dt, A, P, Q, B, C = p["dt"], p["A"], p["P"], p["Q"], p["B"], p["C"]
        if Q is not None:
            raise NotImplementedError("linear step mode needs Q = P; use mode='dense' for the unconstrained form")
        hdt = (dt / 2).unsqueeze(-1)  # (H, 1)
        a = 1 + hdt * A  # (H, N2)
        d = 1 / (1 - hdt * A)  # (H, N2)
        dP = d * P  # (r, H, N2)
        # W = 2/dt I + Pf^H D Pf (real r x r per H): Woodbury for (D^-1 + dt/2 Pf Pf^H)^-1
        W = 2 * torch.einsum("ihn,jhn->hij", P.conj(), dP).real  # (H, r, r)
        W = W + torch.diag_embed((2 / dt).unsqueeze(-1).expand(-1, P.shape[0]))
        # one step: z = d (a x - dt/2 P s + dt B u) with s = Pf^H x; x' = z - dP Winv (Pf^H z)
        tensors = {
            "da": d * a,  # (H, N2)
            "dhP": d * hdt * P,  # (r, H, N2)
            "ddtB": d * dt.unsqueeze(-1) * B,  # (H, N2)
            "Pc2": 2 * P.conj(),  # (r, H, N2): Pf^H v = Re(sum 2 conj(P) v) for a conjugate-symmetric v
            "dP": dP,  # (r, H, N2)
            "Winv": torch.linalg.inv(W),  # (H, r, r)
            "C2": 2 * C,  # (c, H, N2)
        }
        return StepConstants("linear", tensors, self.d_state // 2, True)

    def _diagonal_constants(
        self, rate: float, check_length: int, precisions: list[torch.dtype]
    ) -> list[StepConstants]:
        """The eigendecomposed DPLR step, one :class:`StepConstants` per precision, each self-checked.

        The continuous full system is brought to real coordinates (``r = Re x, s = Im x`` of the
        conjugate-pair state), where its matrix is real; the eigendecomposition of a real matrix
        returns exact conjugate pairs, so one member of each pair is kept (its output weight 2 folded
        into dC) besides the real eigenvalues (HiPPO-LegS has a few): M = N - #pairs (N/2 when all
        eigenvalues are complex), outputs Re(dC . x). The bilinear transition shares the continuous eigenvectors:
        ``mu = (1 + dt/2 lam) / (1 - dt/2 lam)``, ``dB~ = dt / (1 - dt/2 lam) V^-1 B``. Channels with
        identical (A, P) (tiled SSMs, or the untrained init) share one eigendecomposition.
        """
        p = self.ssm_params(rate, torch.float64)
        dt, B, C = p["dt"], p["B"], p["C"]
        N, n2 = self.d_state, self.d_state // 2
        Af = dplr_matrix(p["A"], p["P"], p["Q"])  # (H, N, N) in the pair basis [x, conj x]
        eye = torch.eye(n2, dtype=torch.complex128, device=Af.device)
        # [r; s] = T [x; conj x] and [x; conj x] = Ti [r; s]
        T = torch.cat([torch.cat([eye / 2, eye / 2], 1), torch.cat([-0.5j * eye, 0.5j * eye], 1)], 0)
        Ti = torch.cat([torch.cat([eye, 1j * eye], 1), torch.cat([eye, -1j * eye], 1)], 0)
        Ar = (T @ Af @ Ti).real  # (H, N, N) real
        Br = torch.einsum("mn,hn->hm", T, full_pairs(B)).real  # (H, N)
        Cr = torch.einsum("chn,nm->chm", full_pairs(C), Ti).real  # (c, H, N)
        uniq, inv = torch.unique(Ar.reshape(Ar.shape[0], -1), dim=0, return_inverse=True)
        lam, V = torch.linalg.eig(uniq.reshape(-1, N, N))  # exact conjugate pairs (real input)
        # per distinct matrix: one member (Im > 0) of each conjugate pair, weight 2, and the real
        # eigenvalues, weight 1; padded to a common M with inert modes (lam = -1, zero B~ and C~).
        # The inverse basis comes from the real basis W = [Re V_pairs, Im V_pairs, V_reals]: its rows
        # for a pair are exact conjugates, which the huge cancellations of an ill-conditioned
        # eigenbasis need (an independent complex inverse loses them).
        sel = []
        for lu in lam:
            pairs = torch.nonzero(lu.imag > 0).flatten()
            reals = torch.nonzero(lu.imag == 0).flatten()
            if 2 * len(pairs) + len(reals) != N:  # not expected from a real matrix
                raise RuntimeError("the eigenvalues of the real state matrix are not in conjugate pairs")
            sel.append((pairs, reals))
        M = max(len(pr) + len(re) for pr, re in sel)
        U = lam.shape[0]
        lam_k = torch.full((U, M), -1.0, dtype=lam.dtype, device=lam.device)
        V_k = torch.zeros(U, N, M, dtype=V.dtype, device=V.device)
        Vinv_k = torch.zeros(U, M, N, dtype=V.dtype, device=V.device)
        weight = torch.zeros(U, M, dtype=torch.float64, device=V.device)
        for u, (pairs, reals) in enumerate(sel):
            npr, k = len(pairs), len(pairs) + len(reals)
            Vp, Vr = V[u][:, pairs], V[u][:, reals].real
            Winv = torch.linalg.inv(torch.cat([Vp.real, Vp.imag, Vr], dim=1))  # (N, N) real
            lam_k[u, :npr], lam_k[u, npr:k] = lam[u, pairs], lam[u, reals].real
            V_k[u, :, :npr], V_k[u, :, npr:k] = Vp, Vr
            Vinv_k[u, :npr] = torch.complex(Winv[:npr], -Winv[npr : 2 * npr]) / 2
            Vinv_k[u, npr:k] = Winv[2 * npr :]
            weight[u, :npr], weight[u, npr:k] = 2.0, 1.0
        lam, V, Vinv, weight = lam_k[inv], V_k[inv], Vinv_k[inv], weight[inv]  # per channel
        hdt = (dt / 2).unsqueeze(-1)  # (H, 1)
        den = 1 - hdt * lam
        mu = (1 + hdt * lam) / den  # (H, M)
        dBd = dt.unsqueeze(-1) / den * torch.einsum("hmn,hn->hm", Vinv, Br.to(Vinv.dtype))  # (H, M)
        dCd = torch.einsum("chn,hnm->chm", Cr.to(V.dtype), V) * weight  # (c, H, M): outputs Re(dC . x)
        exact = StepConstants("diagonal", {"dA": mu, "dB": dBd, "dC": dCd}, M, False)
        # self-check: the kernel of the diagonal form, with its constants and arithmetic in the
        # state's precision, against the exact float64 kernel
        L = check_length
        K = ssm_kernel(dt, p["A"], B, C, L, p["P"], Q=p["Q"], backend="torch")
        scale = K.abs().max().clamp_min(1e-300)
        out = []
        for dtype in precisions:
            consts = exact.to(dtype)
            t = consts.tensors
            # vandermonde returns 2 Re of its sum; the kernel is Re of the sum
            Kd = (0.5 * vandermonde(t["dC"] * t["dB"], torch.log(t["dA"]), L, backend="torch")).double()
            consts.check_error = float((Kd - K).abs().max() / scale)
            out.append(consts)
        return out
