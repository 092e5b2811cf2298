"""Tests for sashimi.audio: mu-law and linear quantization (golden reference) and file I/O."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sashimi.audio import (
    dequantize,
    linear_decode,
    linear_encode,
    load_audio,
    minmax_scale,
    mu_law_decode,
    mu_law_encode,
    quantize,
    resample,
    save_audio,
)
from sashimi.data.synth import tone

REFERENCE_DIR = Path(__file__).parents[1] / ".." / "shared" / "reference"
ALL_BITS = [4, 8, 10, 16]


def _reference(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"golden reference folder not found at {REFERENCE_DIR.resolve()}")
    path = REFERENCE_DIR / f"{name}.safetensors"
    if not path.is_file():
        pytest.skip(f"golden reference file {path.name} not found in {REFERENCE_DIR.resolve()}")
    return load_file(str(path))


def _expand(t: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse mu-law companding curve g on [-1, 1] (float64)."""
    mu = 2**bits - 1
    return torch.sign(t) * ((1.0 + mu) ** t.abs() - 1) / mu


def _peak_frequency(x: torch.Tensor, sample_rate: int) -> float:
    """Frequency (Hz) of the largest FFT magnitude of ``x``, zero-padded to 0.25 Hz bins."""
    n = 4 * sample_rate
    spec = np.abs(np.fft.rfft(x.double().numpy() * np.hanning(x.numel()), n=max(n, x.numel())))
    return float(np.argmax(spec)) * sample_rate / max(n, x.numel())


# --------------------------------------------------------------------------------------------
# golden reference
# --------------------------------------------------------------------------------------------


def test_mulaw_golden_encode_decode() -> None:
    ref = _reference("mulaw_visible")
    meta_path = REFERENCE_DIR / "mulaw_visible.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    bits = int(meta.get("bits", 8))
    wav, tokens = ref["waveform"], ref["tokens"]

    # the reference min-max scales each example, then encodes
    assert torch.equal(mu_law_encode(wav, bits, minmax=True), tokens)
    assert torch.equal(mu_law_encode(minmax_scale(wav), bits), tokens)
    assert torch.equal(quantize(wav, bits, "mu-law", minmax=True), tokens)

    table = mu_law_decode(ref["codes"], bits)
    assert table.dtype == torch.float32
    torch.testing.assert_close(table, ref["mu_law_decoded"], rtol=0, atol=1e-6)
    torch.testing.assert_close(mu_law_decode(tokens, bits), ref["roundtrip"], rtol=0, atol=1e-6)
    assert int(meta.get("zero_token", 128)) == mu_law_encode(torch.zeros(1), bits).item()


def test_mulaw_golden_sc09_targets() -> None:
    """The SC09 reference targets are the same encoder applied to another waveform."""
    ref = _reference("sashimi_sc09_format_io")
    targets = mu_law_encode(ref["waveform"], 8, minmax=True)
    assert torch.equal(targets, ref["targets"])
    assert torch.equal(ref["tokens_in"][:, 1:], targets[:, :-1])


# --------------------------------------------------------------------------------------------
# quantization properties
# --------------------------------------------------------------------------------------------


