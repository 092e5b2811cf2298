"""Tests of ``ssm_kernel`` (S4 / DPLR and S4D): golden data, an independent dense unroll, gradients, input checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sashimi.kernels import c_tilde, ssm_kernel, ssm_kernel_ref

# The golden cases are globbed at collection time; the path is computed like the `reference_dir`
# fixture of tests/conftest.py (which is what skips the tests when the folder is absent).
_REF = Path(__file__).resolve().parents[2].parent / "shared" / "reference"


def _cases(prefix: str) -> list[str]:
    return sorted(p.stem for p in _REF.glob(f"{prefix}*.safetensors")) if _REF.is_dir() else []


DPLR_CASES = _cases("s4_dplr_kernel")
S4D_CASES = _cases("s4d_kernel")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative L2 error of ``a`` against the truth ``b`` (computed in float64)."""
    a, b = a.detach().to(torch.float64), b.detach().to(torch.float64)
    return ((a - b).norm() / b.norm()).item()


def _to32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.complex64) if t.is_complex() else t.to(torch.float32)


def _to64(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.complex128) if t.is_complex() else t.to(torch.float64)


# ---------------------------------------------------------------------------------------------
# Independent float64 unroll (written here from the README's definitions; no package helpers).
# ---------------------------------------------------------------------------------------------


def unroll_dplr(dt, Lam, P, B, C, L):
    """K[c, h, l] = Cf Abar^l Bbar for the full N-dim DPLR system, bilinear discretization."""
    dt, Lam, P, B, C = dt.double(), Lam.cdouble(), P.cdouble(), B.cdouble(), C.cdouble()
    H, n2 = Lam.shape
    N = 2 * n2
    K = torch.zeros(C.shape[0], H, L, dtype=torch.float64)
    for h in range(H):
        A = torch.zeros(N, N, dtype=torch.complex128)
        for n in range(n2):
            A[n, n] = Lam[h, n]
            A[n2 + n, n2 + n] = Lam[h, n].conj()
        for r in range(P.shape[0]):
            pf = torch.cat([P[r, h], P[r, h].conj()])
            A = A - torch.outer(pf, pf.conj())
        eye = torch.eye(N, dtype=torch.complex128)
        step = float(dt[h])
        inv = torch.linalg.inv(eye - step / 2 * A)
        Abar = inv @ (eye + step / 2 * A)
        Bbar = inv @ (step * torch.cat([B[h], B[h].conj()]))
        Cf = torch.cat([C[:, h], C[:, h].conj()], dim=-1)  # (c, N)
        x = Bbar
        for l in range(L):
            y = Cf @ x
            assert y.imag.abs().max() < 1e-8  # the full-system kernel is real
            K[:, h, l] = y.real
            x = Abar @ x
    return K


def unroll_s4d(dt, A, B, C, L, discretization):
    """K[c, h, l] = sum over the full (conjugate-pair) diagonal system of Cf dBf dAf^l."""
    dt, A, B, C = dt.double(), A.cdouble(), B.cdouble(), C.cdouble()
    dtA = dt[:, None] * A
    if discretization == "zoh":
        dA = torch.exp(dtA)
        dB = (torch.exp(dtA) - 1) / A * B
    else:
        dA = (1 + dtA / 2) / (1 - dtA / 2)
        dB = dt[:, None] / (1 - dtA / 2) * B
    dAf = torch.cat([dA, dA.conj()], dim=-1)  # (H, N)
    x = torch.cat([dB, dB.conj()], dim=-1)
    Cf = torch.cat([C, C.conj()], dim=-1)  # (c, H, N)
    K = torch.zeros(C.shape[0], A.shape[0], L, dtype=torch.float64)
    for l in range(L):
        y = (Cf * x).sum(-1)
        assert y.imag.abs().max() < 1e-8
        K[..., l] = y.real
        x = dAf * x
    return K


def unroll_halfsize_2re(dt, Lam, P, B, C, L):
    """The *wrong* convention: 2 Re of the N/2-dim system diag(Lambda) - P P^*, bilinear."""
    A = torch.diag_embed(Lam) - torch.einsum("rhm,rhn->hmn", P, P.conj())
    eye = torch.eye(Lam.shape[-1], dtype=A.dtype)
    half = (dt / 2)[:, None, None].to(A.dtype)
    Abar = torch.linalg.solve(eye - half * A, eye + half * A)
    Bbar = torch.linalg.solve(eye - half * A, (dt[:, None] * B).unsqueeze(-1)).squeeze(-1)
    out, x = [], Bbar
    for _ in range(L):
        out.append(2 * torch.einsum("chn,hn->ch", C, x).real)
        x = torch.einsum("hmn,hn->hm", Abar, x)
    return torch.stack(out, dim=-1)


