"""WaveNet baseline: causality and receptive field, the paper's sizes, shapes / dtypes, config and input
validation, the token interface it shares with SaShiMiLM, and a tiny model overfitting a plucked string."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sashimi.audio import quantize
from sashimi.data.synth import karplus_strong
from sashimi.models.baselines.wavenet import (
    PAPER_WRAPPER_PARAMETERS,
    WaveNet,
    WaveNetConfig,
    wavenet_paper,
)
from sashimi.models.lm import SaShiMiLM, SaShiMiLMConfig


def tiny(dtype=torch.float64, seed=0, **kw) -> WaveNet:
    torch.manual_seed(seed)
    args = dict(n_layers=6, dilation_cycle=3, residual_channels=8, dilation_channels=8, skip_channels=16,
                end_channels=16)
    args.update(kw)
    return WaveNet(WaveNetConfig(**args)).to(dtype)


def input_gradient_support(model: WaveNet, L: int, t: int) -> torch.Tensor:
    """Indices s of the input positions whose embedding the logits at position t depend on."""
    tokens = torch.randint(0, model.config.n_classes, (1, L), generator=torch.Generator().manual_seed(t))
    captured = {}

    def hook(_mod, _inp, out):
        out.retain_grad()
        captured["emb"] = out

    handle = model.embed.register_forward_hook(hook)
    try:
        logits = model(tokens)
    finally:
        handle.remove()
    # a random projection of the logits: no cancellation between classes
    w = torch.randn(logits.shape[-1], generator=torch.Generator().manual_seed(1), dtype=logits.dtype)
    (logits[0, t] @ w).backward()
    g = captured["emb"].grad[0].abs().sum(-1)  # (L,)
    return torch.nonzero(g > 0).flatten()


# ---- causality and receptive field -------------------------------------------------------------------
@pytest.mark.parametrize("kernel_size", [2, 3])
def test_receptive_field_value(kernel_size):
    cfg = WaveNetConfig(n_layers=7, dilation_cycle=3, kernel_size=kernel_size)
    assert cfg.dilations == [1, 2, 4, 1, 2, 4, 1]
    assert cfg.receptive_field == 1 + (kernel_size - 1) * 15
    # the paper's configs: 4 blocks of dilations 1..512, the official code's receptive field (and the
    # left padding of its data pipeline)
    assert wavenet_paper(512).receptive_field == wavenet_paper(1024).receptive_field == 4093


@pytest.mark.parametrize("kernel_size", [2, 3])
def test_logits_depend_exactly_on_the_receptive_field(kernel_size):
    model = tiny(kernel_size=kernel_size)
    rf = model.receptive_field  # 15 (k=2) or 29 (k=3)
    L = 80
    for t in (0, 5, rf - 1, 50, L - 1):
        support = input_gradient_support(model, L, t).tolist()
        assert support == list(range(max(0, t - rf + 1), t + 1)), (t, support)


def test_causality_by_perturbation_in_target_coordinates():
    # with the shift-right convention, changing target q_s changes the logits of positions
    # s + 1 .. s + receptive_field and nothing else (in particular not position s itself)
    model = tiny()
    rf = model.receptive_field
    L, s = 64, 20
    q = torch.randint(0, 256, (1, L), generator=torch.Generator().manual_seed(3))
    q2 = q.clone()
    q2[0, s] = (q[0, s] + 101) % 256
    with torch.no_grad():
        a = model(model.shift_right(q))[0]
        b = model(model.shift_right(q2))[0]
    changed = (a - b).abs().amax(-1) > 0
    assert not changed[: s + 1].any()
    assert changed[s + 1 : s + rf + 1].all()
    assert not changed[s + rf + 1 :].any()


# ---- the paper's sizes --------------------------------------------------------------------------------
@pytest.mark.parametrize("skip,expected,paper", [(512, 2_540_288, 2.67e6), (1024, 4_113_152, 4.24e6)])
def test_paper_sizes(skip, expected, paper):
    cfg = wavenet_paper(skip)
    assert (cfg.n_layers, cfg.residual_channels, cfg.dilation_channels, cfg.end_channels) == (40, 64, 64, 512)
    model = WaveNet(cfg)
    n = model.num_parameters()
    assert n == expected
    # the paper's table counts the official framework's Embedding(256, 256) + Linear(256, 256) wrapper
    assert PAPER_WRAPPER_PARAMETERS == 131_328
    assert round((n + PAPER_WRAPPER_PARAMETERS) / 1e4) * 1e4 == paper
    # by hand: 40 x (dilated conv 2*64*64*2 + residual/skip 64*(64+S)) + embedding + output convs
    by_hand = 40 * (2 * 64 * 64 * 2 + 64 * (64 + skip)) + 256 * 64 + (skip * 512 + 512) + (512 * 256 + 256)
    assert n == by_hand
    assert len(model.layers) == 40 and [lay.conv.dilation[0] for lay in model.layers][:11] == [
        1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1]
    assert all(lay.conv.bias is None and lay.out.bias is None for lay in model.layers)


# ---- shapes, dtypes, validation -------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bits", [8, 4])
def test_output_shapes_and_dtypes(dtype, bits):
    model = tiny(dtype, bits=bits)
    n = 2**bits
    for L in (1, 7, 33):
        for tok_dtype in (torch.int64, torch.int32, torch.uint8):
            tokens = torch.randint(0, n, (3, L), generator=torch.Generator().manual_seed(L)).to(tok_dtype)
            out = model(tokens)
            assert out.shape == (3, L, n) and out.dtype == dtype
            assert torch.isfinite(out).all()
    nll = model.log_likelihood(torch.randint(0, n, (2, 16)))
    # float64 models score in float64
    assert nll.shape == (2,) and nll.dtype == torch.promote_types(dtype, torch.float32)


def test_config_validation():
    with pytest.raises(ValueError, match="n_layers"):
        WaveNetConfig(n_layers=0)
    with pytest.raises(ValueError, match="skip_channels"):
        WaveNetConfig(skip_channels=True)
    with pytest.raises(ValueError, match="kernel_size"):
        WaveNetConfig(kernel_size=1.5)
    with pytest.raises(ValueError, match="end_channels"):
        wavenet_paper(1024, end_channels=-1)
    with pytest.raises(ValueError, match="bits"):
        WaveNetConfig(bits=17)
    with pytest.raises(ValueError, match="quantization"):
        WaveNetConfig(quantization="alaw")
    with pytest.raises(TypeError, match="bias"):
        WaveNetConfig(bias=1)
    with pytest.raises(ValueError, match="unknown WaveNetConfig field"):
        WaveNetConfig.from_dict({"n_layers": 4, "d_model": 64})
    with pytest.raises(TypeError, match="WaveNetConfig"):
        WaveNet(SaShiMiLMConfig())
    cfg = wavenet_paper(1024)
    assert WaveNetConfig.from_dict(cfg.to_dict()) == cfg
    assert WaveNet(cfg.to_dict()).config == cfg


def test_input_validation():
    model = tiny()
    with pytest.raises(TypeError, match="tensor"):
        model([[1, 2, 3]])
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"shape \(B, L\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="L >= 1"):
        model(torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range"):
        model(torch.tensor([[0, 256]]))
    with pytest.raises(ValueError, match="out of range"):
        tiny(bits=4)(torch.tensor([[16]]))
    with pytest.raises(TypeError, match="tensor"):
        model.log_likelihood([0.1, 0.2])


# ---- the interface shared with SaShiMiLM --------------------------------------------------------
def _tiny_sashimi() -> SaShiMiLM:
    torch.manual_seed(0)
    return SaShiMiLM(SaShiMiLMConfig(d_model=8, n_layers=1, d_state=8)).double()


def test_shared_token_interface_with_sashimi():
    q = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(5))
    for model in (tiny(), _tiny_sashimi()):
        x = model.shift_right(q)
        assert x[:, 0].eq(model.config.zero_token).all() and torch.equal(x[:, 1:], q[:, :-1])
        logits = model(x)
        assert logits.shape == (2, 64, model.config.n_classes)
        bits = F.cross_entropy(logits.transpose(1, 2), q, reduction="none").mean(1) / math.log(2)
        assert torch.allclose(model.log_likelihood(q).double(), bits, rtol=1e-5)
        assert model.num_parameters() == sum(p.numel() for p in model.parameters())
        assert type(model.config).from_dict(model.config.to_dict()) == model.config


def test_log_likelihood_of_waveform_quantizes_like_the_tokens():
    for quantization in ("mu-law", "linear"):
        model = tiny(quantization=quantization)
        wav = 0.8 * torch.sin(torch.linspace(0, 20, 100)).unsqueeze(0)
        q = quantize(wav, bits=8, quantization=quantization)
        assert torch.equal(model.log_likelihood(wav), model.log_likelihood(q))
        assert torch.equal(model.log_likelihood(wav[0]), model.log_likelihood(q))


# ---- learning -------------------------------------------------------------------------------------
def test_tiny_wavenet_overfits_a_plucked_string():
    wav = karplus_strong(440.0, 0.128, sample_rate=16000, seed=0)  # 2048 samples
    q = quantize(wav, bits=8, quantization="mu-law").unsqueeze(0)  # (1, 2048)
    counts = torch.bincount(q.flatten(), minlength=256).double()
    p = counts[counts > 0] / counts.sum()
    unigram = float(-(p * p.log2()).sum())  # bits per sample of the best context-free model
    model = tiny(torch.float32, residual_channels=16, dilation_channels=16, skip_channels=32, end_channels=32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = model.shift_right(q)
    initial = float(model.log_likelihood(q))
    best = initial
    for _ in range(150):
        loss = F.cross_entropy(model(x).transpose(1, 2), q)
        opt.zero_grad()
        loss.backward()
        opt.step()
        best = min(best, loss.item() / math.log(2))
        if best < unigram / 2:
            break
    final = float(model.log_likelihood(q))
    assert initial > 7.0  # about log2(256) at init
    assert final < unigram / 2, (initial, final, unigram)  # unigram: about 7.2 bits


@pytest.mark.parametrize("bias", [False, True])
def test_forward_equals_layer_by_layer_skip_sum(bias):
    # the forward regroups the skip convolutions into one product; it must equal the official
    # accumulation of each layer's (residual, skip) outputs
    model = tiny(bias=bias)
    tokens = torch.randint(0, 256, (2, 50), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        x = model.embed(tokens).transpose(1, 2)
        skip = 0
        for layer in model.layers:
            x, s = layer(x)
            skip = skip + s
        expected = model.head2(F.relu(model.head1(F.relu(skip)))).transpose(1, 2)
        got = model(tokens)
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)
