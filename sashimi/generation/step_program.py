"""A flat, low-overhead step program for autoregressive generation with a causal SaShiMi.

:class:`FastStepper` mirrors :meth:`SaShiMi._step` (same tier schedule, same arithmetic up to float
rounding) but is built once per generation from the model's weights and a :class:`SaShiMiState`:

* S4 layers step in real arithmetic on a real (B, 2M, H) state (real parts, then imaginary parts;
  the channel dimension H innermost), with the layer's input applied *lazily*: the input of step t
  is folded into the state at the start of step t + 1. Every inner product a step reads from the
  state -- the output ``Re(C x')`` and, in 'linear' mode, the Woodbury terms ``Re(2 conj(P) x)`` and
  ``Re(2 conj(P) z)`` -- is rewritten (constants folded once in float64) as an inner product with
  the incoming state, so all the state work of a tier's S4 layers is one pass at the start of the
  tier's step (:class:`sashimi.kernels.native.PhaseProgram`: a C kernel compiled on first use, or
  PyTorch), and the layer-by-layer part of the step touches only (B, H) tensors:
  ``y = R[ne:] + D' u``. D, the output weight 2, ``W^-1`` and all signs are folded into the
  constants;
* modules are bypassed: each residual block is one function of its tensors (``torch.addmm``,
  ``F.layer_norm``); every linear weight is stored transposed, (in, out), once (MKL multiplies 32-row
  inputs by it 25-35% faster than by the (out, in) weight's transposed view); weight-normalised
  pooling weights are materialised once, and the pooling weights are permuted so that the pooling
  buffers are written and read contiguously;
* lower tiers run only when their pooling window closes (as in ``_step``); nothing is validated
  per step; the UpPool buffers are swapped, not copied;
* optionally (``compile=True``) each tier's run of residual blocks is one ``torch.compile`` graph
  (the pooling schedule stays in Python, so only ``1 + 2 len(pool)`` units exist). A unit's
  constants are packed into one flat tensor per dtype and passed, with the state tensors, as
  arguments: a call costs a handful of tensor inputs (not hundreds), and the compiled function
  depends only on the model's structure, so it is cached across steppers (and generations) of the
  same architecture and batch size;
* for a language model, the last unit of a step can end with the model's head (final norm, decoder,
  float64 log-probabilities) and even the next draw (``decoder``, ``draw``: see :class:`FastStepper`).

The stepper owns copies of the state tensors (each S4 state with its pending input);
:meth:`FastStepper.sync` writes them back into the :class:`SaShiMiState` it was built from.
Unsupported configurations (dropout active in training mode, 'dense' S4 states, a DPLR rank above 1
in 'linear' mode) make :func:`build` return None; callers then use :meth:`SaShiMi.step`.
"""

from __future__ import annotations

import functools
import threading
import types
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sashimi.generation.sampling import sample_from
from sashimi.kernels.native import PhaseLayer, PhaseProgram, block_width, from_blocked, to_blocked
from sashimi.layers.blocks import FFBlock, ResidualBlock, ScalarChannelNorm
from sashimi.layers.s4block import S4Block, S4State

__all__ = ["FastStepper", "build"]

Tensor = torch.Tensor
#: a causal SaShiMi backbone and its SaShiMiState, read through their attributes (tiers, blocks, pools)
Backbone = nn.Module
State = Any
#: a block step: (h, the block's tensors) -> h
BlockFn = Callable[[Tensor, tuple], Tensor]

_ACTS = {nn.GELU: "gelu", nn.SiLU: "silu", nn.ReLU: "relu", nn.Tanh: "tanh", nn.Identity: "identity"}
_ACT_FNS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu, "silu": F.silu, "relu": F.relu, "tanh": torch.tanh, "identity": lambda y: y,
}
_ALIGN = 16  # elements: packed constants start on 64-byte boundaries (float32)


def unsupported_reason(model: Backbone, state: State) -> str | None:
    if model.training and any(isinstance(m, nn.Dropout) for m in model.modules()):
        return "dropout is active (training mode)"
    for blocks, states in _pairs(model, state):
        for blk, st in zip(blocks, states):
            if not isinstance(blk, ResidualBlock) or not isinstance(blk.layer, (S4Block, FFBlock)):
                return f"unsupported block {type(blk).__name__}"
            norm = blk.norm
            if isinstance(norm, nn.LayerNorm):
                if norm.weight is None or norm.bias is None or len(norm.normalized_shape) != 1:
                    return "unsupported LayerNorm (no affine parameters or not over one dimension)"
            elif not isinstance(norm, ScalarChannelNorm):
                return f"unsupported norm {type(norm).__name__}"
            if isinstance(blk.layer, FFBlock) and type(blk.layer.activation) is not nn.GELU:
                return f"unsupported FF activation {type(blk.layer.activation).__name__}"
            if isinstance(blk.layer, S4Block):
                if type(blk.layer.activation) not in _ACTS:
                    return f"unsupported activation {type(blk.layer.activation).__name__}"
                lin = blk.layer.output_linear
                if isinstance(lin, nn.Linear) and lin.bias is None:
                    return "S4 output linear without bias"
                if not isinstance(st, S4State) or st.mode not in ("diagonal", "linear"):
                    return "S4 state mode must be 'diagonal' or 'linear'"
                if st.mode == "linear" and st.consts["Winv"].shape[-1] != 1:
                    return "linear mode with rank > 1"
    return None


