"""DiffWaveSaShiMi against the official diffwave-sashimi code (golden data in ``../shared/reference/diffwave``):
network outputs, activations, loss, the whole 200-step sampler trajectory, parameter counts, the kernel cache,
the mel alignment option and input validation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import sashimi.layers.s4kernel as s4kernel_module
from sashimi.layers.kernel_cache import cached_kernels
from sashimi.layers.s4_paper import PaperS4Kernel
from sashimi.models.diffwave import DiffWaveBlock, DiffWaveSaShiMi, DiffWaveSaShiMiConfig
from sashimi.schedulers import DDPMScheduler

NETWORK_CASES = ("uncond_v", "cond_v", "ckpt_uncond_v")


def _official(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in tensors.items() if not k.startswith("golden.")}


@pytest.fixture(scope="module")
def golden(load_case):
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = load_case(f"diffwave/{name}")
        return cache[name]

    return get


@pytest.fixture(scope="module")
def converted(golden):
    cache = {}

    def get(name: str) -> DiffWaveSaShiMi:
        if name not in cache:
            tensors, meta = golden(name)
            cache[name] = DiffWaveSaShiMi.from_diffwave_sashimi(_official(tensors), meta["config"])
        return cache[name]

    return get


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def _tiny(**overrides) -> DiffWaveSaShiMiConfig:
    kw = {"d_model": 8, "n_layers": 1, "pool": (2, 2), "d_state": 8, "step_embed_dim_in": 16,
          "step_embed_dim_mid": 32, "step_embed_dim_out": 32, "segment_length": 64, "num_train_steps": 20,
          "beta_end": 0.2}
    return DiffWaveSaShiMiConfig(**{**kw, **overrides})


# ---- golden network cases ---------------------------------------------------------------------------------
@pytest.mark.parametrize("case", NETWORK_CASES)
def test_golden_output_float64(golden, converted, case):
    tensors, _ = golden(case)
    model = converted(case)
    assert model.config.s4_layout == ("paper" if case.startswith("ckpt") else "master")
    assert model.config.mel_alignment == "truncated"
    audio, steps = tensors["golden.input.audio"], tensors["golden.input.diffusion_steps"]
    with torch.no_grad():
        eps = model(audio, steps, tensors.get("golden.input.mel_spec"))  # (B, 1, L), (B, 1) steps as official
        eps_flat = model(audio[:, 0], steps[:, 0].double(), tensors.get("golden.input.mel_spec"))  # (B, L), float t
    assert eps.shape == audio.shape and eps.dtype == torch.float64
    assert _rel(eps, tensors["golden.output"]) < 1e-9
    assert torch.equal(eps_flat, eps[:, 0])


@pytest.mark.parametrize("case", NETWORK_CASES)
def test_golden_output_float32(golden, converted, case):
    tensors, _ = golden(case)
    model = converted(case)
    m32 = DiffWaveSaShiMi(model.config).float()
    m32.load_state_dict(model.state_dict())
    mel = tensors.get("golden.input.mel_spec")
    with torch.no_grad():
        eps = m32(tensors["golden.input.audio"].float(), tensors["golden.input.diffusion_steps"],
                  mel.float() if mel is not None else None)
    assert eps.dtype == torch.float32
    assert float((eps.double() - tensors["golden.output"]).abs().max()) < 1e-4


def test_golden_step_embedding(golden, converted):
    tensors, _ = golden("uncond_v")
    model = converted("uncond_v")
    from sashimi.layers.embeddings import sinusoidal_step_embedding

    t = tensors["golden.input.diffusion_steps"][:, 0]
    sin = sinusoidal_step_embedding(t, 128, torch.float64)
    assert _rel(sin, tensors["golden.diffusion_step_embed_sinusoidal"]) < 1e-12
    with torch.no_grad():
        assert _rel(model.embed(t), tensors["golden.diffusion_step_embed_mlp"]) < 1e-12


@pytest.mark.parametrize("case", ("uncond_v", "ckpt_uncond_v"))
def test_golden_layer_activations(golden, converted, case):
    """Every official layer's output (d_layers, c_layers, u_layers order; up-path values before the skip)."""
    tensors, _ = golden(case)
    model = converted(case)
    layers = []  # our modules in the official d_layers / c_layers / u_layers order
    for tier in model.down:
        layers += [("d", b) for b in tier.blocks] + [("d", tier.pool)]
    layers += [("c", b) for b in model.center]
    for tier in reversed(model.up):
        layers += [("u", tier.pool)] + [("u", b) for b in tier.blocks]
    acts: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: acts.append(out)) for _, m in layers]
    with torch.no_grad():
        model(tensors["golden.input.audio"], tensors["golden.input.diffusion_steps"])
    for h in hooks:
        h.remove()
    counters = {"d": 0, "c": 0, "u": 0}
    for (kind, _), act in zip(layers, acts):
        name = f"golden.act.{kind}_layers.{counters[kind]}"
        counters[kind] += 1
        assert _rel(act.transpose(1, 2), tensors[name]) < 1e-9, name  # ours (B, L, H), official (B, H, L)


