"""The diffusion sampling loop: official trajectories replayed from the golden tensors, exact analytic denoisers."""

from __future__ import annotations

import pytest
import torch

from sashimi.generation.diffusion import sample
from sashimi.schedulers import DDPMScheduler


class Replay:
    """A stand-in network that returns the golden eps of each step and checks what the loop feeds it."""

    def __init__(self, g: dict[str, torch.Tensor]):
        self.g = g
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        i = self.calls
        assert t.dtype == torch.float64 and t.shape == (x.shape[0],)
        torch.testing.assert_close(t, self.g["golden.t"][i, :, 0], rtol=0, atol=0)
        torch.testing.assert_close(x, self.g["golden.x_t"][i, :, 0], rtol=0, atol=1e-9, msg=f"x_t at call {i}")
        self.calls += 1
        return self.g["golden.eps"][i, :, 0]


@pytest.mark.parametrize(("case", "seed"), [("ddpm_steps_T200_v", 4), ("sampler_T200_uncond_v", 5)])
def test_official_trajectory_from_its_seed(load_case, case, seed):
    """With a generator seeded like the official torch.manual_seed, the loop draws the official x_T and z."""
    g, meta = load_case(f"diffwave/{case}")
    sched = DDPMScheduler(meta["T"], meta["beta_0"], meta["beta_T"])
    B, _, L = g["golden.x_T"].shape
    replay = Replay(g)
    x0 = sample(
        replay,
        sched,
        (B, L),
        generator=torch.Generator().manual_seed(seed),
        dtype=torch.float64,
        progress=False,
    )
    assert replay.calls == meta["T"]
    torch.testing.assert_close(x0, g["golden.x_0"][:, 0], rtol=0, atol=1e-9)


def test_official_trajectory_from_given_noises(load_case):
    g, meta = load_case("diffwave/sampler_T200_uncond_v")
    sched = DDPMScheduler(meta["T"], meta["beta_0"], meta["beta_T"])
    B, _, L = g["golden.x_T"].shape
    assert torch.all(g["golden.z"][-1] == 0)  # no noise at t = 0
    noises = torch.cat([g["golden.x_T"][None], g["golden.z"][:-1]])[:, :, 0]  # (T, B, L) in draw order
    x0 = sample(Replay(g), sched, (B, L), noises=noises, dtype=torch.float64, progress=True)
    torch.testing.assert_close(x0, g["golden.x_0"][:, 0], rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="noises must hold 200 draws"):
        sample(Replay(g), sched, (B, L), noises=noises[:-1], dtype=torch.float64, progress=False)


class PointMass:
    """The exact eps-predictor when the data is the constant ``mu``: eps = (x - sqrt(abar) mu) / sqrt(1 - abar).

    ``abar`` at a fractional step interpolates sqrt(alpha_bar) linearly between training steps, the rule by
    which lmnt's fast sampler aligns its levels. Records the normalised noise (x - sqrt(abar) mu) / sqrt(1 - abar)
    seen at every call: for this data it must be N(0, I) at every step of every sampler.
    """

    def __init__(self, sched: DDPMScheduler, mu: float):
        self.root = sched.alphas_cumprod.sqrt()
        self.mu = mu
        self.seen: list[tuple[float, torch.Tensor]] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        lo = t.floor().long().clamp(max=self.root.shape[0] - 2)
        r = (self.root[lo] + (t - lo) * (self.root[lo + 1] - self.root[lo]))[:, None]  # (B, 1)
        eps = (x - r * self.mu) / torch.sqrt(1 - r**2)
        self.seen.append((float(t[0]), eps))
        return eps


