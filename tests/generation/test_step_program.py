"""FastStepper (sashimi.generation.step_program), the flat step program behind SaShiMiLM.generate: equal to
SaShiMi.step in every supported configuration (S4 step modes, dtypes, U-Net, the released architecture,
layer variants), ``sync()`` hands the stream back to ``model.step``, unsupported configurations fall
back to the slow path, and ``generate(compile=True)`` equals the eager program."""

from __future__ import annotations

import math
from typing import Callable

import pytest
import torch

from sashimi import S4Block, S4Kernel
from sashimi.kernels.native import native_status
from sashimi.layers.blocks import ResidualBlock, ScalarChannelNorm
from sashimi.layers.pool import PoolState
from sashimi.layers.s4block import S4State
from sashimi.models import SaShiMi, SaShiMiConfig, SaShiMiLM, SaShiMiLMConfig, SaShiMiState
from sashimi.generation import step_program as _fast_step
from sashimi.generation.step_program import FastStepper, build
from sashimi.testing import rel_err

F64, F32 = torch.float64, torch.float32
TOL = {F64: 1e-9, F32: 1e-5}
#: a stream length that is not a multiple of prod(pool) = 16: it ends inside both pooling windows
L = 157


def randomize_ssm(model: torch.nn.Module, seed: int = 1) -> None:
    """Move every S4 layer's SSM away from the HiPPO-LegS init (as after training): its eigenvectors
    become well conditioned, so the diagonal step passes its self-check in float64 too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k in model.modules():
            if isinstance(k, S4Kernel):
                k.A_imag.copy_(5 * torch.randn(k.A_imag.shape, generator=gen, dtype=k.A_imag.dtype))
                k.B.copy_(torch.randn(k.B.shape, generator=gen, dtype=k.B.dtype))
                if hasattr(k, "P"):
                    k.P.copy_(0.3 * torch.randn(k.P.shape, generator=gen, dtype=k.P.dtype))


def randomize_norms(model: torch.nn.Module, seed: int = 2) -> None:
    """Give every norm (LayerNorm affine, scalar channel norm ``m`` and ``s``) non-trivial values: at
    their init (1 and 0) a misplaced scale or shift would go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.LayerNorm, ScalarChannelNorm)):
                for name, p in m.named_parameters():
                    base = 1.0 if name in ("weight", "s") else 0.0
                    p.copy_(base + 0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def make(dtype: torch.dtype = F64, ssm: str = "legs", seed: int = 0, **kw) -> SaShiMi:
    """A small causal SaShiMi in evaluation mode (d_model 8, one S4 + FF pair per tier, N = 16), its
    norms randomized (:func:`randomize_norms`).

    ``ssm``: 'legs' (the HiPPO-LegS init), 'random' (see :func:`randomize_ssm`) or 's4d' (S4D-Lin).
    """
    args: dict = dict(d_model=8, n_layers=1, d_state=16)
    if ssm == "s4d":
        args.update(ssm_mode="diag", init="diag-lin")
    args.update(kw)
    torch.manual_seed(seed)
    model = SaShiMi(SaShiMiConfig(**args))
    if ssm == "random":
        randomize_ssm(model, seed + 1)
    randomize_norms(model, seed + 2)
    return model.to(dtype).eval()


def s4_states(state: SaShiMiState) -> list[S4State]:
    """The S4 layer states of a SaShiMiState, in a fixed order."""
    blocks = [s for t in state.down for s in t.blocks] + list(state.center) + [s for t in state.up for s in t.blocks]
    return [s for s in blocks if isinstance(s, S4State)]


def pool_states(state: SaShiMiState) -> list[PoolState]:
    """The pooling states of a SaShiMiState: down tiers, then up tiers (outer first)."""
    return [t.pool for t in state.down] + [t.pool for t in state.up]


def phases(t: int) -> list[int]:
    """The pooling phases (in :func:`pool_states` order) after t steps with pool (4, 4)."""
    return [t % 4, t // 4 % 4, t % 4, t // 4 % 4]


@torch.no_grad()
def model_steps(model: SaShiMi, x: torch.Tensor, state: SaShiMiState) -> torch.Tensor:
    """The module-by-module step (``norm(SaShiMi._step)``: what ``model.step`` runs without a step
    program, the reference the program is checked against) through x (B, T, H); returns (B, T, H)."""
    state.detach_program()
    return torch.stack([model.norm(model._step(x[:, t], state)) for t in range(x.shape[1])], dim=1)


@torch.no_grad()
def fast_steps(stepper: FastStepper, x: torch.Tensor) -> torch.Tensor:
    """``stepper.step`` through x (B, T, H); returns (B, T, H)."""
    return torch.stack([stepper.step(x[:, t]) for t in range(x.shape[1])], dim=1)


def native_param(native: bool) -> bool:
    """``native`` for :func:`build`; skips when the C kernel is requested but cannot load here."""
    if native and native_status() != "ok":
        pytest.skip(f"the native SSM kernel is unavailable: {native_status()}")
    return native


def state_passes(stepper: FastStepper) -> list:
    units = [*stepper.down_units, stepper.center_unit, *stepper.up_units]
    return [u.phase for u in units if u is not None and u.phase.layers]


def assert_fast_equals_model(
    model: SaShiMi, dtype: torch.dtype, mode: str, length: int = L, native: bool | None = None
) -> SaShiMiState:
    """From fresh states, FastStepper.step equals SaShiMi.step over ``length`` steps (batch 2).
    Returns the stepper's state (for checks of the S4 modes in use). ``native``: see :func:`build`;
    True / False also checks which state pass ran."""
    torch.manual_seed(5)
    x = torch.randn(2, length, model.config.d_model, dtype=dtype)
    ref = model_steps(model, x, model.init_state(2, mode=mode))
    state = model.init_state(2, mode=mode)
    stepper = build(model, state, native=native)
    assert isinstance(stepper, FastStepper)
    if native is not None:
        assert state_passes(stepper) and all(p.native == native for p in state_passes(stepper))
    out = fast_steps(stepper, x)
    assert out.dtype == dtype and out.shape == ref.shape
    err = rel_err(out, ref)
    assert err < TOL[dtype], err
    return state


# ---- FastStepper.step == SaShiMi.step -----------------------------------------------------------

# (dtype, ssm, requested mode, expected S4 state mode, expected state dtype)
STEP_CASES = [
    (F64, "legs", "linear", "linear", torch.complex128),
    (F64, "legs", "auto", "linear", torch.complex128),  # LegS fails the float64 diagonal check
    (F64, "random", "diagonal", "diagonal", torch.complex128),
    (F64, "random", "auto", "diagonal", torch.complex128),
    (F64, "s4d", "auto", "diagonal", torch.complex128),
    (F32, "legs", "linear", "linear", torch.complex64),
    (F32, "legs", "auto", "diagonal", torch.complex128),  # diagonal64: the float32 diagonal fails
    (F32, "legs", "diagonal64", "diagonal", torch.complex128),
    (F32, "random", "diagonal", "diagonal", torch.complex64),
    (F32, "s4d", "auto", "diagonal", torch.complex64),
]


@pytest.mark.parametrize("native", [True, False], ids=["native", "torch"])
@pytest.mark.parametrize("unet", [False, True], ids=["plain", "unet"])
@pytest.mark.parametrize("dtype,ssm,mode,want_mode,want_cdt", STEP_CASES, ids=lambda v: str(v).replace("torch.", ""))
def test_fast_step_equals_model_step(unet, dtype, ssm, mode, want_mode, want_cdt, native):
    """157 steps (both pooling windows left open at the end) of the stepper equal ``model.step`` in
    every S4 state form it supports (linear, diagonal, diagonal64, S4D), float64 within 1e-9 and
    float32 within 1e-5, with the S4 state pass in C and in PyTorch; the S4 states are of the
    expected form (so each code path runs)."""
    model = make(dtype, ssm, unet=unet)
    state = assert_fast_equals_model(model, dtype, mode, native=native_param(native))
    s4 = s4_states(state)
    assert len(s4) == (5 if unet else 3)
    assert all(s.mode == want_mode and s.x.dtype == want_cdt and s.dtype == dtype for s in s4)


@pytest.mark.parametrize("dtype,mode", [(F64, "linear"), (F32, "auto")], ids=["f64-linear", "f32-auto"])
def test_released_architecture(dtype, mode):
    """The released checkpoints' architecture (one shared SSM per layer, scalar channel norm,
    weight-normalised pooling linears) steps equally."""
    model = make(dtype, n_ssm=1, norm="scalar", pool_weight_norm=True)
    assert hasattr(model.down[0].pool.linear, "parametrizations")  # weight norm is in use
    assert_fast_equals_model(model, dtype, mode)


def _multichannel(model: SaShiMi) -> None:
    """Replace every S4 layer by one with two kernel channels and two tied SSMs."""
    kw = model.config.s4_kwargs()
    kw.update(channels=2, n_ssm=2)
    for blk in model.modules():
        if isinstance(blk, ResidualBlock) and isinstance(blk.layer, S4Block):
            blk.layer = S4Block(blk.d_model, **kw)


def _multichannel_random(model: SaShiMi) -> None:
    _multichannel(model)
    randomize_ssm(model)


def _postnorm(model: SaShiMi) -> None:
    """Make every residual block post-norm: ``norm(x + layer(x))``."""
    for blk in model.modules():
        if isinstance(blk, ResidualBlock):
            blk.prenorm = False


# name -> (config overrides, ssm, edit of the built model, step mode)
VARIANTS: dict[str, tuple[dict, str, Callable[[SaShiMi], None] | None, str]] = {
    "channels2-nssm2-linear": ({}, "legs", _multichannel, "linear"),
    "channels2-nssm2-diagonal": ({}, "random", _multichannel_random, "diagonal"),
    "rank2-diagonal": (dict(rank=2), "random", None, "diagonal"),
    "silu-no-output-linear": (dict(activation="silu", postact=None), "legs", None, "linear"),
    "tanh-linear-postact": (dict(activation="tanh", postact="linear"), "random", None, "diagonal"),
    "postnorm": ({}, "legs", _postnorm, "linear"),
    "pool-3x2-expand3": (dict(pool=(3, 2), expand=3), "legs", None, "linear"),
    "three-tiers-unet": (dict(pool=(2, 2, 2), unet=True, ff=0), "legs", None, "linear"),
    "flat-no-pooling": (dict(pool=()), "random", None, "diagonal"),
    "s4d-bilinear": (dict(discretization="bilinear"), "s4d", None, "auto"),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_layer_variants(name):
    """Layer and architecture variants in float64: several kernel channels with tied SSMs, rank 2,
    other activations and output linears, post-norm residuals, unequal pooling factors (different
    window phases per tier), three tiers, no pooling, S4D bilinear."""
    overrides, ssm, edit, mode = VARIANTS[name]
    model = make(F64, ssm, **overrides)
    if edit is not None:
        edit(model)
        model = model.double().eval()
    state = assert_fast_equals_model(model, F64, mode)
    if mode == "diagonal":
        assert all(s.mode == "diagonal" for s in s4_states(state))


# ---- pipeline: the lower tiers in a worker thread ---------------------------------------------------


@pytest.mark.parametrize("pipeline", [False, True], ids=["inline", "pipeline"])
@pytest.mark.parametrize("pool", [(4,), (4, 4), (2, 3, 2)], ids=lambda p: "x".join(map(str, p)))
@pytest.mark.parametrize("unet", [False, True], ids=["plain", "unet"])
@torch.no_grad()
def test_tiers_inline_and_pipelined(pool, unet, pipeline):
    """One, two and three pooling tiers, the lower tiers inline or in a worker thread (with their
    next state passes run ahead): the outputs equal ``model.step`` in float64 over 157 steps (windows
    left open at the end). A pipelined stepper refuses to ``sync`` (its state passes ran ahead) and
    ``close`` stops its worker."""
    model = make(F64, "legs", unet=unet, pool=pool)
    torch.manual_seed(5)
    x = torch.randn(2, L, 8, dtype=F64)
    ref = model_steps(model, x, model.init_state(2, mode="linear"))
    stepper = build(model, model.init_state(2, mode="linear"), pipeline=pipeline)
    assert (stepper._worker is not None) == pipeline
    out = fast_steps(stepper, x)
    assert rel_err(out, ref) < TOL[F64]
    if pipeline:
        with pytest.raises(RuntimeError, match="pipeline=False"):
            stepper.sync()
    stepper.close()
    assert stepper._worker is None


@pytest.mark.parametrize("pool", [(), (4, 4)], ids=["no-pool", "4x4"])
@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "compiled"])
@torch.no_grad()
def test_decoder_inside_the_step_program(pool, compile):
    """With the LM's decoder, ``step`` returns the float64 log-probabilities of the next class,
    computed inside the last unit (the center when there is no pooling): equal to log_softmax of the
    decoder on ``model.step``'s output over 40 steps."""
    lm = small_lm(F64, pool=pool)
    torch.manual_seed(3)
    tokens = torch.randint(0, 256, (2, 40))
    ref_state = lm.init_state(2, mode="linear")
    ref = torch.stack([torch.log_softmax(lm.step(tokens[:, t], ref_state)[0], -1) for t in range(40)], 1)
    stepper = build(lm.backbone, lm.init_state(2, mode="linear"), compile=compile,
                    decoder=(lm.decoder.weight, lm.decoder.bias))
    out = torch.stack([stepper.step(lm.encoder(tokens[:, t])) for t in range(40)], 1)
    assert out.dtype == F64 and out.shape == (2, 40, 256)
    assert rel_err(out, ref) < TOL[F64]


@pytest.mark.parametrize(
    "pool,temperature", [((), 1.0), ((4, 4), 1.0), ((4, 4), 0.7)], ids=["no-pool", "4x4", "4x4-T0.7"]
)
@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "compiled"])
@torch.no_grad()
def test_draw_inside_the_step_program(pool, temperature, compile):
    """With ``draw``, ``step(x, u, ll)`` steps on x and draws the next classes inside the last unit:
    over 40 steps fed back their own embeddings, the classes equal the inverse-CDF draws
    (``sashimi.generation.sampling.sample_from``) from log_softmax of the decoder on ``model.step`` with the same
    uniforms, the returned inputs are their embeddings, and ``ll`` accumulates their log-probabilities."""
    from sashimi.generation.sampling import sample_from as _sample_from

    lm = small_lm(F64, pool=pool)
    g = torch.Generator().manual_seed(5)
    u = torch.rand(40, 2, dtype=F64, generator=g) * (1 - 2.0**-50)
    ref_state = lm.init_state(2, mode="linear")
    stepper = build(lm.backbone, lm.init_state(2, mode="linear"), compile=compile,
                    decoder=(lm.decoder.weight, lm.decoder.bias), draw=(lm.encoder.weight, temperature))
    tok = torch.tensor([3, 200])
    x, ll, ref_ll = lm.encoder(tok), torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64)
    drawn, ref_drawn = [], []
    for t in range(40):
        logp = torch.log_softmax(lm.step(tok, ref_state)[0], -1)
        tok = _sample_from(logp, u[t], temperature, 1.0)
        ref_ll += logp.gather(-1, tok[:, None])[:, 0]
        ref_drawn.append(tok)
        nxt, x = stepper.step(x, u[t], ll)
        assert torch.equal(x, lm.encoder(nxt))
        drawn.append(nxt)
    drawn, ref_drawn = torch.stack(drawn, 1), torch.stack(ref_drawn, 1)
    assert drawn.dtype == torch.int64 and len(set(drawn.flatten().tolist())) > 10  # not a constant draw
    assert torch.equal(drawn, ref_drawn)
    assert rel_err(ll, ref_ll) < TOL[F64]
    with pytest.raises(ValueError, match="decoder"):
        build(lm.backbone, lm.init_state(2, mode="linear"), draw=(lm.encoder.weight, 1.0))