def _pairs(model: Backbone, state: State):
    for tier, st in zip(model.down, state.down):
        yield tier.blocks, st.blocks
    yield model.center, state.center
    for tier, st in zip(model.up, state.up):
        yield tier.blocks, st.blocks


# ---- block programs (functions of the block's tensors; cached by their static description) --------


def _norm_fn(kind: str, eps: float, H: int) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    if kind == "layer":
        shape = (H,)
        return lambda x, w, b: F.layer_norm(x, shape, w, b, eps)

    def scalar(x: Tensor, m: Tensor, s: Tensor) -> Tensor:
        std, mean = torch.std_mean(x, dim=-1, unbiased=False, keepdim=True)
        return (s / std) * (x - mean + m)

    return scalar


def _norm_tensors(norm: nn.Module) -> tuple[str, float, list[Tensor]]:
    if isinstance(norm, nn.LayerNorm):
        return "layer", float(norm.eps), [norm.weight, norm.bias]
    return "scalar", 0.0, [norm.m, norm.s]


@functools.cache
def _ff_fn(H: int, norm: str, eps: float, prenorm: bool) -> BlockFn:
    nf = _norm_fn(norm, eps, H)

    if prenorm:

        def ff(h: Tensor, T: tuple) -> Tensor:
            n1, n2, w1t, b1, w2t, b2 = T
            return h + torch.addmm(b2, F.gelu(torch.addmm(b1, nf(h, n1, n2), w1t)), w2t)

    else:

        def ff(h: Tensor, T: tuple) -> Tensor:
            n1, n2, w1t, b1, w2t, b2 = T
            return nf(h + torch.addmm(b2, F.gelu(torch.addmm(b1, h, w1t)), w2t), n1, n2)

    return ff


@functools.cache
def _s4_fn(H: int, ne: int, c: int, act: str, postact: str | None, norm: str, eps: float, prenorm: bool,
           cast: bool) -> BlockFn:
    """The residual S4 block step after the state pass. Tensors: (norm 1, norm 2, [W^T, b,] D', R, U):
    the output is ``R[:, ne:] + D' u`` (R: (B, ne + c, H), the state pass's reductions) and the
    block's input u is stored in U (B, H), the state's pending input for the next pass."""
    nf = _norm_fn(norm, eps, H)
    actf = _ACT_FNS[act]
    has_linear, glu = postact is not None, postact == "glu"

    def layer(z: Tensor, T: tuple) -> Tensor:
        Dp, R, U = T[-3:]
        u = z.to(U.dtype) if cast else z
        U.copy_(u)
        y = torch.addcmul(R[:, ne:], u.unsqueeze(1), Dp)  # (B, c, H)
        y = y[:, 0] if c == 1 else y.reshape(u.shape[0], c * H)
        y = actf(y.to(z.dtype) if cast else y)
        if has_linear:
            y = torch.addmm(T[3], y, T[2])
            if glu:
                y = F.glu(y, dim=-1)
        return y

    if prenorm:

        def s4(h: Tensor, T: tuple) -> Tensor:
            return h + layer(nf(h, T[0], T[1]), T)

    else:

        def s4(h: Tensor, T: tuple) -> Tensor:
            return nf(h + layer(h, T), T[0], T[1])

    return s4


def _t(w: Tensor) -> Tensor:
    """A linear layer's (out, in) weight as a new contiguous (in, out) tensor: x @ w^T = addmm(b, x, _t(w))."""
    return w.detach().t().contiguous()


def _stack(re: Tensor, im: Tensor) -> Tensor:
    """(..., H, M) real and imaginary parts -> (..., 2, M, H)."""
    return torch.stack([re, im], dim=-3).transpose(-1, -2).contiguous()


