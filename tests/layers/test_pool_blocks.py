"""DownPool / UpPool / FFBlock / ScalarChannelNorm / ResidualBlock: the (h, s) channel order, the causal
shift, step == forward, streaming with a state, weight norm and argument validation."""

from __future__ import annotations

import pytest
import torch

from sashimi.layers import DownPool, FFBlock, PoolState, ResidualBlock, S4Block, ScalarChannelNorm, UpPool
from sashimi.testing import rel_err


# ---- DownPool ------------------------------------------------------------------------------


def test_downpool_channel_order_matches_definition():
    torch.manual_seed(0)
    H, p, L = 3, 4, 12
    pool = DownPool(H, 2, p).double()
    x = torch.randn(2, L, H, dtype=torch.float64)
    y = pool(x)  # (B, L/p, 2H)
    assert y.shape == (2, L // p, 2 * H)
    W, b = pool.linear.weight, pool.linear.bias  # (2H, H*p)
    for l in range(L // p):
        feat = torch.stack([x[:, p * l + s, h] for h in range(H) for s in range(p)], dim=-1)  # index h*p + s
        torch.testing.assert_close(y[:, l], feat @ W.T + b)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_downpool_step_equals_forward(dtype, tol):
    torch.manual_seed(1)
    pool = DownPool(5, 2, 3).to(dtype)
    x = torch.randn(2, 12, 5, dtype=dtype)
    y = pool(x)
    state = pool.init_state(2)
    assert isinstance(state, PoolState) and isinstance(state.buffer, torch.Tensor)
    assert state.buffer.shape == (2, 5, 3) and state.buffer.dtype == dtype and state.phase == 0
    buffer_id = id(state.buffer)
    outs = []
    for t in range(12):
        out, state = pool.step(x[:, t], state)
        if t % 3 < 2:
            assert out is None
        else:
            outs.append(out)
        assert state.phase == (t + 1) % 3
    assert id(state.buffer) == buffer_id  # preallocated, updated in place
    assert rel_err(torch.stack(outs, dim=1), y) < tol


def test_downpool_length_and_state_errors():
    pool = DownPool(4, 2, 4)
    with pytest.raises(ValueError, match="multiple of pool"):
        pool(torch.randn(1, 6, 4))
    with pytest.raises(ValueError, match="H=4"):
        pool(torch.randn(1, 8, 5))
    state = pool.init_state(1)
    pool.step(torch.randn(1, 4), state)
    with pytest.raises(ValueError, match="phase 0"):
        pool(torch.randn(1, 8, 4), state)
    with pytest.raises(ValueError, match="batch size"):
        pool.step(torch.randn(2, 4), state)
    with pytest.raises(ValueError, match="pool"):
        DownPool(4, 2, 0)
    with pytest.raises(ValueError, match="d_input"):
        DownPool(0, 2, 4)


# ---- UpPool --------------------------------------------------------------------------------


def test_uppool_shift_and_channel_order():
    torch.manual_seed(2)
    H, p, Lp = 4, 3, 5
    up = UpPool(H, 2, p).double()
    x = torch.randn(2, Lp, H, dtype=torch.float64)
    y = up(x)  # (B, Lp*p, H/2)
    assert y.shape == (2, Lp * p, H // 2)
    z = up.linear(x)  # (B, Lp, (H/2)*p), (h, s) order
    assert torch.all(y[:, :p] == 0)  # the first window only sees the zero shift
    for l in range(1, Lp):
        for s in range(p):
            for h in range(H // 2):
                assert torch.equal(y[:, p * l + s, h], z[:, l - 1, h * p + s])
    noshift = UpPool(H, 2, p, shift=False).double()
    noshift.load_state_dict(up.state_dict())
    y0 = noshift(x)
    torch.testing.assert_close(y0[:, : (Lp - 1) * p], y[:, p:])


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_uppool_step_equals_forward(dtype, tol):
    torch.manual_seed(3)
    p = 4
    up = UpPool(6, 2, p).to(dtype)
    x = torch.randn(2, 5, 6, dtype=dtype)
    y = up(x)
    state = up.init_state(2)
    assert isinstance(state.buffer, torch.Tensor) and state.buffer.shape == (2, 3, p)
    outs = []
    for t in range(5 * p):
        low = x[:, t // p] if t % p == p - 1 else None  # a lower-tier output arrives as a window closes
        out, state = up.step(low, state)
        outs.append(out)
    assert rel_err(torch.stack(outs, dim=1), y) < tol


def test_uppool_stream_chunks_equal_forward():
    torch.manual_seed(4)
    up = UpPool(6, 3, 2).double()
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    y = up(x)
    state = up.init_state(2)
    parts = [up(x[:, a:b], state) for a, b in ((0, 2), (2, 3), (3, 9))]
    assert rel_err(torch.cat(parts, dim=1), y) < 1e-13


def test_uppool_step_errors():
    up = UpPool(4, 2, 2)
    state = up.init_state(1)
    with pytest.raises(ValueError, match="only at phase"):
        up.step(torch.randn(1, 4), state)
    up.step(None, state)
    with pytest.raises(ValueError, match="needs the lower-tier input"):
        up.step(None, state)
    with pytest.raises(ValueError, match="multiple of expand"):
        UpPool(5, 2, 2)
    noshift = UpPool(4, 2, 2, shift=False)
    with pytest.raises(RuntimeError, match="no step mode"):
        noshift.init_state(1)
    with pytest.raises(RuntimeError, match="non-causal"):
        noshift(torch.randn(1, 2, 4), state)


def test_pool_state_clone_is_independent():
    pool = DownPool(3, 2, 4)
    state = pool.init_state(1)
    pool.step(torch.ones(1, 3), state)
    saved = state.clone()
    pool.step(torch.full((1, 3), 2.0), state)
    assert saved.phase == 1 and state.phase == 2
    assert torch.all(saved.buffer[..., 1] == 0) and torch.all(state.buffer[..., 1] == 2)


def test_weight_norm_pooling():
    torch.manual_seed(5)
    pool = DownPool(3, 2, 4, weight_norm=True).double()
    keys = set(pool.state_dict())
    assert {"linear.parametrizations.weight.original0", "linear.parametrizations.weight.original1"} <= keys
    g = pool.state_dict()["linear.parametrizations.weight.original0"].clone()
    v = pool.state_dict()["linear.parametrizations.weight.original1"]
    assert g.shape == (6, 1) and v.shape == (6, 12)
    with torch.no_grad():
        pool.linear.parametrizations.weight.original0.mul_(1.7)
    W = pool.linear.weight
    torch.testing.assert_close(W, 1.7 * g * v / v.norm(dim=1, keepdim=True))
    plain = DownPool(3, 2, 4).double()
    with torch.no_grad():
        plain.linear.weight.copy_(W)
        plain.linear.bias.copy_(pool.linear.bias)
    x = torch.randn(2, 8, 3, dtype=torch.float64)
    torch.testing.assert_close(pool(x), plain(x))
    up = UpPool(4, 2, 2, weight_norm=True)
    assert up.linear.parametrizations.weight.original0.shape == (4, 1)


# ---- FFBlock, ScalarChannelNorm, ResidualBlock -----------------------------------------------


def test_ffblock_definition_and_step():
    torch.manual_seed(6)
    ff = FFBlock(4, expand=3).double()
    x = torch.randn(2, 7, 4, dtype=torch.float64)
    ref = torch.nn.functional.gelu(x @ ff.fc1.weight.T + ff.fc1.bias) @ ff.fc2.weight.T + ff.fc2.bias
    torch.testing.assert_close(ff(x), ref)
    assert ff.fc1.weight.shape == (12, 4)
    ys = torch.stack([ff.step(x[:, t])[0] for t in range(7)], dim=1)
    torch.testing.assert_close(ys, ff(x))
    assert ff.init_state(2) is None


def test_scalar_channel_norm():
    torch.manual_seed(7)
    norm = ScalarChannelNorm(5).double()
    assert norm.m.shape == (1,) and norm.s.shape == (1,)
    with torch.no_grad():
        norm.m.fill_(0.3)
        norm.s.fill_(1.5)
    x = torch.randn(2, 6, 5, dtype=torch.float64)
    mean = x.mean(-1, keepdim=True)
    std = ((x - mean) ** 2).mean(-1, keepdim=True).sqrt()  # population std
    torch.testing.assert_close(norm(x), 1.5 / std * (x - mean + 0.3))
    # no epsilon: a constant position has zero std
    assert not torch.isfinite(norm(torch.ones(1, 1, 5, dtype=torch.float64))).all()


@pytest.mark.parametrize("norm", ["layer", "scalar"])
@pytest.mark.parametrize("prenorm", [True, False])
def test_residual_block_s4_step_and_stream_equal_forward(norm, prenorm):
    torch.manual_seed(8)
    blk = ResidualBlock(6, S4Block(6, 16), norm=norm, prenorm=prenorm).double()
    x = torch.randn(2, 40, 6, dtype=torch.float64)
    y = blk(x)
    if prenorm:
        torch.testing.assert_close(y, x + blk.layer(blk.norm(x)))
    else:
        torch.testing.assert_close(y, blk.norm(x + blk.layer(x)))
    state = blk.init_state(2, mode="linear")
    ys = torch.stack([blk.step(x[:, t], state)[0] for t in range(40)], dim=1)
    assert rel_err(ys, y) < 1e-10
    state = blk.init_state(2, mode="linear")
    parts = [blk(x[:, a:b], state)[0] for a, b in ((0, 13), (13, 14), (14, 40))]
    assert rel_err(torch.cat(parts, dim=1), y) < 1e-10


def test_residual_block_ff_step_equals_forward():
    torch.manual_seed(9)
    blk = ResidualBlock(4, FFBlock(4), norm="layer").double()
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    assert blk.init_state(3) is None
    ys = torch.stack([blk.step(x[:, t], None)[0] for t in range(5)], dim=1)
    torch.testing.assert_close(ys, blk(x))


def test_residual_block_errors():
    with pytest.raises(ValueError, match="norm"):
        ResidualBlock(4, FFBlock(4), norm="batch")
    with pytest.raises(TypeError, match="layer"):
        ResidualBlock(4, lambda x: x)
    with pytest.raises(ValueError, match="dropout"):
        FFBlock(4, dropout=1.0)
    with pytest.raises(ValueError, match="expand"):
        FFBlock(4, expand=0)
