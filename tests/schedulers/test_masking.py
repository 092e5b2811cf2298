"""Masking schedules against the official audiocraft values (golden ``magnet/magnet_visible.json``) and
against their probabilistic definitions."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sashimi.schedulers import (
    cosine_mask_rate,
    decoding_schedule,
    decoding_steps,
    least_probable_spans,
    span_expected_rate,
    span_mask,
    span_starts_lut,
)


@pytest.fixture(scope="module")
def golden(reference_dir):
    path = reference_dir / "magnet" / "magnet_visible.json"
    if not path.is_file():
        pytest.skip(f"MAGNeT golden data not found at {path}")
    return json.loads(path.read_text())


def test_cosine_mask_rate_equals_golden(golden):
    g = golden["train_schedule"]
    assert cosine_mask_rate(torch.tensor(g["u"])).tolist() == g["mask_prob"]


@pytest.mark.parametrize("T", [500, 1500])
def test_span_starts_lut_equals_golden(golden, T):
    g = golden["mean_maskrate_to_u_LUT"][f"T={T},span_len=3"]
    lut = span_starts_lut(T, 3)
    assert lut.dtype == torch.long and lut.shape == (101,)
    assert lut.tolist() == g["u_for_percent_0..100"]
    assert span_expected_rate(T, 3)[lut].tolist() == g["expected_rate_of_u"]


def test_span_expected_rate_matches_binomial_formula():
    T, L = 40, 4
    exp = span_expected_rate(T, L)
    for n in (1, 5, 17, 36, 39):
        assert exp[n].item() == pytest.approx(1 - math.comb(T - L, n) / math.comb(T, n), rel=1e-12)


def test_decoding_schedule_default_10s_every_stage(golden):
    stages = golden["default_10s_schedule_[20,10,10,10]_nonoverlap"]
    for (name, g), steps in zip(stages.items(), (20, 10, 10, 10)):
        assert g["T_out"] == 498
        assert decoding_schedule(500, steps, 3).tolist() == [e["masked_tokens_seen_by_model"] for e in g["schedule"]]
        plan = decoding_steps(498 // 3, steps, temperature=3.0, cfg=(10.0, 1.0))
        assert [p.mask_rate for p in plan] == [e["mask_p"] for e in g["schedule"]], name
        assert [p.cfg_coef for p in plan] == [e["cfg_coef"] for e in g["schedule"]], name
        assert [p.temperature for p in plan] == [e["temperature"] for e in g["schedule"]], name
    assert decoding_schedule(500, 20, 3)[:3].tolist() == [498, 495, 489]


def test_least_probable_spans_equals_golden(golden):
    g = golden["least_probable_span_masking"]
    mask = least_probable_spans(torch.tensor(g["scores(-log p per token)"]), g["num_masked_trg"], 3)
    assert mask.int().tolist() == g["mask"]


def test_decoding_schedule_with_prompt_and_errors():
    # 10 spans, 4 of them prompt: 6 spans to generate
    assert decoding_schedule(30, 3, 3, prompt_len=13).tolist() == [18, 12, 3]
    with pytest.raises(ValueError, match="nothing to decode"):
        decoding_schedule(2, 3, 3)
    with pytest.raises(ValueError, match="steps"):
        decoding_schedule(30, 0, 3)


@pytest.mark.parametrize("T", [50, 500, 1500])
@pytest.mark.parametrize("rate", [0.1, 0.45, 0.8])
def test_training_masks_mean_rate_and_span_runs(T, rate):
    g = torch.Generator().manual_seed(T + int(100 * rate))
    B = 4000 if T < 1000 else 1500
    mask = span_mask(B, T, rate, 3, generator=g)
    frac = mask.float().mean(dim=1).double()  # (B,)
    # the LUT rounds the rate to a whole number n of starts; the exact expected fraction for n uniform
    # starts: position t is unmasked iff none of the min(t + 1, L) positions up to it is a start
    n = int(span_starts_lut(T, 3)[round(100 * rate)])
    expected = sum(1 - math.comb(T - min(t + 1, 3), n) / math.comb(T, n) for t in range(T)) / T
    se = frac.std().item() / math.sqrt(B)
    assert abs(frac.mean().item() - expected) < 5 * se
    # and that is the rate asked for, up to the LUT's whole number of starts and the spans cut at the start
    assert abs(expected - rate) < 3 / T + 0.006
    # every masked run is at least span_len long unless it touches the end
    padded = torch.nn.functional.pad(mask.int(), (1, 1))
    d = padded.diff(dim=1)
    starts, ends = (d == 1).nonzero(), (d == -1).nonzero()
    runs = ends[:, 1] - starts[:, 1]
    assert torch.equal(starts[:, 0], ends[:, 0])
    truncated = ends[:, 1] == T
    assert bool((runs[~truncated] >= 3).all())


def test_span_mask_singletons_and_errors():
    m = span_mask(8, 100, 0.3, 1, generator=torch.Generator().manual_seed(0))
    assert m.sum(1).tolist() == [30] * 8
    with pytest.raises(ValueError, match="rate"):
        span_mask(2, 10, 1.5, 3)
    with pytest.raises(ValueError, match="shape"):
        span_mask(2, 10, torch.tensor([0.1, 0.2, 0.3]), 3)