def test_golden_master_s4_kernel(golden, converted):
    """The first block's bidirectional kernel (forward, backward) from the de-tilded canonical C."""
    tensors, _ = golden("uncond_v")
    block = converted("uncond_v").down[0].blocks[0]
    with torch.no_grad():
        K = block.s4.kernel(256)  # (2, H, L)
    assert _rel(K, tensors["golden.act.first_block.s4_kernel"]) < 1e-9


def test_golden_paper_s4_kernels(golden, converted):
    tensors, _ = golden("ckpt_uncond_v")
    s4 = converted("ckpt_uncond_v").down[0].blocks[0].s4
    with torch.no_grad():
        assert _rel(s4.kernel(), tensors["golden.act.first_block.s4_kernel_fwd"]) < 1e-6  # float32 kernels
        assert _rel(s4.kernel2(), tensors["golden.act.first_block.s4_kernel_bwd"]) < 1e-6


def test_golden_mel_conditioning(golden, converted):
    tensors, _ = golden("cond_v")
    block = converted("cond_v").down[0].blocks[0]
    mel = tensors["golden.input.mel_spec"]  # (B, 80, 16), hop 16
    with torch.no_grad():
        y = mel.unsqueeze(1)
        y = F.leaky_relu(block.mel_upsample.convs[0](y), 0.4)
        pre = block.mel_upsample.convs[1](y)  # (B, 1, 80, 256)
        term = block.mel_term(mel, 256)  # (B, L, H)
    assert _rel(pre, tensors["golden.act.first_block.mel_upsample_conv2_preact"]) < 1e-12
    assert _rel(term.transpose(1, 2), tensors["golden.act.first_block.mel_conv"]) < 1e-12


def test_golden_training_loss(golden, converted):
    tensors, _ = golden("uncond_v")
    model = converted("uncond_v")
    t = tensors["golden.loss.diffusion_steps"].reshape(-1)
    with torch.no_grad():
        loss = model.training_loss(tensors["golden.loss.x0"], t=t, noise=tensors["golden.loss.z"])
    assert abs(float(loss) - float(tensors["golden.loss.value"])) < 1e-9 * float(tensors["golden.loss.value"])


def test_master_canonical_checkpoint_equals_tilded(golden, converted):
    """A master state dict before its first forward (canonical C, L = 0) converts to the same model as the
    stored C~ at L = l_max (the truncation correction is undone exactly)."""
    tensors, meta = golden("uncond_v")
    sd = _official(tensors)
    for key, value in tensors.items():
        if key.startswith("golden.pre_forward."):
            sd[key[len("golden.pre_forward."):]] = value
    assert int(sd["d_layers.0.layer.kernel.kernel.L"]) == 0
    fresh = DiffWaveSaShiMi.from_diffwave_sashimi(sd, meta["config"])
    ref = converted("uncond_v")
    for k, v in ref.state_dict().items():
        assert torch.allclose(fresh.state_dict()[k], v, rtol=1e-9, atol=1e-12), k


