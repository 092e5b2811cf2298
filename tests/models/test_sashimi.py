"""SaShiMi / BiSaShiMi / SaShiMiConfig: step == forward at any length, chunked streaming, state clones,
tier scheduling in step mode, causality, the bidirectional model, input and config validation."""

from __future__ import annotations

import json

import pytest
import torch

from sashimi.models import BiSaShiMi, SaShiMi, SaShiMiConfig, SaShiMiState
from sashimi.testing import rel_err


def small(unet: bool = False, n_layers: int = 2, **kw) -> SaShiMiConfig:
    return SaShiMiConfig(d_model=16, n_layers=n_layers, pool=(4, 4), d_state=16, unet=unet, **kw)


def make(cfg: SaShiMiConfig, dtype: torch.dtype = torch.float64, seed: int = 0) -> SaShiMi:
    torch.manual_seed(seed)
    return SaShiMi(cfg).to(dtype).eval()


def run_steps(model: SaShiMi, x: torch.Tensor, state: SaShiMiState | None = None) -> torch.Tensor:
    state = model.init_state(x.shape[0], mode="linear") if state is None else state
    return torch.stack([model.step(x[:, t], state)[0] for t in range(x.shape[1])], dim=1)


# ---- step == forward ---------------------------------------------------------------------------


