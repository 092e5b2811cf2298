"""Copy-synthesis with a DiffWaveSaShiMi mel vocoder: the official vocoder's log-mel of a tone, re-synthesized by
reverse diffusion with lmnt's 6-step fast sampler.

The model here is freshly initialised (its output layer gets random weights so that the network does something);
for real audio, load a trained or converted vocoder instead::

    model = DiffWaveSaShiMi.from_diffwave_sashimi("200000.pkl", "vocoder")   # the released LJSpeech vocoder
    model = sashimi.load_model("path/to/folder")

Run: ``python examples/diffusion_vocoder.py``. It checks what it prints: the output length is the mel's
(``frames * hop``), sampling is reproducible with a seeded generator, and a saved, reloaded folder vocodes
identically.
"""

from __future__ import annotations

import math
import tempfile
import time

import torch

import sashimi
from sashimi.audio.features import log_mel_spectrogram
from sashimi.models.diffwave import DiffWaveSaShiMi, DiffWaveSaShiMiConfig


def main() -> None:
    torch.manual_seed(0)
    # the released vocoder's architecture (d_model 32, 80 mels, hop 256, T=50), with the aligned mel of new models
    config = DiffWaveSaShiMiConfig.preset("vocoder")
    model = DiffWaveSaShiMi(config).eval()
    with torch.no_grad():
        model.output_proj.weight.normal_(0, 0.05)
    print(f"DiffWaveSaShiMi vocoder: {model.num_parameters():,} parameters, mel alignment {config.mel_alignment!r}")

    sr = config.sample_rate
    n = torch.arange(4096 - 256)  # frames = 1 + len // 256 = 16 -> 16 * 256 = 4096 output samples
    tone = 0.5 * torch.sin(2 * math.pi * 440.0 * n / sr).unsqueeze(0)  # (1, T)
    mel = log_mel_spectrogram(tone, sample_rate=sr)  # (1, 80, frames)
    print(f"log-mel of a 440 Hz tone: {tuple(mel.shape)}")

    start = time.perf_counter()
    audio = model.generate(mel=mel, steps="fast", progress=False, generator=torch.Generator().manual_seed(1))
    elapsed = time.perf_counter() - start
    assert audio.shape == (1, mel.shape[-1] * config.hop_length) and torch.isfinite(audio).all()
    print(f"vocoded {tuple(audio.shape)} samples in {elapsed:.2f} s (6 steps; kernels computed once)")

    again = model.generate(mel=mel, steps="fast", progress=False, generator=torch.Generator().manual_seed(1))
    assert torch.equal(audio, again)
    print("same seed, same audio: True")

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        loaded = sashimi.load_model(tmp)
        assert isinstance(loaded, DiffWaveSaShiMi)
        reloaded = loaded.generate(mel=mel, steps="fast", progress=False, generator=torch.Generator().manual_seed(1))
    assert torch.equal(audio, reloaded)
    print("saved and reloaded folder vocodes identically: True")


if __name__ == "__main__":
    main()
