"""The eps-prediction loss: definition, exact predictors, reproducibility, learning a Gaussian, bad input."""

from __future__ import annotations

import pytest
import torch

from sashimi.losses.denoising import denoising_loss
from sashimi.schedulers import DDPMScheduler


def test_matches_the_definition_with_given_t_and_noise():
    sched = DDPMScheduler()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 1, 40, generator=g, dtype=torch.float64)
    z = torch.randn(3, 1, 40, generator=g, dtype=torch.float64)
    t = torch.tensor([[5], [100], [199]])  # the official (B, 1) layout is accepted
    seen = {}

    def model(x, steps):
        seen["x"], seen["t"] = x, steps
        return 0.5 * x

    value = denoising_loss(model, x0, sched, t=t, noise=z)
    abar = sched.alphas_cumprod[t[:, 0]][:, None, None]
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * z
    torch.testing.assert_close(seen["x"], x_t, rtol=0, atol=1e-15)
    assert seen["t"].dtype == torch.int64 and seen["t"].tolist() == [5, 100, 199]
    torch.testing.assert_close(value, ((0.5 * x_t - z) ** 2).mean(), rtol=1e-14, atol=0)
    l1 = denoising_loss(model, x0, sched, loss="l1", t=t, noise=z)
    torch.testing.assert_close(l1, (0.5 * x_t - z).abs().mean(), rtol=1e-14, atol=0)


def test_exact_predictor_of_a_point_mass_has_zero_loss_and_zero_model_has_unit_loss():
    sched = DDPMScheduler(50, 1e-4, 0.05)
    x0 = torch.full((4, 500), 0.25, dtype=torch.float64)

    def exact(x, t):
        abar = sched.alphas_cumprod[t][:, None]
        return (x - abar.sqrt() * 0.25) / (1 - abar).sqrt()

    g = torch.Generator().manual_seed(1)
    assert float(denoising_loss(exact, x0, sched, generator=g)) < 1e-20
    zero = denoising_loss(lambda x, t: torch.zeros_like(x), x0, sched, generator=torch.Generator().manual_seed(1))
    assert abs(float(zero) - 1.0) < 0.05  # mean of z^2 over 2000 draws


def test_mel_is_passed_through_and_draws_are_reproducible():
    sched = DDPMScheduler()
    x0 = torch.randn(2, 64)
    mel = torch.randn(2, 80, 4)

    def model(x, t, m):
        assert m is mel
        return x * m.mean()

    a = denoising_loss(model, x0, sched, mel=mel, generator=torch.Generator().manual_seed(3))
    b = denoising_loss(model, x0, sched, mel=mel, generator=torch.Generator().manual_seed(3))
    c = denoising_loss(model, x0, sched, mel=mel, generator=torch.Generator().manual_seed(4))
    assert a == b and a != c


def test_a_linear_predictor_learns_the_optimal_gaussian_denoiser():
    """For data N(0, s^2) the loss-optimal eps-predictor is c_t x_t with c_t = sqrt(1-abar)/(abar s^2 + 1-abar):
    minimising the loss over a per-step scale recovers it (the loss is the right objective)."""
    sched = DDPMScheduler(10, 1e-3, 0.2)
    s = 0.5
    scale = torch.zeros(10, requires_grad=True)
    opt = torch.optim.Adam([scale], lr=0.05)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        x0 = s * torch.randn(64, 128, generator=g)
        value = denoising_loss(lambda x, t: scale[t][:, None] * x, x0, sched, generator=g)
        opt.zero_grad()
        value.backward()
        opt.step()
    abar = sched.alphas_cumprod
    optimal = (1 - abar).sqrt() / (abar * s**2 + 1 - abar)
    torch.testing.assert_close(scale.detach().double(), optimal, rtol=0.05, atol=0.02)


def test_bad_input():
    sched = DDPMScheduler()
    x0 = torch.zeros(2, 16)
    with pytest.raises(ValueError, match="loss must be 'mse' or 'l1'"):
        denoising_loss(lambda x, t: x, x0, sched, loss="huber")
    with pytest.raises(TypeError, match="x0 must be a floating-point"):
        denoising_loss(lambda x, t: x, x0.long(), sched)
    with pytest.raises(ValueError, match="x0 must have a batch dimension"):
        denoising_loss(lambda x, t: x, torch.zeros(16), sched)
    with pytest.raises(ValueError, match="eps_model must return eps of the shape"):
        denoising_loss(lambda x, t: x[:, :8], x0, sched)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 200\)"):
        denoising_loss(lambda x, t: x, x0, sched, t=torch.tensor([0, 200]))
