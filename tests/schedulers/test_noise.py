"""DDPMScheduler against the official DiffWave + SaShiMi schedules and sampler steps and lmnt's fast schedule."""

from __future__ import annotations

import json

import pytest
import torch

from sashimi.schedulers import LMNT_FAST_BETAS, DDPMScheduler

SETTINGS = {"T200": (200, 1e-4, 0.02), "T50": (50, 1e-4, 0.05)}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_tables_equal_official_float64(load_case, name):
    tensors, _ = load_case("diffwave/schedules")
    sched = DDPMScheduler(*SETTINGS[name])
    for ours, key in [
        (sched.betas, "Beta"),
        (sched.alphas, "Alpha"),
        (sched.alphas_cumprod, "Alpha_bar"),
        (sched.sigmas, "Sigma"),
    ]:
        gold = tensors[f"{name}.fp64.{key}"]
        assert ours.dtype == torch.float64
        torch.testing.assert_close(ours, gold, rtol=0, atol=1e-12, msg=f"{name} {key}")
        if key != "Sigma":  # float32's 1 - alpha_bar cancels at small t: the official float32 sigmas are off by 7e-5
            # the official float32 tables are the same numbers rounded (within float32 accumulation)
            torch.testing.assert_close(ours.float(), tensors[f"{name}.fp32.{key}"], rtol=2e-6, atol=1e-7)


def test_spec_values():
    """Numbers quoted in the spec (float64): Alpha_bar[199], Sigma[199], Sigma[1] and the T=50 ends."""
    s = DDPMScheduler()
    assert abs(float(s.alphas_cumprod[199]) - 0.1321828) < 5e-8
    assert abs(float(s.sigmas[199]) - 0.1412014) < 5e-8
    assert abs(float(s.sigmas[1]) - 0.0081652) < 5e-8
    v = DDPMScheduler(50, 1e-4, 0.05)
    assert abs(float(v.alphas_cumprod[49]) - 0.2796725) < 5e-8
    assert abs(float(v.sigmas[49]) - 0.2213103) < 5e-8


def test_ddpm_steps_reproduce_official_step_by_step(load_case):
    g, meta = load_case("diffwave/ddpm_steps_T200_v")
    sched = DDPMScheduler(meta["T"], meta["beta_0"], meta["beta_T"])
    T = meta["T"]
    for i in range(T):
        t = T - 1 - i
        assert torch.all(g["golden.t"][i] == t)
        noise = g["golden.z"][i] if t > 0 else None
        x_prev = sched.step(g["golden.eps"][i], t, g["golden.x_t"][i], noise)
        torch.testing.assert_close(x_prev, g["golden.x_prev"][i], rtol=0, atol=1e-12, msg=f"t={t}")
        # per-example steps as a (B,) tensor give the same update
        tb = torch.full((g["golden.x_t"].shape[1],), t, dtype=torch.int64)
        torch.testing.assert_close(
            sched.step(g["golden.eps"][i], tb, g["golden.x_t"][i], noise), x_prev, rtol=0, atol=0
        )
    torch.testing.assert_close(x_prev, g["golden.x_0"], rtol=0, atol=1e-12)


def test_full_inference_schedule_is_the_official_sampler(load_case):
    """Chaining InferenceSchedule('full') steps on the golden eps/z reproduces every golden x_prev."""
    g, meta = load_case("diffwave/ddpm_steps_T200_v")
    plan = DDPMScheduler(meta["T"], meta["beta_0"], meta["beta_T"]).inference_schedule("full")
    assert len(plan) == meta["T"] and plan.num_noises == meta["T"]
    torch.testing.assert_close(plan.timesteps, g["golden.t"][:, 0, 0], rtol=0, atol=0)
    x = g["golden.x_T"]
    for i in range(len(plan)):
        torch.testing.assert_close(x, g["golden.x_t"][i], rtol=0, atol=1e-12)
        x = plan.step(i, g["golden.eps"][i], x, g["golden.z"][i] if plan.needs_noise(i) else None)
    torch.testing.assert_close(x, g["golden.x_0"], rtol=0, atol=1e-12)


