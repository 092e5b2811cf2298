"""The C state pass of streaming generation (sashimi.kernels.native): against a float64 complex
specification written independently here, on odd shapes (vector and scalar code paths, batch tails,
every reduction count), with poisoned outputs; the PyTorch path likewise; loading, caching, disabling
and failing to compile; validation."""

from __future__ import annotations

import os

import pytest
import torch

from sashimi.kernels import native
from sashimi.kernels.native import (
    PhaseLayer,
    PhaseProgram,
    block_width,
    from_blocked,
    native_status,
    ssm_phase_ref,
    to_blocked,
)

F32, F64 = torch.float32, torch.float64
FLOOR = {F32: 1e-6, F64: 1e-14}


@pytest.fixture
def fresh_load():
    """Forget the loaded kernel before and after the test (the environment it sees may change)."""
    native._load.cache_clear()
    yield
    native._load.cache_clear()


def needs_kernel() -> None:
    if native_status() != "ok":
        pytest.skip(f"the native SSM kernel is unavailable here: {native_status()}")


def random_layer(B: int, M: int, H: int, ne: int, nk: int, dtype: torch.dtype, seed: int) -> dict:
    """Plain (unblocked) float64 tensors of one layer; a stable transition (|a| < 1)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=g, dtype=F64)

    J = 2 * M
    mag = 0.3 + 0.6 * torch.rand(M, H, generator=g, dtype=F64)
    ang = 3.0 * torch.rand(M, H, generator=g, dtype=F64)
    A = torch.cat([mag * torch.cos(ang), mag * torch.sin(ang)])  # (2M, H)
    return dict(X=r(B, J, H), U=r(B, H), G=r(J, H, scale=0.3), W=r(nk, J, H, scale=0.2), A=A,
                E=r(ne, J, H, scale=0.05))


def truth(p: dict, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` passes in complex float64, a different formulation from the kernels': the state as
    complex modes, the transition as a complex product, the low-rank terms as complex vectors."""
    M = p["X"].shape[1] // 2

    def cplx(t):  # (..., 2M, H) -> (..., M, H) complex
        return torch.complex(t[..., :M, :], t[..., M:, :])

    x, g, a, E = cplx(p["X"]), cplx(p["G"]), cplx(p["A"]), cplx(p["E"])
    for _ in range(steps):
        x = x + p["U"][:, None, :] * g  # the pending input
        flat = torch.cat([x.real, x.imag], dim=1)  # (B, 2M, H)
        r = torch.einsum("kjh,bjh->bkh", p["W"], flat)  # (B, nk, H)
        x = a * x + torch.einsum("emh,beh->bmh", E, r[:, : E.shape[0]].to(E.dtype))
    return torch.cat([x.real, x.imag], dim=1), r


def blocked_layer(p: dict, dtype: torch.dtype) -> PhaseLayer:
    B, J, H = p["X"].shape
    C = block_width(H, dtype)
    nk = p["W"].shape[0]
    blk = {k: to_blocked(p[k].to(dtype), C) for k in ("X", "G", "W", "A", "E")}
    R = torch.full((B, nk, H), float("nan"), dtype=dtype)  # poisoned: every element must be written
    return PhaseLayer(blk["X"], p["U"].to(dtype).contiguous(), blk["G"], blk["W"], blk["A"], blk["E"], R)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.to(F64) - b).abs().max() / b.abs().max()).item()


# (B, M, H): H a multiple of the channel block (vector code) or not (scalar code); batches with tail
# rows (the vector code takes groups of 2 or 4 rows)
SHAPES = [(3, 5, 7), (5, 4, 16), (2, 3, 32), (7, 2, 48), (1, 3, 24), (9, 2, 32)]
# (ne, nk): no / one / two / three low-rank terms; nk = 5 takes the generic code
RANKS = [(0, 1), (2, 3), (1, 4), (2, 2), (3, 5)]


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("ne,nk", RANKS, ids=lambda v: str(v))
def test_state_pass_matches_complex_truth(dtype, shape, ne, nk):
    """Three passes over two layers of different sizes in one program: the C kernel's state and
    reductions against the float64 complex truth within 2x the PyTorch path's error plus a floor; the
    PyTorch path within the float precision; the poisoned outputs fully written."""
    needs_kernel()
    B, M, H = shape
    params = [random_layer(B, M, H, ne, nk, dtype, seed=10), random_layer(B, M + 1, H, ne, nk, dtype, seed=11)]
    c_layers = [blocked_layer(p, dtype) for p in params]
    t_layers = [blocked_layer(p, dtype) for p in params]
    c_prog, t_prog = PhaseProgram(c_layers, native=True), PhaseProgram(t_layers, native=False)
    assert c_prog.native and not t_prog.native
    steps = 3
    for _ in range(steps):
        c_prog()
        t_prog()
    for p, c, t in zip(params, c_layers, t_layers):
        x_true, r_true = truth(p, steps)
        for out_c, out_t, want in ((from_blocked(c.X), from_blocked(t.X), x_true), (c.R, t.R, r_true)):
            assert torch.isfinite(out_c).all() and torch.isfinite(out_t).all()
            err_t = rel(out_t, want)
            assert err_t < 50 * FLOOR[dtype], err_t
            assert rel(out_c, want) <= 2 * err_t + FLOOR[dtype]