def _test_waveforms(bits: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(bits)
    ramp = torch.linspace(-1, 1, 2**14 + 1, dtype=torch.float64)
    companded = _expand(torch.linspace(-1, 1, 2 * 2**bits + 1, dtype=torch.float64), bits)
    noise = torch.rand(4096, generator=gen, dtype=torch.float64) * 2 - 1
    small = (torch.randn(4096, generator=gen, dtype=torch.float64) * 1e-3).clamp(-1, 1)
    return torch.cat([ramp, companded, noise, small, torch.tensor([0.0, 1.0, -1.0, 1e-12, -1e-12])])


@pytest.mark.parametrize("bits", ALL_BITS)
def test_mulaw_roundtrip_error_bounded_by_local_step(bits: int) -> None:
    x = _test_waveforms(bits)
    xhat = mu_law_decode(mu_law_encode(x, bits), bits, dtype=torch.float64)
    mu = 2**bits - 1
    # Encoding cells have width 2/(2^b - 0.01) in the companded domain y = f(x), and the decoded
    # point c_q = q/2^(b-1) - 1 lies within delta = 2.01/(2^b - 0.01) of every y in cell q.
    # The expansion g has slope g'(t) = log1p(mu) (1+mu)^|t| / mu, increasing in |t|, so
    # |x - xhat| <= g'(min(1, |y| + delta)) * delta; the encoder's 1e-8 inside |x + 1e-8|
    # shifts x by at most 1e-8.
    delta = 2.01 / (2**bits - 0.01)
    y = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
    slope = math.log1p(mu) * (1.0 + mu) ** torch.clamp(y.abs() + delta, max=1.0) / mu
    bound = slope * delta + 1e-8 + 1e-12
    err = (x - xhat).abs()
    assert bool((err <= bound).all()), float((err / bound).max())
    assert float((err / bound).max()) > 0.5  # the bound is not vacuous
    # float32 decode adds only rounding
    xhat32 = mu_law_decode(mu_law_encode(x, bits), bits)
    assert bool(((x - xhat32.double()).abs() <= bound + 1e-7).all())


@pytest.mark.parametrize("bits", ALL_BITS)
def test_linear_roundtrip_error_bounded_by_one_step(bits: int) -> None:
    x = _test_waveforms(bits)
    q = linear_encode(x, bits)
    xhat = linear_decode(q, bits, dtype=torch.float64)
    step = 2 / 2**bits
    diff = x - xhat
    assert bool((diff >= 0).all()) and bool((diff <= step).all())
    assert float(diff.max()) > 0.9 * step
    torch.testing.assert_close(dequantize(q, bits, "linear"), xhat.float())
    assert torch.equal(quantize(x, bits, "linear"), q)


@pytest.mark.parametrize("quantization", ["mu-law", "linear"])
@pytest.mark.parametrize("bits", ALL_BITS)
def test_dense_ramp_uses_every_class(bits: int, quantization: str) -> None:
    t = torch.linspace(-1, 1, 4 * 2**bits + 1, dtype=torch.float64)
    if quantization == "mu-law":
        # 16-bit mu-law cells next to 0 are ~5e-9 wide: sample |x| < 3e-8 finely as well
        ramp = torch.cat([_expand(t, bits), torch.linspace(-3e-8, 3e-8, 6001, dtype=torch.float64)])
        ramp = ramp.sort().values
    else:
        ramp = t
    q = quantize(ramp, bits, quantization)
    assert q.dtype == torch.int64
    assert torch.unique(q).numel() == 2**bits
    assert int(q.min()) == 0 and int(q.max()) == 2**bits - 1
    # monotone, except where the reference's |x + 1e-8| folds (-1e-8, 0) (a sub-cell effect
    # below 16-bit resolution)
    outside = (ramp <= -1e-8) | (ramp >= 0)
    assert bool((q[outside][1:] >= q[outside][:-1]).all())
    if bits <= 10:  # a plain uniform float32 ramp is dense enough for these
        plain = torch.linspace(-1, 1, 2**18 + 1)
        assert torch.unique(quantize(plain, bits, quantization)).numel() == 2**bits


@pytest.mark.parametrize("quantization", ["mu-law", "linear"])
@pytest.mark.parametrize("bits", ALL_BITS + [1, 2])
def test_zero_token(bits: int, quantization: str) -> None:
    zero = quantize(torch.zeros(3), bits, quantization)
    assert zero.tolist() == [2 ** (bits - 1)] * 3
    assert dequantize(zero, bits, quantization).tolist() == [0.0] * 3


def test_encode_clips_and_keeps_shape() -> None:
    x = torch.tensor([[-3.0, -1.0, 0.5], [1.0, 2.0, 0.0]])
    for quantization in ("mu-law", "linear"):
        q = quantize(x, 8, quantization)
        assert q.shape == x.shape
        assert q[0, 0] == q[0, 1] == 0 and q[1, 0] == q[1, 1] == 255


def test_minmax_scale() -> None:
    x = torch.tensor([[0.0, 2.0, 4.0], [3.0, 3.0, 3.0], [-5.0, 5.0, 0.0]])
    y = minmax_scale(x)
    assert not bool(torch.isnan(y).any())
    assert torch.equal(y[1], torch.zeros(3))  # constant clip -> 0
    assert y[0, 0] == -1 and y[2, 0] == -1
    torch.testing.assert_close(y[0], torch.tensor([-1.0, 0.0, 1.0]), atol=1e-5, rtol=0)
    assert float(y.max()) <= 1.0
    whole = minmax_scale(x, dim=None)
    assert whole[2, 0] == -1 and abs(float(whole[2, 1]) - 1) < 1e-5
    torch.testing.assert_close(minmax_scale(x.T, dim=0), y.T)


def test_quantization_validation() -> None:
    x = torch.zeros(4)
    for bits in (0, 17):
        with pytest.raises(ValueError, match="bits"):
            mu_law_encode(x, bits)
    with pytest.raises(TypeError, match="bits"):
        linear_encode(x, 8.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating"):
        mu_law_encode(torch.zeros(4, dtype=torch.int16))
    with pytest.raises(ValueError, match="NaN"):
        mu_law_encode(torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="NaN"):
        linear_encode(torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        mu_law_decode(torch.tensor([0, 256]))
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        linear_decode(torch.tensor([-1, 3]), bits=4)
    with pytest.raises(TypeError, match="integer"):
        mu_law_decode(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="quantization"):
        quantize(x, 8, "alaw")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quantization"):
        dequantize(torch.zeros(1, dtype=torch.long), 8, "alaw")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# audio files
# --------------------------------------------------------------------------------------------


def test_save_load_roundtrip_pcm16(tmp_path: Path) -> None:
    x = tone(440.0, 0.5, 16000, amplitude=0.9)
    path = save_audio(tmp_path / "nested" / "dir" / "tone.wav", x, 16000)
    assert path.is_file()
    assert sf.info(str(path)).subtype == "PCM_16"
    y, sr = load_audio(path)
    assert sr == 16000 and y.shape == x.shape and y.dtype == torch.float32
    assert float((x - y).abs().max()) <= 1.5 / 32768
    assert [p.name for p in path.parent.iterdir()] == ["tone.wav"]  # no temp files left


def test_save_float_subtype_and_numpy(tmp_path: Path) -> None:
    x = tone(300.0, 0.1, 8000).numpy().astype(np.float64)
    path = save_audio(tmp_path / "f.wav", x, 8000, subtype="FLOAT")
    y, sr = load_audio(path, 8000)
    assert sr == 8000
    np.testing.assert_allclose(y.numpy(), x, atol=1e-7)


def test_stereo_mixdown(tmp_path: Path) -> None:
    left = tone(440.0, 0.25, 16000, amplitude=0.5)
    right = tone(1000.0, 0.25, 16000, amplitude=0.25)
    stereo = torch.stack([left, right])
    path = save_audio(tmp_path / "stereo.wav", stereo, 16000)
    y, _ = load_audio(path)
    assert y.shape == (left.numel(),)
    assert float((y - (left + right) / 2).abs().max()) <= 2 / 32768
    both, _ = load_audio(path, mono=False)
    assert both.shape == (2, left.numel())
    assert float((both - stereo).abs().max()) <= 1.5 / 32768
    mono_path = save_audio(tmp_path / "mono.wav", left, 16000)
    assert load_audio(mono_path, mono=False)[0].shape == (1, left.numel())


def test_sample_rate_mismatch_requires_resample(tmp_path: Path) -> None:
    path = save_audio(tmp_path / "t.wav", tone(440.0, 0.5, 16000), 16000)
    with pytest.raises(ValueError) as info:
        load_audio(path, 22050)
    message = str(info.value)
    assert "16000" in message and "22050" in message and "resample=True" in message


@pytest.mark.parametrize("target", [8000, 22050, 44100])
def test_load_with_resampling_keeps_frequency(tmp_path: Path, target: int) -> None:
    x = tone(440.0, 1.0, 16000)
    path = save_audio(tmp_path / "t.wav", x, 16000)
    y, sr = load_audio(path, target, resample=True)
    assert sr == target and y.dtype == torch.float32
    assert abs(y.numel() - x.numel() * target / 16000) <= 1
    assert abs(_peak_frequency(y, target) - 440.0) <= 1.0


def test_resample_wrapper_shapes() -> None:
    x = torch.stack([tone(440.0, 0.5, 16000), tone(880.0, 0.5, 16000)])
    y = resample(x, 16000, 8000)
    assert y.shape == (2, 4000) and y.dtype == torch.float32
    assert abs(_peak_frequency(y[1], 8000) - 880.0) <= 1.0
    assert resample(x[0].double(), 16000, 24000).dtype == torch.float64
    assert torch.equal(resample(x, 16000, 16000), x)
    with pytest.raises(ValueError, match="orig_sr"):
        resample(x, 0, 8000)
    with pytest.raises(ValueError, match=r"\(C, T\)"):
        resample(x[None], 16000, 8000)


def test_save_nan_raises_and_leaves_no_file(tmp_path: Path) -> None:
    bad = tone(440.0, 0.1, 16000)
    bad[10] = float("nan")
    target = tmp_path / "out" / "bad.wav"
    with pytest.raises(ValueError, match="finite"):
        save_audio(target, bad, 16000)
    assert not target.exists()
    assert not any(tmp_path.rglob("*.wav")) and not any(tmp_path.rglob("*.tmp"))
    # an existing file is left intact when a later save fails
    good = save_audio(tmp_path / "good.wav", tone(440.0, 0.1, 16000), 16000)
    before = good.read_bytes()
    with pytest.raises(ValueError):
        save_audio(good, bad, 16000)
    with pytest.raises(ValueError, match="subtype"):
        save_audio(good, tone(440.0, 0.1, 16000), 16000, subtype="NOT_A_SUBTYPE")
    assert good.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.wav"]


def test_save_validation(tmp_path: Path) -> None:
    x = tone(440.0, 0.1, 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        save_audio(tmp_path / "a.wav", x, 0)
    with pytest.raises(ValueError, match="shape"):
        save_audio(tmp_path / "a.wav", x[None, None], 16000)
    with pytest.raises(ValueError, match="shape"):
        save_audio(tmp_path / "a.wav", torch.zeros(0), 16000)
    with pytest.raises(TypeError, match="floating"):
        save_audio(tmp_path / "a.wav", torch.zeros(10, dtype=torch.int32), 16000)
    assert list(tmp_path.iterdir()) == []


def test_unreadable_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio" * 10)
    with pytest.raises(ValueError, match="garbage.wav"):
        load_audio(garbage)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.wav"):
        load_audio(empty)
    no_samples = tmp_path / "nosamples.wav"
    sf.write(str(no_samples), np.zeros((0, 1)), 16000)
    with pytest.raises(ValueError, match="no samples"):
        load_audio(no_samples)
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav")