def test_fast_timesteps_equal_lmnt(reference_dir):
    rec = json.loads((reference_dir / "diffwave" / "lmnt_fast_schedule.json").read_text())
    assert list(LMNT_FAST_BETAS) == rec["inference_noise_schedule"]
    sched = DDPMScheduler(50, 1e-4, 0.05)
    ts = sched.fast_timesteps(rec["inference_noise_schedule"])
    want = torch.tensor(rec["fast"]["T_fed_to_net_in_call_order"][::-1], dtype=torch.float64)
    torch.testing.assert_close(ts, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(sched.fast_timesteps(), ts, rtol=0, atol=0)  # default = lmnt's betas

    plan = sched.inference_schedule("fast")
    torch.testing.assert_close(plan.timesteps, want.flip(0), rtol=0, atol=1e-5)
    # lmnt's update coefficients (recorded in float64), s = 0..5
    abar = plan.alphas_cumprod.flip(0)
    torch.testing.assert_close(abar, torch.tensor(rec["alpha_cum_inference"], dtype=torch.float64), rtol=0, atol=1e-12)
    c1 = 1 / torch.sqrt(plan.alphas.flip(0))
    c2 = (1 - plan.alphas.flip(0)) / torch.sqrt(1 - abar)
    torch.testing.assert_close(c1, torch.tensor(rec["c1"], dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(c2, torch.tensor(rec["c2"], dtype=torch.float64), rtol=0, atol=1e-12)
    sig = plan.sigmas.flip(0)
    assert sig[0] == 0
    torch.testing.assert_close(sig[1:], torch.tensor(rec["sigma_n_ge_1"], dtype=torch.float64), rtol=0, atol=1e-12)


def test_fast_timesteps_interpolate_sqrt_alpha_bar():
    """Identity: linear interpolation of sqrt(alpha_bar) at the returned steps gives the inference levels."""
    sched = DDPMScheduler()
    betas = torch.tensor([3e-4, 2e-3, 0.02, 0.1, 0.3, 0.4], dtype=torch.float64)
    ts = sched.fast_timesteps(betas)
    root = sched.alphas_cumprod.sqrt()
    lo = ts.floor().long().clamp(max=sched.num_train_steps - 2)
    interp = root[lo] + (ts - lo) * (root[lo + 1] - root[lo])
    torch.testing.assert_close(interp, torch.cumprod(1 - betas, 0).sqrt(), rtol=0, atol=1e-14)
    # training levels map to their own steps
    exact = sched.fast_timesteps(sched.betas[:7])
    torch.testing.assert_close(exact, torch.arange(7, dtype=torch.float64), rtol=0, atol=1e-9)


def test_add_noise_matches_definition():
    sched = DDPMScheduler()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 2, 50, generator=g, dtype=torch.float64)
    z = torch.randn(3, 2, 50, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 77, 199])
    xt = sched.add_noise(x0, z, t)
    for b in range(3):
        ab = sched.alphas_cumprod[t[b]]
        torch.testing.assert_close(xt[b], ab.sqrt() * x0[b] + (1 - ab).sqrt() * z[b], rtol=0, atol=1e-15)
    assert sched.add_noise(x0.float(), z.float(), t).dtype == torch.float32
    # the scalar t applies to every example
    torch.testing.assert_close(sched.add_noise(x0, z, 5), sched.add_noise(x0, z, torch.full((3,), 5)), rtol=0, atol=0)


def test_respaced_full_equals_full_and_ddim_eta1_equals_respaced_ddpm():
    sched = DDPMScheduler()
    full, n200 = sched.inference_schedule("full"), sched.inference_schedule(200)
    for f in ("timesteps", "alphas", "alphas_cumprod", "sigmas"):
        torch.testing.assert_close(getattr(n200, f), getattr(full, f), rtol=0, atol=0)
    # DDIM with eta=1 is the ancestral sampler on the same subsequence: same update for the same draws
    ddpm, ddim = sched.inference_schedule(25), sched.inference_schedule(25, "ddim", eta=1.0)
    torch.testing.assert_close(ddim.sigmas, ddpm.sigmas, rtol=1e-12, atol=1e-15)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 30, generator=g, dtype=torch.float64)
    for i in range(len(ddpm)):
        eps = torch.randn(4, 30, generator=g, dtype=torch.float64)
        z = torch.randn(4, 30, generator=g, dtype=torch.float64) if ddpm.needs_noise(i) else None
        a, b = ddpm.step(i, eps, x, z), ddim.step(i, eps, x, z)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        x = a
    assert ddpm.timesteps[0] == 199 and ddpm.timesteps[-1] == 0
    assert sched.inference_schedule(50, "ddim").num_noises == 1  # eta = 0: deterministic


def test_step_adds_no_noise_at_t0_and_clips():
    sched = DDPMScheduler()
    x = torch.full((2, 8), 3.0, dtype=torch.float64)
    eps = torch.zeros_like(x)
    out0 = sched.step(eps, 0, x)  # no noise at t = 0, even without a noise tensor
    torch.testing.assert_close(out0, x / sched.alphas[0].sqrt(), rtol=0, atol=0)
    assert sched.step(eps, 0, x, clip=True).abs().max() == 1.0
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.testing.assert_close(sched.step(eps, 9, x, generator=g1), sched.step(eps, 9, x, generator=g2), rtol=0, atol=0)


def test_bad_input():
    sched = DDPMScheduler()
    x = torch.zeros(2, 16)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 200\)"):
        sched.add_noise(x, x, torch.tensor([0, 200]))
    with pytest.raises(ValueError, match="t must lie"):
        sched.step(x, -1, x)
    with pytest.raises(TypeError, match="integer training steps"):
        sched.add_noise(x, x, torch.tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match="x0 must be a floating-point"):
        sched.add_noise(torch.zeros(2, 16, dtype=torch.int64), x, 3)
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        sched.add_noise(x, x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="noise must have the shape"):
        sched.add_noise(x, torch.zeros(2, 15), 3)
    with pytest.raises(ValueError, match="beta_end must lie in"):
        DDPMScheduler(200, 1e-4, 1.5)
    with pytest.raises(TypeError, match="num_train_steps must be an int"):
        DDPMScheduler(200.0)
    with pytest.raises(ValueError, match="outside the training range"):
        sched.fast_timesteps([1e-5])
    with pytest.raises(ValueError, match="outside the training range"):
        sched.fast_timesteps([1e-4, 0.9])
    with pytest.raises(ValueError, match="steps must be"):
        sched.inference_schedule(0)
    with pytest.raises(ValueError, match="steps must be"):
        sched.inference_schedule(201)
    with pytest.raises(ValueError, match="sampler must be"):
        sched.inference_schedule(10, "euler")
    with pytest.raises(ValueError, match="eta applies to sampler='ddim'"):
        sched.inference_schedule(10, "ddpm", eta=0.5)
    plan = sched.inference_schedule(10)
    with pytest.raises(ValueError, match="pass noise"):
        plan.step(0, x, x)
    with pytest.raises(ValueError, match="noise must be None"):
        plan.step(9, x, x, x)
