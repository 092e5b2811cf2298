"""The training-speed paths of the DPLR kernel: the pair-by-pair Cauchy sum at imaginary nodes (custom
backward), ``c_tilde`` in real coordinates (Woodbury bilinear, squarings + vector-matrix chain), and the
scalar channel norm written out; each against the plain formula it replaces."""

from __future__ import annotations

import math

import pytest
import torch

from sashimi.kernels import cauchy, cauchy_ref, c_tilde
from sashimi.kernels.ssm import _vec_matrix_power, bilinear, dplr_matrix, full_pairs, truncation_factor
from sashimi.layers.blocks import ScalarChannelNorm
from sashimi.layers.s4kernel import hippo_legs_dplr


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().to(torch.complex128), b.detach().to(torch.complex128)
    return ((a - b).norm() / b.norm()).item()


def cplx(g, *shape):
    return torch.complex(torch.randn(*shape, generator=g, dtype=torch.float64),
                         torch.randn(*shape, generator=g, dtype=torch.float64))


def poles(g, *shape):
    return torch.complex(-(0.05 + torch.rand(*shape, generator=g, dtype=torch.float64)),
                         20 * torch.randn(*shape, generator=g, dtype=torch.float64))


# ---- Cauchy at imaginary nodes ----------------------------------------------------------------
@pytest.mark.parametrize("y", [
    torch.tensor([0.0, 0.3, 5.0, 19.9, 40.0], dtype=torch.float64),  # y = 0 and nodes near |Im w|
    torch.tensor([-7.0, -0.2, 0.0, 2.5], dtype=torch.float64),  # negative nodes (not the kernel's)
])
def test_imaginary_nodes_gradcheck(y):
    g = torch.Generator().manual_seed(1)
    v = cplx(g, 3, 2, 4).requires_grad_()
    w = poles(g, 2, 4).requires_grad_()
    z = torch.complex(torch.zeros_like(y), y)
    assert torch.autograd.gradcheck(lambda v, w: cauchy(v, z, w, backend="torch"), (v, w))
    assert rel(cauchy(v, z, w, backend="torch"), cauchy_ref(v, z, w)) < 1e-13


