"""Restricted context (kernel taps beyond +-w are zero) and the no-grad kernel cache."""

from __future__ import annotations

import json

import pytest
import torch

from sashimi.layers import S4Block, S4Kernel, frozen_kernels, restricted_context


@pytest.mark.parametrize("bidirectional", [False, True])
def test_restricted_kernel_taps(bidirectional):
    torch.manual_seed(0)
    k = S4Kernel(6, 8, channels=2, bidirectional=bidirectional).double()
    full = k(40)
    with restricted_context(k, 5):
        K = k(40)
    assert k.window is None  # restored
    c = 2
    assert torch.equal(K[:c, :, :6], full[:c, :, :6])  # forward lags 0..5 kept exactly
    assert torch.all(K[:c, :, 6:] == 0)
    if bidirectional:  # backward kernels act at lags -1, -2, ...: their first 5 taps are lags -1..-5
        assert torch.equal(K[c:, :, :5], full[c:, :, :5])
        assert torch.all(K[c:, :, 5:] == 0)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_restricted_gradient_support_through_a_block(bidirectional):
    torch.manual_seed(1)
    w, L, i = 5, 48, 23
    blk = S4Block(8, 16, bidirectional=bidirectional).double()
    x = torch.randn(2, L, 8, dtype=torch.float64, requires_grad=True)
    with restricted_context(blk, w):
        y = blk(x)
    g = torch.autograd.grad(y[:, i].sum(), x)[0].abs().sum(dim=(0, 2))  # (L,)
    support = torch.zeros(L, dtype=torch.bool)  # |i - j| <= w (j <= i when causal)
    support[i - w: i + (w if bidirectional else 0) + 1] = True
    # outside the window only FFT round-off remains
    assert g[~support].max() < 1e-12 * g[support].max()
    assert bool((g[support] > 1e-6).all())
    # without the restriction the output depends on the whole past (and future, when bidirectional)
    y = blk(x)
    g = torch.autograd.grad(y[:, i].sum(), x)[0].abs().sum(dim=(0, 2))
    assert g[0] > 1e-8 and (not bidirectional or g[-1] > 1e-8)


def test_restricted_context_restores_and_validates():
    blk = S4Block(4, 8)
    with pytest.raises(ValueError, match="taps"), restricted_context(blk, -1):
        pass
    with restricted_context(blk, 3):
        with restricted_context(blk, None):
            assert blk.kernel.window is None
        assert blk.kernel.window == 3
    assert blk.kernel.window is None


def test_frozen_kernels_cache_once_and_equal():
    torch.manual_seed(2)
    blk = S4Block(4, 8, bidirectional=True)
    x = torch.randn(1, 32, 4)
    calls = []
    orig = blk.kernel.ssm_params

    def counted(*a, **kw):
        calls.append(1)
        return orig(*a, **kw)

    blk.kernel.ssm_params = counted
    ref = blk(x)
    n0 = len(calls)
    with torch.no_grad(), frozen_kernels(blk):
        outs = [blk(x) for _ in range(3)]
        with restricted_context(blk, 2):  # another window: its own entry
            blk(x)
            blk(x)
    assert len(calls) - n0 == 2
    for y in outs:
        assert torch.equal(y, ref.detach())
    assert blk.kernel.kernel_cache is None
    # with gradients on, nothing is cached (the kernel must stay in the graph)
    with frozen_kernels(blk):
        blk(x).sum().backward()
    assert blk.kernel.log_dt.grad is not None


def test_restricted_block_support_equals_the_official_window(reference_dir):
    """The dependency pattern of a restricted bidirectional S4 layer is MAGNeT's attention mask (golden)."""
    path = reference_dir / "magnet" / "magnet_visible.json"
    if not path.is_file():
        pytest.skip(f"MAGNeT golden data not found at {path}")
    golden = json.loads(path.read_text())["restricted_context_mask_T14_ctx5"]
    allowed = torch.tensor(golden["allowed"], dtype=torch.bool)  # (T, T)
    T = allowed.shape[0]
    torch.manual_seed(3)
    blk = S4Block(4, 8, bidirectional=True).double()
    x = torch.randn(1, T, 4, dtype=torch.float64)
    with restricted_context(blk, 5):
        jac = torch.autograd.functional.jacobian(lambda u: blk(u), x)  # (1, T, H, 1, T, H)
    dep = jac[0, :, :, 0].abs().sum(dim=(1, 3))  # (T out, T in)
    assert torch.equal(dep > 1e-9 * dep.max(), allowed)


def test_frozen_kernels_keep_the_kernel_spectrum():
    """Inside the cache a bidirectional layer pads, flips and transforms its kernel once per length (the same
    numbers as outside); a new length or dtype gets its own entry; NaN inputs are refused outside the cache."""
    torch.manual_seed(3)
    blk = S4Block(4, 8, bidirectional=True)
    x = torch.randn(2, 32, 4)
    ffts = []
    orig = torch.fft.rfft

    def counted(t, *a, **kw):
        ffts.append(tuple(t.shape))
        return orig(t, *a, **kw)

    with torch.no_grad():
        ref, ref48 = blk(x), blk(torch.randn(1, 48, 4))
    torch.fft.rfft = counted
    try:
        with torch.no_grad(), frozen_kernels(blk):
            outs = [blk(x) for _ in range(3)]
            blk(torch.randn(2, 48, 4))
    finally:
        torch.fft.rfft = orig
    kernel_ffts = [s for s in ffts if s[0] == 1]  # (c=1, H, 2L) kernels; inputs are (B, H, L)
    assert kernel_ffts == [(1, 4, 64), (1, 4, 96)]
    for y in outs:
        assert torch.equal(y, ref)
    assert ref48.shape == (1, 48, 4) and blk.kernel.kernel_cache is None
    bad = x.clone()
    bad[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"), torch.no_grad():
        blk(bad)
