"""Benchmark of autoregressive generation: ``SaShiMiLM.generate`` vs an official-style step loop.

The model is the paper's SC09 SaShiMi LM (d_model 64, 8 layers per tier, pool [4, 4], expand 2, FF
expansion 2, d_state 64, 256 classes; 5.4M parameters) with random weights, float32. Two generators
over the *same* weights:

* ``official-style`` (the baseline) -- the way ``generate.py`` of state-spaces/s4 steps a SaShiMi:
  the backbone's state is a flat Python list of per-layer states, reversed and popped every step
  (a new list is built); the DownPools buffer inputs in Python lists (``append``, ``torch.stack`` when
  the window closes, ``None`` before) and the UpPools pop outputs from lists (``unbind`` when the window
  closes), so lower tiers run only every 4 / 16 samples as in the official code; every S4 layer steps
  with the 'dense' discretization (``setup_step()``'s default: complex (H, N, N) transition matrices,
  ``x' = dA x + dB u``, ``y = Re(dC x')``, functional state update) through the modules' own
  ``forward`` (LayerNorm, Linear, GELU, GLU, FF); each sample is drawn with
  ``Categorical(logits=logits / tau).sample()``, its log-probability taken from ``softmax`` and copied
  to the host (``.cpu().numpy()``), and the token itself copied to the host (``.cpu()``, appended to a
  list), as in the official loop with ``return_logprobs=True`` (its entropy bookkeeping is left out).
* ``ours`` -- ``model.generate(B, T, progress=False, mode=..., compile=..., num_threads=threads)``: the flat step
  program of :mod:`sashimi.generation.step_program` (with 2+ threads, pipelined: the lower tiers in a worker thread).

Before timing, the script proves the baseline is the same model: over ``--check-steps`` teacher-forced
steps the baseline's logits and the fast stepper's logits both equal the convolution-mode logits, and
the log-likelihood that ``generate`` accumulates for its samples equals the baseline's teacher-forced
log-likelihood of the same samples (assertions; the script exits with an error if they fail).

Timing: samples/s = B * T / (wall time of one whole generation of T samples per stream), and the
real-time factor RTF = (samples/s) / 16000 (SC09 is 16 kHz audio; RTF >= 1 is faster than real time).
CPU time (``time.process_time``) is reported too: on a shared machine it is the steadier measure.
Setup is reported separately and not timed in samples/s: the S4 step constants (``init_state``: for
'auto', the eigendecomposition and self-check of every S4 layer; for the baseline, the dense matrices,
like ``setup_step()``), and for ``compile=True`` the first (compiling) call. ``generate`` recomputes
the step constants on every call; the script hands it a clone of a state made once (a fresh state that
shares the constants) so that samples/s measures the generation loop.

Usage::

    python benchmarks/generate.py                    # full CPU run (several minutes)
    python benchmarks/generate.py --threads 1 2      # both thread counts
    python benchmarks/generate.py --quick            # smoke run
    python benchmarks/generate.py --model bundled --batches 4 --samples 2048 --variants auto   # the bundled model
    python benchmarks/generate.py --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import statistics
import sys
import time

from _common import machine_description

import torch
import torch.nn.functional as F
from torch.distributions import Categorical

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from sashimi.hub import BUNDLED_NAME  # noqa: E402
from sashimi.layers.blocks import FFBlock, ResidualBlock  # noqa: E402
from sashimi.layers.pool import DownPool, UpPool  # noqa: E402
from sashimi.layers.s4block import S4Block  # noqa: E402
from sashimi.generation import step_program as _fast_step  # noqa: E402
from sashimi.models.lm import SaShiMiLM, SaShiMiLMConfig  # noqa: E402

#: the paper's SC09 SaShiMi (the released sc09 model's architecture, with this package's default
#: per-channel SSMs and LayerNorms)
SC09 = dict(d_model=64, n_layers=8, pool=(4, 4), expand=2, ff=2, d_state=64, bits=8)
SAMPLE_RATE = 16000
TARGET_B1_SPEEDUP = 3.0
TARGET_B32_RATE = 16000.0


def make_model(device: str, seed: int = 0, which: str = "sc09") -> SaShiMiLM:
    """The paper's SC09 architecture with random weights, or the bundled model (``which='bundled'``)."""
    if which == "bundled":
        return SaShiMiLM.from_pretrained(BUNDLED_NAME).to(device).eval()
    torch.manual_seed(seed)
    return SaShiMiLM(SaShiMiLMConfig(**SC09, sample_rate=SAMPLE_RATE)).to(device).eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------