@pytest.mark.parametrize(
    ("T", "beta_end", "steps", "sampler", "eta"),
    [
        (200, 0.02, "full", "ddpm", 0.0),
        (50, 0.05, "fast", "ddpm", 0.0),
        (200, 0.02, 13, "ddpm", 0.0),
        (200, 0.02, 20, "ddim", 0.5),
        (200, 0.02, 20, "ddim", 1.0),
    ],
)
def test_point_mass_every_step_has_the_forward_marginal(T, beta_end, steps, sampler, eta):
    """Given the exact x0, every sampler keeps x_t ~ N(sqrt(abar) mu, 1 - abar) and ends exactly at mu.

    The start is drawn from that marginal at the first step's level (through ``noises``), not from N(0, I).
    """
    sched = DDPMScheduler(T, 1e-4, beta_end)
    den = PointMass(sched, mu=0.3)
    plan = sched.inference_schedule(steps, sampler, eta)
    noises = torch.randn((plan.num_noises, 16, 2048), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    abar = plan.alphas_cumprod[0]
    noises[0] = abar.sqrt() * 0.3 + (1 - abar).sqrt() * noises[0]
    x0 = sample(den, sched, (16, 2048), steps, sampler, eta, noises=noises, dtype=torch.float64, progress=False)
    torch.testing.assert_close(x0, torch.full_like(x0, 0.3), rtol=0, atol=1e-10)
    assert len(den.seen) == len(plan)
    for t, z in den.seen:  # 32768 draws: 6 standard errors
        assert abs(float(z.mean())) < 6 / 181, f"mean at t={t}"
        assert abs(float(z.var()) - 1) < 6 * 1.414 / 181, f"variance at t={t}"


def test_point_mass_ddim_deterministic_keeps_the_noise():
    """DDIM with eta = 0 and the exact x0 keeps the normalised noise of x_T at every step (an identity)."""
    sched = DDPMScheduler()
    den = PointMass(sched, mu=-0.7)
    sample(
        den, sched, (2, 64), 37, "ddim", generator=torch.Generator().manual_seed(2), dtype=torch.float64, progress=False
    )
    first = den.seen[0][1]
    for _, z in den.seen[1:]:
        torch.testing.assert_close(z, first, rtol=0, atol=1e-9)


def gaussian_denoiser(sched: DDPMScheduler, mu: float, s: float):
    """Exact eps-predictor for data x0 ~ N(mu, s^2) i.i.d. (integer steps)."""

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = sched.alphas_cumprod[t.long()][:, None]
        return torch.sqrt(1 - abar) * (x - abar.sqrt() * mu) / (abar * s**2 + 1 - abar)

    return denoise


@pytest.mark.parametrize(("steps", "sampler"), [("full", "ddpm"), (50, "ddim")])
def test_gaussian_data_is_recovered(steps, sampler):
    """Data N(0.2, 0.5^2) with its exact eps-predictor, started from the exact marginal of the first step."""
    sched = DDPMScheduler()
    plan = sched.inference_schedule(steps, sampler)
    noises = torch.randn((plan.num_noises, 16, 2048), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    abar = plan.alphas_cumprod[0]
    noises[0] = abar.sqrt() * 0.2 + (abar * 0.25 + 1 - abar).sqrt() * noises[0]
    x = sample(
        gaussian_denoiser(sched, 0.2, 0.5),
        sched,
        (16, 2048),
        steps,
        sampler,
        noises=noises,
        dtype=torch.float64,
        progress=False,
    )
    # measured: ddpm 0.2076 / 0.4937, ddim-50 0.2009 / 0.4890 (DDIM's discretisation shrinks the spread a little)
    assert abs(float(x.mean()) - 0.2) < 0.015
    assert abs(float(x.std()) - 0.5) < 0.02


def test_reproducible_with_a_generator_and_float32_by_default():
    sched = DDPMScheduler(50, 1e-4, 0.05)
    den = gaussian_denoiser(sched, 0.0, 0.3)

    def run(seed: int) -> torch.Tensor:
        return sample(den, sched, (2, 100), generator=torch.Generator().manual_seed(seed), progress=False)

    a, b, c = run(7), run(7), run(8)
    assert a.dtype == torch.float32 and a.shape == (2, 100)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def test_clip_keeps_the_sample_in_range():
    sched = DDPMScheduler()

    def wild(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -50 * torch.sign(x)  # pushes the sample far out of [-1, 1]

    kw = {"generator": torch.Generator().manual_seed(0), "progress": False}
    x = sample(wild, sched, (2, 64), 10, **kw)
    assert x.abs().max() > 1
    for steps, sampler in [(10, "ddpm"), ("fast", "ddpm"), (10, "ddim")]:
        x = sample(wild, sched, (2, 64), steps, sampler, clip=True, **kw)
        assert torch.isfinite(x).all() and x.abs().max() <= 1


def test_bad_input():
    sched = DDPMScheduler()

    def ok(x, t):
        return torch.zeros_like(x)

    with pytest.raises(ValueError, match="denoise must return eps of shape"):
        sample(lambda x, t: x[:, :-1], sched, (2, 8), 3, progress=False)
    with pytest.raises(TypeError, match="shape must be a sequence of ints"):
        sample(ok, sched, 8, progress=False)
    with pytest.raises(ValueError, match="shape must be"):
        sample(ok, sched, (0, 8), progress=False)
    with pytest.raises(TypeError, match="scheduler must be a noise scheduler"):
        sample(ok, "ddpm", (2, 8), progress=False)
    with pytest.raises(TypeError, match="dtype must be a floating-point"):
        sample(ok, sched, (2, 8), dtype=torch.int64, progress=False)
    with pytest.raises(ValueError, match=r"noises\[0\] must have shape"):
        sample(ok, sched, (2, 8), 3, "ddim", noises=[torch.zeros(2, 7)], progress=False)
    with pytest.raises(ValueError, match="steps must be"):
        sample(ok, sched, (2, 8), "slow", progress=False)
