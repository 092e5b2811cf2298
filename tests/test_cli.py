"""``sashimi generate`` / ``info`` / ``convert`` on bad input and failures: flags checked before anything is
sampled, the output folder checked (and test-written) before sampling, a non-empty folder refused unless
``--overwrite`` (which then removes the old samples it would leave behind), models that cannot generate
named, and a failed conversion that leaves the old model intact."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from sashimi.cli import main
from sashimi.models import SaShiMiLM, SaShiMiLMConfig, WaveNet, WaveNetConfig


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model")
    SaShiMiLM(SaShiMiLMConfig(d_model=8, n_layers=1, pool=(2,), d_state=8)).save_pretrained(path)
    return path


def generate(saved: Path, out: Path, *extra: str) -> int:
    return main(["generate", "--model", str(saved), "--seconds", "0.002", "--batch-size", "2", "--quiet",
                 "--out", str(out), *extra])


@pytest.mark.parametrize("flag,value", [("--seconds", "nan"), ("--seconds", "inf"), ("--seconds", "-1"),
                                        ("--temperature", "nan"), ("--temperature", "0"), ("--top-p", "nan")])
def test_non_finite_or_non_positive_flags_are_named(saved, tmp_path, flag, value):
    with pytest.raises(SystemExit, match=flag):
        generate(saved, tmp_path / "out", flag, value)
    assert not (tmp_path / "out").exists()


def test_output_folder_is_checked_before_sampling(saved, tmp_path, monkeypatch):
    def no_sampling(*a, **k):
        raise AssertionError("sampled before the output folder was checked")

    monkeypatch.setattr(SaShiMiLM, "generate", no_sampling)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit, match="not a folder"):
        generate(saved, blocker)
    with pytest.raises(SystemExit, match="cannot write"):
        generate(saved, blocker / "sub")  # a folder under a file cannot be made
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        with pytest.raises(SystemExit, match="cannot write"):
            generate(saved, ro / "x")
    taken = tmp_path / "taken"
    (taken / "sample_000.wav").mkdir(parents=True)
    with pytest.raises(SystemExit, match="is a folder where a sample file would go"):
        generate(saved, taken, "--overwrite")


def test_non_empty_output_needs_overwrite_and_old_samples_go(saved, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["generate", "--model", str(saved), "--seconds", "0.002", "--batch-size", "4", "--quiet",
                 "--out", str(out)]) == 0
    assert len(list(out.glob("sample_*.wav"))) == 4
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not empty"):
        generate(saved, out)
    assert generate(saved, out, "--overwrite") == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["notes.txt", "sample_000.wav", "sample_001.wav"]  # the stale 002 / 003 are gone


def test_a_model_that_cannot_generate_is_named(tmp_path):
    WaveNet(WaveNetConfig(n_layers=2, dilation_cycle=2, residual_channels=4, dilation_channels=4,
                          skip_channels=4, end_channels=4)).save_pretrained(tmp_path / "w")
    with pytest.raises(SystemExit, match=r"'wavenet' model \(WaveNet\).*cannot"):
        generate(tmp_path / "w", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert main(["info", str(tmp_path / "w")]) == 0


def test_failed_convert_keeps_the_old_model(saved, tmp_path, monkeypatch, capsys):
    from sashimi.hub import format as fmt

    out = tmp_path / "conv"
    model = SaShiMiLM(SaShiMiLMConfig(d_model=8, n_layers=1, pool=(2,), d_state=8))
    model.save_pretrained(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(SaShiMiLM, "from_state_spaces", classmethod(lambda cls, *a, **k: model))

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fmt.os, "fsync", full)
    pt = tmp_path / "release.pt"
    pt.write_bytes(b"unused")
    with pytest.raises(SystemExit, match="No space left.*old files are unchanged"):
        main(["convert", "state-spaces", str(pt), "--variant", "sc09", "--out", str(out), "--force"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("content,what", [(b"(dp0\nS'a'\np1\nI1\ns.", "protocol-0/1 pickle"),
                                          (b"RIFF\x24\x00\x00\x00WAVEfmt ", "WAV audio file")])
def test_convert_names_what_a_wrong_file_is(tmp_path, capsys, content, what):
    bad = tmp_path / "f.pt"
    bad.write_bytes(content + b"\x00" * 64)
    assert main(["convert", "state-spaces", str(bad), "--variant", "sc09", "--out", str(tmp_path / "o")]) == 2
    assert what in capsys.readouterr().err


def test_generate_from_a_masked_model_plain_rescored_and_hybrid(saved, tmp_path):
    """``sashimi generate`` on a masked-sashimi folder: masked decoding, with --rescorer, and hybrid
    (--ar-seconds): every run writes its samples; the hybrid's needs the AR model."""
    import soundfile as sf

    from sashimi.models import MaskedSaShiMi, MaskedSaShiMiConfig

    torch.manual_seed(0)
    MaskedSaShiMi(MaskedSaShiMiConfig(d_model=8, n_layers=1, pool=(2,), d_state=8, card=256,
                                      quantization="mu-law")).save_pretrained(tmp_path / "masked")
    base = ["generate", "--model", str(tmp_path / "masked"), "--seconds", "0.003", "--batch-size", "2", "--quiet",
            "--steps", "3"]
    for i, extra in enumerate([[], ["--rescorer", str(saved)], ["--rescorer", str(saved), "--ar-seconds", "0.001"]]):
        out = tmp_path / f"out{i}"
        assert main([*base, "--out", str(out), *extra]) == 0
        files = sorted(out.glob("sample_*.wav"))
        assert len(files) == 2 and sf.read(str(files[0]))[0].shape[0] >= 45
    with pytest.raises(SystemExit, match="needs --rescorer"):
        main([*base, "--out", str(tmp_path / "x"), "--ar-seconds", "0.001"])
    with pytest.raises(SystemExit, match="--steps"):
        main([*base[:-1], "0,2", "--out", str(tmp_path / "y")])