# the baseline: an official-style (state-spaces/s4 generate.py) step loop over the same weights
# ---------------------------------------------------------------------------------------------


class OfficialStyle:
    """Steps a :class:`SaShiMiLM` the way the official recurrent mode does (see the module docstring).

    Layers are visited in the official order (DownPools; center blocks; per up tier, deepest first, the
    UpPool and its blocks); the state is one Python list with an entry per layer.
    """

    def __init__(self, lm: SaShiMiLM) -> None:
        self.lm = lm
        bb = lm.backbone
        if bb.config.unet:
            raise ValueError("the official-style baseline models the non-U-Net SaShiMi")
        self.d_layers = [t.pool for t in bb.down]
        self.c_layers = list(bb.center)
        self.u_layers = [[t.pool, *t.blocks] for t in reversed(bb.up)]
        self.layers = self.d_layers + self.c_layers + [layer for block in self.u_layers for layer in block]
        self.norm = bb.norm
        # setup_step(): the dense discretization of every S4 layer (complex (H, N, N) matrices)
        self.dense = {}
        device = lm.decoder.weight.device
        for layer in self.layers:
            if isinstance(layer, ResidualBlock) and isinstance(layer.layer, S4Block):
                c = layer.layer.init_state(1, device=device, mode="dense").consts
                self.dense[id(layer)] = (c["dA"], c["dB"], c["dC"])

    def default_state(self, batch: int) -> list:
        device = self.lm.decoder.weight.device
        out = []
        for layer in self.layers:
            if isinstance(layer, DownPool):
                out.append([])
            elif isinstance(layer, UpPool):
                z = torch.zeros(batch, layer.d_output, layer.pool, device=device)
                out.append(list(torch.unbind(z, dim=-1)))
            elif id(layer) in self.dense:
                dA = self.dense[id(layer)][0]
                out.append(torch.zeros(batch, dA.shape[0], dA.shape[-1], dtype=dA.dtype, device=device))
            else:
                out.append(None)
        return out

    # ---- layer steps -------------------------------------------------------------------------
    def _s4_step(self, blk: ResidualBlock, x: torch.Tensor, state: torch.Tensor):
        dA, dB, dC = self.dense[id(blk)]
        s4 = blk.layer
        z = blk.norm(x) if blk.prenorm else x
        u = z.to(dA.dtype)
        new_state = torch.einsum("hmn,bhn->bhm", dA, state) + torch.einsum("hn,bh->bhn", dB, u)
        y = torch.einsum("chn,bhn->bch", dC, new_state).real
        y = y + z.unsqueeze(-2) * s4.D
        y = s4.activation(y.reshape(y.shape[0], -1))
        y = s4.output_linear(y)
        if s4.postact == "glu":
            y = F.glu(y, dim=-1)
        return (x + y if blk.prenorm else blk.norm(x + y)), new_state

    @staticmethod
    def _ff_step(blk: ResidualBlock, x: torch.Tensor):
        y = blk.layer(blk.norm(x) if blk.prenorm else x)
        return (x + y if blk.prenorm else blk.norm(x + y)), None

    @staticmethod
    def _down_step(pool: DownPool, x, state: list):
        if x is None:
            return None, state
        state.append(x)
        if len(state) == pool.pool:
            x = torch.stack(state, dim=-1).reshape(x.shape[0], -1)  # '... h s -> ... (h s)'
            return pool.linear(x), []
        return None, state

    @staticmethod
    def _up_step(pool: UpPool, x, state: list):
        y, state = state[0], state[1:]
        if len(state) == 0:
            x = pool.linear(x).reshape(x.shape[0], pool.d_output, pool.pool)  # '... (h s) -> ... h s'
            state = list(torch.unbind(x, dim=-1))
        return y, state

    def _layer_step(self, layer, x, state):
        if isinstance(layer, DownPool):
            return self._down_step(layer, x, state)
        if isinstance(layer, UpPool):
            return self._up_step(layer, x, state)
        if isinstance(layer.layer, FFBlock):
            return self._ff_step(layer, x)
        return self._s4_step(layer, x, state)

    def backbone_step(self, x: torch.Tensor, state: list):
        state = state[::-1]
        outputs, next_state = [], []
        for layer in self.d_layers:
            outputs.append(x)
            x, s = self._layer_step(layer, x, state.pop())
            next_state.append(s)
            if x is None:
                break
        if x is None:  # the lower tiers and the center skip this step
            skipped = len(self.d_layers) - len(outputs)
            for _ in range(skipped + len(self.c_layers)):
                next_state.append(state.pop())
            for i in range(skipped):
                for _ in range(len(self.u_layers[i])):
                    next_state.append(state.pop())
            u_layers = self.u_layers[skipped:]
        else:
            outputs.append(x)
            for layer in self.c_layers:
                x, s = self._layer_step(layer, x, state.pop())
                next_state.append(s)
            x = x + outputs.pop()
            u_layers = self.u_layers
        for block in u_layers:
            for layer in block:
                x, s = self._layer_step(layer, x, state.pop())
                next_state.append(s)
                if isinstance(layer, UpPool):
                    x = x + outputs.pop()
                    outputs.append(x)
            x = x + outputs.pop()
        return self.norm(x), next_state

    def step(self, tokens: torch.Tensor, state: list):
        """(B,) tokens -> (B, classes) logits, next state."""
        h, state = self.backbone_step(self.lm.encoder(tokens), state)
        return self.lm.decoder(h), state

    @torch.no_grad()
    def generate(self, batch: int, num_samples: int, tau: float = 1.0):
        """The official sampling loop (top_p = 1): tokens (B, T) and their log-likelihoods (B,) (numpy)."""
        import numpy as np

        device = self.lm.decoder.weight.device
        state = self.default_state(batch)
        x_t = torch.full((batch,), self.lm.config.zero_token, dtype=torch.long, device=device)
        logprobs = np.zeros(batch)
        y_all = []
        for _ in range(num_samples):
            y_t, state = self.step(x_t, state)
            probs = F.softmax(y_t, dim=-1)
            y_t = Categorical(logits=y_t / tau).sample()
            x_t = y_t
            logprobs += torch.log(probs[torch.arange(probs.shape[0], device=device), y_t]).cpu().numpy()
            y_all.append(x_t.cpu())
        return torch.stack(y_all, dim=1), logprobs

    @torch.no_grad()
    def teacher_forced_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, L) input tokens -> (B, L, classes) logits, stepping from a fresh state."""
        state = self.default_state(inputs.shape[0])
        out = []
        for t in range(inputs.shape[1]):
            y, state = self.step(inputs[:, t], state)
            out.append(y)
        return torch.stack(out, dim=1)


# ---------------------------------------------------------------------------------------------
# checks and measurements
# ---------------------------------------------------------------------------------------------


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


@contextlib.contextmanager
def cached_init_state(lm: SaShiMiLM, template_states: dict):
    """Make ``lm.init_state`` return a clone of a state built once per (batch, mode): a fresh stream
    sharing the step constants (``generate`` would otherwise recompute them on every call)."""

    def init_state(batch_size, device=None, dtype=None, mode="auto"):
        return template_states[(batch_size, mode)].clone()

    lm.init_state = init_state
    try:
        yield
    finally:
        del lm.init_state


@torch.no_grad()
def check_agreement(lm: SaShiMiLM, base: OfficialStyle, steps: int, mode: str, device: str) -> dict:
    """Baseline and fast stepper vs convolution mode (teacher forced), and generate's likelihood vs the
    baseline's. Raises AssertionError on a mismatch."""
    batch = 2
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, lm.config.n_classes, (batch, steps), generator=g).to(device)
    inputs = lm.shift_right(tokens)
    conv = lm(inputs)
    err_base = rel_err(base.teacher_forced_logits(inputs), conv)
    state = lm.init_state(batch, device=device, mode=mode)
    stepper = _fast_step.build(lm.backbone, state)
    assert stepper is not None, f"no fast stepper for mode={mode!r}"
    emb, w, b = lm.encoder.weight, lm.decoder.weight, lm.decoder.bias
    ours = torch.stack([F.linear(stepper.step(F.embedding(inputs[:, t], emb)), w, b) for t in range(steps)], 1)
    err_ours = rel_err(ours, conv)
    out = lm.generate(batch, steps, generator=torch.Generator(device=device).manual_seed(2), progress=False,
                      mode=mode)
    logp = torch.log_softmax(base.teacher_forced_logits(lm.shift_right(out.tokens.to(device))).double(), -1)
    ll_base = logp.gather(-1, out.tokens.to(device).unsqueeze(-1)).squeeze(-1).sum(1).cpu()
    ll_diff = float((ll_base - out.log_likelihood).abs().max() / steps)  # nats per sample
    res = dict(err_base=err_base, err_ours=err_ours, ll_diff=ll_diff)
    assert err_base < 1e-4, f"official-style logits differ from convolution mode: rel. error {err_base:.2e}"
    assert err_ours < 1e-4, f"fast-stepper logits differ from convolution mode: rel. error {err_ours:.2e}"
    assert ll_diff < 1e-4, f"generate's log-likelihood differs from the baseline's by {ll_diff:.2e} nats/sample"
    return res