# ---- sync ----------------------------------------------------------------------------------------

SYNC_CASES = [(F64, "legs", "linear"), (F64, "random", "diagonal"), (F64, "s4d", "auto"), (F32, "legs", "auto")]


@pytest.mark.parametrize("native", [True, False], ids=["native", "torch"])
@pytest.mark.parametrize("unet", [False, True], ids=["plain", "unet"])
@pytest.mark.parametrize("dtype,ssm,mode", SYNC_CASES, ids=lambda v: str(v).replace("torch.", ""))
@torch.no_grad()
def test_sync_then_model_step_continues_the_stream(unet, dtype, ssm, mode, native):
    """``model.step`` for 7 steps, a stepper built from that mid-window state for 100 steps,
    ``sync()``, then ``model.step`` to the end: the outputs and the final state (S4 states, pooling
    buffers and phases) equal a stream that never used the stepper. Before ``sync`` the stepper
    leaves the SaShiMiState untouched."""
    model = make(dtype, ssm, unet=unet)
    torch.manual_seed(7)
    x = torch.randn(2, L, 8, dtype=dtype)
    ref_state = model.init_state(2, mode=mode)
    ref = model_steps(model, x, ref_state)

    state = model.init_state(2, mode=mode)
    head = model_steps(model, x[:, :7], state)
    before = state.clone()
    stepper = build(model, state, native=native_param(native))
    mid = fast_steps(stepper, x[:, 7:107])
    for a, b in zip(s4_states(state), s4_states(before)):
        assert torch.equal(a.x, b.x)
    assert [p.phase for p in pool_states(state)] == [p.phase for p in pool_states(before)] == phases(7)
    assert stepper.sync() is state
    assert [p.phase for p in pool_states(state)] == phases(107)
    tail = model_steps(model, x[:, 107:], state)
    assert rel_err(torch.cat([head, mid, tail], dim=1), ref) < TOL[dtype]

    assert [p.phase for p in pool_states(state)] == [p.phase for p in pool_states(ref_state)]
    for a, b in zip(pool_states(state), pool_states(ref_state)):
        assert rel_err(a.buffer, b.buffer) < TOL[dtype]
    for a, b in zip(s4_states(state), s4_states(ref_state)):
        assert a.x.dtype == b.x.dtype and rel_err(torch.view_as_real(a.x), torch.view_as_real(b.x)) < TOL[dtype]