def _fold(V: Tensor, K1: Tensor, K2: Tensor) -> Tensor:
    """The weights of <V, K1 x_re + K2 x_im> as one inner product with x = [x_re; x_im]: V (..., 2, M, H)
    and K1, K2 (2, M, H) -> (..., 2, M, H)."""
    return torch.stack([(V * K1).sum(-3), (V * K2).sum(-3)], dim=-3)


def _s4_block(blk: ResidualBlock, st: S4State) -> tuple[BlockFn, list[Tensor], PhaseLayer]:
    """The step function and (B, H)-side constants of a residual S4 block, and its state pass."""
    layer: S4Block = blk.layer
    st.check_owner(layer)  # the program bypasses S4Block.step: check once, when it is built
    consts = st.consts
    sdt = st.x.real.dtype
    iodt = layer.D.dtype if st.dtype is None else st.dtype
    Bn, H, M = st.x.shape
    norm, eps, nt = _norm_tensors(blk.norm)
    f64 = torch.float64
    D = layer.D.detach().to(f64)  # (c, H)
    c = D.shape[0]
    lin = layer.output_linear
    lin_t = [_t(lin.weight), lin.bias] if isinstance(lin, nn.Linear) else []

    def re_im(t: Tensor) -> tuple[Tensor, Tensor]:  # folded in float64, rounded once to the state dtype
        return t.real.to(f64), t.imag.to(f64)

    def ip(V: Tensor, U: Tensor) -> Tensor:
        return (V * U).sum((-3, -2))

    if consts.mode == "diagonal":  # x' = a x + dB u; y = Re(C x') (+ D u) = <C~, x> + (<C, dB> + D) u
        ar, ai = re_im(consts["dA"])
        br, bi = re_im(consts["dB"])
        cr, ci = re_im(consts["dC"] * (2.0 if consts.two_re else 1.0))  # (c, H, M)
        K1, K2, G = _stack(ar, ai), _stack(-ai, ar), _stack(br, bi)
        C = _stack(cr, -ci)  # (c, 2, M, H): Re(C v) = cr vr - ci vi
        W, E, Dp = _fold(C, K1, K2), G.new_zeros(0, 2, M, H), ip(C, G) + D
    else:  # linear (Woodbury, rank 1), all inner products taken on the incoming state x:
        # s = <P, x>, q = <P, z> = <P~, x> + <P, Hs> s + <P, G> u, x' = z + q Qw with z = a x + Hs s + G u,
        # y = <C, x'> (+ D u); so x' = a x + (Hs + <P, Hs> Qw) s + Qw <P~, x> + (G + <P, G> Qw) u and
        # y = <C~ + (<C, Hs> + <C, Qw> <P, Hs>) P + <C, Qw> P~, x> + (<C, G> + D + <C, Qw> <P, G>) u
        t = consts.tensors
        ar, ai = re_im(t["da"])
        pr, pi = re_im(t["Pc2"][0])
        hpr, hpi = re_im(t["dhP"][0])
        gr, gi = re_im(t["ddtB"])
        qr, qi = re_im(t["dP"][0])
        winv = t["Winv"][:, 0].to(f64)  # (H, 1)
        cr, ci = re_im(t["C2"])
        K1, K2 = _stack(ar, ai), _stack(-ai, ar)
        P = _stack(pr, -pi)  # Re(2 conj(P) v) = pr vr - pi vi
        Hs, G0, Qw = _stack(-hpr, -hpi), _stack(gr, gi), _stack(-qr * winv, -qi * winv)
        C = _stack(cr, -ci)  # (c, 2, M, H)
        Pt = _fold(P, K1, K2)
        p_h, p_g = ip(P, Hs), ip(P, G0)  # (H,)
        c_h, c_g, c_q = ip(C, Hs), ip(C, G0) + D, ip(C, Qw)  # (c, H)
        G = G0 + p_g * Qw
        E = torch.stack([Hs + p_h * Qw, Qw])  # (2, 2, M, H)
        W = torch.cat(
            [P[None], Pt[None], _fold(C, K1, K2) + (c_h + c_q * p_h)[:, None, None] * P + c_q[:, None, None] * Pt]
        )
        Dp = c_g + c_q * p_g
    Cb = block_width(H, sdt)

    def blocked(t: Tensor) -> Tensor:  # (..., 2, M, H) -> (..., H / Cb, 2M, Cb) in the state dtype
        return to_blocked(t.reshape(*t.shape[:-3], 2 * M, H).to(sdt), Cb)

    X = blocked(_stack(st.x.real, st.x.imag))
    W = blocked(W)
    phase = PhaseLayer(X, X.new_zeros(Bn, H), blocked(G), W, blocked(K1), blocked(E), X.new_empty(Bn, W.shape[0], H))
    act = _ACTS[type(layer.activation)]
    fn = _s4_fn(H, E.shape[0], c, act, layer.postact if lin_t else None, norm, eps, bool(blk.prenorm), sdt != iodt)
    return fn, [*nt, *lin_t, Dp.to(sdt).contiguous()], phase


