"""Refusals of S4Block / S4Kernel (issue 15, items 4, 5, 12-15): a state only fits the block that made
it, a bidirectional block has no step, NaN inputs never reach a state, ``rate`` is named when invalid,
batch size 0 and mixed dtypes get clear errors; and what is allowed still computes the right values."""

from __future__ import annotations

import copy
import gc
import math
import weakref

import pytest
import torch

from sashimi import S4Block
from sashimi.layers import S4Kernel
from sashimi.layers.s4block import S4State
from sashimi.models.config import SaShiMiConfig
from sashimi.models.sashimi import BiSaShiMi, SaShiMi
from sashimi.testing import rel_err


def _block(seed: int = 0, **kw) -> S4Block:
    torch.manual_seed(seed)
    return S4Block(4, 8, **kw)


def _x(*shape: int, seed: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


# ---- item 4: bidirectional blocks have no step ----------------------------------------------------


def test_bidirectional_step_refuses_a_causal_blocks_state():
    causal, bidir = _block(), _block(bidirectional=True)
    state = causal.init_state(2)
    before = state.x.clone()
    with pytest.raises(RuntimeError, match="bidirectional S4Block is non-causal and has no step mode"):
        bidir.step(_x(2, 4), state)
    assert torch.equal(state.x, before)  # refused before anything was written


def test_causal_step_refuses_a_state_claiming_a_bidirectional_owner():
    """A bidirectional block cannot make a state; one built by hand in its name is foreign to a causal block."""
    causal, bidir = _block(), _block(bidirectional=True)
    with pytest.raises(RuntimeError, match="non-causal"):
        bidir.init_state(2)
    good = causal.init_state(2)
    forged = S4State(good.x.clone(), good.consts, good.rate, good.dtype, weakref.ref(bidir))
    with pytest.raises(ValueError, match="made by another S4Block"):
        causal.step(_x(2, 4), forged)


# ---- item 5: a state belongs to the block that made it ---------------------------------------------


@pytest.mark.parametrize("other", ["same-architecture", "deepcopy", "other-d_state"])
def test_foreign_state_is_refused_by_step_and_forward(other):
    blk = _block()
    foreign_block = {
        "same-architecture": lambda: _block(seed=5),
        "deepcopy": lambda: copy.deepcopy(blk),  # identical weights: still another module
        "other-d_state": lambda: S4Block(4, 16),
    }[other]()
    foreign = foreign_block.init_state(2)
    before = foreign.x.clone()
    with pytest.raises(ValueError, match="made by another S4Block.*init_state"):
        blk.step(_x(2, 4), foreign)
    with pytest.raises(ValueError, match="made by another S4Block"):
        blk(_x(2, 5, 4), foreign)
    assert torch.equal(foreign.x, before)
    if other == "other-d_state":
        with pytest.raises(ValueError, match="its d_state=16, this block's d_state=8"):
            blk.step(_x(2, 4), foreign)


def test_own_state_survives_clone_and_deepcopy_and_steps_exactly():
    """clone() and deepcopy keep the owner; the copies step to the same outputs as the convolution."""
    blk = _block().double()
    x = _x(2, 12, 4, dtype=torch.float64)
    state = blk.init_state(2)
    ys = [blk.step(x[:, t], state)[0] for t in range(6)]
    twin, deep = state.clone(), copy.deepcopy(state)
    assert twin.owned_by(blk) and deep.owned_by(blk)
    for s in (state, twin, deep):
        out = ys + [blk.step(x[:, t], s)[0] for t in range(6, 12)]
        assert rel_err(torch.stack(out, dim=1), blk(x)) < 1e-10


def test_hand_built_and_orphaned_states_are_refused():
    blk = _block()
    good = blk.init_state(2)
    with pytest.raises(ValueError, match="was not made by init_state"):
        blk.step(_x(2, 4), S4State(good.x.clone(), good.consts, good.rate, good.dtype))
    gone = _block(seed=3)
    orphan = gone.init_state(2)
    del gone
    gc.collect()
    with pytest.raises(ValueError, match="its block was freed"):
        blk.step(_x(2, 4), orphan)


def test_check_owner_helper():
    """The helper a model-level state check calls: names the state it was given, silent for the owner."""
    a, b = _block(), _block(seed=2)
    state = a.init_state(1)
    state.check_owner(a)
    assert state.owned_by(a) and not state.owned_by(b)
    with pytest.raises(ValueError, match=r"^state\.center\[0\] was made by another S4Block"):
        state.check_owner(b, name="state.center[0]")


# ---- item 12: NaN / Inf step inputs ---------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_step_refuses_non_finite_input_and_keeps_the_state(bad):
    blk = _block().double()
    x = _x(2, 8, 4, dtype=torch.float64)
    state = blk.init_state(2)
    for t in range(4):
        blk.step(x[:, t], state)
    before = state.x.clone()
    poisoned = x[:, 4].clone()
    poisoned[1, 2] = bad
    with pytest.raises(ValueError, match="step input contains NaN or Inf"):
        blk.step(poisoned, state)
    assert torch.equal(state.x, before)
    # the stream goes on as if the bad sample had never been offered
    out = [blk.step(x[:, t], state)[0] for t in range(4, 8)]
    assert rel_err(torch.stack(out, dim=1), blk(x)[:, 4:]) < 1e-10


def test_check_finite_opt_out():
    """check_finite=False skips the check (documented: the state then stays non-finite for good); the
    setting is kept by clone()."""
    blk = _block()
    state = blk.init_state(2, check_finite=False)
    assert not state.clone().check_finite
    y, _ = blk.step(torch.full((2, 4), float("nan")), state)
    assert torch.isnan(y).all() and torch.isnan(state.x).any()
    y, _ = blk.step(_x(2, 4), state)
    assert torch.isnan(y).all()


# ---- item 13: rate is named ---------------------------------------------------------------------


@pytest.mark.parametrize("rate", [float("nan"), float("inf"), 0.0, -0.5])
def test_bad_rate_is_named(rate):
    blk = _block()
    pattern = r"rate must be a positive finite number, got " + re_escape(rate)
    with pytest.raises(ValueError, match=pattern):
        blk(_x(2, 5, 4), rate=rate)
    with pytest.raises(ValueError, match=pattern):
        blk.init_state(2, rate=rate)
    with pytest.raises(ValueError, match=pattern):
        blk.kernel(5, rate)
    state = blk.init_state(2)
    with pytest.raises(ValueError, match=pattern):
        blk(_x(2, 5, 4), state, rate=rate)


def re_escape(rate: float) -> str:
    return "nan" if math.isnan(rate) else ("inf" if rate == math.inf else str(rate))


@pytest.mark.parametrize("rate", [True, torch.tensor(1.0), "1", "abc"])
def test_rate_of_the_wrong_type_is_named(rate):
    blk = _block()
    with pytest.raises(TypeError, match="rate must be a positive finite number"):
        blk(_x(2, 5, 4), rate=rate)
    blk.kernel.kernel_cache = {}  # frozen kernels: a cached rate-1 kernel must not answer for "1" or True
    with torch.no_grad():
        blk.kernel(5, 1.0)
        with pytest.raises(TypeError, match="rate must be a positive finite number"):
            blk.kernel(5, rate)


def test_valid_rates_still_scale_dt():
    """rate=0.5 is the same kernel as halving dt (the check lets every finite positive rate through)."""
    k = S4Kernel(4, 8, mode="diag").double()
    ref = k(16, 0.5)
    with torch.no_grad():
        k.log_dt.add_(math.log(0.5))
    assert rel_err(ref, k(16)) < 1e-12


# ---- item 14: batch size 0 ------------------------------------------------------------------------


def _tiny_config(**kw) -> SaShiMiConfig:
    return SaShiMiConfig(d_model=8, n_layers=1, pool=(2,), expand=2, d_state=8, **kw)


@pytest.mark.parametrize(
    "make,x",
    [
        (lambda: _block(), torch.zeros(0, 5, 4)),
        (lambda: _block(bidirectional=True), torch.zeros(0, 5, 4)),
        (lambda: _block(transposed=True), torch.zeros(0, 4, 5)),
        (lambda: SaShiMi(_tiny_config()), torch.zeros(0, 4, 8)),
        (lambda: BiSaShiMi(BiSaShiMi.default_config(d_model=8, n_layers=1, pool=(2,), d_state=8)),
         torch.zeros(0, 4, 8)),
    ],
    ids=["causal", "bidirectional", "transposed", "SaShiMi", "BiSaShiMi"],
)
def test_batch_size_zero_is_a_clear_error(make, x):
    with pytest.raises(ValueError, match="x has batch size 0"):
        make()(x)


def test_batch_size_zero_step():
    blk = _block()
    with pytest.raises(ValueError, match="batch_size"):
        blk.init_state(0)
    with pytest.raises(ValueError, match="input has batch size 0"):
        blk.step(torch.zeros(0, 4), blk.init_state(1))


# ---- item 15: input dtype against the parameters' dtype -------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_mismatched_input_dtype_is_refused_clearly(dtype):
    blk = _block()
    msg = rf"has dtype {dtype} but the module's parameters are torch.float32"
    with pytest.raises(TypeError, match="x " + msg):
        blk(_x(2, 5, 4, dtype=dtype))
    with pytest.raises(TypeError, match=msg):
        SaShiMi(_tiny_config())(_x(2, 4, 8, dtype=dtype))
    if dtype != torch.float64:  # a float64 input to a float32-made state is the state's dtype error
        with pytest.raises(TypeError, match="step input " + msg):
            blk.step(_x(2, 4, dtype=dtype), blk.init_state(2))


def test_bfloat16_runs_when_asked_for():
    """A bfloat16 block, and a float32 block under autocast, take bfloat16 inputs and agree with the
    float32 computation to bfloat16 precision."""
    blk = _block()
    x = _x(2, 16, 4)
    ref = blk(x)
    xb = x.to(torch.bfloat16)
    y = copy.deepcopy(blk).to(torch.bfloat16)(xb)
    assert y.dtype == torch.bfloat16 and rel_err(y.float(), ref) < 3e-2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya = blk(xb)
        state = blk.init_state(2)
        ys = torch.stack([blk.step(xb[:, t], state)[0] for t in range(16)], dim=1)
    assert rel_err(ya.float(), ref) < 3e-2 and rel_err(ys.float(), ref) < 3e-2