@pytest.mark.parametrize("case,command", [("uncond_v", "generate"), ("cond_v", "vocode")])
def test_convert_then_generate_or_vocode_a_diffusion_model(load_case, tmp_path, case, command, capsys):
    """``sashimi convert diffwave-sashimi`` of an official checkpoint (the golden small models), then
    ``sashimi generate`` (unconditional) or ``sashimi vocode`` (mel-conditioned) with a few steps."""
    import json

    import numpy as np
    import soundfile as sf

    tensors, meta = load_case(f"diffwave/{case}")
    sd = {k: v for k, v in tensors.items() if not k.startswith("golden.")}
    pkl = tmp_path / "official.pkl"
    torch.save({"model_state_dict": sd}, pkl)
    (tmp_path / "model.json").write_text(json.dumps(meta["config"]))
    folder = tmp_path / "model"
    assert main(["convert", "diffwave-sashimi", str(pkl), "--config", str(tmp_path / "model.json"),
                 "--out", str(folder)]) == 0
    out = tmp_path / "out"
    if command == "generate":
        assert main(["generate", "--model", str(folder), "--seconds", "0.016", "--batch-size", "2", "--steps", "3",
                     "--quiet", "--out", str(out)]) == 0
        files = sorted(out.glob("sample_*.wav"))
        assert len(files) == 2
        with pytest.raises(SystemExit, match="not a vocoder"):
            main(["vocode", "--model", str(folder), "--audio", str(files[0]), "--out", str(tmp_path / "v")])
    else:
        rate = json.loads((folder / "config.json").read_text())["sample_rate"]
        t = np.arange(4096) / rate
        sf.write(str(tmp_path / "tone.wav"), (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
        assert main(["vocode", "--model", str(folder), "--audio", str(tmp_path / "tone.wav"), "--steps", "fast",
                     "--quiet", "--out", str(out)]) == 0
        files = sorted(out.glob("sample_*.wav"))
        with pytest.raises(SystemExit, match="is a vocoder"):
            main(["generate", "--model", str(folder), "--out", str(tmp_path / "g"), "--quiet"])
    data, _ = sf.read(str(files[0]))
    assert data.ndim == 1 and data.shape[0] % 16 == 0 and np.isfinite(data).all() and np.abs(data).max() <= 1


def test_stored_default_temperature_is_used_and_saved(tmp_path):
    """A model folder's ``generation.json`` (the bundled model stores 0.7) is the CLI's default temperature,
    and ``save_pretrained`` writes it back."""
    import soundfile as sf

    import sashimi

    bundled = sashimi.load_model("sashimi-default")
    assert bundled.generation_defaults == {"temperature": 0.7}
    bundled.save_pretrained(tmp_path / "copy")
    assert sashimi.load_model(tmp_path / "copy").generation_defaults == {"temperature": 0.7}
    runs = {}
    for name, extra in (("default", []), ("stored", ["--temperature", "0.7"]), ("one", ["--temperature", "1.0"])):
        out = tmp_path / name
        assert main(["generate", "--model", str(tmp_path / "copy"), "--seconds", "0.01", "--batch-size", "2",
                     "--quiet", "--out", str(out), *extra]) == 0
        runs[name] = [sf.read(str(f))[0] for f in sorted(out.glob("*.wav"))]
    assert all((a == b).all() for a, b in zip(runs["default"], runs["stored"]))
    assert any((a != b).any() for a, b in zip(runs["default"], runs["one"]))


def test_generate_sing_notes_and_info_shows_the_labels(tmp_path, capsys):
    import soundfile as sf

    from sashimi.models import SING
    from sashimi.models.sing import sing_preset

    torch.manual_seed(0)
    SING(sing_preset("tiny-sing", num_instruments=3, num_pitches=5, channels=16, dimension=8,
                     lstm_hidden=16)).save_pretrained(tmp_path / "sing")
    out = tmp_path / "notes"
    assert main(["generate", "--model", str(tmp_path / "sing"), "--instrument", "1", "--pitch", "2", "4",
                 "--velocity", "100", "--quiet", "--out", str(out)]) == 0
    files = sorted(out.glob("sample_*.wav"))
    assert len(files) == 2 and sf.read(str(files[0]))[1] == 16000
    assert "pitch=4" in capsys.readouterr().out
    assert main(["generate", "--model", str(tmp_path / "sing"), "--instrument", "1", "--pitch", "9", "--quiet",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "pitch ids must lie in [0, 5)" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit, match="needs --instrument and --pitch"):
        main(["generate", "--model", str(tmp_path / "sing"), "--quiet", "--out", str(tmp_path / "bad2")])
    assert main(["info", str(tmp_path / "sing")]) == 0
    assert "labels velocity" in capsys.readouterr().out
