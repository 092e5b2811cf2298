"""scripts/vocoder_pitch_probe.py (the diagnostic behind docs/diffusion.md's vocoder-pitch findings): runs,
prints one probe row per pitch, and writes a loadable vocoder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sashimi import load_model
from sashimi.models.diffwave import DiffWaveSaShiMi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from vocoder_pitch_probe import SAMPLE_RATE, main, peak, share, tones  # noqa: E402


def test_probe_measures():
    """share / peak on known signals: a tone at f has all its energy near f, white noise little."""
    x = tones(torch.tensor([440.0]), 4096, torch.zeros(1))[0]  # (L,)
    assert share(x, 440.0) > 0.99 and share(x, 880.0) < 0.01
    assert abs(peak(x) - 440.0) < SAMPLE_RATE / 4096
    noise = torch.randn(4096, generator=torch.Generator().manual_seed(0))
    assert share(noise, 440.0) < 0.02


def test_probe_script_smoke(tmp_path: Path) -> None:
    out = tmp_path / "voc"
    cmd = [sys.executable, str(REPO / "scripts" / "vocoder_pitch_probe.py"), "--steps", "2", "--length", "256",
           "--loss", "l1", "--samples", "2", "--pitches", "220", "660", "--out", str(out)]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    rows = [r for r in proc.stdout.splitlines() if r.startswith("| 220 ") or r.startswith("| 660 ")]
    assert len(rows) == 2 and "mel of 660" in rows[0] and "mel of 220" in rows[1]
    assert all("/2 over 0.8" in r for r in rows)
    model = load_model(str(out))
    assert isinstance(model, DiffWaveSaShiMi) and model.config.n_mels == 40 and model.config.segment_length == 256


@pytest.mark.parametrize("flag", ["--samples", "--steps", "--length"])
def test_probe_script_rejects_counts_below_one(flag, capsys):
    with pytest.raises(SystemExit) as err:
        main([flag, "0"])
    assert err.value.code == 2 and f"{flag} must be at least 1, got 0" in capsys.readouterr().err