def random_params(seed, H=3, n2=5, rank=1, channels=1, dtype=torch.complex128):
    """Random stable parameters: Re(Lambda) < 0; dt spans slow (1e-3, truncation matters) to fast (0.1)."""
    g = torch.Generator().manual_seed(seed)

    def cplx(*shape):
        return torch.complex(torch.randn(*shape, generator=g, dtype=torch.float64),
                             torch.randn(*shape, generator=g, dtype=torch.float64))

    lam = torch.complex(-(0.1 + torch.rand(H, n2, generator=g, dtype=torch.float64)),
                        10 * torch.randn(H, n2, generator=g, dtype=torch.float64))
    dt = torch.exp(torch.linspace(torch.log(torch.tensor(1e-3)).item(), torch.log(torch.tensor(1e-1)).item(), H,
                                  dtype=torch.float64))
    P = 0.5 * cplx(rank, H, n2)
    B = cplx(H, n2)
    C = cplx(channels, H, n2)
    return dt, lam.to(dtype), P.to(dtype), B.to(dtype), C.to(dtype)


# ---------------------------------------------------------------------------------------------
# 1. Golden reference data (official implementation)
# ---------------------------------------------------------------------------------------------


def _golden_args(tensors, meta):
    if "Lambda" in tensors:
        return dict(dt=tensors["dt"], A=tensors["Lambda"], B=tensors["B"], C=tensors["C"], L=int(meta["L"]),
                    P=tensors["P"])
    return dict(dt=tensors["dt"], A=tensors["A"], B=tensors["B"], C=tensors["C"], L=int(meta["L"]),
                discretization=meta["discretization"])


@pytest.mark.parametrize("case", DPLR_CASES + S4D_CASES)
def test_golden_kernel_float64(load_case, case):
    tensors, meta = load_case(case)
    args = _golden_args(tensors, meta)
    K = ssm_kernel(**args, backend="torch")
    assert K.dtype == torch.float64
    assert K.shape == tensors["K"].shape
    assert rel_err(K, tensors["K"]) < 1e-9


@pytest.mark.parametrize("case", DPLR_CASES + S4D_CASES)
def test_golden_kernel_float32(load_case, case):
    tensors, meta = load_case(case)
    args = _golden_args(tensors, meta)
    args32 = {k: (_to32(v) if isinstance(v, torch.Tensor) else v) for k, v in args.items()}
    # float64 evaluation of the SAME float32-rounded parameters: separates our computation error
    # from the error that rounding the inputs to float32 causes by itself.
    args_rounded64 = {k: (_to64(v) if isinstance(v, torch.Tensor) else v) for k, v in args32.items()}
    K32 = ssm_kernel(**args32, backend="torch")
    assert K32.dtype == torch.float32
    K_rounded = ssm_kernel(**args_rounded64, backend="torch")
    computation = rel_err(K32, K_rounded)
    assert computation < 1e-5
    # r = the part of the error vs golden caused only by rounding the inputs to float32. It is not
    # negligible: for s4d_kernel_random_zoh_H4_N64_L1000_ch2 it is itself ~1.1e-5 (the kernel is
    # sensitive to dt * A over 1000 steps), so a plain "< 1e-5 vs golden" would test the data, not us.
    r = rel_err(K_rounded, tensors["K"])
    assert rel_err(K32, tensors["K"]) < 1e-5 + r


@pytest.mark.parametrize("case", DPLR_CASES)
def test_golden_c_tilde(load_case, case):
    tensors, meta = load_case(case)
    Ct = c_tilde(tensors["dt"], tensors["Lambda"], tensors["P"], tensors["C"], int(meta["L"]))
    assert Ct.shape == tensors["C_tilde"].shape
    assert rel_err(torch.view_as_real(Ct), torch.view_as_real(tensors["C_tilde"])) < 1e-9


@pytest.mark.parametrize("case", DPLR_CASES)
def test_golden_halfsize_2re_is_not_the_dplr_kernel(load_case, case):
    """README point 4: 2*Re of the N/2-dim system differs from the kernel (the low rank couples the halves)."""
    tensors, meta = load_case(case)
    wrong = unroll_halfsize_2re(tensors["dt"], tensors["Lambda"], tensors["P"], tensors["B"], tensors["C"],
                                int(meta["L"]))
    diff = (wrong - tensors["K"]).abs().max().item()
    assert diff > 1e-2
    assert diff == pytest.approx(meta["max_abs_diff_ref_vs_2Re_halfsize_dplr"], rel=1e-2)
    # ... while ours is the kernel
    ours = ssm_kernel(tensors["dt"], tensors["Lambda"], tensors["B"], tensors["C"], int(meta["L"]), P=tensors["P"])
    assert (ours - tensors["K"]).abs().max().item() < 1e-10


