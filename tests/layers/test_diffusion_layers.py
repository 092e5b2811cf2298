"""Diffusion conditioning layers (step embedding, mel upsampler), the paper-branch S4 layer and the kernel cache,
each against an independent computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sashimi.layers import S4Block
from sashimi.layers.embeddings import DiffusionStepEmbedding, MelUpsampler, sinusoidal_step_embedding
from sashimi.layers.kernel_cache import cached_kernels
from sashimi.layers.s4_paper import PaperS4Block, paper_fft_nodes


def test_sinusoid_formula():
    t = torch.tensor([0.0, 1.0, 37.5, 199.0], dtype=torch.float64)
    emb = sinusoidal_step_embedding(t, 128).numpy()
    freqs = 10.0 ** (-4.0 * np.arange(64) / 63)  # 10000^(-j/63)
    expect = np.concatenate([np.sin(np.outer(t.numpy(), freqs)), np.cos(np.outer(t.numpy(), freqs))], axis=1)
    np.testing.assert_allclose(emb, expect, rtol=0, atol=1e-12)
    assert sinusoidal_step_embedding(torch.tensor([3, 4]), 16).dtype == torch.float32
    with pytest.raises(ValueError, match="even"):
        sinusoidal_step_embedding(t, 127)


def test_step_embedding_mlp():
    torch.manual_seed(0)
    emb = DiffusionStepEmbedding(16, 32, 8).double()
    t = torch.tensor([2, 5])
    x = sinusoidal_step_embedding(t, 16, torch.float64)
    h = x @ emb.fc1.weight.T + emb.fc1.bias
    h = h * torch.sigmoid(h)
    h = h @ emb.fc2.weight.T + emb.fc2.bias
    assert torch.allclose(emb(t), h * torch.sigmoid(h), atol=1e-14)


def test_mel_upsampler_against_explicit_weight_norm():
    torch.manual_seed(0)
    up = MelUpsampler((4, 2)).double()
    mel = torch.randn(2, 5, 7, dtype=torch.float64)
    y = mel.unsqueeze(1)
    for conv, s in zip(up.convs, (4, 2)):
        g = conv.parametrizations.weight.original0
        v = conv.parametrizations.weight.original1
        w = g * v / v.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
        y = F.leaky_relu(F.conv_transpose2d(y, w, conv.bias, stride=(1, s), padding=(1, s // 2)), 0.4)
    out = up(mel)
    assert out.shape == (2, 5, 7 * 8) and up.factor == 8
    assert torch.allclose(out, y.squeeze(1), atol=1e-14)
    with pytest.raises(ValueError, match="even"):
        MelUpsampler((3, 4))


def test_paper_nodes():
    nodes, z = paper_fft_nodes(16, torch.complex128)
    k = torch.arange(9)
    expect = torch.exp(-2j * math.pi * k.double() / 16)
    assert torch.allclose(nodes, expect, atol=1e-14)
    assert torch.allclose(z[:8], 2 * (1 - expect[:8]) / (1 + expect[:8]), atol=1e-12)


@pytest.mark.parametrize("L", [32, 20])
def test_paper_s4_block_is_its_convolution_sums(L):
    """y = W gelu([sum_{j<=n} k1[j] u[n-j] + D u; sum_{j<=L-1-n} k2[j] u[n+j] + D u]) + b, also for L < l_max."""
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float64)
    try:
        block = PaperS4Block(3, l_max=32, d_state=8)
    finally:
        torch.set_default_dtype(torch.float32)
    x = torch.randn(2, L, 3, dtype=torch.float64)
    with torch.no_grad():
        k1 = block.kernel().double()[:, :L]
        k2 = block.kernel2().double()[:, :L]
        u = x.transpose(1, 2)  # (B, H, L)
        y1 = torch.zeros_like(u)
        y2 = torch.zeros_like(u)
        for n in range(L):
            for j in range(n + 1):
                y1[..., n] += k1[:, j] * u[..., n - j]
            for j in range(L - n):
                y2[..., n] += k2[:, j] * u[..., n + j]
        D = block.D.unsqueeze(-1)
        y = torch.cat([y1 + D * u, y2 + D * u], dim=1)
        expect = F.gelu(y).transpose(1, 2) @ block.output_linear.weight.T + block.output_linear.bias
        assert torch.allclose(block(x), expect, atol=1e-10)
    with pytest.raises(ValueError, match="exceeds"):
        block(torch.randn(1, 64, 3, dtype=torch.float64))


def test_kernel_cache_reuses_and_restores():
    torch.manual_seed(0)
    block = S4Block(4, 8, bidirectional=True)
    kernel = block.kernel
    with torch.no_grad():
        fresh = kernel(16)
        assert kernel(16) is not fresh  # no cache outside the context
        with cached_kernels(block):
            a = kernel(16)
            assert kernel(16) is a  # reused
            assert kernel(8) is not a and torch.allclose(kernel(8), a[..., :8].contiguous(), atol=1e-6)
            assert torch.equal(a, fresh)
            with cached_kernels(block):
                assert kernel(16) is not a  # a nested context starts empty ...
            assert kernel(16) is a  # ... and the outer cache is back after it
        assert kernel.kernel_cache is None
    with cached_kernels(block):
        assert kernel(16) is not kernel(16)  # autograd enabled: never cached
    with pytest.raises(TypeError, match="nn.Module"), cached_kernels("block"):
        pass
