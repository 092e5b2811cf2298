"""Tests of the Cauchy kernel (torch path vs the dense spec), its gradients, input checks and backend selection."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from sashimi.kernels import available_backends, cauchy, cauchy_ref, vandermonde

# ``sashimi.kernels.cauchy`` the attribute is the function; the module is reached through importlib.
cauchy_module = importlib.import_module("sashimi.kernels.cauchy")
vandermonde_module = importlib.import_module("sashimi.kernels.vandermonde")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().to(torch.complex128), b.detach().to(torch.complex128)
    return ((a - b).norm() / b.norm()).item()


def cplx(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.complex(torch.randn(*shape, generator=g, dtype=torch.float64),
                         torch.randn(*shape, generator=g, dtype=torch.float64))


def poles(g: torch.Generator, *shape: int) -> torch.Tensor:
    """Stable poles as in the DPLR kernel (dt * Lambda): Re < 0, spread imaginary parts."""
    return torch.complex(-(0.05 + torch.rand(*shape, generator=g, dtype=torch.float64)),
                         20 * torch.randn(*shape, generator=g, dtype=torch.float64))


def bilinear_nodes(L: int) -> torch.Tensor:
    """z_k = 2i tan(pi k / L), k < L/2: the nodes the DPLR kernel uses."""
    k = torch.arange((L + 1) // 2, dtype=torch.float64)
    return torch.complex(torch.zeros_like(k), 2 * torch.tan(math.pi * k / L))


def cauchy_loop(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Scalar-loop definition for one row (independent of cauchy_ref's broadcasting)."""
    out = torch.zeros(z.shape[0], dtype=torch.complex128)
    for l in range(z.shape[0]):
        acc = 0j
        for n in range(v.shape[-1]):
            vn, wn, zl = complex(v[n]), complex(w[n]), complex(z[l])
            acc += vn / (zl - wn) + vn.conjugate() / (zl - wn.conjugate())
        out[l] = acc
    return out


# (v shape, w shape): shared poles across numerator rows, extra leading dims, leading-1 poles,
# non-suffix broadcasting, and unbatched.
SHAPES = [
    ((4, 3, 7), (3, 7)),
    ((2, 4, 3, 7), (3, 7)),
    ((3, 7), (3, 7)),
    ((7,), (7,)),
    ((7,), (5, 7)),
    ((5, 1, 7), (3, 7)),
    ((4, 3, 7), (1, 3, 7)),
    ((2, 3, 7), (2, 1, 7)),
    ((3, 1, 7), (1, 4, 7)),
    ((3, 32), (1, 32)),
]


@pytest.mark.parametrize("vshape,wshape", SHAPES)
@pytest.mark.parametrize("L", [997, 16])
def test_cauchy_torch_vs_ref_float64(vshape, wshape, L):
    g = torch.Generator().manual_seed(L + len(vshape) * 10 + len(wshape))
    v, w = cplx(g, *vshape), poles(g, *wshape)
    z = bilinear_nodes(2 * L)[:L] if L % 2 else cplx(g, L)  # imaginary-axis nodes, and generic complex nodes
    ref = cauchy_ref(v, z, w)
    out = cauchy(v, z, w, backend="torch")
    assert out.shape == torch.broadcast_shapes(vshape[:-1], wshape[:-1]) + (L,)
    assert out.dtype == torch.complex128
    assert rel_err(out, ref) < 1e-12


def test_cauchy_ref_matches_scalar_loop():
    g = torch.Generator().manual_seed(0)
    v, w, z = cplx(g, 5), poles(g, 5), cplx(g, 11)
    truth = cauchy_loop(v, z, w)
    assert rel_err(cauchy_ref(v, z, w), truth) < 1e-13
    assert rel_err(cauchy(v, z, w, backend="torch"), truth) < 1e-12


@pytest.mark.parametrize("vshape,wshape", SHAPES[:4])
def test_cauchy_torch_vs_ref_float32(vshape, wshape):
    g = torch.Generator().manual_seed(42)
    v, w, z = cplx(g, *vshape), poles(g, *wshape), bilinear_nodes(997)
    v32, w32, z32 = v.to(torch.complex64), w.to(torch.complex64), z.to(torch.complex64)
    truth = cauchy_ref(v32.to(torch.complex128), z32.to(torch.complex128), w32.to(torch.complex128))
    out = cauchy(v32, z32, w32, backend="torch")
    assert out.dtype == torch.complex64
    ref_err = rel_err(cauchy_ref(v32, z32, w32), truth)
    assert rel_err(out, truth) <= 2 * ref_err + 1e-6


def test_cauchy_uses_conjugate_pairs():
    """The conj half really enters: real v and w give a conjugate-symmetric pair sum, not v/(z-w) alone."""
    v = torch.tensor([1.0 + 2.0j], dtype=torch.complex128)
    w = torch.tensor([-0.5 + 3.0j], dtype=torch.complex128)
    z = torch.tensor([0.7j], dtype=torch.complex128)
    expected = v / (z - w) + v.conj() / (z - w.conj())
    assert torch.allclose(cauchy(v, z, w, backend="torch"), expected, rtol=1e-14, atol=0)


