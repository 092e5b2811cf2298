"""Benchmark of masked parallel decoding (MaskedSaShiMi.generate) against autoregressive SaShiMiLM.generate.

Both models have the bundled model's width and depth (d_model 32, 2 layers per tier, pool 4 x 4, FF 2,
d_state 32; the masked one bidirectional with U-Net skips), 8-bit mu-law tokens at 16 kHz. The AR model
is the bundled one; the masked model is read from ``--masked DIR`` (``scripts/train_masked_default.py``)
or, without it, random (latency only: its quality columns are then meaningless).

Measured in the same run (wall and CPU time; ratios = AR time / method time, > 1 is faster than AR):

* latency of one generation of ``--tokens`` tokens at batch 1: AR (``lm.generate``, the flat step program),
  masked decoding with each step count of ``--steps`` (one stream, nonoverlap spans), masked + rescoring
  by the AR model (weight 0.7), hybrid with ``--ar-seconds`` of AR prefix;
* throughput (samples/s) at each batch size of ``--batches`` for AR and masked (20 steps);
* quality proxies of each method's batch-1 sample: its NLL under the AR model (bits/sample, lower = more
  plausible) and its periodicity (the largest normalised autocorrelation over lags 20..400 samples,
  40-800 Hz: plucked strings are near 1, noise near 0).

    python benchmarks/masked.py --masked runs/masked-default
    python benchmarks/masked.py --tokens 4000 --batches 1 4 --steps 4 20   # a short run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_description

from sashimi.generation import generate_hybrid
from sashimi.models.lm import SaShiMiLM
from sashimi.models.masked import MaskedSaShiMi, MaskedSaShiMiConfig


def load_lm() -> SaShiMiLM:
    return SaShiMiLM.from_pretrained("sashimi-default")


def load_masked(path: str | None, span_len: int) -> MaskedSaShiMi:
    """The masked model saved at ``path`` (``save_pretrained`` or the training script), else a random one."""
    if path is None:
        torch.manual_seed(0)
        return MaskedSaShiMi(MaskedSaShiMiConfig(d_model=32, n_layers=2, pool=(4, 4), expand=2, ff=2, d_state=32,
                                                 unet=True, card=256, span_len=span_len)).eval()
    return MaskedSaShiMi.from_pretrained(path)


def periodicity(wave: torch.Tensor) -> float:
    """Largest normalised autocorrelation of a (T,) waveform over lags 20..400."""
    x = wave.double() - wave.double().mean()
    n = x.shape[0]
    spec = torch.fft.rfft(x, n=2 * n)
    ac = torch.fft.irfft(spec * spec.conj(), n=2 * n)[:n]
    ac = ac / ac[0].clamp_min(1e-12)
    return float(ac[20:401].max())


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--masked", default=None, help="trained MaskedSaShiMi folder (default: random weights)")
    p.add_argument("--tokens", type=int, default=16000)
    p.add_argument("--steps", type=int, nargs="+", default=[4, 8, 12, 20])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--throughput-tokens", type=int, default=None, help="tokens per stream for the throughput "
                   "table (default: --tokens)")
    p.add_argument("--ar-seconds", type=float, default=0.25)
    p.add_argument("--span-len", type=int, default=8, help="span of the random masked model")
    p.add_argument("--temperature", type=float, default=1.0, help="masked decoding's initial temperature")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    lm, masked = load_lm(), load_masked(args.masked, args.span_len)
    T, sr = args.tokens, lm.config.sample_rate
    g = lambda: torch.Generator().manual_seed(0)
    kw = {"temperature": args.temperature, "progress": False}
    rows = []

    def record(name: str, out, wall: float, cpu: float) -> None:
        tokens = out.tokens if out.tokens.ndim == 2 else out.tokens[:, 0]  # (B, T)
        bits = float(lm.log_likelihood(tokens[:1])[0])
        rows.append((name, tokens.shape[1], wall, cpu, bits, periodicity(out.waveform[0])))

    record("AR (SaShiMiLM.generate)", *timed(lambda: lm.generate(1, T, generator=g(), progress=False)))
    for s in args.steps:
        record(f"masked, {s} steps", *timed(lambda s=s: masked.generate(1, T, steps=s, generator=g(), **kw)))
    s_max = max(args.steps)
    record(f"masked, {s_max} steps + rescoring", *timed(lambda: masked.generate(
        1, T, steps=s_max, rescorer=lm, rescore_weight=0.7, generator=g(), **kw)))
    ar_tokens = int(args.ar_seconds * sr)
    record(f"hybrid ({args.ar_seconds} s AR) + masked {s_max}", *timed(lambda: generate_hybrid(
        lm, masked, T, ar_tokens, steps=s_max, generator=g(), **kw)))

    ar_wall, ar_cpu = rows[0][2], rows[0][3]
    print(f"machine: {machine_description('cpu', args.threads)}; date {time.strftime('%Y-%m-%d')}; "
          f"masked model: {args.masked or 'random weights'}\n")
    print(f"Latency, batch 1, {T} tokens ({T / sr:.2f} s of {sr} Hz audio)\n")
    print("| method | tokens | wall s | CPU s | speed-up vs AR (wall / CPU) | AR NLL bits/sample | periodicity |")
    print("|---|---|---|---|---|---|---|")
    for name, n, wall, cpu, bits, per in rows:
        print(f"| {name} | {n} | {wall:.2f} | {cpu:.2f} | {ar_wall / wall:.2f}x / {ar_cpu / cpu:.2f}x "
              f"| {bits:.3f} | {per:.3f} |")

    T = args.throughput_tokens or T
    print(f"\nThroughput (samples/s, wall; {T} tokens per stream; masked {s_max} steps)\n")
    print("| batch | AR | masked | masked / AR |")
    print("|---|---|---|---|")
    for b in args.batches:
        _, wa, _ = timed(lambda b=b: lm.generate(b, T, generator=g(), progress=False))
        _, wm, _ = timed(lambda b=b: masked.generate(b, T, steps=s_max, generator=g(), **kw))
        print(f"| {b} | {b * T / wa:,.0f} | {b * T / wm:,.0f} | {wa / wm:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
