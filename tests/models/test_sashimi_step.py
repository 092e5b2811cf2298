"""``SaShiMi.step`` runs the flat step program (sashimi.generation.step_program) kept in the caller's
state: it equals the module-by-module step (the previous implementation, ``SaShiMi._step``) and forward,
keeps the state semantics (clone / restore, chunked streaming after steps, refusing foreign states) and
falls back to the module-by-module step in training mode."""

from __future__ import annotations

import pytest
import torch

from sashimi.generation.step_program import FastStepper
from sashimi.models import SaShiMi, SaShiMiConfig, SaShiMiLM, SaShiMiLMConfig
from sashimi.testing import rel_err


def make(unet: bool, dtype: torch.dtype, n_layers: int = 2, seed: int = 0, **kw) -> SaShiMi:
    torch.manual_seed(seed)
    cfg = SaShiMiConfig(d_model=16, n_layers=n_layers, pool=(4, 4), d_state=16, unet=unet, **kw)
    return SaShiMi(cfg).to(dtype).eval()


def module_steps(model: SaShiMi, x: torch.Tensor) -> torch.Tensor:
    """The previous step implementation: module by module (``norm(_step(x, state))``)."""
    state = model.init_state(x.shape[0], mode="linear")
    return torch.stack([model.norm(model._step(x[:, t], state)) for t in range(x.shape[1])], dim=1)


def public_steps(model: SaShiMi, x: torch.Tensor, state=None) -> torch.Tensor:
    state = model.init_state(x.shape[0], mode="linear") if state is None else state
    return torch.stack([model.step(x[:, t], state)[0] for t in range(x.shape[1])], dim=1)


@pytest.mark.parametrize("unet", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
@pytest.mark.parametrize("L", [1, 37, pytest.param(4096, marks=pytest.mark.slow)])
@torch.no_grad()
def test_step_program_equals_previous_step_and_forward(unet, dtype, tol, L):
    model = make(unet, dtype, n_layers=1 if L > 1000 else 2)
    x = torch.randn(2, L, 16, dtype=dtype, generator=torch.Generator().manual_seed(1))
    state = model.init_state(2, mode="linear")
    fast = public_steps(model, x, state)
    assert isinstance(state.program, FastStepper)  # the public step ran the program
    assert rel_err(fast, module_steps(model, x)) < tol
    assert rel_err(fast, model(x)) < tol


@torch.no_grad()
def test_clone_restore_and_chunks_after_program_steps():
    model = make(True, torch.float64)
    x = torch.randn(1, 48, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    want = model(x)
    state = model.init_state(1, mode="linear")
    a = public_steps(model, x[:, :21], state)
    saved = state.clone()  # the program's values are written back first
    b = public_steps(model, x[:, 21:30], state)
    again = public_steps(model, x[:, 21:30], saved)  # restoring the clone replays the same outputs
    assert torch.equal(b, again) or rel_err(b, again) < 1e-12
    c, _ = model(x[:, 30:], state)  # a chunk continues the stream after program steps
    assert rel_err(torch.cat([a, b, c], dim=1), want) < 1e-9
    assert state.program is None  # forward(x, state) took the values back from the program


@torch.no_grad()
def test_foreign_states_and_bad_steps_are_refused():
    model, twin = make(False, torch.float64), make(False, torch.float64)
    twin.load_state_dict(model.state_dict())
    state = model.init_state(2)
    with pytest.raises(ValueError, match="another model"):
        twin.step(torch.zeros(2, 16, dtype=torch.float64), state)
    with pytest.raises(ValueError, match="batch size"):
        model.step(torch.zeros(3, 16, dtype=torch.float64), state)
    with pytest.raises(TypeError, match="dtype"):
        model.step(torch.zeros(2, 16, dtype=torch.float32), state)
    with pytest.raises(TypeError, match="dtype"):
        model.step(torch.zeros(2, 16, dtype=torch.float64), model.init_state(2, dtype=torch.float32))
    nan = torch.zeros(2, 16, dtype=torch.float64)
    nan[0, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model.step(nan, state)


def test_training_mode_steps_module_by_module_with_gradients():
    model = make(False, torch.float64, dropout=0.0).train()
    state = model.init_state(1)
    x = torch.randn(1, 16, dtype=torch.float64, requires_grad=True)
    y, _ = model.step(x, state)
    assert state.program is None and y.requires_grad
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@torch.no_grad()
def test_lm_step_uses_the_program_and_equals_forward():
    torch.manual_seed(0)
    lm = SaShiMiLM(SaShiMiLMConfig(d_model=16, n_layers=1, pool=(4, 4), d_state=16)).double().eval()
    tokens = torch.randint(0, 256, (2, 23))
    state = lm.init_state(2)
    logits = torch.stack([lm.step(tokens[:, t], state)[0] for t in range(23)], dim=1)
    assert isinstance(state.program, FastStepper)
    assert rel_err(logits, lm(tokens)) < 1e-9
