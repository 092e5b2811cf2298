"""Benchmark of SING: generation speed against SaShiMiLM, training throughput, held-out loss on rendered notes.

1. Generation speed, in seconds of audio per second of wall time (and CPU time), for the same length of audio
   (``--seconds``, default 0.256 s = 4096 samples at 16 kHz) at batch 1 and 64:
   SING-LSTM and SING-S4 at the "tiny-sing" preset, SING-LSTM at the paper's size ("nsynth-sing", 4096 channels,
   LSTM 3 x 1024; notes shortened to the same length), and the baseline ``SaShiMiLM.generate`` with the paper's
   SC09 SaShiMi (5.4M parameters), all with random weights in float32. Ratio = speed / the baseline's speed at
   the same batch size.
2. Training throughput (notes per second) of the end-to-end phase (generator + decoder + spectral loss,
   forward + backward + Adam) at the tiny preset, batch 16, for both generators.
3. With ``--notes DIR`` (NSynth-layout notes, e.g. ``python ../shared/tools/realdata.py OUT --only notes`` and
   ``--notes OUT/notes``): SING's three phases at the tiny preset, one autoencoder shared by both generators,
   then the same number of sequence and end-to-end steps for the LSTM and the S4 generator; the held-out
   spectral loss (SING's L1) on SING's test split (unseen (instrument, pitch) pairs) and on the train split
   (the first ``--note-samples`` of each note, 16384 by default, to keep the run short).

Usage::

    python benchmarks/sing.py                         # sections 1 and 2 (about a minute on an idle CPU)
    python benchmarks/sing.py --notes /tmp/real/notes --steps 60
    python benchmarks/sing.py --quick                 # smoke run
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset, default_collate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_description

from sashimi.data import NSynth
from sashimi.losses import SpectralLoss
from sashimi.models import SaShiMiLM, SaShiMiLMConfig
from sashimi.models.sing import SING, SINGAutoencoder, end2end_step, sing_preset, train_phase

SR = 16000


def timed(fn, repeats: int) -> tuple[float, float]:
    """Best wall time and its CPU time over ``repeats`` calls (after one warm-up call)."""
    fn()
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - w, time.process_time() - c))
    return best


def generation(seconds: float, batches: list[int], repeats: int, quick: bool) -> None:
    note_length = round(seconds * SR / 256) * 256
    audio_s = note_length / SR
    print(f"\n## Generation: {note_length} samples ({audio_s:.3f} s) per item, float32, random weights\n")
    print("| model | params | batch | wall s | audio s / s (wall) | audio s / s (CPU) | x SaShiMiLM |")
    print("|---|---|---|---|---|---|---|")
    lm = SaShiMiLM(SaShiMiLMConfig()).eval()
    models = {
        "SING-LSTM tiny": SING(sing_preset("tiny-sing", note_length=note_length)).eval(),
        "SING-S4 tiny": SING(sing_preset("tiny-sing", note_length=note_length, sequence_model="s4")).eval(),
        "SING-LSTM paper size": SING(sing_preset("nsynth-sing", note_length=note_length)).eval(),
    }
    for batch in batches:
        lm_steps = note_length if not quick else 512
        wall, cpu = timed(lambda b=batch, n=lm_steps: lm.generate(b, n, progress=False), 1)
        base = batch * lm_steps / SR / wall
        n_params = sum(p.numel() for p in lm.parameters())
        print(f"| SaShiMiLM.generate (SC09 SaShiMi, baseline) | {n_params:,} | {batch} | {wall:.3f} | {base:.2f} | "
              f"{batch * lm_steps / SR / cpu:.2f} | 1.0 |")
        for name, model in models.items():
            labels = (torch.zeros(batch, dtype=torch.long), torch.full((batch,), 60), torch.full((batch,), 2))
            wall, cpu = timed(lambda m=model, lab=labels: m.generate(*lab, batch_size=64), repeats)
            speed = batch * audio_s / wall
            n_params = sum(p.numel() for p in model.parameters())
            print(f"| {name} | {n_params:,} | {batch} | {wall:.3f} | {speed:.1f} | {batch * audio_s / cpu:.1f} | "
                  f"{speed / base:,.0f} |")


def training_throughput(seconds: float, steps: int) -> None:
    note_length = round(seconds * SR / 256) * 256
    print(f"\n## Training throughput: end-to-end phase, tiny preset, batch 16, {note_length}-sample notes\n")
    print("| generator | notes / s (wall) | notes / s (CPU) | ratio to LSTM |")
    print("|---|---|---|---|")
    base = None
    for seq in ("lstm", "s4"):
        torch.manual_seed(0)
        c = sing_preset("tiny-sing", note_length=note_length, sequence_model=seq)
        model = SING(c)
        batch = {"wav": 0.1 * torch.randn(16, c.padded_length), "instrument": torch.randint(0, 10, (16,)),
                 "pitch": torch.randint(30, 90, (16,)), "velocity": torch.randint(0, 5, (16,))}
        opt = torch.optim.Adam(model.parameters(), lr=3e-4)
        loss_fn = SpectralLoss()

        def step(model=model, batch=batch, opt=opt, loss_fn=loss_fn) -> None:
            for _ in range(steps):
                loss = end2end_step(model, batch, loss_fn)["loss"]
                opt.zero_grad()
                loss.backward()
                opt.step()

        wall, cpu = timed(step, 1)
        rate = 16 * steps / wall
        base = base or rate
        print(f"| {seq} | {rate:.1f} | {16 * steps / cpu:.1f} | {rate / base:.2f} |")


def held_out(notes: Path, steps: int, batch_size: int, note_samples: int, lr: float) -> None:
    data = NSynth(notes, pad=0, velocity_mapping="dense")
    train, _, test = data.split()
    card = data.cardinalities
    kw = {"num_instruments": card["instrument"], "num_pitches": card["pitch"], "num_velocities": card["velocity"],
          "velocity_mapping": "dense", "note_length": note_samples}
    pad = sing_preset("tiny-sing", **kw).pad
    print(f"\n## Held-out spectral loss: {len(data)} notes in {notes} ({len(train)} train, {len(test)} test; "
          f"SING's split), first {note_samples} samples of each note, tiny preset, batch {batch_size}, "
          f"{steps} steps per phase, Adam lr {lr}\n")

    def crop(items: list[dict]) -> dict:
        batch = default_collate(items)
        batch["wav"] = F.pad(batch["wav"][:, :note_samples], (pad, pad))  # (B, padded_length)
        return batch

    loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0),
                        drop_last=True, collate_fn=crop)
    torch.manual_seed(0)
    ae = SINGAutoencoder(sing_preset("tiny-sing", **kw))
    t0 = time.perf_counter()
    ae_losses = train_phase("autoencoder", ae, loader, steps=steps, lr=lr)
    print(f"autoencoder: train loss {ae_losses[0]:.3f} -> {ae_losses[-1]:.3f} ({time.perf_counter() - t0:.0f} s)\n")
    print("| generator | params | train spectral L1 | test spectral L1 (unseen pairs) | training s |")
    print("|---|---|---|---|---|")
    loss_fn = SpectralLoss()

    def evaluate(predict) -> list[float]:
        """Mean spectral L1 of ``predict(batch)`` against the target on up to 64 train and 64 test notes."""
        scores = []
        for subset in (train, test):
            sub = Subset(subset.dataset, subset.indices[:64])
            total, n = 0.0, 0
            with torch.no_grad():
                for batch in DataLoader(sub, batch_size=32, collate_fn=crop):
                    target = batch["wav"][:, ae.config.strip:-ae.config.strip]
                    total += loss_fn(predict(batch), target).item() * len(target)
                    n += len(target)
            scores.append(total / n)
        return scores

    silence = evaluate(lambda batch: torch.zeros(len(batch["wav"]), ae.config.decoder_length))
    print(f"| silence (reference) | 0 | {silence[0]:.3f} | {silence[1]:.3f} | 0 |")
    for seq in ("lstm", "s4"):
        torch.manual_seed(0)
        model = SING(sing_preset("tiny-sing", sequence_model=seq, **kw))
        model.decoder.load_state_dict(ae.decoder.state_dict())
        t0 = time.perf_counter()
        train_phase("sequence", model, loader, steps=steps, lr=lr, encoder=ae.encoder)
        train_phase("end2end", model, loader, steps=steps, lr=lr)
        elapsed = time.perf_counter() - t0
        model.eval()
        scores = evaluate(lambda batch, m=model: m(batch["instrument"], batch["pitch"], batch["velocity"], crop=False))
        n_params = sum(p.numel() for p in model.parameters())
        print(f"| {seq} | {n_params:,} | {scores[0]:.3f} | {scores[1]:.3f} | {elapsed:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=0.256, help="audio per generated item")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--notes", type=Path, default=None, help="NSynth-layout notes for the held-out comparison")
    ap.add_argument("--steps", type=int, default=60, help="steps per phase in the held-out comparison")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate of every phase (SING: 3e-4)")
    ap.add_argument("--note-samples", type=int, default=16384, help="samples kept from each note (NSynth: 64000)")
    ap.add_argument("--skip-speed", action="store_true", help="only the held-out comparison")
    ap.add_argument("--quick", action="store_true", help="smoke run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# SING benchmark, {datetime.date.today()}, {machine_description('cpu', args.threads)}")
    print(f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})")
    if not args.skip_speed:
        generation(args.seconds, [1, 4] if args.quick else [1, 64], 1 if args.quick else 2, args.quick)
        training_throughput(args.seconds, 1 if args.quick else 5)
    if args.notes is not None:
        held_out(args.notes, 3 if args.quick else args.steps, args.batch_size, args.note_samples, args.lr)


if __name__ == "__main__":
    main()