@pytest.mark.parametrize("case", DPLR_CASES[:1] + S4D_CASES[:1])
def test_golden_data_matches_own_unroll(load_case, case):
    """Sanity check of the test's own unroll against the official data (so its use below is justified)."""
    tensors, meta = load_case(case)
    L = min(int(meta["L"]), 64)
    if "Lambda" in tensors:
        K = unroll_dplr(tensors["dt"], tensors["Lambda"], tensors["P"], tensors["B"], tensors["C"], L)
        # the golden kernel is the truncation of the infinite kernel, so its prefix is the unroll
    else:
        K = unroll_s4d(tensors["dt"], tensors["A"], tensors["B"], tensors["C"], L, meta["discretization"])
    assert rel_err(K, tensors["K"][..., :L]) < 1e-10


# ---------------------------------------------------------------------------------------------
# 2. Random parameters vs the independent float64 unroll
# ---------------------------------------------------------------------------------------------

LENGTHS = [1, 2, 3, 1000]  # odd and even (even L goes through the Nyquist node specially)


@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("rank,channels", [(1, 1), (2, 2), (1, 2), (2, 1)])
def test_dplr_vs_unroll(L, rank, channels):
    dt, lam, P, B, C = random_params(seed=10 * rank + channels + L, rank=rank, channels=channels)
    truth = unroll_dplr(dt, lam, P, B, C, L)
    K = ssm_kernel(dt, lam, B, C, L, P=P, backend="torch")
    assert K.shape == (channels, 3, L)
    assert rel_err(K, truth) < 1e-10


@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
@pytest.mark.parametrize("channels", [1, 2])
def test_s4d_vs_unroll(L, discretization, channels):
    dt, A, _, B, C = random_params(seed=7 * channels + L, channels=channels)
    truth = unroll_s4d(dt, A, B, C, L, discretization)
    K = ssm_kernel(dt, A, B, C, L, discretization=discretization, backend="torch")
    assert K.shape == (channels, 3, L)
    assert rel_err(K, truth) < 1e-10


def test_s4d_default_discretization_is_zoh():
    dt, A, _, B, C = random_params(seed=3)
    truth = unroll_s4d(dt, A, B, C, 50, "zoh")
    assert rel_err(ssm_kernel(dt, A, B, C, 50, backend="torch"), truth) < 1e-10
    # and the two discretizations really differ on these parameters
    assert rel_err(unroll_s4d(dt, A, B, C, 50, "bilinear"), truth) > 1e-6


@pytest.mark.parametrize("L", [1, 2, 3, 64, 65, 1000])
@pytest.mark.parametrize("rank,channels", [(1, 1), (2, 2)])
def test_ssm_kernel_ref_vs_unroll(L, rank, channels):
    dt, lam, P, B, C = random_params(seed=100 + L, rank=rank, channels=channels)
    assert rel_err(ssm_kernel_ref(dt, lam, B, C, L, P=P), unroll_dplr(dt, lam, P, B, C, L)) < 1e-10
    for disc in ("zoh", "bilinear"):
        assert rel_err(ssm_kernel_ref(dt, lam, B, C, L, discretization=disc),
                       unroll_s4d(dt, lam, B, C, L, disc)) < 1e-10


@pytest.mark.parametrize("L", [2, 3, 1000])
def test_ssm_kernel_ref_backend_vs_unroll(L):
    """backend='ref' (dense Cauchy / Vandermonde inside ssm_kernel) gives the same kernels."""
    dt, lam, P, B, C = random_params(seed=200 + L, rank=1, channels=2)
    assert rel_err(ssm_kernel(dt, lam, B, C, L, P=P, backend="ref"), unroll_dplr(dt, lam, P, B, C, L)) < 1e-10
    assert rel_err(ssm_kernel(dt, lam, B, C, L, backend="ref"), unroll_s4d(dt, lam, B, C, L, "zoh")) < 1e-10


@pytest.mark.parametrize("L", [7, 256])
def test_float32_random_vs_unroll(L):
    """complex64 parameters: error vs the float64 unroll of the same rounded parameters < 1e-5."""
    dt, lam, P, B, C = random_params(seed=300 + L, rank=1, channels=2, dtype=torch.complex64)
    dt = dt.float()
    K = ssm_kernel(dt, lam, B, C, L, P=P, backend="torch")
    assert K.dtype == torch.float32
    assert rel_err(K, unroll_dplr(dt, lam, P, B, C, L)) < 1e-5
    K = ssm_kernel(dt, lam, B, C, L, backend="torch")
    assert K.dtype == torch.float32
    assert rel_err(K, unroll_s4d(dt, lam, B, C, L, "zoh")) < 1e-5