# ---- sampling ----------------------------------------------------------------------------------------------
def test_golden_sampler_trajectory(golden, converted):
    """The official 200-step ancestral trajectory through the converted network, given its draws."""
    g, meta = golden("sampler_T200_uncond_v")
    model = converted("uncond_v")
    sched = model.scheduler()
    assert torch.allclose(sched.alphas_cumprod, g["golden.Alpha_bar"], rtol=1e-12, atol=0)
    noises = [g["golden.x_T"][:, 0]] + [g["golden.z"][i][:, 0] for i in range(meta["T"] - 1)]
    x0 = model.generate(batch_size=meta["B"], num_samples=meta["L"], noises=noises, progress=False)
    assert _rel(x0, g["golden.x_0"][:, 0]) < 1e-9


def _count_kernel_computations(monkeypatch) -> dict[str, int]:
    counts = {"master": 0, "paper": 0}
    real_ssm_kernel = s4kernel_module.ssm_kernel
    real_compute = PaperS4Kernel._compute

    def counting_ssm_kernel(*args, **kwargs):
        counts["master"] += 1
        return real_ssm_kernel(*args, **kwargs)

    def counting_compute(self):
        counts["paper"] += 1
        return real_compute(self)

    monkeypatch.setattr(s4kernel_module, "ssm_kernel", counting_ssm_kernel)
    monkeypatch.setattr(PaperS4Kernel, "_compute", counting_compute)
    return counts


@pytest.mark.parametrize("layout", ("master", "paper"))
def test_kernels_computed_once_per_generate(monkeypatch, layout):
    torch.manual_seed(0)
    model = DiffWaveSaShiMi(_tiny(s4_layout=layout))
    n_blocks = len(model.diffwave_blocks())
    per_forward = n_blocks * (1 if layout == "master" else 2)
    counts = _count_kernel_computations(monkeypatch)
    x = torch.randn(2, 64)
    with torch.no_grad():
        model(x, torch.tensor([1, 2]))
        model(x, torch.tensor([3, 4]))
    assert counts[layout] == 2 * per_forward  # without the cache: every forward recomputes every kernel
    counts[layout] = 0
    model.generate(batch_size=2, steps=7, progress=False, generator=torch.Generator().manual_seed(0))
    assert counts[layout] == per_forward  # 7 denoising steps, each kernel once
    counts[layout] = 0
    model.generate(batch_size=2, steps=7, progress=False, generator=torch.Generator().manual_seed(0))
    assert counts[layout] == per_forward  # once per call: the cache does not outlive generate()


def test_kernel_cache_bypassed_with_autograd(monkeypatch):
    torch.manual_seed(0)
    model = DiffWaveSaShiMi(_tiny())
    with torch.no_grad():
        model.output_proj.weight.normal_()  # a fresh model's zero output layer would stop every gradient
    counts = _count_kernel_computations(monkeypatch)
    x = torch.randn(1, 64)
    with cached_kernels(model):
        model.training_loss(x).backward()
        model.training_loss(x).backward()
    assert counts["master"] == 2 * len(model.diffwave_blocks())
    assert model.down[0].blocks[0].s4.kernel.C.grad.abs().sum() > 0


def test_generate_reproducible_and_seed_dependent():
    torch.manual_seed(0)
    model = DiffWaveSaShiMi(_tiny())
    with torch.no_grad():
        model.output_proj.weight.normal_(0, 0.1)
    a = model.generate(batch_size=2, steps="fast", progress=False, generator=torch.Generator().manual_seed(3))
    b = model.generate(batch_size=2, steps="fast", progress=False, generator=torch.Generator().manual_seed(3))
    c = model.generate(batch_size=2, steps="fast", progress=False, generator=torch.Generator().manual_seed(4))
    assert a.shape == (2, 64) and torch.equal(a, b) and not torch.allclose(a, c)
    gen = torch.Generator().manual_seed(3)
    d = model.generate(batch_size=2, steps=5, sampler="ddim", progress=False, generator=gen)
    assert torch.isfinite(d).all()