# ---- unsupported configurations -------------------------------------------------------------------


def small_lm(dtype: torch.dtype = F64, seed: int = 0, **kw) -> SaShiMiLM:
    torch.manual_seed(seed)
    args: dict = dict(d_model=8, n_layers=1, d_state=16)
    args.update(kw)
    return SaShiMiLM(SaShiMiLMConfig(**args)).to(dtype).eval()


@pytest.fixture
def built(monkeypatch) -> list[FastStepper | None]:
    """Records what every ``_fast_step.build`` call (as generate makes it) returned."""
    calls: list[FastStepper | None] = []
    real = _fast_step.build

    def spy(*args, **kwargs):
        calls.append(real(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(_fast_step, "build", spy)
    return calls


def _nll_matches(lm: SaShiMiLM, out, tol: float) -> bool:
    """The likelihood accumulated while generating equals the convolution-mode score."""
    nll_conv = lm.log_likelihood(out.tokens) * math.log(2)  # nats per sample
    return float((nll_conv + out.log_likelihood / out.tokens.shape[1]).abs().max()) < tol


@pytest.mark.parametrize(
    "kw,mode,why",
    [({}, "dense", "dense S4 states"), (dict(rank=2), "linear", "rank-2 linear S4 states")],
    ids=["dense", "rank2-linear"],
)
def test_unsupported_state_modes_fall_back(built, kw, mode, why):
    """``build`` returns None for S4 states it has no program for; ``generate`` then steps with
    ``model.step`` and its samples and likelihoods stay exact."""
    lm = small_lm(**kw)
    assert build(lm.backbone, lm.init_state(2, mode=mode)) is None, why
    out = lm.generate(2, 70, generator=torch.Generator().manual_seed(0), progress=False, mode=mode)
    assert built == [None]
    assert _nll_matches(lm, out, 1e-5)
    if mode == "dense":  # the same model and sampler on the fast path draws the same samples
        fast = lm.generate(2, 70, generator=torch.Generator().manual_seed(0), progress=False, mode="linear")
        assert isinstance(built[-1], FastStepper)
        assert torch.equal(fast.tokens, out.tokens)
        assert (fast.log_likelihood - out.log_likelihood).abs().max() < 1e-9


def test_dropout_in_training_mode_falls_back(built):
    """Active dropout (training mode) is not compiled into the program: ``build`` returns None and
    ``generate`` still samples valid tokens; in evaluation mode the same model uses the stepper."""
    lm = small_lm(F32, dropout=0.1).train()
    assert build(lm.backbone, lm.init_state(2)) is None
    out = lm.generate(2, 40, generator=torch.Generator().manual_seed(0), progress=False)
    assert built == [None]
    assert out.tokens.shape == (2, 40) and 0 <= out.tokens.min() and out.tokens.max() < 256
    assert torch.isfinite(out.log_likelihood).all()
    lm.eval()
    out = lm.generate(2, 40, generator=torch.Generator().manual_seed(0), progress=False)
    assert isinstance(built[-1], FastStepper)
    assert _nll_matches(lm, out, 1e-4)


# ---- generate ----------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt_len", [0, 1, 21], ids=["no-prompt", "prompt1", "prompt21"])
def test_generate_fast_path_equals_slow_path(monkeypatch, built, prompt_len):
    """``generate`` on the stepper (built after the prompt, mid-window for 21 tokens) draws the same
    samples with the same likelihoods as ``generate`` forced onto ``model.step``."""
    lm = small_lm()
    prompt = torch.randint(0, 256, (2, prompt_len), generator=torch.Generator().manual_seed(3)) if prompt_len else None
    fast = lm.generate(2, 90, prompt=prompt, generator=torch.Generator().manual_seed(0), progress=False)
    assert len(built) == 1 and isinstance(built[0], FastStepper)
    monkeypatch.setattr(_fast_step, "build", lambda *a, **k: None)
    slow = lm.generate(2, 90, prompt=prompt, generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.equal(fast.tokens, slow.tokens)
    assert (fast.log_likelihood - slow.log_likelihood).abs().max() < 1e-9
    assert _nll_matches(lm, fast, 1e-5)


def _torch_compile_works() -> str | None:
    """None when torch.compile can build a CPU kernel here, else the reason it cannot."""
    try:
        f = torch.compile(lambda t: torch.sin(t) * 2 + 1, dynamic=False, fullgraph=True)
        f(torch.randn(3))
    except Exception as e:  # no C compiler, unsupported platform, ...
        return f"torch.compile is unavailable here: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


@pytest.mark.slow
def test_generate_compiled(built):
    """``generate(compile=True)`` (a torch.compile'd program per tier; ~25 s of compilation on a
    small CPU) draws the same samples as the eager stepper, with likelihoods within float32 rounding."""
    reason = _torch_compile_works()
    if reason is not None:
        pytest.skip(reason)
    lm = small_lm(F32, d_state=8, pool=(4,), ff=0)
    eager = lm.generate(2, 40, generator=torch.Generator().manual_seed(0), progress=False)
    compiled = lm.generate(2, 40, generator=torch.Generator().manual_seed(0), progress=False, compile=True)
    assert all(isinstance(s, FastStepper) for s in built) and len(built) == 2
    assert torch.equal(eager.tokens, compiled.tokens)
    assert (eager.log_likelihood - compiled.log_likelihood).abs().max() < 1e-4
    assert _nll_matches(lm, compiled, 1e-4)


def test_compile_fallback_warns(built):
    """``compile=True`` on a model the program does not cover says why instead of silently stepping slowly."""
    lm = small_lm()
    with pytest.warns(UserWarning, match="steps uncompiled.*dense S4 states|steps uncompiled.*'diagonal' or 'linear'"):
        lm.generate(1, 8, progress=False, mode="dense", compile=True)
    assert built == [None]


def test_stepper_owns_its_pool_buffers():
    """With a pooling factor of 1 the transposed buffer is already contiguous: the stepper must still
    copy it, leaving the caller's state untouched until ``sync``."""
    model = make(pool=(1, 2))
    state = model.init_state(2)
    before = [p.buffer.clone() for p in pool_states(state)]
    stepper = build(model, state)
    with torch.no_grad():
        fast_steps(stepper, torch.randn(2, 5, model.config.d_model, dtype=F64))
    for b, p in zip(before, pool_states(state)):
        assert torch.equal(b, p.buffer)
