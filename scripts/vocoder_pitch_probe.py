"""Train a tiny DiffWaveSaShiMi mel vocoder on pure tones and probe whether it takes its pitch from the mel.

The data: pure tones (``--pitches``, random phase, amplitude 0.6) of ``--length`` samples at 16 kHz, the
conditioning log-mel of the training task (:func:`sashimi.training.tasks.diffwave.vocoder_mel`) computed on the
tone continued to at least 2,048 samples and cut to the segment's frames. Training: the eps-prediction MSE or L1
(``--loss``; :func:`sashimi.losses.denoising_loss`), Adam with the SSM parameters in their own group.

Every ``--every`` steps (and at the end) three probes print, one row per pitch f:

* ``generate``: the share of the energy of ``model.generate(mel=mel(tone f))`` within 6 % of f (mean over
  ``--samples`` samples, and how many put over 80 % there), and the strongest frequency of the first
  (copy-synthesis from N(0, I), the vocoder's real use);
* ``from x_T``: the same, sampling started from a training-distribution ``x_T`` (the tone at another phase,
  noised to the last step) instead of N(0, I);
* ``mel vs x_t``: given ``x_t`` of a tone at f and the mel of a tone at another pitch g, the share of the
  model's ``x0`` estimate at f and at g, for a low, a middle and the last t (which input the model follows).

    python scripts/vocoder_pitch_probe.py --steps 800 --d-model 32                         # vocoder schedule
    python scripts/vocoder_pitch_probe.py --steps 3000 --num-train-steps 100 --beta-end 0.2 --clip
    python scripts/vocoder_pitch_probe.py --steps 1000 --cosine --loss l1 --num-train-steps 50 --beta-end 0.2 \
        --clip --length 256 --batch-size 32 --pitches 250 1000 --d-model 32 --samples 4 --seed 1   # the test's
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from sashimi.losses.denoising import denoising_loss
from sashimi.models.diffwave import DiffWaveSaShiMi, DiffWaveSaShiMiConfig
from sashimi.optim import param_groups
from sashimi.training.tasks.diffwave import vocoder_mel

SAMPLE_RATE = 16000


def tones(freqs: torch.Tensor, length: int, phase: torch.Tensor) -> torch.Tensor:
    """(B, length) tones of amplitude 0.6 at ``freqs`` (B,) Hz with phases (B,) in radians."""
    t = torch.arange(length) / SAMPLE_RATE  # (L,)
    return 0.6 * torch.sin(2 * math.pi * freqs[:, None] * t + phase[:, None])


def tone_mel(freqs: torch.Tensor, length: int, phase: torch.Tensor, config: DiffWaveSaShiMiConfig) -> torch.Tensor:
    """The conditioning mel of a ``length``-sample tone, computed on the tone continued to at least 2,048 samples
    (as a vocoder sees an utterance's mel) and cut to the segment's frames: (B, n_mels, ceil(length / hop))."""
    mel = vocoder_mel(tones(freqs, max(length, 2048), phase), config)  # (B, n_mels, frames)
    return mel[..., : -(-length // config.hop_length)]


def share(y: torch.Tensor, f: float) -> float:
    """Fraction of the (Hann-windowed) energy of a (L,) signal within 6 % of f Hz plus one FFT bin (the window's
    main lobe, which 6 % of f does not cover in short signals)."""
    spec = torch.fft.rfft(y * torch.hann_window(y.shape[-1]), dim=-1).abs() ** 2  # (L // 2 + 1,)
    freqs = torch.fft.rfftfreq(y.shape[-1], 1 / SAMPLE_RATE)
    return float(spec[(freqs - f).abs() <= 0.06 * f + SAMPLE_RATE / y.shape[-1]].sum() / spec.sum())


def peak(y: torch.Tensor) -> float:
    """The strongest frequency (Hz) of a (L,) signal."""
    spec = torch.fft.rfft(y * torch.hann_window(y.shape[-1]), dim=-1).abs()
    return float(spec.argmax()) * SAMPLE_RATE / y.shape[-1]


@torch.no_grad()
def probe(model: DiffWaveSaShiMi, pitches: list[float], length: int, clip: bool, samples: int = 1) -> list[str]:
    """Markdown rows of the three probes (see the module docstring); ``samples`` generated per pitch."""
    model.eval()
    sched, T = model.scheduler(), model.config.num_train_steps
    f = torch.tensor(pitches)
    mel = tone_mel(f, length, torch.ones(len(pitches)), model.config)  # (P, n_mels, frames)
    g = torch.Generator().manual_seed(1)
    y = model.generate(mel=mel.repeat_interleave(samples, 0), num_samples=length, generator=g, progress=False,
                       clip=clip).view(len(pitches), samples, length)  # (P, S, L)
    # from a training-distribution x_T: the tone at another phase, noised to step T - 1
    x = sched.add_noise(tones(f, length, torch.full((len(pitches),), 2.5)), torch.randn(len(pitches), length,
                        generator=g), torch.full((len(pitches),), T - 1))
    for t in reversed(range(T)):
        eps = model(x, torch.full((len(pitches),), t), mel)
        x = sched.step(eps, t, x, noise=torch.randn(x.shape, generator=g) if t > 0 else None)
        x = x.clamp(-1, 1) if clip else x
    rows = []
    for i, fi in enumerate(pitches):
        other = pitches[(i + 1) % len(pitches)]
        cells = []
        for t in (T // 10, T // 2, T - 1):
            x0 = tones(torch.tensor([fi]), length, torch.ones(1))
            tt = torch.tensor([t])
            xt = sched.add_noise(x0, torch.randn(x0.shape, generator=g), tt)
            eps = model(xt, tt, mel[(i + 1) % len(pitches)][None])  # the mel of the other pitch
            ab = float(sched.alphas_cumprod[t])
            est = (xt - math.sqrt(1 - ab) * eps) / math.sqrt(ab)  # (1, L)
            cells.append(f"t={t}: {share(est[0], fi):.2f} / {share(est[0], other):.2f}")
        at = [share(yi, fi) for yi in y[i]]  # one share per sample
        gen = f"{sum(at) / samples:.2f} (peak {peak(y[i, 0]):.0f} Hz, {sum(a > 0.8 for a in at)}/{samples} over 0.8)"
        rows.append(f"| {fi:g} | {gen} | {share(x[i], fi):.2f} | "
                    f"mel of {other:g}: " + ", ".join(cells) + " |")
    model.train()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--pitches", type=float, nargs="+", default=[220.0, 440.0, 880.0])
    p.add_argument("--length", type=int, default=4096, help="samples per training tone")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--d-model", type=int, default=16)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--n-mels", type=int, default=40)
    p.add_argument("--num-train-steps", type=int, default=50, help="T (the vocoder preset: 50)")
    p.add_argument("--beta-end", type=float, default=0.05, help="(the vocoder preset: 0.05)")
    p.add_argument("--clip", action="store_true", help="clamp to [-1, 1] at every sampling step (lmnt)")
    p.add_argument("--phase", choices=("random", "fixed"), default="random",
                   help="training tones' phase: random, or fixed (1 rad, the probes': x0 is a function of f)")
    p.add_argument("--loss", choices=("mse", "l1"), default="mse", help="eps-prediction loss (lmnt: l1)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--cosine", action="store_true", help="cosine learning-rate decay to 0 over --steps")
    p.add_argument("--samples", type=int, default=1, help="samples generated per pitch by the generate probe")
    p.add_argument("--every", type=int, default=0, help="probe every N steps (0: at the end only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="save the trained model here")
    args = p.parse_args(argv)
    for name in ("steps", "length", "batch_size", "samples", "num_train_steps", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = DiffWaveSaShiMiConfig(
        d_model=args.d_model, n_layers=args.n_layers, pool=(4,), d_state=16, n_mels=args.n_mels,
        mel_upsample=(8, 8), segment_length=args.length, num_train_steps=args.num_train_steps, beta_start=1e-4,
        beta_end=args.beta_end, sample_rate=SAMPLE_RATE,
    )
    model = DiffWaveSaShiMi(config)
    opt = torch.optim.Adam(param_groups(model, args.lr, ssm_lr=1e-3), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / args.steps)) if args.cosine else 1.0)
    g = torch.Generator().manual_seed(args.seed)
    pitches = torch.tensor(args.pitches)
    header = ["| pitch (Hz) | generate: share at f | from x_T: share at f | x0 estimate: share at f / at the mel's |",
              "|---|---|---|---|"]
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        f = pitches[torch.randint(len(pitches), (args.batch_size,), generator=g)]  # (B,)
        phase = torch.rand(args.batch_size, generator=g) * 2 * math.pi if args.phase == "random" \
            else torch.ones(args.batch_size)
        x0 = tones(f, args.length, phase)  # (B, L)
        loss = denoising_loss(model, x0, model.scheduler(), tone_mel(f, args.length, phase, config), args.loss, g)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if (args.every and step % args.every == 0) or step == args.steps:
            print(f"step {step}, loss {float(loss.detach()):.4f}, {time.perf_counter() - t0:.0f} s", flush=True)
            print("\n".join(header + probe(model, args.pitches, args.length, args.clip, args.samples)), flush=True)
    if args.out:
        model.save_pretrained(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