def test_generate_equals_manual_loop():
    """generate() with cached kernels equals the scheduler's update applied to plain forward calls."""
    torch.manual_seed(1)
    model = DiffWaveSaShiMi(_tiny(n_mels=4, mel_upsample=(2, 2))).double()
    with torch.no_grad():
        model.output_proj.weight.normal_(0, 0.1)
    mel = torch.randn(1, 4, 16, dtype=torch.float64)
    plan = model.scheduler().inference_schedule(5, "ddpm")
    gen = torch.Generator().manual_seed(0)
    noises = [torch.randn(2, 64, generator=gen, dtype=torch.float64) for _ in range(plan.num_noises)]
    out = model.generate(batch_size=2, mel=mel, steps=5, noises=noises, progress=False)
    x, k = noises[0], 1
    with torch.no_grad():
        for i in range(len(plan)):
            eps = model(x, plan.timesteps[i].expand(2), mel)
            z = None
            if plan.needs_noise(i):
                z, k = noises[k], k + 1
            x = plan.step(i, eps, x, z)
    assert torch.allclose(out, x, rtol=0, atol=1e-12)


# ---- configs and parameter counts -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "master", "paper"),
    [("sc09", 23_470_971, 22_964_091), ("sc09-small", 7_734_267, 7_480_827), ("vocoder", 3_153_459, 3_026_739)],
)
def test_preset_parameter_counts(name, master, paper):
    for layout, expected in (("master", master), ("paper", paper)):
        model = DiffWaveSaShiMi(DiffWaveSaShiMiConfig.preset(name, s4_layout=layout))
        assert sum(p.numel() for p in model.parameters()) == expected, (name, layout)


def test_config_round_trip_and_validation():
    cfg = DiffWaveSaShiMiConfig.preset("vocoder")
    d = cfg.to_dict()
    assert d["model_type"] == "diffwave-sashimi" and d["config_version"] == 1
    assert DiffWaveSaShiMiConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown DiffWaveSaShiMiConfig field"):
        DiffWaveSaShiMiConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="model type"):
        DiffWaveSaShiMiConfig.from_dict({**d, "model_type": "sashimi-lm"})
    with pytest.raises(ValueError, match="segment_length"):
        DiffWaveSaShiMiConfig(segment_length=1001)
    with pytest.raises(ValueError, match="mel_alignment"):
        DiffWaveSaShiMiConfig(mel_alignment="shifted")
    with pytest.raises(TypeError, match="d_model"):
        DiffWaveSaShiMiConfig(d_model=32.0)
    with pytest.raises(ValueError, match="unknown preset"):
        DiffWaveSaShiMiConfig.preset("ljspeech")


def test_fresh_model_outputs_zero_and_save_load(tmp_path):
    torch.manual_seed(0)
    model = DiffWaveSaShiMi(_tiny(n_mels=4, mel_upsample=(2, 2)))
    x, t, mel = torch.randn(2, 64), torch.tensor([0, 19]), torch.randn(2, 4, 16)
    with torch.no_grad():
        assert torch.equal(model(x, t, mel), torch.zeros(2, 64))  # zero-initialised output layer
        model.output_proj.weight.normal_()
        y = model(x, t, mel)
    model.save_pretrained(tmp_path / "m")
    loaded = DiffWaveSaShiMi.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(x, t, mel), y)