def timed(fn, device: str) -> tuple[float, float]:
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def loadavg() -> str:
    return "%.2f %.2f %.2f" % os.getloadavg() if hasattr(os, "getloadavg") else "n/a"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1],
                    help="torch.set_num_threads values to measure (CPU; default 1)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--samples", type=int, nargs="+", default=None,
                    help="samples per stream, one per batch size (default: 2048 at batch 1, 1024 otherwise)")
    ap.add_argument("--baseline-samples", type=int, default=None,
                    help="samples per stream for the (slow) baseline (default: as --samples, at most 1024)")
    ap.add_argument("--variants", nargs="+", default=["auto", "linear", "auto+compile", "linear+compile", "step"],
                    help="ours: S4 step mode, '+compile' for generate(compile=True); 'step': a user's loop over "
                         "the public model.step() with torch.multinomial sampling")
    ap.add_argument("--repeats", type=int, default=1, help="timed generations per cell (the median is shown)")
    ap.add_argument("--check-steps", type=int, default=256)
    ap.add_argument("--model", default="sc09", choices=["sc09", "bundled"],
                    help="sc09: the paper's SC09 architecture, random weights; bundled: the model shipped with the "
                    "package (what `sashimi generate` runs by default)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 128 samples, no compile, 32 check steps")
    args = ap.parse_args(argv)
    if args.quick:
        args.samples = [128] * len(args.batches)
        args.baseline_samples = 64
        args.variants = [v for v in args.variants if "compile" not in v] or ["auto"]
        args.check_steps = 32
    if args.samples is None:
        args.samples = [2048 if b == 1 else 1024 for b in args.batches]
    if len(args.samples) != len(args.batches):
        ap.error("--samples needs one value per batch size")
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but CUDA is not available")
    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads[0])

    what = f"SC09 config {SC09}, random weights" if args.model == "sc09" else f"the bundled model ({BUNDLED_NAME})"
    print(f"# generation benchmark: SaShiMiLM {what}, float32, device={device}")
    print(f"# machine: {machine_description(device)}")
    print(f"# date: {datetime.date.today().isoformat()}; samples/s = B*T / wall time of one generation "
          f"(median of {args.repeats}); RTF = samples/s / {SAMPLE_RATE}")
    print(f"# load average at start (1/5/15 min): {loadavg()}", flush=True)

    lm = make_model(device, which=args.model)
    print(f"# parameters: {lm.num_parameters():,}")

    # ---- setup (not part of samples/s) ------------------------------------------------------
    modes = sorted({"auto" if v == "step" else v.split("+")[0] for v in args.variants})
    templates, setup = {}, {}
    for mode in modes:
        for B in args.batches:
            t0 = time.perf_counter()
            templates[(B, mode)] = lm.init_state(B, device=device, mode=mode)
            setup.setdefault(mode, time.perf_counter() - t0)
    t0 = time.perf_counter()
    base = OfficialStyle(lm)
    setup["dense (baseline)"] = time.perf_counter() - t0

    forms = {}
    for mode in modes:
        st = templates[(args.batches[0], mode)]
        kinds = sorted({f"{s.mode}/{str(s.x.dtype).replace('torch.', '')}" for s in st.s4_states()})
        forms[mode] = ", ".join(kinds)
    print("# setup (step constants, once per model; generate() currently recomputes them per call): "
          + "; ".join(f"{k}: {v:.2f} s" + (f" ({forms[k]})" if k in forms else "") for k, v in setup.items()))

    # ---- same model ---------------------------------------------------------------------------
    templates[(2, modes[0])] = lm.init_state(2, device=device, mode=modes[0])
    with cached_init_state(lm, templates):
        check = check_agreement(lm, base, args.check_steps, modes[0], device)
    print(f"# same model ({args.check_steps} teacher-forced steps, batch 2, mode {modes[0]!r}): logits rel. error vs "
          f"convolution mode: official-style {check['err_base']:.1e}, ours {check['err_ours']:.1e}; generate's "
          f"log-likelihood vs the baseline's on the same samples: {check['ll_diff']:.1e} nats/sample", flush=True)
    print()
    print("| threads | batch | generator | samples/stream | samples/s | RTF | CPU s per 1k samples "
          "| speedup vs baseline |")
    print("|---|---|---|---|---|---|---|---|", flush=True)

    results: dict = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for B, T in zip(args.batches, args.samples):
            Tb = args.baseline_samples or min(T, 1024)

            def run_base():
                torch.manual_seed(0)
                base.generate(B, Tb)

            reps = [timed(run_base, device) for _ in range(args.repeats)]
            wall, cpu = statistics.median(r[0] for r in reps), statistics.median(r[1] for r in reps)
            b_rate = B * Tb / wall
            results[(threads, B, "baseline")] = dict(rate=b_rate, cpu=cpu)
            print(f"| {threads} | {B} | official-style (dense, lists) | {Tb} | {b_rate:,.0f} "
                  f"| {b_rate / SAMPLE_RATE:.3f} | {cpu / (B * Tb) * 1e3:.3f} | 1.0x |", flush=True)
            for variant in args.variants:
                mode, comp = variant.split("+")[0], variant.endswith("+compile")
                label = f"ours: generate(mode={mode!r}{', compile=True' if comp else ''})"
                if variant == "step":
                    mode, label = "auto", "ours: public model.step() loop"
                with cached_init_state(lm, templates):
                    extra = ""
                    try:
                        if comp:  # the first call compiles (and is not timed in samples/s)
                            t0 = time.perf_counter()
                            lm.generate(B, 64, progress=False, mode=mode, compile=True, num_threads=threads,
                                        generator=torch.Generator(device=device).manual_seed(0))
                            sync(device)
                            extra = f" (first call {time.perf_counter() - t0:.0f} s)"

                        def run_ours():
                            lm.generate(B, T, progress=False, mode=mode, compile=comp, num_threads=threads,
                                        generator=torch.Generator(device=device).manual_seed(0))

                        if variant == "step":
                            def run_ours():  # noqa: F811 -- what a user streaming with the public API writes
                                g = torch.Generator(device=device).manual_seed(0)
                                state = lm.init_state(B, device=device)
                                tok = torch.full((B,), lm.config.zero_token, device=device)
                                for _ in range(T):
                                    logits, _ = lm.step(tok, state)
                                    tok = torch.multinomial(torch.softmax(logits, -1), 1, generator=g).squeeze(1)

                        reps = [timed(run_ours, device) for _ in range(args.repeats)]
                    except Exception as e:  # e.g. torch.compile unavailable
                        print(f"| {threads} | {B} | {label} | {T} | failed: {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:100] if str(e) else ''} | | | |", flush=True)
                        continue
                wall, cpu = statistics.median(r[0] for r in reps), statistics.median(r[1] for r in reps)
                rate = B * T / wall
                results[(threads, B, variant)] = dict(rate=rate, cpu=cpu)
                cpu_speed = (results[(threads, B, "baseline")]["cpu"] / (B * Tb)) / (cpu / (B * T))
                print(f"| {threads} | {B} | {label}{extra} | {T} | {rate:,.0f} | {rate / SAMPLE_RATE:.3f} | "
                      f"{cpu / (B * T) * 1e3:.3f} | {rate / b_rate:.1f}x ({cpu_speed:.1f}x CPU) |", flush=True)

    print()
    print(f"# load average at end (1/5/15 min): {loadavg()}")
    print("Targets:")
    ok_all = True
    for threads in args.threads:
        if 1 in args.batches:
            best = max(((v, r) for (t, b, v), r in results.items() if t == threads and b == 1 and v != "baseline"),
                       key=lambda vr: vr[1]["rate"], default=None)
            b = results.get((threads, 1, "baseline"))
            if best is None or b is None:
                print(f"  [{threads} thread(s)] batch 1 >= {TARGET_B1_SPEEDUP:.0f}x the baseline: not measured")
            else:
                s = best[1]["rate"] / b["rate"]
                ok = s >= TARGET_B1_SPEEDUP
                ok_all &= ok
                default = results.get((threads, 1, "auto"))
                extra = f"; default generate(): {default['rate'] / b['rate']:.1f}x" if default else ""
                print(f"  [{threads} thread(s)] batch 1 >= {TARGET_B1_SPEEDUP:.0f}x the baseline: "
                      f"{'PASS' if ok else 'FAIL'} ({s:.1f}x with {best[0]}; {best[1]['rate']:,.0f} samples/s{extra})")
        if 32 in args.batches:
            best = max(((v, r) for (t, b, v), r in results.items() if t == threads and b == 32 and v != "baseline"),
                       key=lambda vr: vr[1]["rate"], default=None)
            if best is None:
                print(f"  [{threads} thread(s)] batch 32 >= {TARGET_B32_RATE:,.0f} samples/s: not measured")
            else:
                ok = best[1]["rate"] >= TARGET_B32_RATE
                ok_all &= ok
                T32 = args.samples[args.batches.index(32)]
                cpu_rate = 32 * T32 / best[1]["cpu"]
                print(f"  [{threads} thread(s)] batch 32 >= {TARGET_B32_RATE:,.0f} samples/s (real time): "
                      f"{'PASS' if ok else 'FAIL'} ({best[1]['rate']:,.0f} samples/s, RTF "
                      f"{best[1]['rate'] / SAMPLE_RATE:.2f}, with {best[0]}; per CPU second of this process: "
                      f"{cpu_rate:,.0f} samples/s)")
    return 0 if ok_all or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
