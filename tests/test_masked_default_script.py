"""scripts/train_masked_default.py: trains on exactly the bundled SaShiMiLM's data recipe and writes a loadable
model folder with its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import soundfile as sf
import torch

from sashimi import load_model
from sashimi.data import plucked_melody
from sashimi.models.masked import MaskedSaShiMi

REPO = Path(__file__).resolve().parents[1]
BUNDLED_REPORT = REPO / "sashimi" / "pretrained" / "default" / "training.json"


def test_masked_training_script_smoke(tmp_path: Path) -> None:
    out, work = tmp_path / "model", tmp_path / "work"
    cmd = [sys.executable, str(REPO / "scripts" / "train_masked_default.py"), "--steps", "3", "--clips", "8",
           "--seconds", "0.5", "--seq-len", "512", "--batch-size", "2", "--out", str(out), "--work-dir", str(work),
           "--quiet"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 3 steps need not beat the unigram baseline
    assert "held-out masked bits below the unigram baseline" in proc.stdout
    report = json.loads((out / "training.json").read_text())
    # the generator settings are those the bundled AR model was trained with
    bundled = json.loads(BUNDLED_REPORT.read_text())["data"]
    for key in ("generator", "sample_rate", "octaves", "ring_seconds", "root_hz", "root_spread_semitones", "seed"):
        assert report["data"][key] == bundled[key], key
    assert report["data"]["clips"] == {"train": 8, "valid": 1, "test": 1}
    # training clip i is plucked_melody with seed i, as written by train_default.py (16-bit WAV)
    wave, sr = sf.read(str(work / "data" / "train" / "clip_0003.wav"), dtype="float64")
    ref = plucked_melody(0.5, sr, seed=3, root=bundled["root_hz"], octaves=bundled["octaves"],
                         ring=bundled["ring_seconds"]).double()
    assert sr == 16000 and torch.allclose(torch.from_numpy(wave), ref, atol=2.0 / 32768)
    r = report["results"]
    assert r["test_crops"] == 8000 // 512
    assert 7.0 < r["test_masked_bits_before"] < 9.0  # an untrained model: near log2(256) = 8 bits
    assert 0.0 < r["unigram_bits"] < 8.0
    assert report["training"]["steps"] == 3 and report["threads"] == 1
    assert report["training"]["ssm_lr"] == 1e-3  # the SSM parameters in their own optimizer group
    at_rate = r["test_masked_bits_at_rate"]  # held-out bits at fixed mask rates
    assert set(at_rate) == {"0.1", "0.5", "0.9"} and all(7.0 < v < 9.0 for v in at_rate.values())
    model = load_model(str(out))
    assert isinstance(model, MaskedSaShiMi) and model.num_parameters() == report["parameters"]
    assert model.config.span_len == 8 and model.config.d_model == 32