# ---------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vshape,wshape", [((2, 3, 4), (3, 4)), ((3, 4), (3, 4))])
def test_cauchy_gradcheck(vshape, wshape):
    g = torch.Generator().manual_seed(3)
    v = cplx(g, *vshape).requires_grad_()
    w = poles(g, *wshape).requires_grad_()
    z = cplx(g, 5)
    assert torch.autograd.gradcheck(lambda v, w: cauchy(v, z, w, backend="torch"), (v, w))


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


def _ok():
    g = torch.Generator().manual_seed(0)
    return dict(v=cplx(g, 2, 3, 4), z=cplx(g, 6), w=poles(g, 3, 4))


@pytest.mark.parametrize(
    "change,exc,match",
    [
        (dict(z=torch.zeros(2, 6, dtype=torch.complex128)), ValueError, "z must have 1 dimensions"),
        (dict(z=torch.zeros(0, dtype=torch.complex128)), ValueError, "z must hold at least one node"),
        (dict(w=torch.zeros(3, 5, dtype=torch.complex128)), ValueError, "w must have last dimension"),
        (dict(w=torch.zeros(5, 4, dtype=torch.complex128)), ValueError, "w's leading dimensions"),
        (dict(v=torch.zeros(2, 3, 4, dtype=torch.float64)), TypeError, "v must be complex"),
        (dict(w=torch.zeros(3, 4, dtype=torch.float64)), TypeError, "w must be complex"),
        (dict(z=torch.zeros(6, dtype=torch.float64)), TypeError, "z must be complex"),
        (dict(v=torch.zeros(2, 3, 4, dtype=torch.complex64)), TypeError, "v, z and w must share one complex dtype"),
        (dict(v=torch.zeros(2, 3, 0, dtype=torch.complex128), w=torch.zeros(3, 0, dtype=torch.complex128)),
         ValueError, "v must have a non-empty last dimension"),
        (dict(v=[1j]), TypeError, "v must be a torch.Tensor"),
    ],
)
def test_cauchy_bad_input(change, exc, match):
    kwargs = _ok()
    kwargs.update(change)
    with pytest.raises(exc, match=match):
        cauchy(**kwargs, backend="torch")


# ---------------------------------------------------------------------------------------------
# backend selection (shared by all ops; exercised here through cauchy and vandermonde)
# ---------------------------------------------------------------------------------------------


def test_available_backends(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    backends = available_backends("cpu")
    assert "torch" in backends and "ref" in backends
    assert "torch" in available_backends()


@pytest.mark.parametrize("backend", ["bogus", "cuda", ""])
def test_unknown_backend_raises(backend):
    with pytest.raises(ValueError, match="backend must be one of"):
        cauchy(**_ok(), backend=backend)


def test_unknown_backend_from_env_raises(monkeypatch):
    monkeypatch.setenv("SASHIMI_BACKEND", "bogus")
    with pytest.raises(ValueError, match="backend must be one of"):
        cauchy(**_ok())


class _Spy:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def test_env_var_routes_to_ref(monkeypatch):
    spy_c = _Spy(cauchy_module.cauchy_ref)
    spy_v = _Spy(vandermonde_module.vandermonde_ref)
    monkeypatch.setattr(cauchy_module, "cauchy_ref", spy_c)
    monkeypatch.setattr(vandermonde_module, "vandermonde_ref", spy_v)
    kwargs = _ok()
    x = poles(torch.Generator().manual_seed(1), 3, 4)

    monkeypatch.delenv("SASHIMI_BACKEND", raising=False)
    cauchy(**kwargs)
    vandermonde(kwargs["v"], x, 5)
    assert spy_c.calls == 0 and spy_v.calls == 0  # CPU default is the torch path

    monkeypatch.setenv("SASHIMI_BACKEND", "ref")
    out = cauchy(**kwargs)
    vandermonde(kwargs["v"], x, 5)
    assert spy_c.calls == 1 and spy_v.calls == 1
    assert rel_err(out, cauchy_ref(**kwargs)) < 1e-14

    monkeypatch.setenv("SASHIMI_BACKEND", "REF")  # case-insensitive
    cauchy(**kwargs)
    assert spy_c.calls == 2

    cauchy(**kwargs, backend="torch")  # the argument overrides the environment
    assert spy_c.calls == 2


def test_backend_selection_rejects_gpu_backend_on_cpu(monkeypatch):
    """backend='triton' on CPU tensors without TRITON_INTERPRET is a RuntimeError, not a silent fallback.

    (Named without the word 'triton' so that ``-k "not triton"`` runs keep this CPU-only check.)
    """
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("SASHIMI_BACKEND", raising=False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        cauchy(**_ok(), backend="triton")
    monkeypatch.setenv("SASHIMI_BACKEND", "triton")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        cauchy(**_ok())
