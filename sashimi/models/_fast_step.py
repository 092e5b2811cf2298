"""A flat, low-overhead step program for autoregressive generation with a causal SaShiMi.

:class:`FastStepper` mirrors :meth:`SaShiMi._step` (same tier schedule, same arithmetic up to float
rounding) but is built once per generation from the model's weights and a :class:`SaShiMiState`:

* S4 layers step in real arithmetic on contiguous real/imaginary state buffers (the complex kernels
  of PyTorch's CPU backend are several times slower than real ones), with every constant
  precomputed (negated imaginary parts, ``2 conj(P)``, ...), and the state updated in place;
* modules are bypassed: each residual block is a closure over its tensors (``F.linear``,
  ``F.layer_norm``), weight-normalised pooling weights are materialised once, and the pooling
  weights are permuted so that the pooling buffers are written and read contiguously;
* lower tiers run only when their pooling window closes (as in ``_step``); nothing is validated
  per step; the UpPool buffers are swapped, not copied;
* optionally (``compile=True``) each tier's run of residual blocks is compiled with
  ``torch.compile`` (the pooling schedule stays in Python, so only ``1 + len(pool)`` graphs exist).

The stepper owns copies of the state tensors; :meth:`FastStepper.sync` writes them back into the
:class:`SaShiMiState` it was built from. Unsupported configurations (dropout active in training
mode, 'dense' S4 states, a DPLR rank above 1 in 'linear' mode) make :func:`build` return None;
callers then use :meth:`SaShiMi.step`.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sashimi.layers.blocks import FFBlock, ResidualBlock, ScalarChannelNorm
from sashimi.layers.s4block import S4Block, S4State
from sashimi.models.sashimi import SaShiMi, SaShiMiState

__all__ = ["FastStepper", "build"]

Block = Callable[[torch.Tensor], torch.Tensor]

_ACTS = {nn.GELU: F.gelu, nn.SiLU: F.silu, nn.ReLU: F.relu, nn.Tanh: torch.tanh, nn.Identity: lambda y: y}


def _unsupported(model: SaShiMi, state: SaShiMiState) -> str | None:
    if model.training and any(isinstance(m, nn.Dropout) for m in model.modules()):
        return "dropout is active (training mode)"
    for blocks, states in _pairs(model, state):
        for blk, st in zip(blocks, states):
            if not isinstance(blk, ResidualBlock) or not isinstance(blk.layer, (S4Block, FFBlock)):
                return f"unsupported block {type(blk).__name__}"
            if not isinstance(blk.norm, (nn.LayerNorm, ScalarChannelNorm)):
                return f"unsupported norm {type(blk.norm).__name__}"
            if isinstance(blk.layer, S4Block):
                if type(blk.layer.activation) not in _ACTS:
                    return f"unsupported activation {type(blk.layer.activation).__name__}"
                if not isinstance(st, S4State) or st.mode not in ("diagonal", "linear"):
                    return "S4 state mode must be 'diagonal' or 'linear'"
                if st.mode == "linear" and st.consts["Winv"].shape[-1] != 1:
                    return "linear mode with rank > 1"
    return None


def _pairs(model: SaShiMi, state: SaShiMiState):
    for tier, st in zip(model.down, state.down):
        yield tier.blocks, st.blocks
    yield model.center, state.center
    for tier, st in zip(model.up, state.up):
        yield tier.blocks, st.blocks


def _norm_fn(norm: nn.Module) -> Block:
    if isinstance(norm, nn.LayerNorm):
        shape, w, b, eps = norm.normalized_shape, norm.weight, norm.bias, norm.eps
        return lambda x: F.layer_norm(x, shape, w, b, eps)
    m, s = norm.m, norm.s

    def scalar(x: torch.Tensor) -> torch.Tensor:
        std, mean = torch.std_mean(x, dim=-1, unbiased=False, keepdim=True)
        return (s / std) * (x - mean + m)

    return scalar


def _residual(blk: ResidualBlock, layer: Block) -> Block:
    norm = _norm_fn(blk.norm)
    if blk.prenorm:
        return lambda h: h + layer(norm(h))
    return lambda h: norm(h + layer(h))


def _ff(blk: ResidualBlock) -> Block:
    ff = blk.layer
    w1, b1, w2, b2 = ff.fc1.weight, ff.fc1.bias, ff.fc2.weight, ff.fc2.bias
    return _residual(blk, lambda z: F.linear(F.gelu(F.linear(z, w1, b1)), w2, b2))


class _S4:
    """One S4 layer's real-arithmetic step: constants, state buffers and the step closure."""

    def __init__(self, blk: ResidualBlock, st: S4State) -> None:
        layer: S4Block = blk.layer
        self.st = st
        consts = st.consts
        sdt = st.x.real.dtype
        iodt = layer.D.dtype if st.dtype is None else st.dtype
        B, H, M = st.x.shape
        # state: real and imaginary parts, contiguous
        self.xr = st.x.real.contiguous()
        self.xi = st.x.imag.contiguous()
        xr, xi = self.xr, self.xi

        def parts(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return t.real.to(sdt).contiguous(), t.imag.to(sdt).contiguous()

        D = layer.D.to(sdt)  # (c, H)
        c = D.shape[0]
        act = _ACTS[type(layer.activation)]
        lin = layer.output_linear
        W, bias = (lin.weight, lin.bias) if isinstance(lin, nn.Linear) else (None, None)
        postact = layer.postact

        if consts.mode == "diagonal":
            ar, ai = parts(consts["dA"])
            nai = -ai
            br, bi = parts(consts["dB"])
            scale = 2.0 if consts.two_re else 1.0
            Cr, Ci = parts(consts["dC"] * scale)  # (c, H, M)
            nCi = -Ci

            def ssm(u: torch.Tensor) -> list[torch.Tensor]:
                u3 = u.unsqueeze(-1)  # (B, H, 1)
                nr = xr * ar
                nr.addcmul_(xi, nai).addcmul_(u3, br)
                ni = xr * ai
                ni.addcmul_(xi, ar).addcmul_(u3, bi)
                xr.copy_(nr)
                xi.copy_(ni)
                ys = []
                for k in range(c):
                    t = nr * Cr[k]
                    ys.append(t.addcmul_(ni, nCi[k]).sum(-1))
                return ys

        else:  # linear (Woodbury), rank 1
            t = consts.tensors
            dar, dai = parts(t["da"])
            ndai = -dai
            pr, pi_ = parts(t["Pc2"][0])
            npi = -pi_  # Re(Pc2 v) = pr vr - pi vi
            hpr, hpi = parts(t["dhP"][0])
            nhpr, nhpi = -hpr, -hpi
            gr, gi = parts(t["ddtB"])
            qr, qi = parts(t["dP"][0])
            nqr, nqi = -qr, -qi
            winv = t["Winv"][:, 0].to(sdt)  # (H, 1)
            Cr, Ci = parts(t["C2"])
            nCi = -Ci

            def ssm(u: torch.Tensor) -> list[torch.Tensor]:
                u3 = u.unsqueeze(-1)
                s = (xr * pr).addcmul_(xi, npi).sum(-1, keepdim=True)  # (B, H, 1)
                zr = xr * dar
                zr.addcmul_(xi, ndai).addcmul_(s, nhpr).addcmul_(u3, gr)
                zi = xi * dar
                zi.addcmul_(xr, dai).addcmul_(s, nhpi).addcmul_(u3, gi)
                q = (zr * pr).addcmul_(zi, npi).sum(-1, keepdim=True).mul_(winv)
                xr.copy_(zr.addcmul_(q, nqr))
                xi.copy_(zi.addcmul_(q, nqi))
                ys = []
                for k in range(c):
                    ys.append((zr * Cr[k]).addcmul_(zi, nCi[k]).sum(-1))
                return ys

        def s4(z: torch.Tensor) -> torch.Tensor:
            u = z if z.dtype == sdt else z.to(sdt)
            ys = ssm(u)
            if c == 1:
                y = ys[0].addcmul_(D[0], u)  # (B, H)
            else:
                y = torch.stack(ys, 1).addcmul_(D, u.unsqueeze(1)).reshape(u.shape[0], -1)  # (B, c*H)
            y = act(y if y.dtype == iodt else y.to(iodt))
            if W is None:
                return y
            y = F.linear(y, W, bias)
            return F.glu(y, dim=-1) if postact == "glu" else y

        self.fn = _residual(blk, s4)

    def sync(self) -> None:
        self.st.x.copy_(torch.complex(self.xr, self.xi))


class FastStepper:
    """The step program of a causal :class:`SaShiMi` (see the module docstring); use :func:`build`.

    ``stepper.step(x)`` maps (B, d_model) inputs to (B, d_model) outputs (final norm included), like
    ``model.step(x, state)[0]``.
    """

    def __init__(self, model: SaShiMi, state: SaShiMiState, compile: bool = False) -> None:
        self.state = state
        cfg = model.config
        self.pool = list(cfg.pool)
        self.unet = cfg.unet
        self.s4: list[_S4] = []

        def blocks(mods: nn.ModuleList, states: list) -> list[Block]:
            out = []
            for blk, st in zip(mods, states):
                if isinstance(blk.layer, S4Block):
                    s = _S4(blk, st)
                    self.s4.append(s)
                    out.append(s.fn)
                else:
                    out.append(_ff(blk))
            return out

        self.down_blocks = [blocks(t.blocks, s.blocks) for t, s in zip(model.down, state.down)]
        self.center_blocks = blocks(model.center, state.center)
        self.up_blocks = [blocks(t.blocks, s.blocks) for t, s in zip(model.up, state.up)]
        # DownPool i: weight columns h*pool+s -> s*H+h, buffer (B, pool, H)
        self.dpool, self.dbuf, self.dph = [], [], []
        for tier, st in zip(model.down, state.down):
            p, lin = tier.pool.pool, tier.pool.linear
            W = lin.weight.detach()
            Wp = W.reshape(W.shape[0], -1, p).transpose(1, 2).reshape(W.shape[0], -1).contiguous()
            self.dpool.append((Wp, lin.bias.detach()))
            self.dbuf.append(st.pool.buffer.transpose(1, 2).contiguous())
            self.dph.append(st.pool.phase)
        # UpPool i: weight rows h*pool+s -> s*Ho+h, buffer (B, pool, Ho)
        self.upool, self.ubuf, self.uph = [], [], []
        for tier, st in zip(model.up, state.up):
            p, lin = tier.pool.pool, tier.pool.linear
            W, b = lin.weight.detach(), lin.bias.detach()
            Ho = W.shape[0] // p
            Wp = W.reshape(Ho, p, -1).transpose(0, 1).reshape(Ho * p, -1).contiguous()
            bp = b.reshape(Ho, p).t().reshape(-1).contiguous()
            self.upool.append((Wp, bp, p, Ho))
            self.ubuf.append(st.pool.buffer.transpose(1, 2).contiguous())
            self.uph.append(st.pool.phase)
        norm = model.norm
        shape, w, b, eps = norm.normalized_shape, norm.weight, norm.bias, norm.eps
        self.final_norm = lambda x: F.layer_norm(x, shape, w, b, eps)

        # the per-tier runs of residual blocks (the units torch.compile sees)
        self.center_fn = self._make_center()
        self.down_fns = [self._make_down(i) for i in range(len(self.pool))]
        self.up_fns = [self._make_up(i) for i in range(len(self.pool))]
        if compile:
            opts = dict(dynamic=False, fullgraph=True, **({"options": {"guard_filter_fn": torch.compiler.skip_all_guards_unsafe}} if __import__("os").environ.get("SKIPG") else {}))
            self.center_fn = torch.compile(self.center_fn, **opts)
            self.down_fns = [torch.compile(f, **opts) if self.down_blocks[i] else f for i, f in enumerate(self.down_fns)]
            self.up_fns = [torch.compile(f, **opts) for f in self.up_fns]

    def _make_center(self):
        blocks = self.center_blocks

        def center(h: torch.Tensor) -> torch.Tensor:
            a = h
            for f in blocks:
                h = f(h)
            return h + a

        return center

    def _make_down(self, i: int):
        blocks = self.down_blocks[i]

        def down(h: torch.Tensor) -> list[torch.Tensor]:
            outs = []
            for f in blocks:
                h = f(h)
                outs.append(h)
            return outs

        return down

    def _make_up(self, i: int):
        blocks = self.up_blocks[i]
        if self.unet:

            def up_unet(h: torch.Tensor, a: torch.Tensor, outs: list[torch.Tensor]) -> torch.Tensor:
                skips = [a, *outs]
                n = len(blocks)
                h = h + skips[n]
                for j, f in enumerate(blocks):
                    h = f(h) + skips[n - 1 - j]
                return h

            return up_unet

        def up(h: torch.Tensor, a: torch.Tensor, outs: list[torch.Tensor]) -> torch.Tensor:
            h = h + a
            u = h
            for f in blocks:
                h = f(h)
            return h + u

        return up

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d_model) -> (B, d_model); the stepper's state advances by one sample."""
        K = len(self.pool)
        inputs, skips = [], []
        h = x
        depth = 0
        for i in range(K):
            inputs.append(h)
            outs = self.down_fns[i](h) if self.down_blocks[i] else []
            if outs:
                h = outs[-1]
            skips.append(outs)
            ph = self.dph[i]
            buf = self.dbuf[i]
            buf[:, ph] = h
            if ph + 1 < self.pool[i]:
                self.dph[i] = ph + 1
                break
            self.dph[i] = 0
            Wp, b = self.dpool[i]
            h = F.linear(buf.reshape(buf.shape[0], -1), Wp, b)
            depth = i + 1
        if depth == K:
            h = self.center_fn(h)
        for i in range(min(depth, K - 1), -1, -1):
            ph = self.uph[i]
            out = self.ubuf[i][:, ph]  # (B, Ho)
            Wp, bp, p, Ho = self.upool[i]
            if ph == p - 1:  # the window closes: the lower tier's output fills the next window
                self.ubuf[i] = F.linear(h, Wp, bp).reshape(h.shape[0], p, Ho)
                self.uph[i] = 0
            else:
                self.uph[i] = ph + 1
            h = self.up_fns[i](out, inputs[i], skips[i])
        return self.final_norm(h)

    def sync(self) -> SaShiMiState:
        """Write the stepper's state back into the :class:`SaShiMiState` it was built from."""
        for s in self.s4:
            s.sync()
        for st, buf, ph in zip(self.state.down, self.dbuf, self.dph):
            st.pool.buffer.copy_(buf.transpose(1, 2))
            st.pool.phase = ph
        for st, buf, ph in zip(self.state.up, self.ubuf, self.uph):
            st.pool.buffer.copy_(buf.transpose(1, 2))
            st.pool.phase = ph
        return self.state


def build(model: SaShiMi, state: SaShiMiState, compile: bool = False) -> FastStepper | None:
    """A :class:`FastStepper` for ``model`` continuing ``state``, or None when the configuration is
    not supported (the caller then steps with :meth:`SaShiMi.step`)."""
    if _unsupported(model, state) is not None:
        return None
    with torch.no_grad():
        return FastStepper(model, state, compile=compile)
