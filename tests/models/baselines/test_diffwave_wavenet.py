"""DiffWave's WaveNet baseline: official parameter counts, the shared pieces against the official golden tensors,
the receptive field, the interface and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sashimi.generation.diffusion import sample
from sashimi.layers.embeddings import MelUpsampler, sinusoidal_step_embedding
from sashimi.losses.denoising import denoising_loss
from sashimi.models import load_model
from sashimi.models.baselines import DiffWaveWaveNet, DiffWaveWaveNetConfig
from sashimi.models.baselines.diffwave_wavenet import _conv_wn


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "count"), [("sc09", 24_071_681), ("sc09-small", 6_827_393), ("ljspeech", 3_098_129)])
def test_official_parameter_counts(name, count):
    with torch.device("meta"):
        model = DiffWaveWaveNet(DiffWaveWaveNetConfig.preset(name))
    assert n_params(model) == count


def tiny(**kw) -> DiffWaveWaveNet:
    torch.manual_seed(0)
    cfg = DiffWaveWaveNetConfig(residual_channels=8, skip_channels=12, n_layers=6, dilation_cycle=3, **kw)
    model = DiffWaveWaveNet(cfg).double()
    nn.init.normal_(model.zero_conv.weight, std=0.3)  # a fresh model outputs zeros: make every layer matter
    return model


def test_fresh_model_outputs_zero():
    model = DiffWaveWaveNet(DiffWaveWaveNetConfig(residual_channels=8, skip_channels=8, n_layers=3))
    assert torch.equal(model(torch.randn(2, 50), torch.tensor([3, 7])), torch.zeros(2, 50))


def test_step_embedding_equals_official(load_case):
    g, _ = load_case("diffwave/cond_v")
    t = g["golden.input.diffusion_steps"][:, 0]
    sinusoid = sinusoidal_step_embedding(t.double(), 128)
    torch.testing.assert_close(sinusoid, g["golden.diffusion_step_embed_sinusoidal"], rtol=0, atol=1e-12)
    model = DiffWaveWaveNet(DiffWaveWaveNetConfig(residual_channels=8, skip_channels=8, n_layers=1)).double()
    with torch.no_grad():
        for name in ("fc1", "fc2"):
            getattr(model.embed, name).weight.copy_(g[f"fc_t{name[-1]}.weight"])
            getattr(model.embed, name).bias.copy_(g[f"fc_t{name[-1]}.bias"])
        e = model.embed(t)
    torch.testing.assert_close(e, g["golden.diffusion_step_embed_mlp"], rtol=1e-12, atol=1e-12)


def test_mel_upsampler_and_projection_equal_official(load_case):
    """The per-layer mel path is the official one (DiffWave + SaShiMi shares it): the first block of ``cond_v``."""
    g, meta = load_case("diffwave/cond_v")
    strides = tuple(meta["config"]["mel_upsample"])
    up, proj = MelUpsampler(strides).double(), _conv_wn(80, 16).double()
    prefix = "d_layers.0."
    state = {}
    for i in range(len(strides)):
        src = f"{prefix}upsample_conv2d.{i}."
        state[f"convs.{i}.parametrizations.weight.original0"] = g[src + "weight_g"]
        state[f"convs.{i}.parametrizations.weight.original1"] = g[src + "weight_v"]
        state[f"convs.{i}.bias"] = g[src + "bias"]
    up.load_state_dict(state)
    proj.load_state_dict(
        {
            "parametrizations.weight.original0": g[prefix + "mel_conv.conv.weight_g"],
            "parametrizations.weight.original1": g[prefix + "mel_conv.conv.weight_v"],
            "bias": g[prefix + "mel_conv.conv.bias"],
        }
    )
    L = g["golden.input.audio"].shape[-1]
    with torch.no_grad():
        out = proj(up(g["golden.input.mel_spec"]))[..., :L]
    torch.testing.assert_close(out, g["golden.act.first_block.mel_conv"], rtol=1e-10, atol=1e-12)


def test_matches_a_direct_transcription_of_the_official_forward():
    """Float64 reference written from the spec with separate residual/skip convolutions and explicit layer loops."""
    model = tiny(mel_upsample=(2, 2), n_mels=5)
    torch.manual_seed(1)
    x, mel, t = (
        torch.randn(2, 1, 40, dtype=torch.float64),
        torch.randn(2, 5, 10, dtype=torch.float64),
        torch.tensor([4, 150]),
    )
    with torch.no_grad():
        got = model(x, t, mel)
        f = nn.functional
        half = 64
        freqs = torch.tensor([10 ** (-4 * j / 63) for j in range(half)], dtype=torch.float64)
        emb = torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], 1)
        e = f.silu(model.embed.fc2(f.silu(model.embed.fc1(emb))))
        h = f.relu(model.init_conv(x))
        skip = 0
        for n, layer in enumerate(model.layers):
            d = 2 ** (n % 3)
            y = h + layer.fc_t(e)[:, :, None]
            y = f.conv1d(y, layer.dilated_conv.weight, layer.dilated_conv.bias, padding=d, dilation=d)
            m = mel[:, None]
            for conv in layer.upsample.convs:
                m = f.leaky_relu(conv(m), 0.4)
            y = y + layer.mel_conv(m[:, 0])[..., :40]
            out = torch.tanh(y[:, :8]) * torch.sigmoid(y[:, 8:])
            h = (h + layer.res_conv(out)) * math.sqrt(0.5)
            skip = skip + layer.skip_conv(out)
        want = model.zero_conv(f.relu(model.final_conv(skip * math.sqrt(1 / 6))))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)


def test_receptive_field_is_the_sum_of_dilations_on_each_side():
    model = tiny()
    R = sum(model.config.dilations)  # kernel 3, "same" padding: d samples on each side per layer
    x = torch.randn(1, 120, dtype=torch.float64, requires_grad=True)
    model(x, torch.tensor([10]))[0, 60].backward()
    nz = (x.grad[0] != 0).nonzero()[:, 0]
    assert nz.min() == 60 - R and nz.max() == 60 + R


def test_interface_shapes_and_steps():
    model = tiny()
    x = torch.randn(3, 64, dtype=torch.float64)
    t = torch.tensor([0, 5, 198])
    y = model(x, t)
    assert y.shape == (3, 64) and y.abs().sum() > 0
    torch.testing.assert_close(model(x[:, None], t), y[:, None], rtol=0, atol=0)
    torch.testing.assert_close(model(x, t.double()), y, rtol=0, atol=0)  # fractional-capable float steps
    torch.testing.assert_close(model(x[:1], 5), model(x[:1], torch.tensor([5])), rtol=0, atol=0)
    assert not torch.allclose(model(x, t + 1), y)


def test_generate_is_the_shared_sampler_with_mel_computed_once():
    voc = tiny(mel_upsample=(2, 2), n_mels=5, num_train_steps=50, beta_end=0.05, segment_length=32)
    mel = torch.randn(2, 5, 8, dtype=torch.float64)
    calls = []
    for layer in voc.layers:
        layer.upsample.register_forward_hook(lambda *args: calls.append(1))
    got = voc.generate(mel=mel, steps="fast", generator=torch.Generator().manual_seed(0), progress=False)
    assert got.shape == (2, 32) and torch.isfinite(got).all()
    assert len(calls) == voc.config.n_layers  # once per layer per call, not once per step
    want = sample(
        lambda x, t: voc(x, t, mel), voc.scheduler(), (2, 32), "fast",
        generator=torch.Generator().manual_seed(0), dtype=torch.float64, progress=False,
    )  # fmt: skip
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    again = voc.generate(mel=mel, steps="fast", generator=torch.Generator().manual_seed(0), progress=False)
    torch.testing.assert_close(again, got, rtol=0, atol=0)
    uncond = tiny(num_train_steps=20, segment_length=24)
    out = uncond.generate(3, steps=5, sampler="ddim", clip=True, progress=False)
    assert out.shape == (3, 24) and out.abs().max() <= 1 and uncond.training


def test_training_loss_is_the_denoising_loss():
    model = tiny()
    x0 = torch.randn(2, 40, dtype=torch.float64)
    a = model.training_loss(x0, generator=torch.Generator().manual_seed(5), loss="l1")
    b = denoising_loss(model, x0, model.scheduler(), loss="l1", generator=torch.Generator().manual_seed(5))
    assert a == b and a.requires_grad
    assert model.scheduler().num_train_steps == 200
    assert DiffWaveWaveNet(DiffWaveWaveNetConfig.preset("ljspeech")).scheduler().betas[-1] == 0.05


def test_save_and_load_through_the_registry(tmp_path):
    model = tiny(mel_upsample=(2, 2), n_mels=5)
    model.save_pretrained(tmp_path / "voc")
    loaded = load_model(tmp_path / "voc")
    assert type(loaded) is DiffWaveWaveNet and loaded.config == model.config
    x, mel = torch.randn(2, 32, dtype=torch.float64), torch.randn(2, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(loaded(x, torch.tensor([3, 9]), mel), model(x, torch.tensor([3, 9]), mel))
    assert "DiffWave WaveNet" in (tmp_path / "voc" / "README.md").read_text()


def test_config_round_trip_and_validation():
    cfg = DiffWaveWaveNetConfig.preset("ljspeech")
    assert DiffWaveWaveNetConfig.from_dict(cfg.to_dict()) == cfg and cfg.hop_length == 256
    assert DiffWaveWaveNetConfig.from_dict(DiffWaveWaveNetConfig().to_dict()).unconditional
    assert cfg.to_dict()["model_type"] == "diffwave-wavenet" and cfg.to_dict()["mel_upsample"] == [16, 16]
    with pytest.raises(ValueError, match="unknown DiffWaveWaveNetConfig field"):
        DiffWaveWaveNetConfig.from_dict({"channels": 3})
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        DiffWaveWaveNetConfig(kernel_size=2)
    with pytest.raises(ValueError, match="n_layers must be a positive int"):
        DiffWaveWaveNetConfig(n_layers=0)
    with pytest.raises(ValueError, match="mel_upsample must be None or a list of even strides"):
        DiffWaveWaveNetConfig(mel_upsample=(3,))
    with pytest.raises(ValueError, match="need 0 < beta_start <= beta_end < 1"):
        DiffWaveWaveNetConfig(beta_end=1.0)
    with pytest.raises(ValueError, match="unknown preset"):
        DiffWaveWaveNetConfig.preset("sc10")


def test_bad_input():
    model = tiny()
    voc = tiny(mel_upsample=(2, 2), n_mels=5)
    x = torch.zeros(2, 16, dtype=torch.float64)
    t = torch.tensor([1, 2])
    with pytest.raises(TypeError, match="x must be a floating-point"):
        model(x.long(), t)
    with pytest.raises(ValueError, match=r"x must have shape \(B, L\) or \(B, 1, L\)"):
        model(torch.zeros(2, 2, 16), t)
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        model(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 200\)"):
        model(x, torch.tensor([0, 200]))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 200\)"):
        model(x, torch.tensor([-0.5, 3.0]))
    with pytest.raises(ValueError, match="unconditional: mel must be None"):
        model(x, t, torch.zeros(2, 80, 4))
    with pytest.raises(ValueError, match="needs mel"):
        voc(x, t)
    with pytest.raises(ValueError, match=r"mel must have shape \(2 or 1, 5, frames\)"):
        voc(x, t, torch.zeros(2, 80, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="shorter than the audio"):
        voc(x, t, torch.zeros(2, 5, 3, dtype=torch.float64))


@pytest.mark.slow
def test_tiny_model_overfits_a_few_clips_and_samples_in_range():
    """Adam on the denoising loss of two fixed tones: the loss (fixed t and noise) falls well below its start."""
    torch.manual_seed(0)
    model = DiffWaveWaveNet(
        DiffWaveWaveNetConfig(
            residual_channels=16, skip_channels=16, n_layers=4, dilation_cycle=4, num_train_steps=50, beta_end=0.05
        )
    )
    n = torch.arange(64, dtype=torch.float32)
    clips = torch.stack([0.5 * torch.sin(2 * math.pi * n / 16), 0.5 * torch.sin(2 * math.pi * n / 8)])  # (2, 64)
    probe = {"t": torch.tensor([5, 30]), "noise": torch.randn(2, 64, generator=torch.Generator().manual_seed(9))}

    def probe_loss() -> float:
        with torch.no_grad():
            return float(model.training_loss(clips, **probe))

    start = probe_loss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(120):
        loss = model.training_loss(clips.repeat(2, 1), generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert probe_loss() < 0.5 * start  # 150 steps at batch 8 reached 0.32 x
    out = model.generate(2, 64, steps="fast", clip=True, generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.isfinite(out).all() and out.abs().max() <= 1