# ---- mel alignment ----------------------------------------------------------------------------------------
def test_mel_alignment_per_tier():
    """'aligned': a tier-r block sees the full-rate mel averaged over windows of r samples; 'truncated': the
    first L/r samples of it (the official quirk). Only the aligned lower tiers see the end of the mel."""
    torch.manual_seed(0)
    cfg = _tiny(n_mels=4, mel_upsample=(2, 2))
    aligned = DiffWaveSaShiMi(cfg)
    cfg_t = DiffWaveSaShiMiConfig.from_dict({**cfg.to_dict(), "mel_alignment": "truncated"})
    truncated = DiffWaveSaShiMi(cfg_t)
    truncated.load_state_dict(aligned.state_dict())
    mel = torch.randn(1, 4, 16)
    block_a, block_t = aligned.center[0], truncated.center[0]  # rate 4: L = 16
    assert isinstance(block_a, DiffWaveBlock) and block_a.rate == 4
    with torch.no_grad():
        full = block_a.mel_upsample(mel)  # (1, 4, 64)
        expect_a = block_a.mel_proj(full.reshape(1, 4, 16, 4).mean(-1).transpose(1, 2))
        expect_t = block_a.mel_proj(full[..., :16].transpose(1, 2))
        assert torch.allclose(block_a.mel_term(mel, 16), expect_a, atol=1e-6)
        assert torch.allclose(block_t.mel_term(mel, 16), expect_t, atol=1e-6)
        late = mel.clone()
        late[..., -4:] += 1.0  # change only the last quarter of the spectrogram
        assert not torch.allclose(block_a.mel_term(late, 16), block_a.mel_term(mel, 16))
        assert torch.equal(block_t.mel_term(late, 16), block_t.mel_term(mel, 16))  # truncated: never sees it
        top_a, top_t = aligned.down[0].blocks[0], truncated.down[0].blocks[0]  # rate 1: both the same
        assert torch.equal(top_a.mel_term(mel, 64), top_t.mel_term(mel, 64))


# ---- bad input ---------------------------------------------------------------------------------------------
def test_bad_inputs():
    torch.manual_seed(0)
    voc = DiffWaveSaShiMi(_tiny(n_mels=4, mel_upsample=(2, 2)))
    x, t, mel = torch.randn(2, 64), torch.tensor([0, 1]), torch.randn(2, 4, 16)
    with pytest.raises(ValueError, match="n_mels=4"):
        voc(x, t, torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match="at least 16 frames"):
        voc(x, t, torch.randn(2, 4, 15))
    with pytest.raises(ValueError, match="mel spectrogram is required"):
        voc(x, t)
    with pytest.raises(ValueError, match="divisible by the product of the pooling factors 4"):
        voc(torch.randn(2, 62), t, mel)
    for bad_t in (torch.tensor([0, 20]), torch.tensor([-1, 0]), torch.tensor([0.0, 20.0])):
        with pytest.raises(ValueError, match=r"t must lie in \[0, num_train_steps=20\)"):
            voc(x, bad_t, mel)
    assert torch.isfinite(voc(x, torch.tensor([0.0, 19.5]), mel)).all()  # fractional steps inside [0, T)
    with pytest.raises(TypeError, match="floating tensor"):
        voc(x.long(), t, mel)
    with pytest.raises(TypeError, match="float64 but the model is torch.float32"):
        voc(x.double(), t, mel)
    with pytest.raises(TypeError, match="integer or floating diffusion steps"):
        voc(x, torch.tensor([True, False]), mel)
    with pytest.raises(ValueError, match=r"shape \(B,\)=\(2,\)"):
        voc(x, torch.tensor([0, 1, 2]), mel)
    unc = DiffWaveSaShiMi(_tiny())
    with pytest.raises(ValueError, match="unconditional"):
        unc(x, t, mel)
    with pytest.raises(ValueError, match="num_samples must be a positive multiple"):
        unc.generate(num_samples=30, progress=False)
    paper = DiffWaveSaShiMi(_tiny(s4_layout="paper"))
    with pytest.raises(ValueError, match="exceeds segment_length=64"):
        paper(torch.randn(1, 128), torch.tensor([0]))