def test_blocked_layout_round_trip():
    """to_blocked / from_blocked invert each other, and the block width is 64 bytes of channels."""
    t = torch.randn(3, 10, 48)
    assert block_width(48, F32) == 16 and block_width(48, F64) == 8 and block_width(20, F32) == 20
    b = to_blocked(t, 16)
    assert b.shape == (3, 3, 10, 16) and b.is_contiguous()
    assert b[1, 2, 4, 5] == t[1, 4, 2 * 16 + 5]
    assert torch.equal(from_blocked(b), t)


def test_validation():
    p = random_layer(2, 3, 16, 2, 3, F32, seed=0)
    good = blocked_layer(p, F32)
    with pytest.raises(ValueError, match="X must be"):
        PhaseProgram([good._replace(X=from_blocked(good.X).contiguous())])
    with pytest.raises(ValueError, match="channel block"):
        PhaseProgram([good._replace(X=to_blocked(from_blocked(good.X), 16 // 2))])
    with pytest.raises(ValueError, match="W must have shape"):
        PhaseProgram([good._replace(W=good.W[:, :, :4].contiguous())])
    with pytest.raises(ValueError, match="U is torch.float64"):
        PhaseProgram([good._replace(U=good.U.double())])
    with pytest.raises(ValueError, match="contiguous"):
        PhaseProgram([good._replace(U=good.U.t().contiguous().t())])
    with pytest.raises(ValueError, match="E has 2 rows but there are only 1"):
        PhaseProgram([good._replace(W=good.W[:1].contiguous(), R=good.R[:, :1].contiguous())])


def test_disabled_by_environment(monkeypatch, fresh_load):
    """SASHIMI_NATIVE=0: nothing is compiled, programs use PyTorch, and native=True says why it can't."""
    monkeypatch.setenv("SASHIMI_NATIVE", "0")
    assert native_status() == "disabled by SASHIMI_NATIVE=0"
    layer = blocked_layer(random_layer(2, 3, 16, 2, 3, F32, seed=0), F32)
    assert not PhaseProgram([layer]).native
    with pytest.raises(RuntimeError, match="disabled by SASHIMI_NATIVE=0"):
        PhaseProgram([layer], native=True)


def test_compile_failure_falls_back(monkeypatch, tmp_path, fresh_load):
    """A compiler that fails: native_status reports it, programs run (and agree) in PyTorch."""
    monkeypatch.setenv("SASHIMI_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")
    assert native_status().startswith("compilation failed")
    assert not list((tmp_path / "native").glob("*.so"))  # no partial library left behind
    p = random_layer(2, 3, 16, 2, 3, F32, seed=0)
    a, b = blocked_layer(p, F32), blocked_layer(p, F32)
    prog = PhaseProgram([a])
    assert not prog.native
    prog()
    ssm_phase_ref(b)
    assert torch.equal(a.X, b.X) and torch.equal(a.R, b.R)


def test_compiled_once_and_cached(monkeypatch, tmp_path, fresh_load):
    """The library is compiled into the cache folder once; a new process (here: a cleared loader)
    reuses it without writing it again."""
    monkeypatch.setenv("SASHIMI_CACHE", str(tmp_path))
    if native_status() != "ok":
        pytest.skip(f"no working C compiler here: {native_status()}")
    libs = list((tmp_path / "native").glob("ssm_phase-*.so"))
    assert len(libs) == 1
    stamp = os.stat(libs[0]).st_mtime_ns
    native._load.cache_clear()
    assert native_status() == "ok"
    assert list((tmp_path / "native").glob("ssm_phase-*.so")) == libs
    assert os.stat(libs[0]).st_mtime_ns == stamp


def test_non_cpu_or_other_dtype_uses_torch():
    """float16 tensors are outside the kernel's precisions: the program runs the PyTorch path."""
    needs_kernel()
    p = random_layer(2, 3, 32, 2, 3, F32, seed=0)
    layer = blocked_layer(p, torch.float16)
    assert not PhaseProgram([layer]).native
    with pytest.raises(RuntimeError, match="unavailable"):
        PhaseProgram([layer], native=True)