@functools.cache
def _logp_fn(H: int, eps: float) -> BlockFn:
    """The model's head after the last unit: final LayerNorm, decoder, float64 log-probabilities."""
    shape = (H,)

    def logp(h: Tensor, T: tuple) -> Tensor:
        w, b, dwt, db = T
        return torch.log_softmax(torch.addmm(db, F.layer_norm(h, shape, w, b, eps), dwt).double(), dim=-1)

    return logp


@functools.cache
def _draw_fn(H: int, eps: float, temperature: float) -> Callable[..., tuple[Tensor, Tensor]]:
    """The model's head (:func:`_logp_fn`) and the next sample, after the last unit: the inverse-CDF
    draw of :func:`sashimi.generation.sampling.sample_from` (no nucleus). Arguments after the tensors: the (B,)
    float64 uniforms and log-likelihoods (the drawn class's log-probability is added in place).
    Returns the (B,) classes and their (B, d_model) embeddings (the next step's input)."""
    head = _logp_fn(H, eps)

    def draw(h: Tensor, T: tuple, u: Tensor, ll: Tensor) -> tuple[Tensor, Tensor]:
        logp = head(h, T[:4])  # (B, C)
        nxt = sample_from(logp, u, temperature, 1.0)  # (B,)
        ll.add_(logp.gather(-1, nxt.unsqueeze(-1)).squeeze(-1))
        return nxt, F.embedding(nxt, T[4])

    return draw


def _ff_block(blk: ResidualBlock) -> tuple[BlockFn, list[Tensor]]:
    ff: FFBlock = blk.layer
    norm, eps, nt = _norm_tensors(blk.norm)
    fn = _ff_fn(ff.d_model, norm, eps, bool(blk.prenorm))
    return fn, [*nt, _t(ff.fc1.weight), ff.fc1.bias, _t(ff.fc2.weight), ff.fc2.bias]


# ---- units: a tier's run of residual blocks -----------------------------------------------------


def _run_unit(kind: str, fns: tuple, h: Tensor, extras: tuple, Ts: list) -> Any:
    """'down' (U-Net down blocks: the outputs), 'center', 'up' (extras: the tier input) or 'up_unet'
    (extras: the tier input and the down blocks' outputs)."""
    if kind == "center":
        a = h
        for f, T in zip(fns, Ts):
            h = f(h, T)
        return h + a
    if kind == "down":
        outs = []
        for f, T in zip(fns, Ts):
            h = f(h, T)
            outs.append(h)
        return outs
    if kind == "up":
        h = h + extras[0]
        u = h
        for f, T in zip(fns, Ts):
            h = f(h, T)
        return h + u
    skips = extras  # up_unet: skip k is added after up layer n - k
    n = len(fns)
    h = h + skips[n]
    for j, (f, T) in enumerate(zip(fns, Ts)):
        h = f(h, T) + skips[n - 1 - j]
    return h


#: compiled units by structure (see :func:`_compiled_unit`)
_COMPILED: dict[tuple, Callable] = {}
#: held by a unit's first call (the one that compiles): steppers may run in several threads
_COMPILE_LOCK = threading.Lock()
#: guards kept on a compiled unit: tensor metadata and the global torch state. The rest (constants of
#: the closure: its layout and block functions) cannot change, because each structure gets its own
#: code object; dropping them makes a call cost microseconds instead of a check of every closure value
_KEEP_GUARDS = frozenset({
    "TENSOR_MATCH", "SHAPE_ENV", "GLOBAL_STATE", "GRAD_MODE", "DETERMINISTIC_ALGORITHMS", "TORCH_FUNCTION_STATE",
    "DEFAULT_DEVICE", "AUTOGRAD_SAVED_TENSORS_HOOKS",
})


def _guard_filter(entries: list) -> list[bool]:
    return [e.guard_type in _KEEP_GUARDS for e in entries]


