"""Spectral losses against SING's golden outputs (official sing/dsp.py) and auraloss's MR-STFT values."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sashimi.losses import MultiResolutionSTFTLoss, SpectralLoss, log_power_spectrogram
from tests.conftest import load_reference_case

PAIRS = ["sing_loss_0", "sing_loss_1"]


def _case(reference_dir, name):
    tensors, _ = load_reference_case(reference_dir / "sing", name)
    return tensors


@pytest.mark.parametrize("name", PAIRS)
def test_spectral_loss_matches_sing_in_float64(reference_dir, name) -> None:
    t = _case(reference_dir, name)
    a, b = t["a"].double(), t["b"].double()
    l1 = SpectralLoss()(a, b)
    assert l1.dtype == torch.float64
    assert math.isclose(l1.item(), t["loss_l1_float64"].item(), rel_tol=1e-6)
    assert math.isclose(l1.item(), t["loss_l1"].item(), rel_tol=1e-6)
    mse = SpectralLoss(distance="mse")(a, b)
    assert math.isclose(mse.item(), t["loss_mse"].item(), rel_tol=1e-6)
    per_item = SpectralLoss(reduction="per_item")(a, b)
    torch.testing.assert_close(per_item, t["loss_l1_per_item"].double(), rtol=1e-6, atol=1e-9)
    # the spectrograms themselves: float64 from float32 inputs differs from SING's float32 only by its rounding
    for key, x in (("log_spec_a", a), ("log_spec_b", b)):
        torch.testing.assert_close(log_power_spectrogram(x), t[key].double(), rtol=1e-6, atol=2e-6)


@pytest.mark.parametrize("name", PAIRS)
def test_spectral_loss_float32_reproduces_sing_spectrograms(reference_dir, name) -> None:
    t = _case(reference_dir, name)
    loss = SpectralLoss()
    for key, x in (("log_spec_a", t["a"]), ("log_spec_b", t["b"])):
        spec = loss.log_spectrogram(x)
        assert spec.shape == (2, 513, 59) and spec.dtype == torch.float32
        torch.testing.assert_close(spec, t[key], rtol=1e-6, atol=1e-7)
    assert math.isclose(loss(t["a"], t["b"]).item(), t["loss_l1"].item(), rel_tol=1e-6)


def test_phase_shift_is_ignored(reference_dir) -> None:
    t = _case(reference_dir, "sing_loss_1")
    per_item = SpectralLoss(reduction="per_item")(t["a"].double(), t["b"].double())
    assert per_item[1] < 1e-5  # item 1: the same tone, +0.7 rad phase
    assert per_item[0] > 1e-2  # item 0: 440 vs 446 Hz


def test_spectral_loss_identities() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4096, generator=g, dtype=torch.float64)
    loss = SpectralLoss()
    assert loss(x, x).item() == 0.0
    assert loss(x, -x).item() < 1e-12  # a sign flip is a phase shift of pi
    # an explicit power-spectrum computation (rfft of Hann-windowed frames)
    frames = x.unfold(-1, 1024, 256) * torch.hann_window(1024, dtype=torch.float64)  # (B, frames, 1024)
    ref = torch.log1p(torch.fft.rfft(frames).abs().square()).transpose(1, 2)  # (B, 513, frames)
    torch.testing.assert_close(loss.log_spectrogram(x), ref, rtol=1e-10, atol=1e-10)
    # (B, C, T) folds channels into the batch; autocast does not lower the precision
    y = torch.randn(2, 2, 4096, generator=g)
    z = torch.randn(2, 2, 4096, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = loss(y, z)
    assert v.dtype == torch.float32
    assert math.isclose(v.item(), loss(y.reshape(4, -1), z.reshape(4, -1)).item(), rel_tol=1e-6)
    # gradients flow to the input
    w = y.clone().requires_grad_()
    loss(w, z).backward()
    assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


def test_spectral_loss_bad_input() -> None:
    loss = SpectralLoss()
    with pytest.raises(ValueError, match="same shape"):
        loss(torch.zeros(2, 2048), torch.zeros(2, 4096))
    with pytest.raises(ValueError, match="fewer than"):
        loss(torch.zeros(2, 512), torch.zeros(2, 512))
    with pytest.raises(TypeError, match="floating-point"):
        loss(torch.zeros(2, 2048, dtype=torch.long), torch.zeros(2, 2048, dtype=torch.long))
    with pytest.raises(ValueError, match="distance"):
        SpectralLoss(distance="l2")
    with pytest.raises(ValueError, match="epsilon"):
        SpectralLoss(epsilon=0)


@pytest.mark.parametrize("index,name", list(enumerate(PAIRS)))
def test_mrstft_matches_auraloss(reference_dir, index, name) -> None:
    t = _case(reference_dir, name)
    ref = json.loads((reference_dir / "sing" / "mrstft_compare.json").read_text())["pairs"][index]
    loss = MultiResolutionSTFTLoss()
    # float32, as auraloss computed it
    assert math.isclose(loss(t["b"], t["a"]).item(), ref["mrstft(input=b, target=a)"], rel_tol=1e-6)
    terms = loss.resolution_terms(t["b"], t["a"])  # (3, 2)
    torch.testing.assert_close(terms[:, 0], torch.tensor(ref["per_resolution_sc"]), rtol=1e-6, atol=0)
    torch.testing.assert_close(terms[:, 1], torch.tensor(ref["per_resolution_logmag"]), rtol=1e-6, atol=0)
    single = MultiResolutionSTFTLoss([1024], [256], [1024])(t["b"], t["a"])
    assert math.isclose(single.item(), ref["stft_1024_256(input=b, target=a)"], rel_tol=1e-6)
    # float64 agrees to float32 rounding of the eps-floored logs
    assert math.isclose(loss(t["b"].double(), t["a"].double()).item(), ref["mrstft(input=b, target=a)"],
                        rel_tol=1e-5)
    # the two loss families on the same pair (SING's eps=1 ignores quiet bins)
    assert math.isclose(SpectralLoss()(t["b"], t["a"]).item(), ref["sing_spectral_l1"], rel_tol=1e-6)


def test_mrstft_identities_and_errors() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4000, generator=g, dtype=torch.float64)
    loss = MultiResolutionSTFTLoss()
    assert loss(x, x).item() == 0.0
    # spectral convergence is normalised by the target: SC(0.5 x, x) = 0.5 at every resolution
    terms = loss.resolution_terms(0.5 * x, x)
    torch.testing.assert_close(terms[:, 0], torch.full((3,), 0.5, dtype=torch.float64))
    torch.testing.assert_close(terms[:, 1], torch.full((3,), math.log(2), dtype=torch.float64), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="equal length"):
        MultiResolutionSTFTLoss([1024, 512], [256], [1024])
    with pytest.raises(ValueError, match="exceeds"):
        MultiResolutionSTFTLoss([512], [128], [1024])
