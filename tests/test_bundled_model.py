"""The model shipped inside the package: it loads offline, has learned its data, generates, backs
``sashimi generate`` with no arguments, and the script that trains it runs."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from sashimi.hub import registry as hub
from sashimi.audio import quantize
from sashimi.cli import main
from sashimi.data import plucked_melody
from sashimi.metrics import periodicity
from sashimi.models.lm import SaShiMiLM

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundled() -> SaShiMiLM:
    return SaShiMiLM.from_pretrained(hub.BUNDLED_NAME).eval()


def _default_temperature() -> float:
    """The sampling temperature stored with the bundled model (``generation.json``); 1 without one."""
    path = hub.bundled_model_path() / "generation.json"
    return float(json.loads(path.read_text())["temperature"]) if path.exists() else 1.0


def _unigram_bits(q: torch.Tensor, classes: int) -> float:
    p = torch.bincount(q.flatten(), minlength=classes).double() / q.numel()
    p = p[p > 0]
    return float(-(p * p.log2()).sum())


def test_loads_offline_from_the_package(monkeypatch: pytest.MonkeyPatch, bundled: SaShiMiLM) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = hub.bundled_model_path()
    assert folder.parent.parent == Path(hub.__file__).resolve().parents[1]  # inside the installed package
    assert hub.BUNDLED_NAME in hub.list_pretrained()
    again = SaShiMiLM.from_pretrained(hub.BUNDLED_NAME)
    for (k, a), (_, b) in zip(bundled.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < 8 * 2**20  # a few MB ship inside the wheel


def test_has_learned_plucked_strings(bundled: SaShiMiLM) -> None:
    """On a melody it never saw (a seed outside the training range), the NLL is far below the unigram
    entropy of that very clip (a context-free model's best), and the recorded results agree."""
    cfg = bundled.config
    wav = plucked_melody(1.0, cfg.sample_rate, seed=987_654, root=123.0)
    q = quantize(wav, cfg.bits, cfg.quantization)
    with torch.no_grad():
        nll = float(bundled.log_likelihood(q))
    unigram = _unigram_bits(q, 2**cfg.bits)
    assert nll < 0.75 * unigram, (nll, unigram)
    report = json.loads((hub.bundled_model_path() / "training.json").read_text())
    res = report["results"]
    assert res["test_bits_per_sample"] < res["unigram_bits_per_sample"]
    assert report["parameters"] == bundled.num_parameters()


def test_samples_sound_like_the_data(bundled: SaShiMiLM) -> None:
    """Issue 14's check on shorter clips: ``sashimi generate`` at its defaults (batch 4, the stored temperature),
    seeds 0-3, 0.5 s: the samples are pitched (median periodicity >= 0.6; white noise scores 0.1, the
    training clips above 0.9) and the model finds them about as likely as held-out data (convolution-mode
    bits/sample within 1.5x the held-out NLL of ``training.json``). The model bundled before issue 14
    fails it (periodicity 0.2: its samples drift into noise)."""
    cfg = bundled.config
    temperature = _default_temperature()
    held_out = json.loads((hub.bundled_model_path() / "training.json").read_text())["results"]["test_bits_per_sample"]
    per, bits = [], []
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        out = bundled.generate(4, cfg.sample_rate // 2, temperature=temperature, generator=g, progress=False)
        per += periodicity(out.waveform, cfg.sample_rate).tolist()  # (4,)
        with torch.no_grad():
            bits += bundled.log_likelihood(out.tokens).tolist()  # (4,), convolution mode
    assert statistics.median(per) >= 0.6, per
    assert statistics.fmean(bits) <= 1.5 * held_out, (bits, held_out)


def test_generates_one_second(bundled: SaShiMiLM) -> None:
    cfg = bundled.config
    g = torch.Generator().manual_seed(0)
    out = bundled.generate(1, cfg.sample_rate, generator=g, progress=False)
    assert out.waveform.shape == (1, cfg.sample_rate) and torch.isfinite(out.waveform).all()
    assert out.waveform.abs().max() <= 1.0
    # the per-sample log-likelihood of sampling equals the convolution-mode score of the samples
    with torch.no_grad():
        bits = bundled.log_likelihood(out.tokens)
    torch.testing.assert_close(out.bits_per_sample.double(), bits.double(), rtol=0, atol=1e-3)


def test_cli_generate_without_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["generate", "--seconds", "0.5", "--quiet"]) == 0
    files = sorted((tmp_path / "samples").glob("*.wav"))
    assert [f.name for f in files] == [f"sample_{i:03d}.wav" for i in range(4)]  # default batch 4
    for f in files:
        data, rate = sf.read(str(f))
        assert rate == 16000 and data.shape == (8000,) and abs(data).max() > 0.01
    assert "bits/sample=" in capsys.readouterr().out


def test_missing_bundle_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(hub, "__file__", str(tmp_path / "hub" / "registry.py"))
    with pytest.raises(FileNotFoundError, match="the bundled model is missing"):
        SaShiMiLM.from_pretrained(hub.BUNDLED_NAME)


def test_training_script_smoke(tmp_path: Path) -> None:
    """scripts/train_default.py end to end at toy size: a loadable model folder plus its report."""
    out = tmp_path / "model"
    cmd = [sys.executable, str(REPO / "scripts" / "train_default.py"), "--steps", "3", "--clips", "2",
           "--seconds", "0.5", "--seq-len", "512", "--batch-size", "2", "--threads", "1", "--out", str(out),
           "--check-seconds", "0.1", "--quiet"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    # 3 steps neither beat the unigram baseline nor pass the quality check: the script says so and exits 1,
    # but writes the model
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert "held-out NLL below the unigram baseline" in proc.stdout and "quality check" in proc.stdout
    report = json.loads((out / "training.json").read_text())
    assert report["training"]["steps"] == 3 and report["data"]["clips"] == {"train": 2, "valid": 1, "test": 1}
    model = SaShiMiLM.from_pretrained(str(out))
    assert model.num_parameters() == report["parameters"]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "generation.json",
                                                    "model.safetensors", "training.json"]
    quality = report["quality"]
    assert json.loads((out / "generation.json").read_text()) == {"temperature": quality["temperature"]}
    assert len(quality["samples_periodicity"]) == 16 and 0 <= quality["samples_median_periodicity"] <= 1
    assert quality["train_data_periodicity"]["stored"] > 0.9  # plucked strings are pitched
    assert "Training data and quality" in (out / "README.md").read_text()