def _compiled_unit(key: tuple) -> Callable:
    """A torch.compile'd unit of a given structure; its arguments are (h, *extras, *flat constants,
    *states) (states: per S4 layer the state pass's reductions R, read, and the pending input U,
    written). The function depends only on ``key``, so it is shared by every stepper with that
    structure."""
    fn = _COMPILED.get(key)
    if fn is not None:
        return fn
    kind, fns, layout, n_extra, n_post, n_flat, device_type, post = key

    def unit(h: Tensor, *args: Tensor) -> Any:
        extras, pargs = args[:n_extra], args[n_extra : n_extra + n_post]
        flats, states = args[n_extra + n_post : n_extra + n_post + n_flat], args[n_extra + n_post + n_flat :]
        Ts = []
        for views, si in layout:
            T = [flats[f].narrow(0, o, n).view(shape) for f, o, n, shape in views]
            if si >= 0:
                T += [states[2 * si], states[2 * si + 1]]
            Ts.append(tuple(T))
        if post:  # the last entry: a function of the unit's output
            return fns[-1](_run_unit(kind, fns[:-1], h, extras, Ts[:-1]), Ts[-1], *pargs)
        return _run_unit(kind, fns, h, extras, Ts)

    # a code object of its own: dynamo keeps its compiled graphs (one per batch size) per code object
    code = unit.__code__.replace(co_name=f"sashimi_unit_{len(_COMPILED)}")
    unit = types.FunctionType(code, unit.__globals__, code.co_name, unit.__defaults__, unit.__closure__)
    opts: dict[str, Any] = (
        {"guard_filter_fn": _guard_filter} if hasattr(torch.compiler, "skip_all_guards_unsafe") else {}
    )
    if device_type == "cpu":  # a C++ wrapper: a call runs without the Python interpreter (and the GIL)
        opts["cpp_wrapper"] = True
    fn = torch.compile(unit, dynamic=False, fullgraph=True, options=opts)
    _COMPILED[key] = fn
    return fn


class _Unit:
    """The residual blocks of one tier: the state pass of its S4 layers, then an eager program (a list
    of (function, tensors)) or, optionally, the compiled one."""

    def __init__(self, kind: str, mods: nn.ModuleList, states: list, n_extra: int, compile: bool,
                 native: bool | None, post: tuple[Callable, list[Tensor], int] | None = None) -> None:
        """``post``: a function (its tensors, and how many per-call arguments it takes after them)
        applied to the unit's output, inside the compiled graph."""
        self.kind = kind
        self.s4: list[tuple[S4State, PhaseLayer]] = []
        fns, consts, bufs = [], [], []
        for blk, st in zip(mods, states):
            if isinstance(blk.layer, S4Block):
                fn, ts, phase = _s4_block(blk, st)
                self.s4.append((st, phase))
                pair = (phase.R, phase.U)
            else:
                fn, ts = _ff_block(blk)
                pair = None
            fns.append(fn)
            consts.append([t.detach() for t in ts])
            bufs.append(pair)
        self.phase = PhaseProgram([p for _, p in self.s4], native=native)
        self.prefetched = False
        self.post = None if post is None else (post[0], tuple(t.detach() for t in post[1]))
        if post is not None:  # packed with the blocks' constants (the last entry)
            fns.append(post[0])
            consts.append([t.detach() for t in post[1]])
            bufs.append(None)
        self.fns = tuple(fns)
        n = len(mods)  # the residual blocks (without post)
        self.table = [(*ts, *p) if p is not None else tuple(ts) for ts, p in zip(consts[:n], bufs[:n])]
        self.block_fns = tuple(fns[:n])
        self.blocks = list(zip(self.block_fns, self.table))
        self.cfn = None
        if compile and self.fns:
            # pack the constants into one flat tensor per dtype (64-byte aligned views)
            dtypes: list[torch.dtype] = []
            chunks: dict[torch.dtype, list[Tensor]] = {}
            sizes: dict[torch.dtype, int] = {}
            layout, pairs = [], []
            for ts, p in zip(consts, bufs):
                views = []
                for t in ts:
                    if t.dtype not in chunks:
                        dtypes.append(t.dtype)
                        chunks[t.dtype], sizes[t.dtype] = [], 0
                    off, n = sizes[t.dtype], t.numel()
                    pad = -n % _ALIGN
                    chunks[t.dtype].append(t.reshape(-1))
                    if pad:
                        chunks[t.dtype].append(t.new_zeros(pad))
                    sizes[t.dtype] = off + n + pad
                    views.append((dtypes.index(t.dtype), off, n, tuple(t.shape)))
                layout.append((tuple(views), len(pairs) if p is not None else -1))
                if p is not None:
                    pairs.append(p)
            flats = [torch.cat(chunks[d]) for d in dtypes]
            self.cfn = _compiled_unit(
                (kind, self.fns, tuple(layout), n_extra, 0 if post is None else post[2], len(flats),
                 flats[0].device.type, post is not None)
            )
            self.warm = False
            self.cargs = (*flats, *(x for p in pairs for x in p))

    def prefetch(self) -> None:
        """Run the state pass of the next call now (the pending inputs are those of the last call);
        once per call."""
        if not self.prefetched:
            self.phase()
            self.prefetched = True

    def __call__(self, h: Tensor, *extras: Tensor, post_args: tuple[Tensor, ...] = ()) -> Any:
        """``extras``: the tier's other inputs; ``post_args``: the post function's per-call arguments."""
        if not self.prefetched:
            self.phase()
        self.prefetched = False
        if self.cfn is not None:
            if not self.warm:  # the first call compiles (or finds the graph): one thread at a time
                with _COMPILE_LOCK:
                    out = self.cfn(h, *extras, *post_args, *self.cargs)
                self.warm = True
                return out
            return self.cfn(h, *extras, *post_args, *self.cargs)
        out = self._eager(h, extras)
        return out if self.post is None else self.post[0](out, self.post[1], *post_args)

    def _eager(self, h: Tensor, extras: tuple) -> Any:
        kind = self.kind
        if kind == "up":
            h = h + extras[0]
            u = h
            for f, T in self.blocks:
                h = f(h, T)
            return h + u
        if kind == "center":
            a = h
            for f, T in self.blocks:
                h = f(h, T)
            return h + a
        return _run_unit(kind, self.block_fns, h, extras, self.table)

    def sync(self) -> None:
        for st, (X, U, G, *_) in self.s4:
            M = X.shape[2] // 2
            cur = torch.addcmul(from_blocked(X), U.unsqueeze(1), from_blocked(G))  # the pending input applied
            st.x.copy_(torch.complex(cur[:, :M], cur[:, M:]).transpose(1, 2))


