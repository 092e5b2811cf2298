"""Train a tiny SING on synthetic notes with SING's three phases, then generate notes from their labels.

Run: python examples/sing_notes.py [--sequence-model lstm|s4] [--steps 120] [--out DIR]

The notes are additive harmonic tones with instrument-like envelopes written in NSynth's layout
(examples.json + audio/*.wav); with real NSynth notes point NSynth(...) at the dataset folder instead.
"""

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from sashimi.audio import save_audio
from sashimi.data import NSynth, write_synthetic_nsynth
from sashimi.losses import SpectralLoss
from sashimi.models.sing import SING, SINGAutoencoder, sing_preset, train_phase

parser = argparse.ArgumentParser()
parser.add_argument("--sequence-model", choices=["lstm", "s4"], default="lstm")
parser.add_argument("--steps", type=int, default=120, help="autoencoder steps (the other phases use fewer)")
parser.add_argument("--out", default=None, help="folder for the generated WAVs (default: a temporary folder)")
args = parser.parse_args()

torch.manual_seed(0)
# SING's debug sizes, 0.256 s notes (the paper: 4 s, note_length=64000) with MIDI velocities as ids 0..4
config = sing_preset("tiny-sing", num_instruments=2, num_pitches=128, num_velocities=5, velocity_mapping="dense",
                     note_length=4096, sequence_model=args.sequence_model)

with tempfile.TemporaryDirectory() as tmp:
    write_synthetic_nsynth(tmp, instruments=(0, 1), pitches=(57, 64), velocities=(100,),
                           num_samples=config.note_length)
    data = NSynth(tmp, pad=config.pad, velocity_mapping="dense", num_samples=config.note_length)
    batch = next(iter(DataLoader(data, batch_size=len(data))))
    labels = (batch["instrument"], batch["pitch"], batch["velocity"])
    target = batch["wav"][:, config.strip:-config.strip]  # what the decoder should output

    model = SING(config)
    loss = SpectralLoss()  # SING's L1 of log(1 + |STFT|^2)
    with torch.no_grad():
        before = loss(model(*labels, crop=False), target).item()

    # 1. autoencoder: FrameEncoder -> FrameDecoder under the spectral loss
    ae = SINGAutoencoder(config)
    train_phase("autoencoder", ae, [batch], steps=2 * args.steps, lr=1e-3)
    # 2. sequence generator regresses the frozen encoder's frame embeddings (truncated BPTT for the LSTM)
    model.decoder.load_state_dict(ae.decoder.state_dict())
    train_phase("sequence", model, [batch], steps=args.steps, lr=1e-3, encoder=ae.encoder, truncation=8)
    # 3. end to end: generator + decoder under the spectral loss
    train_phase("end2end", model, [batch], steps=args.steps * 2 // 3, lr=3e-3)

    model.eval()
    with torch.no_grad():
        after = loss(model(*labels, crop=False), target).item()
    notes = model.generate(*labels, batch_size=64)  # (4, 4096)
    print(f"{config.sequence_model} SING, {sum(p.numel() for p in model.parameters()):,} parameters: "
          f"spectral loss {before:.3f} -> {after:.3f}")
    assert after < 0.5 * before, "training did not lower the spectral loss"

    out = Path(args.out) if args.out else Path(tmp) / "generated"
    for wav, name, pitch in zip(notes, batch["name"], batch["pitch"].tolist()):
        x = (wav.double().numpy() - wav.double().mean().item()) * np.hanning(len(wav))
        spec = np.abs(np.fft.rfft(x, n=1 << 16))
        freqs = np.fft.rfftfreq(1 << 16, 1 / config.sample_rate)
        band = (freqs > 50) & (freqs < 2000)
        peak = freqs[band][np.argmax(spec[band])]
        cents = 1200 * math.log2(peak / (440 * 2 ** ((pitch - 69) / 12)))
        save_audio(out / f"{name}.wav", wav.clamp(-1, 1), config.sample_rate)
        print(f"  {name}: strongest partial {peak:.1f} Hz, {cents:+.0f} cents from pitch {pitch}")
    print(f"generated {tuple(notes.shape)} samples, written to {out}")