# ---------------------------------------------------------------------------------------------
# 4. Gradients
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("L", [5, 6])
def test_gradcheck_dplr(L):
    dt, lam, P, B, C = random_params(seed=5, H=2, n2=3, rank=1, channels=1)
    dt = (dt * 50).requires_grad_()  # larger steps: a kernel that varies within L
    inputs = [t.clone().requires_grad_() for t in (lam, B, C, P)]

    def f(dt, lam, B, C, P):
        return ssm_kernel(dt, lam, B, C, L, P=P, backend="torch")

    assert torch.autograd.gradcheck(f, (dt, *inputs), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_gradcheck_s4d(discretization):
    dt, A, _, B, C = random_params(seed=6, H=2, n2=3, channels=2)
    dt = (dt * 50).requires_grad_()
    inputs = [t.clone().requires_grad_() for t in (A, B, C)]

    def f(dt, A, B, C):
        return ssm_kernel(dt, A, B, C, 7, discretization=discretization, backend="torch")

    assert torch.autograd.gradcheck(f, (dt, *inputs), eps=1e-6, atol=1e-7, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# 5. Bad input
# ---------------------------------------------------------------------------------------------


def _good():
    dt, lam, P, B, C = random_params(seed=1, H=2, n2=3, rank=1, channels=1)
    return dict(dt=dt, A=lam, B=B, C=C, L=8, P=P)


@pytest.mark.parametrize(
    "change,exc,match",
    [
        (dict(A=torch.zeros(2, 3, 1, dtype=torch.complex128)), ValueError, "A must have 2 dimensions"),
        (dict(A=torch.zeros(2, 3, dtype=torch.float64)), TypeError, "A must be complex"),
        (dict(B=torch.zeros(2, 4, dtype=torch.complex128)), ValueError, r"B must have shape \(H, N/2\)"),
        (dict(B=torch.zeros(2, 3, dtype=torch.complex64)), TypeError, "B must have A's dtype"),
        (dict(C=torch.zeros(2, 3, dtype=torch.complex128)), ValueError, "C must have 3 dimensions"),
        (dict(C=torch.zeros(1, 3, 3, dtype=torch.complex128)), ValueError, r"C must have shape \(channels, H, N/2\)"),
        (dict(P=torch.zeros(2, 3, dtype=torch.complex128)), ValueError, "P must have 3 dimensions"),
        (dict(P=torch.zeros(1, 2, 3, dtype=torch.complex64)), TypeError, "P must have A's dtype"),
        (dict(dt=torch.ones(3, dtype=torch.float64)), ValueError, r"dt must have shape \(H,\)"),
        (dict(dt=torch.ones(2, dtype=torch.float32)), TypeError, "dt must have dtype torch.float64"),
        (dict(dt=torch.ones(2, dtype=torch.complex128)), TypeError, "dt must be a real floating tensor"),
        (dict(dt=torch.tensor([0.1, 0.0], dtype=torch.float64)), ValueError, "dt must be positive"),
        (dict(dt=torch.tensor([-0.1, 0.1], dtype=torch.float64)), ValueError, "dt must be positive"),
        (dict(L=0), ValueError, "L must be >= 1"),
        (dict(L=-3), ValueError, "L must be >= 1"),
        (dict(L=8.0), TypeError, "L must be an int"),
        (dict(L="8"), TypeError, "L must be an int"),
        (dict(discretization="euler"), ValueError, "discretization must be one of"),
        (dict(discretization="zoh"), ValueError, r"P given\) supports discretization='bilinear'"),
        (dict(A=[[1j]]), TypeError, "A must be a torch.Tensor"),
    ],
)
@pytest.mark.parametrize("fn", [ssm_kernel, ssm_kernel_ref], ids=["ssm_kernel", "ssm_kernel_ref"])
def test_bad_input(fn, change, exc, match):
    kwargs = _good()
    kwargs.update(change)
    with pytest.raises(exc, match=match):
        fn(**kwargs)


def test_bad_discretization_s4d():
    kwargs = _good()
    kwargs.pop("P")
    with pytest.raises(ValueError, match="discretization must be one of"):
        ssm_kernel(**kwargs, discretization="foh")


def test_L_as_0d_tensor_is_accepted():
    kwargs = _good()
    ref = ssm_kernel(**kwargs)
    kwargs["L"] = torch.tensor(8)
    assert torch.equal(ssm_kernel(**kwargs), ref)