@pytest.mark.parametrize("unet", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
@pytest.mark.parametrize("L", [1, 37, 4096])
@torch.no_grad()
def test_step_equals_forward(unet, dtype, tol, L):
    # the long run uses one block pair per tier to keep the Python stepping loop short
    model = make(small(unet, n_layers=1 if L > 1000 else 2), dtype)
    torch.manual_seed(1)
    x = torch.randn(2, L, 16, dtype=dtype)
    y = model(x)
    assert y.shape == x.shape and y.dtype == dtype
    assert rel_err(run_steps(model, x), y) < tol


@torch.no_grad()
def test_released_checkpoint_style_config_step_equals_forward():
    cfg = small(n_ssm=1, norm="scalar", pool_weight_norm=True)
    model = make(cfg)
    x = torch.randn(1, 40, 16, dtype=torch.float64)
    assert rel_err(run_steps(model, x), model(x)) < 1e-9


def test_released_sc09_parameter_count():
    """The sc09 checkpoint config (README: 4,751,072 parameters with a 256x64 embedding and a 64->256
    decoder) gives exactly the backbone's share."""
    model = SaShiMi(SaShiMiConfig(n_ssm=1, norm="scalar", pool_weight_norm=True))
    n = sum(p.numel() for p in model.parameters())
    assert n == 4_751_072 - 256 * 64 - (256 * 64 + 256)


# ---- streaming -------------------------------------------------------------------------------


@pytest.mark.parametrize("unet", [False, True])
@torch.no_grad()
def test_chunked_forward_with_state_equals_forward(unet):
    model = make(small(unet))
    x = torch.randn(2, 208, 16, dtype=torch.float64)
    y = model(x)
    for chunks in ((16, 48, 32, 96, 16), (5, 40, 3, 17, 100, 43)):  # whole windows; arbitrary lengths
        state = model.init_state(2, mode="linear")
        parts, i = [], 0
        for c in chunks:
            out, st = model(x[:, i : i + c], state)
            assert st is state
            parts.append(out)
            i += c
        assert rel_err(torch.cat(parts, dim=1), y) < 1e-9


@torch.no_grad()
def test_steps_then_chunk_continue_the_stream():
    model = make(small())
    x = torch.randn(1, 64, 16, dtype=torch.float64)
    y = model(x)
    state = model.init_state(1, mode="linear")
    head = run_steps(model, x[:, :7], state)
    tail, _ = model(x[:, 7:], state)
    assert rel_err(torch.cat([head, tail], dim=1), y) < 1e-9


@torch.no_grad()
def test_state_clone_restore():
    model = make(small(unet=True))
    x = torch.randn(2, 30, 16, dtype=torch.float64)
    state = model.init_state(2, mode="linear")
    run_steps(model, x[:, :21], state)
    saved = state.clone()
    assert isinstance(saved, SaShiMiState)
    assert saved.down[0].pool.buffer is not state.down[0].pool.buffer
    first = run_steps(model, x[:, 21:], state)
    again = run_steps(model, x[:, 21:], saved.clone())
    assert torch.equal(first, again)
    assert saved.offset(model.config.pool) == 21 % 16


@torch.no_grad()
def test_lower_tiers_run_every_pool_steps():
    model = make(small())
    calls = {"tier1": 0, "center": 0}

    def counted(name, step):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return step(*args, **kwargs)

        return wrapper

    blk1, blk2 = model.up[1].blocks[0], model.center[0]
    blk1.step = counted("tier1", blk1.step)  # instance attributes shadow the bound methods
    blk2.step = counted("center", blk2.step)
    x = torch.randn(1, 64, 16, dtype=torch.float64)
    run_steps(model.train(), x)  # training mode: the module-by-module step (dropout is 0)
    assert calls == {"tier1": 64 // 4, "center": 64 // 16}
    # the step program (evaluation mode) keeps the schedule: its units of tier 1 and the center
    calls.update(tier1=0, center=0)
    model.eval()
    state = model.init_state(1, mode="linear")
    model.step(x[:, 0], state)
    program = state.program
    program.up_units[1] = counted("tier1", program.up_units[1])
    program.center_unit = counted("center", program.center_unit)
    run_steps(model, x[:, 1:], state)
    assert calls == {"tier1": 64 // 4, "center": 64 // 16}


@torch.no_grad()
def test_forward_is_causal_and_pads_any_length():
    model = make(small())
    x = torch.randn(1, 50, 16, dtype=torch.float64)
    y = model(x)
    assert rel_err(model(x[:, :37]), y[:, :37]) < 1e-12
    x2 = x.clone()
    x2[:, 30:] += 1.0
    y2 = model(x2)
    assert torch.allclose(y2[:, :30], y[:, :30], atol=1e-12, rtol=0)
    assert not torch.allclose(y2[:, 30:], y[:, 30:])


@torch.no_grad()
def test_transposed_io():
    cfg = small()
    model = make(cfg)
    model_t = make(SaShiMiConfig.from_dict({**cfg.to_dict(), "transposed": True}))
    model_t.load_state_dict(model.state_dict())
    x = torch.randn(2, 20, 16, dtype=torch.float64)
    torch.testing.assert_close(model_t(x.transpose(1, 2)), model(x).transpose(1, 2))


# ---- bidirectional --------------------------------------------------------------------------


@torch.no_grad()
def test_bisashimi():
    cfg = BiSaShiMi.default_config(d_model=16, n_layers=1, d_state=16)
    assert cfg.unet and cfg.bidirectional
    model = BiSaShiMi(cfg).double()
    x = torch.randn(2, 32, 16, dtype=torch.float64)
    y = model(x)
    assert y.shape == x.shape
    x2 = x.clone()
    x2[:, -1] += 1.0
    assert not torch.allclose(model(x2)[:, 0], y[:, 0])  # non-causal: the last input reaches the first output
    with pytest.raises(RuntimeError, match="no step mode"):
        model.init_state(2)
    with pytest.raises(RuntimeError, match="no step mode"):
        model.step(x[:, 0], None)
    with pytest.raises(ValueError, match="multiple of prod"):
        model(x[:, :30])
    assert not BiSaShiMi(BiSaShiMi.default_config(d_model=16, n_layers=1, d_state=16, unet=False)).config.unet
    # up_shift=False: unshifted UpPools (the reference's bidirectional model keeps the shift)
    flat = BiSaShiMi(BiSaShiMi.default_config(d_model=16, n_layers=1, d_state=16, up_shift=False)).double()
    assert flat(x).shape == x.shape and not flat.up[0].pool.shift and model.up[0].pool.shift
    with pytest.raises(ValueError, match="bidirectional=True"):
        BiSaShiMi(small())
    with pytest.raises(ValueError, match="BiSaShiMi"):
        SaShiMi(cfg)


# ---- input validation -----------------------------------------------------------------------


def test_bad_inputs():
    model = make(small())
    with pytest.raises(ValueError, match="d_model=16"):
        model(torch.randn(1, 8, 15, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        model(torch.randn(8, 16, dtype=torch.float64))
    x = torch.randn(1, 8, 16, dtype=torch.float64)
    x[0, 3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(x)
    with pytest.raises(TypeError):
        model([[0.0] * 16])
    state = model.init_state(2, mode="linear")
    with pytest.raises(ValueError, match="d_model=16"):
        model.step(torch.randn(2, 8, dtype=torch.float64), state)
    with pytest.raises(ValueError, match="batch size"):
        model.step(torch.randn(3, 16, dtype=torch.float64), state)
    with pytest.raises(TypeError, match="SaShiMiState"):
        model.step(torch.randn(2, 16, dtype=torch.float64), object())
    with pytest.raises(ValueError, match="batch_size"):
        model.init_state(0)


# ---- config --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw,field",
    [
        ({"d_model": 0}, "d_model"),
        ({"n_layers": -1}, "n_layers"),
        ({"pool": (4, 0)}, "pool"),
        ({"pool": 4}, "pool"),
        ({"expand": 1.5}, "expand"),
        ({"ff": -1}, "ff"),
        ({"d_state": 15}, "d_state"),
        ({"dropout": 1.0}, "dropout"),
        ({"n_ssm": 3}, "n_ssm"),
        ({"norm": "batch"}, "norm"),
        ({"ssm_mode": "s5"}, "ssm_mode"),
        ({"init": "diag-lin"}, "init"),
        ({"dt_min": 0.5, "dt_max": 0.1}, "dt_min"),
        ({"unet": 1}, "unet"),
        ({"up_shift": False}, "up_shift"),
        ({"postact": "relu"}, "postact"),
        ({"config_version": 2}, "config_version"),
    ],
)
def test_config_validation_names_the_field(kw, field):
    with pytest.raises((ValueError, TypeError), match=field):
        SaShiMiConfig(**kw)


def test_config_dict_roundtrip_and_unknown_fields():
    cfg = SaShiMiConfig(d_model=32, pool=[2, 4, 2], n_ssm=1, norm="scalar")
    assert cfg.pool == (2, 4, 2) and cfg.total_pool == 16 and cfg.widths == (32, 64, 128, 256)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["pool"] == [2, 4, 2] and d["config_version"] == 1
    assert SaShiMiConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match=r"unknown SaShiMiConfig field\(s\): \['bogus', 'layers'\]"):
        SaShiMiConfig.from_dict({**d, "bogus": 1, "layers": 2})
    with pytest.raises(TypeError, match="SaShiMiConfig"):
        SaShiMi({"d_model": 16})


@torch.no_grad()
def test_flat_model_without_pooling():
    model = make(SaShiMiConfig(d_model=8, n_layers=1, pool=(), d_state=16))
    x = torch.randn(1, 9, 8, dtype=torch.float64)
    assert rel_err(run_steps(model, x), model(x)) < 1e-9