def test_imaginary_nodes_second_order_is_a_clear_error():
    """The chunked backward is not itself differentiable: asking for a second derivative says so."""
    g = torch.Generator().manual_seed(2)
    v, w = cplx(g, 1, 2, 4).requires_grad_(), poles(g, 2, 4).requires_grad_()
    z = torch.complex(torch.zeros(6, dtype=torch.float64), torch.linspace(0, 3, 6, dtype=torch.float64))
    (gv,) = torch.autograd.grad(cauchy(v, z, w, backend="torch").abs().sum(), v, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gv.abs().sum().backward()


def test_imaginary_nodes_float32_grads_match_the_dense_spec():
    g = torch.Generator().manual_seed(2)
    L = 3000
    k = torch.arange(L // 2, dtype=torch.float64)
    z = torch.complex(torch.zeros_like(k), 2 * torch.tan(math.pi * k / L))
    v, w, cot = cplx(g, 4, 6, 16), poles(g, 6, 16), cplx(g, 4, 6, L // 2)

    def grads(fn, dtype):
        a = v.detach().to(dtype).clone().requires_grad_()
        b = w.detach().to(dtype).clone().requires_grad_()
        out = fn(a, z.to(dtype), b)
        (out * cot.to(dtype)).real.sum().backward()
        return out, a.grad, b.grad

    truth = grads(cauchy_ref, torch.complex128)
    ref32 = grads(cauchy_ref, torch.complex64)
    ours = grads(lambda a, zz, b: cauchy(a, zz, b, backend="torch"), torch.complex64)
    for t, r, o in zip(truth, ref32, ours):
        assert o.dtype == torch.complex64
        assert rel(o, t) <= 3 * rel(r, t) + 1e-6


def test_imaginary_nodes_used_only_without_node_gradient():
    # z requiring grad keeps the general (autograd) path, which differentiates z too
    g = torch.Generator().manual_seed(3)
    v, w = cplx(g, 2, 3), poles(g, 2, 3)
    z = torch.complex(torch.zeros(5, dtype=torch.float64), torch.linspace(0, 9, 5, dtype=torch.float64))
    z.requires_grad_()
    out = cauchy(v, z, w, backend="torch")
    (gz,) = torch.autograd.grad(out.abs().sum(), z)
    assert gz.shape == z.shape and torch.isfinite(gz).all()


# ---- c_tilde -----------------------------------------------------------------------------------
def _c_tilde_dense(dt, A, P, C, L, Q=None):
    """The complex dense formula: Cf (I - Abar^L) with Abar from the dense bilinear solve."""
    dA, _ = bilinear(dt, dplr_matrix(A, P, Q), full_pairs(A))
    return torch.einsum("chm,hmn->chn", full_pairs(C), truncation_factor(dA, L))[..., : A.shape[-1]]


@pytest.mark.parametrize("rank,untied", [(1, False), (2, False), (1, True)])
@pytest.mark.parametrize("L", [1, 5, 64, 127, 1000, 4096])
def test_c_tilde_matches_the_dense_formula(rank, untied, L):
    g = torch.Generator().manual_seed(10 * L + rank)
    H, N = 3, 16
    lam, P1, _ = hippo_legs_dplr(N, rank)
    A = lam.expand(H, -1).clone()
    P = P1.unsqueeze(1).expand(-1, H, -1).clone() + (0.1 * cplx(g, rank, H, N // 2) if rank > 1 else 0)
    Q = P + 0.05 * cplx(g, rank, H, N // 2) if untied else None
    dt = torch.tensor([1e-3, 2e-2, 3e-1], dtype=torch.float64)
    C = cplx(g, 2, H, N // 2)
    assert rel(c_tilde(dt, A, P, C, L, Q), _c_tilde_dense(dt, A, P, C, L, Q)) < 1e-11


def test_c_tilde_gradcheck():
    g = torch.Generator().manual_seed(4)
    lam, P1, _ = hippo_legs_dplr(8)
    A = lam.expand(2, -1).clone().requires_grad_()
    P = P1.unsqueeze(1).expand(-1, 2, -1).clone().requires_grad_()
    C = cplx(g, 1, 2, 4).requires_grad_()
    dt = torch.tensor([0.05, 0.2], dtype=torch.float64, requires_grad=True)
    for L in (3, 200):  # 200: squarings and the vector-matrix chain
        assert torch.autograd.gradcheck(lambda dt, A, P, C: c_tilde(dt, A, P, C, L), (dt, A, P, C))


@pytest.mark.parametrize("L", [1, 2, 63, 64, 65, 130, 1000])
def test_vec_matrix_power(L):
    g = torch.Generator().manual_seed(L)
    M = (0.3 * torch.randn(2, 5, 5, generator=g, dtype=torch.float64)).requires_grad_()
    u = torch.randn(2, 3, 5, generator=g, dtype=torch.float64).requires_grad_()
    expected = u @ torch.linalg.matrix_power(M, L)
    got = _vec_matrix_power(u, M, L)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-14)
    gu, gM = torch.autograd.grad(got.sum(), (u, M))
    eu, eM = torch.autograd.grad(expected.sum(), (u, M))
    assert torch.allclose(gu, eu, rtol=1e-9, atol=1e-13) and torch.allclose(gM, eM, rtol=1e-9, atol=1e-13)
    with torch.no_grad():
        assert torch.allclose(_vec_matrix_power(u, M, L), expected, rtol=1e-10, atol=1e-14)


# ---- scalar channel norm ------------------------------------------------------------------------
def test_scalar_norm_equals_the_std_mean_formula():
    g = torch.Generator().manual_seed(5)
    norm = ScalarChannelNorm(8).double()
    with torch.no_grad():
        norm.m.fill_(0.3)
        norm.s.fill_(1.7)
    x = (3 + 2 * torch.randn(2, 11, 8, generator=g, dtype=torch.float64)).requires_grad_()
    std, mean = torch.std_mean(x, dim=-1, unbiased=False, keepdim=True)
    expected = (norm.s / std) * (x - mean + norm.m)
    got = norm(x)
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)
    cot = torch.randn(2, 11, 8, generator=g, dtype=torch.float64)
    a = torch.autograd.grad((got * cot).sum(), (x, norm.m, norm.s))
    b = torch.autograd.grad((expected * cot).sum(), (x, norm.m, norm.s))
    assert all(torch.allclose(p, q, rtol=1e-10, atol=1e-12) for p, q in zip(a, b))
    # no epsilon: constant positions give non-finite values, as the reference
    assert not torch.isfinite(norm(torch.ones(1, 2, 8, dtype=torch.float64))).all()
