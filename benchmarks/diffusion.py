"""Benchmark of the diffusion models: one denoising step, training throughput, and whole-sampling cost.

Three tables, every ratio against a baseline measured in the same run:

1. *Vocoder step*: one denoising step at batch 1 on ``--seconds`` of audio (mel conditioning, random weights,
   float32), against lmnt's ``diffwave`` 0.1.7 vocoder model (2.62M parameters; ``pip install --no-deps
   diffwave==0.1.7``, only ``diffwave.model`` is imported). Rows: lmnt (baseline), our ``DiffWaveWaveNet``
   (the official DiffWave + SaShiMi vocoder WaveNet, ``preset("ljspeech")``) and ``DiffWaveSaShiMi``
   (``preset("vocoder")``) when this checkout has it. lmnt's model needs ``frames * 256`` samples: it runs on
   the next multiple of 256 and its time is scaled to the same audio length. Each model is timed as its sampler
   runs a step: lmnt's recomputes the mel upsampling at every step, our ``generate`` methods once per run.
2. *Paper sizes*: ``DiffWaveSaShiMi`` (SC09, 23.0M) vs ``DiffWaveWaveNet`` (SC09, 24.1M; the baseline): time per
   denoising step at batch 1 and training samples/s (forward + backward of the denoising loss, batch
   ``--train-batch``).
3. *Sampling cost* per second of audio for T=200, lmnt's fast 6-step schedule and DDIM 50, at each of
   ``--batches``: ``steps x (measured time of one step at that batch) + loop overhead`` (the overhead measured by
   running :func:`sashimi.generation.diffusion.sample` with a zero denoiser). Whole 200-step runs of 24M models
   take too long on a shared CPU to run each time; the estimate is exact up to the step-to-step variation.

Usage::

    python benchmarks/diffusion.py                  # 1 s of audio, batches 1 and 16
    python benchmarks/diffusion.py --quick          # 0.25 s, batch 1 and 4, one repeat
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import statistics
import sys
import time

import torch
from _common import machine_description
from torch.nn.utils import parametrize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from sashimi.generation.diffusion import sample  # noqa: E402
from sashimi.losses.denoising import denoising_loss  # noqa: E402
from sashimi.models.baselines import DiffWaveWaveNet, DiffWaveWaveNetConfig  # noqa: E402
from sashimi.schedulers import DDPMScheduler  # noqa: E402

try:  # the other half of the diffusion issue; rows are left empty without it
    from sashimi.layers.kernel_cache import cached_kernels
    from sashimi.models.diffwave import DiffWaveSaShiMi, DiffWaveSaShiMiConfig
except ImportError:
    DiffWaveSaShiMi = DiffWaveSaShiMiConfig = cached_kernels = None

try:
    from diffwave.model import DiffWave as LmntDiffWave
    from diffwave.params import params as lmnt_params
except ImportError:
    LmntDiffWave = lmnt_params = None


_KERNEL_CACHES = contextlib.ExitStack()


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def timed(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def step_fn(model, batch: int, length: int, mel_frames: int | None, kind: str):
    """A no-grad closure running one denoising step of ``model`` at (batch, length), as its sampler runs it.

    lmnt's ``predict`` calls the whole network at every step (mel upsampling included). Our ``generate``
    methods compute every block's mel conditioning once per sampling run (and DiffWaveSaShiMi its S4 kernels):
    here the kernels (and their FFTs) are cached by the warm-up call and the mel terms computed before timing
    (``mel_terms``, then the network body ``_forward``: the two halves of each model's ``forward``); each timed
    DiffWaveSaShiMi step computes its weight-normed weights once, as ``generate`` does per run.
    """
    x = torch.randn(batch, length)
    t = torch.full((batch,), 10)
    mel = None if mel_frames is None else torch.randn(batch, 80, mel_frames)
    if kind == "lmnt":
        return torch.no_grad()(lambda: model(x, mel, t))
    if DiffWaveSaShiMi is not None and isinstance(model, DiffWaveSaShiMi):
        _KERNEL_CACHES.enter_context(cached_kernels(model))  # open until the process ends
        with torch.no_grad():
            terms = None if mel is None else model.mel_terms(model.check_mel(mel, length, batch), length)
        def run() -> torch.Tensor:
            with torch.no_grad(), parametrize.cached():  # generate() also caches the weight-normed weights
                return model._forward(x, t, terms)

        return run
    with torch.no_grad():
        terms = None if mel is None else model.mel_terms(mel, length)
    return torch.no_grad()(lambda: model._forward(x[:, None], t, terms))


def vocoder_table(args) -> list[str]:
    L = round(args.seconds * 16000)
    frames = -(-L // 256)
    rows = [
        "| model | parameters | s per step (batch 1) | s per second of audio | speed vs lmnt |",
        "|---|---|---|---|---|",
    ]
    if LmntDiffWave is None:
        return rows + ["| lmnt diffwave 0.1.7 | not installed (`pip install --no-deps diffwave==0.1.7`) | | | |"]
    torch.manual_seed(0)
    lmnt = LmntDiffWave(lmnt_params).eval()
    t_lmnt = timed(step_fn(lmnt, 1, frames * 256, frames, "lmnt"), args.repeats) * L / (frames * 256)
    base = t_lmnt / args.seconds
    rows.append(f"| lmnt DiffWave vocoder (baseline) | {n_params(lmnt):,} | {t_lmnt:.3f} | {base:.3f} | 1.00x |")
    wn = DiffWaveWaveNet(DiffWaveWaveNetConfig.preset("ljspeech")).eval()
    t_wn = timed(step_fn(wn, 1, L, frames, "ours"), args.repeats)
    rows.append(
        f"| DiffWaveWaveNet `ljspeech` (official vocoder WaveNet) | {n_params(wn):,} | {t_wn:.3f} | "
        f"{t_wn / args.seconds:.3f} | {t_lmnt / t_wn:.2f}x |"
    )
    if DiffWaveSaShiMi is None:
        rows.append("| DiffWaveSaShiMi `vocoder` | not in this checkout | | | |")
    else:
        ds = DiffWaveSaShiMi(DiffWaveSaShiMiConfig.preset("vocoder", segment_length=L)).eval()
        t_ds = timed(step_fn(ds, 1, L, frames, "ours"), args.repeats)
        rows.append(
            f"| DiffWaveSaShiMi `vocoder` | {n_params(ds):,} | {t_ds:.3f} | {t_ds / args.seconds:.3f} | "
            f"{t_lmnt / t_ds:.2f}x |"
        )
    return rows


def train_rate(model, batch: int, length: int, repeats: int) -> float:
    """Training samples (audio samples) per second: forward + backward of the denoising loss."""
    sched = DDPMScheduler()
    x0 = 0.1 * torch.randn(batch, length)
    g = torch.Generator().manual_seed(0)

    def run():
        model.zero_grad(set_to_none=True)
        denoising_loss(model, x0, sched, generator=g).backward()

    return batch * length / timed(run, repeats)


def paper_models(L: int) -> list[tuple[str, torch.nn.Module]]:
    models = [("DiffWaveWaveNet `sc09` (baseline)", DiffWaveWaveNet(DiffWaveWaveNetConfig.preset("sc09")))]
    if DiffWaveSaShiMi is not None:
        models.append(
            ("DiffWaveSaShiMi `sc09`", DiffWaveSaShiMi(DiffWaveSaShiMiConfig.preset("sc09", segment_length=L)))
        )
    return models


def paper_table(args, models, step_times: dict) -> list[str]:
    L = round(args.seconds * 16000)
    rows = [
        (
            f"| model | parameters | s per step (batch 1, {L} samples) | step speed vs WaveNet | training samples/s "
            f"(batch {args.train_batch}) | training vs WaveNet |"
        ),
        "|---|---|---|---|---|---|",
    ]
    base_step = base_rate = None
    for name, model in models:
        t_step = step_times[(name, 1)]
        rate = train_rate(model.train(), args.train_batch, L, args.repeats)
        base_step = base_step or t_step
        base_rate = base_rate or rate
        rows.append(
            f"| {name} | {n_params(model):,} | {t_step:.3f} | {base_step / t_step:.2f}x | {rate:,.0f} | "
            f"{rate / base_rate:.2f}x |"
        )
    if DiffWaveSaShiMi is None:
        rows.append("| DiffWaveSaShiMi `sc09` | not in this checkout | | | | |")
    return rows


def sampling_table(args, models, step_times: dict) -> list[str]:
    L = round(args.seconds * 16000)
    sched = DDPMScheduler()
    schedules = [("T=200", "full", "ddpm"), ("fast (6)", "fast", "ddpm"), ("DDIM 50", 50, "ddim")]
    rows = [
        "| model | batch | " + " | ".join(f"{s[0]}: s per second of audio" for s in schedules) + " |",
        "|---|---|" + "---|" * len(schedules),
    ]
    for name, _ in models:
        for batch in args.batches:
            cells = []
            for _, steps, sampler in schedules:
                n = len(sched.inference_schedule(steps, sampler))
                t0 = time.perf_counter()
                sample(lambda x, t: torch.zeros_like(x), sched, (batch, L), steps, sampler, progress=False)
                overhead = time.perf_counter() - t0
                total = n * step_times[(name, batch)] + overhead
                cells.append(f"{total / (batch * args.seconds):.2f}")
            rows.append(f"| {name} | {batch} | " + " | ".join(cells) + " |")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="audio length at 16 kHz")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--train-batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    ap.add_argument("--tables", nargs="+", default=["vocoder", "paper", "sampling"])
    ap.add_argument("--quick", action="store_true", help="0.25 s of audio, batches 1 and 4, one repeat")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.batches, args.repeats = 0.25, [1, 4], 1
    torch.set_num_threads(args.threads)
    print(f"- machine: {machine_description('cpu', args.threads)}")
    print(f"- date: {datetime.date.today()}; load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"- audio: {args.seconds} s at 16 kHz, float32, random weights; median of {args.repeats} after a warm-up")
    if "vocoder" in args.tables:
        print("\n### One vocoder denoising step vs lmnt diffwave 0.1.7\n")
        print("\n".join(vocoder_table(args)))
    if not {"paper", "sampling"} & set(args.tables):
        return 0
    L = round(args.seconds * 16000)
    models = paper_models(L)
    step_times = {}
    for name, model in models:
        model.eval()
        for batch in sorted({1, *args.batches}):
            step_times[(name, batch)] = timed(step_fn(model, batch, L, None, "ours"), args.repeats)
    if "paper" in args.tables:
        print("\n### Paper-size models: denoising step and training throughput\n")
        print("\n".join(paper_table(args, models, step_times)))
    if "sampling" in args.tables:
        print("\n### Whole sampling cost (steps x measured step time + loop overhead)\n")
        print("\n".join(sampling_table(args, models, step_times)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