@pytest.mark.slow
def test_tiny_model_learns_and_samples_in_range():
    """A tiny model overfits a few synthetic clips: its denoising loss falls well below the initial one."""
    torch.manual_seed(0)
    model = DiffWaveSaShiMi(_tiny(d_model=16))
    n = torch.arange(64)
    clips = torch.stack([0.5 * torch.sin(2 * math.pi * f * n / 64) for f in (2, 3, 5, 7)])  # (4, 64)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def eval_loss() -> float:
        g = torch.Generator().manual_seed(123)
        with torch.no_grad():
            return sum(float(model.training_loss(clips, generator=g)) for _ in range(8)) / 8

    before = eval_loss()
    for _ in range(100):
        opt.zero_grad()
        model.training_loss(clips, generator=gen).backward()
        opt.step()
    after = eval_loss()
    assert after < 0.35 * before, (before, after)
    out = model.generate(batch_size=4, steps="full", progress=False, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all() and out.abs().max() < 3.0


def _tones(freqs: torch.Tensor, length: int, phase: torch.Tensor) -> torch.Tensor:
    """(B, length) 16 kHz tones of amplitude 0.6 at ``freqs`` (B,) Hz and phases (B,) radians."""
    n = torch.arange(length) / 16000
    return 0.6 * torch.sin(2 * math.pi * freqs[:, None] * n + phase[:, None])


def _share(y: torch.Tensor, f: float) -> torch.Tensor:
    """(B,) fraction of the Hann-windowed energy of (B, L) signals within 6 % (and one FFT bin) of f Hz."""
    spec = torch.fft.rfft(y * torch.hann_window(y.shape[-1]), dim=-1).abs() ** 2  # (B, L // 2 + 1)
    freqs = torch.fft.rfftfreq(y.shape[-1], 1 / 16000)
    return spec[:, (freqs - f).abs() <= 0.06 * f + 16000 / y.shape[-1]].sum(-1) / spec.sum(-1)


@pytest.mark.slow
def test_tiny_vocoder_resynthesizes_a_tone_at_the_right_pitch():
    """Copy-synthesis: a tiny vocoder trained briefly on pure tones of random phase (L1 loss, as lmnt) turns the
    mel of a 250 Hz or a 1 kHz tone and N(0, I) into audio at that pitch, not at the other one.

    The schedule (T=50, beta 1e-4 -> 0.2: alpha_bar_T = 0.005) hides a tone in x_T, so the pitch can only come
    from the mel; docs/diffusion.md says why the vocoder preset's schedule and the MSE loss need far longer.
    """
    from sashimi.optim import param_groups
    from sashimi.training.tasks.diffwave import vocoder_mel

    torch.manual_seed(0)
    L, steps, pitches = 256, 1000, torch.tensor([250.0, 1000.0])
    config = DiffWaveSaShiMiConfig(d_model=32, n_layers=2, pool=(4,), d_state=16, n_mels=40,
                                   mel_upsample=(8, 8), segment_length=L, num_train_steps=50, beta_start=1e-4,
                                   beta_end=0.2, sample_rate=16000)
    model = DiffWaveSaShiMi(config)

    def mel_of(f: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        # the mel of the whole (2048-sample) tone, cut to the segment's frames, as a vocoder sees an utterance's
        mel = vocoder_mel(_tones(f, 2048, phase), config)  # (B, 40, 33): the training task's log-mel
        return mel[..., : L // config.hop_length]  # (B, 40, 4)

    opt = torch.optim.Adam(param_groups(model, 2e-3, ssm_lr=1e-3), lr=2e-3)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        f = pitches[torch.randint(2, (32,), generator=g)]  # (32,)
        phase = torch.rand(32, generator=g) * 2 * math.pi
        loss = model.training_loss(_tones(f, L, phase), mel_of(f, phase), loss="l1", generator=g)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay.step()
    model.eval()
    f = pitches.repeat_interleave(4)  # (8,): four samples per pitch, at phases the training never drew exactly
    mel = mel_of(f, torch.linspace(0.3, 5.9, 8))
    y = model.generate(mel=mel, num_samples=L, generator=torch.Generator().manual_seed(1), progress=False, clip=True)
    at_250, at_1000 = _share(y, 250.0), _share(y, 1000.0)  # (8,)
    assert (at_250[:4] > 0.8).all() and (at_1000[:4] < 0.05).all(), (at_250, at_1000)
    assert (at_1000[4:] > 0.8).all() and (at_250[4:] < 0.05).all(), (at_250, at_1000)


def test_scheduler_matches_config():
    model = DiffWaveSaShiMi(_tiny())
    sched = model.scheduler()
    ref = DDPMScheduler(20, 1e-4, 0.2)
    assert torch.equal(sched.betas, ref.betas)