class FastStepper:
    """The step program of a causal :class:`SaShiMi` (see the module docstring); use :func:`build`.

    ``stepper.step(x)`` maps (B, d_model) inputs to (B, d_model) outputs (final norm included), like
    ``model.step(x, state)[0]``; with ``decoder`` (the LM's (C, d_model) weight and (C,) bias) to the
    (B, C) float64 log-probabilities of the next class, computed inside the last unit of the step.
    With ``decoder`` and ``draw`` (the LM's (C, d_model) embedding and a temperature), the last unit
    also draws the next class: ``step(x, u, ll)`` takes the (B,) float64 uniforms of the draw
    (in [0, 1 - 2**-50)) and log-likelihoods (the drawn classes' log-probabilities are added in place)
    and returns the (B,) classes and their embeddings, the next step's input (see :func:`_draw_fn`).

    ``pipeline=True``: the lower tiers (everything below tier 0, run when tier 0's pooling window
    closes) run in a worker thread while tier 0 goes on. This is exact, not an approximation: the
    UpPool shifts by one window, so what the lower tiers compute at a closing step is first read by
    tier 0 at the next step, which waits for it; lower-tier tasks run in order, in one thread. Call
    :meth:`close` when done. The worker also runs each lower unit's next state pass ahead of time, so
    a pipelined stepper cannot :meth:`sync` its state back.
    """

    def __init__(self, model: Backbone, state: State, compile: bool = False, native: bool | None = None,
                 pipeline: bool = False, decoder: tuple[Tensor, Tensor] | None = None,
                 draw: tuple[Tensor, float] | None = None) -> None:
        if draw is not None and decoder is None:
            raise ValueError("draw needs the decoder")
        if getattr(state, "program", None) is not None:  # this stepper takes the stream over
            state.detach_program()
        self.state = state
        self.s4_dtype = model.norm.weight.dtype  # the model precision the program steps in
        self._pending: Future | None = None
        self._later: list[_Unit] = []  # units whose next state pass waits for the next urgent part
        self._worker = (
            ThreadPoolExecutor(1, thread_name_prefix="sashimi-lower") if pipeline and model.config.pool else None
        )
        cfg = model.config
        self.pool = list(cfg.pool)
        self.unet = cfg.unet
        K = len(self.pool)
        norm = model.norm
        shape, nw, nb, eps = norm.normalized_shape, norm.weight.detach(), norm.bias.detach(), norm.eps
        self.final_norm = lambda x: F.layer_norm(x, shape, nw, nb, eps)
        # with a decoder, the last unit of a step (tier 0's up unit, or the center without pooling) ends
        # with the final norm, the decoder and the log-probabilities: step() returns (B, C) float64
        self.logp = decoder is not None
        post = None
        if draw is not None:  # step() returns the next classes and their embeddings
            post = (_draw_fn(shape[0], float(eps), float(draw[1])), [nw, nb, _t(decoder[0]), decoder[1], draw[0]], 2)
        elif decoder is not None:
            post = (_logp_fn(shape[0], float(eps)), [nw, nb, _t(decoder[0]), decoder[1]], 0)
        self.down_units = [
            _Unit("down", t.blocks, s.blocks, 0, compile, native) if len(t.blocks) else None
            for t, s in zip(model.down, state.down)
        ]
        self.center_unit = _Unit("center", model.center, state.center, 0, compile, native, None if K else post)
        self.up_units = []
        for i in range(K):
            t, s = model.up[i], state.up[i]
            last = post if i == 0 else None
            if self.unet:
                n_extra = 1 + len(model.down[i].blocks)
                self.up_units.append(_Unit("up_unet", t.blocks, s.blocks, n_extra, compile, native, last))
            else:
                self.up_units.append(_Unit("up", t.blocks, s.blocks, 1, compile, native, last))
        # DownPool i: weight columns h*pool+s -> s*H+h, buffer (B, pool, H)
        self.dpool, self.dbuf, self.dph = [], [], []
        for tier, st in zip(model.down, state.down):
            p, lin = tier.pool.pool, tier.pool.linear
            W = lin.weight.detach()
            Wp = W.reshape(W.shape[0], -1, p).transpose(1, 2).reshape(W.shape[0], -1).contiguous()
            self.dpool.append((Wp.t().contiguous(), lin.bias.detach()))  # (pool H, H')
            self.dbuf.append(st.pool.buffer.transpose(1, 2).clone(memory_format=torch.contiguous_format))
            self.dph.append(st.pool.phase)
        # UpPool i: weight rows h*pool+s -> s*Ho+h, buffer (B, pool, Ho)
        self.upool, self.ubuf, self.uph = [], [], []
        for tier, st in zip(model.up, state.up):
            p, lin = tier.pool.pool, tier.pool.linear
            W, b = lin.weight.detach(), lin.bias.detach()
            Ho = W.shape[0] // p
            Wp = W.reshape(Ho, p, -1).transpose(0, 1).reshape(Ho * p, -1).contiguous()
            bp = b.reshape(Ho, p).t().reshape(-1).contiguous()
            self.upool.append((Wp.t().contiguous(), bp, p, Ho))  # (H, pool Ho)
            self.ubuf.append(st.pool.buffer.transpose(1, 2).clone(memory_format=torch.contiguous_format))
            self.uph.append(st.pool.phase)

    def step(self, x: Tensor, *draw_args: Tensor) -> Any:
        """(B, d_model) -> (B, d_model) (or see the class docstring); the state advances by one sample."""
        down0 = self.down_units[0] if self.pool else None
        outs = down0(x) if down0 is not None else []
        if not self.pool:  # no pooling: the center blocks only
            h = self.center_unit(x, post_args=draw_args)
            return h if self.logp else self.final_norm(h)
        h = outs[-1] if outs else x
        ph, buf = self.dph[0], self.dbuf[0]
        buf[:, ph] = h
        closing = ph + 1 == self.pool[0]
        self.dph[0] = 0 if closing else ph + 1
        if self._pending is not None:  # the lower tiers' window (from the last closing step) starts
            self.ubuf[0] = self._pending.result()[0]
            self._pending = None
        uph = self.uph[0]
        out = self.ubuf[0][:, uph]  # (B, Ho): the UpPool is one window behind, so the lower tiers'
        if closing:  # output of this step is first read at the next step
            Wp, b = self.dpool[0]
            h1 = torch.addmm(b, buf.reshape(buf.shape[0], -1), Wp)
            if self._worker is not None:
                fut = self._pending = self._worker.submit(self._lower, h1)
                self._worker.submit(self._run_later)
                self._worker.submit(lambda: fut.result()[1]())
            else:
                self.ubuf[0], deferred = self._lower(h1)
                deferred()
            self.uph[0] = 0
        else:
            self.uph[0] = uph + 1
        h = self.up_units[0](out, x, *(outs if self.unet else ()), post_args=draw_args)
        return h if self.logp else self.final_norm(h)

    def _lower(self, h: Tensor) -> tuple[Tensor, Callable[[], None]]:
        """Tiers 1.. at a step closing tier 0's pooling window, from the pooled (B, H1) input.

        Returns tier 0's next UpPool window (B, pool, H0) and the deferred rest. The UpPools are one
        window behind, so every up tier runs on its *current* window and its input from the down
        path; the deeper tiers' outputs only fill windows read at later calls. So the window tier 0
        needs next is computed first (the down path and up tier 1), and the deferred part runs the
        deeper up tiers and the center, then the state passes of the next calls of every unit that
        ran (prefetched). Only this function and its deferred part touch the lower tiers' state (in
        the worker thread with ``pipeline=True``).
        """
        with torch.no_grad():
            K = len(self.pool)
            inputs, skips = [None], [None]
            depth = 1
            for i in range(1, K):
                inputs.append(h)
                unit = self.down_units[i]
                outs = unit(h) if unit is not None else []
                if outs:
                    h = outs[-1]
                skips.append(outs)
                ph, buf = self.dph[i], self.dbuf[i]
                buf[:, ph] = h
                if ph + 1 < self.pool[i]:
                    self.dph[i] = ph + 1
                    break
                self.dph[i] = 0
                Wp, b = self.dpool[i]
                h = torch.addmm(b, buf.reshape(buf.shape[0], -1), Wp)
                depth = i + 1
            ran = [self.down_units[i] for i in range(1, min(depth + 1, K)) if self.down_units[i] is not None]

            def up(i: int) -> Tensor:
                """Up tier i on its current window; the window advances (or waits for a refill)."""
                ph = self.uph[i]
                out = self.ubuf[i][:, ph]  # (B, Ho)
                self.uph[i] = 0 if ph == self.upool[i][2] - 1 else ph + 1
                ran.append(self.up_units[i])
                if self.unet:
                    return self.up_units[i](out, inputs[i], *skips[i])
                return self.up_units[i](out, inputs[i])

            def refill(i: int, y: Tensor) -> Tensor:  # tier i's next window from tier i+1's output y
                Wp, bp, p, Ho = self.upool[i]
                return torch.addmm(bp, y, Wp).reshape(y.shape[0], p, Ho)

            window0 = refill(0, up(1) if K > 1 else self._center(h, ran))
            top = min(depth, K - 1)  # the deepest up tier that runs

            def deferred() -> None:
                with torch.no_grad():
                    y = self._center(h, ran) if depth == K and K > 1 else None  # fills tier top's window
                    for i in range(top, 1, -1):
                        yi = up(i)  # on tier i's current window, then the window is refilled
                        if y is not None:
                            self.ubuf[i] = refill(i, y)
                        y = yi
                    if y is not None:
                        self.ubuf[1] = refill(1, y)
                    if self._worker is not None:  # the next state passes: tier 1's now (the next
                        # closing step needs them first), deeper units' after that step's urgent part
                        nxt = (self.down_units[1], self.up_units[1]) if K > 1 else (self.center_unit,)
                        for unit in ran:
                            if any(unit is u for u in nxt):
                                unit.prefetch()
                            else:
                                self._later.append(unit)

            return window0, deferred

    def _center(self, h: Tensor, ran: list) -> Tensor:
        ran.append(self.center_unit)
        return self.center_unit(h)

    def _run_later(self) -> None:
        """(worker thread) the state passes put off at the last closing step."""
        with torch.no_grad():
            while self._later:
                self._later.pop().prefetch()

    def _units(self) -> list:
        return [*self.down_units, self.center_unit, *self.up_units]

    def close(self) -> None:
        """Finish the lower tiers' pending work and stop the worker thread (``pipeline=True``)."""
        if self._worker is not None:
            self._worker.shutdown()  # waits for the queued tasks
            self._worker = None
        if self._pending is not None:
            self.ubuf[0] = self._pending.result()[0]
            self._pending = None

    def sync(self) -> State:
        """Write the stepper's state back into the :class:`SaShiMiState` it was built from."""
        if self._worker is not None or any(u is not None and u.prefetched for u in self._units()):
            raise RuntimeError(
                "a pipelined FastStepper runs the lower tiers' state passes ahead and cannot hand its state "
                "back; build it with pipeline=False to sync"
            )
        for unit in self._units():
            if unit is not None:
                unit.sync()
        for tiers, bufs, phases in ((self.state.down, self.dbuf, self.dph), (self.state.up, self.ubuf, self.uph)):
            for st, buf, ph in zip(tiers, bufs, phases):
                st.pool.buffer.copy_(buf.transpose(1, 2))
                st.pool.phase = ph
        return self.state


def build(model: Backbone, state: State, compile: bool = False, native: bool | None = None,
          pipeline: bool = False, decoder: tuple[Tensor, Tensor] | None = None,
          draw: tuple[Tensor, float] | None = None) -> FastStepper | None:
    """A :class:`FastStepper` for ``model`` continuing ``state``, or None when the configuration is not
    supported (the caller then steps with :meth:`SaShiMi.step`).
    ``native``: the S4 state pass with the C kernel when available (None), always (True: an error if
    unavailable) or never (False). ``pipeline``, ``decoder``, ``draw``: see :class:`FastStepper`."""
    if unsupported_reason(model, state) is not None:
        return None
    with torch.no_grad():
        return FastStepper(model, state, compile=compile, native=native, pipeline=pipeline, decoder=decoder, draw=draw)
