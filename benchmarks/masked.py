"""Benchmark of masked parallel decoding (MaskedSaShiMi.generate) against autoregressive SaShiMiLM.generate.

Both models have the bundled model's width and depth (d_model 32, 2 layers per tier, pool 4 x 4, FF 2,
d_state 32; the masked one bidirectional with U-Net skips), 8-bit mu-law tokens at 16 kHz. The AR model
is ``--lm`` (default: the bundled ``sashimi-default``), sampled at its stored temperature
(``generation.json``) unless ``--ar-temperature`` is given; the masked model is read from ``--masked DIR``
(``scripts/train_masked_default.py``) or, without it, random (latency only: its quality columns are then
meaningless).

Measured in the same run (wall and CPU time; ratios = AR time / method time, > 1 is faster than AR):

* latency of one generation of ``--batch`` streams of ``--tokens`` tokens: AR (``lm.generate``, the flat step
  program), masked decoding with each step count of ``--steps`` (one stream, nonoverlap spans), masked +
  rescoring by the AR model (weight 0.7), hybrid with ``--ar-seconds`` of AR prefix (at the AR temperature);
* quality proxies of those samples: their NLL under the AR model (bits/sample, mean over the batch; lower =
  more plausible to the AR model) and their periodicity (:func:`sashimi.metrics.periodicity`, median over
  the batch: about 1 for pitched sound, 0.1 for noise); the same for ``--data-clips`` clips of the training
  data of the bundled model (``scripts/train_default.py``'s recipe, after 8-bit mu-law) as a reference;
* unless ``--quality-only``: throughput (samples/s) at each batch size of ``--batches`` for AR and masked.

    python benchmarks/masked.py --masked runs/masked-default --batch 4 --quality-only   # the quality table
    python benchmarks/masked.py --tokens 4000 --batches 1 4 --steps 4 20                 # a short run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from _common import machine_description
from train_default import SPLIT_SEEDS, melody

from sashimi import load_model
from sashimi.audio import dequantize, quantize
from sashimi.generation import generate_hybrid
from sashimi.metrics import periodicity
from sashimi.models.masked import MaskedSaShiMi, MaskedSaShiMiConfig


def load_masked(path: str | None, span_len: int) -> MaskedSaShiMi:
    """The masked model saved at ``path`` (``save_pretrained`` or the training script), else a random one."""
    if path is None:
        torch.manual_seed(0)
        return MaskedSaShiMi(MaskedSaShiMiConfig(d_model=32, n_layers=2, pool=(4, 4), expand=2, ff=2, d_state=32,
                                                 unet=True, card=256, span_len=span_len)).eval()
    return MaskedSaShiMi.from_pretrained(path)


def training_clips(n: int, tokens: int, sample_rate: int) -> torch.Tensor:
    """(n, tokens) 8-bit mu-law tokens of the first n training clips of the bundled model's recipe (seed 0)."""
    seconds = tokens / sample_rate
    return torch.stack([quantize(melody(seconds, SPLIT_SEEDS["train"] + i), 8, "mu-law")[:tokens] for i in range(n)])


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--masked", default=None, help="trained MaskedSaShiMi folder (default: random weights)")
    p.add_argument("--lm", default="sashimi-default", help="the AR model and rescorer (a folder or a Hub name)")
    p.add_argument("--ar-temperature", type=float, default=None,
                   help="AR sampling temperature (default: the AR model's stored one, else 1.0)")
    p.add_argument("--tokens", type=int, default=16000)
    p.add_argument("--batch", type=int, default=1, help="streams per generation of the latency/quality table")
    p.add_argument("--steps", type=int, nargs="+", default=[4, 8, 12, 20])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--throughput-tokens", type=int, default=None, help="tokens per stream for the throughput "
                   "table (default: --tokens)")
    p.add_argument("--quality-only", action="store_true", help="skip the throughput table")
    p.add_argument("--data-clips", type=int, default=8, help="training clips scored as the reference row")
    p.add_argument("--ar-seconds", type=float, default=0.25)
    p.add_argument("--span-len", type=int, default=8, help="span of the random masked model")
    p.add_argument("--temperature", type=float, default=1.0, help="masked decoding's initial temperature")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    lm, masked = load_model(args.lm), load_masked(args.masked, args.span_len)
    lm.eval()
    ar_t = args.ar_temperature if args.ar_temperature is not None else lm.generation_defaults.get("temperature", 1.0)
    T, sr, B = args.tokens, lm.config.sample_rate, args.batch
    g = lambda: torch.Generator().manual_seed(0)
    kw = {"temperature": args.temperature, "progress": False}
    rows = []

    @torch.no_grad()
    def quality(tokens: torch.Tensor) -> tuple[float, float]:
        """Mean AR NLL (bits/sample) and median periodicity of (B, T) tokens."""
        wave = dequantize(tokens, lm.config.bits, lm.config.quantization)  # (B, T)
        return float(lm.log_likelihood(tokens).mean()), float(periodicity(wave, sr).median())

    def record(name: str, out, wall: float, cpu: float) -> None:
        tokens = out.tokens if out.tokens.ndim == 2 else out.tokens[:, 0]  # (B, T)
        rows.append((name, tokens.shape[1], wall, cpu, *quality(tokens)))

    record(f"AR (SaShiMiLM.generate, temperature {ar_t:g})",
           *timed(lambda: lm.generate(B, T, temperature=ar_t, generator=g(), progress=False)))
    for s in args.steps:
        record(f"masked, {s} steps", *timed(lambda s=s: masked.generate(B, T, steps=s, generator=g(), **kw)))
    s_max = max(args.steps)
    record(f"masked, {s_max} steps + rescoring", *timed(lambda: masked.generate(
        B, T, steps=s_max, rescorer=lm, rescore_weight=0.7, generator=g(), **kw)))
    ar_tokens = int(args.ar_seconds * sr)
    record(f"hybrid ({args.ar_seconds} s AR) + masked {s_max}", *timed(lambda: generate_hybrid(
        lm, masked, T, ar_tokens, B, ar_temperature=ar_t, steps=s_max, generator=g(), **kw)))
    data_bits, data_per = quality(training_clips(args.data_clips, T, sr)) if args.data_clips else (None, None)

    ar_wall, ar_cpu = rows[0][2], rows[0][3]
    print(f"machine: {machine_description('cpu', args.threads)}; date {time.strftime('%Y-%m-%d')}; "
          f"AR model: {args.lm}; masked model: {args.masked or 'random weights'}\n")
    print(f"Latency and quality, batch {B}, {T} tokens ({T / sr:.2f} s of {sr} Hz audio); masked temperature "
          f"{args.temperature:g}\n")
    print("| method | tokens | wall s | CPU s | speed-up vs AR (wall / CPU) | AR NLL bits/sample | periodicity |")
    print("|---|---|---|---|---|---|---|")
    for name, n, wall, cpu, bits, per in rows:
        print(f"| {name} | {n} | {wall:.2f} | {cpu:.2f} | {ar_wall / wall:.2f}x / {ar_cpu / cpu:.2f}x "
              f"| {bits:.3f} | {per:.3f} |")
    if data_bits is not None:
        print(f"| training clips (reference, {args.data_clips} clips) | {T} | - | - | - | {data_bits:.3f} "
              f"| {data_per:.3f} |")
    print("\nAR NLL: mean over the batch; periodicity: median over the batch")
    if args.quality_only:
        return 0

    T = args.throughput_tokens or T
    print(f"\nThroughput (samples/s, wall; {T} tokens per stream; masked {s_max} steps)\n")
    print("| batch | AR | masked | masked / AR |")
    print("|---|---|---|---|")
    for b in args.batches:
        _, wa, _ = timed(lambda b=b: lm.generate(b, T, temperature=ar_t, generator=g(), progress=False))
        _, wm, _ = timed(lambda b=b: masked.generate(b, T, steps=s_max, generator=g(), **kw))
        print(f"| {b} | {b * T / wa:,.0f} | {b * T / wm:,.0f} | {wa / wm:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
