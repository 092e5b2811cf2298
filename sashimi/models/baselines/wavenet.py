"""WaveNet (van den Oord et al., 2016): the autoregressive raw-waveform baseline of the SaShiMi paper.

The paper's WaveNet baselines come from the official code (``state-spaces``,
``src/models/baselines/wavenet.py``, adapted from vincentherrmann/pytorch-wavenet): 4 blocks of 10
dilated causal layers (dilations 1, 2, ..., 512, kernel size 2), 64 residual and 64 dilation
channels, 512 end channels and 512 or 1024 skip channels ("WaveNet-512" / "WaveNet-1024"), no
biases in the layers, biases in the two output convolutions. This module builds the same network in
plain PyTorch with the token interface of :class:`~sashimi.models.lm.SaShiMiLM`, so training code
and benchmarks can run either model::

    tokens (B, L) --Embedding--> (B, R, L) --40 x gated residual layer--> sum of skips (B, S, L)
      --ReLU--> 1x1 conv S->E --ReLU--> 1x1 conv E->2**bits --> logits (B, L, 2**bits)

One gated residual layer (dilation d, kernel size k)::

    h = CausalConv1d(R -> 2D, k, dilation=d)(x)      # left-padded by (k - 1) * d: causal
    z = tanh(h[:D]) * sigmoid(h[D:])                  # gated activation unit
    r, s = Conv1x1(D -> R + S)(z).split([R, S])       # residual and skip outputs in one product
    x = x + r; skip_sum = skip_sum + s

The fused convolutions (filter and gate in one ``R -> 2D`` convolution, residual and skip in one
``D -> R + S`` weight) compute exactly the separate convolutions of the official code and have the
same parameters. The forward pass regroups the sum of the 40 skip convolutions as one matrix product
of the stacked skip weights (S, 40 D) with the stacked gated activations (40 D, L) after the stack:
the same function, about 2x faster on CPU than accumulating the (B, S, L) skip sum layer by layer
as the official code does (which is memory-bound at S = 512 / 1024), so benchmarks compare against
an efficient baseline. The input embedding is the official one-hot input followed by its bias-free 1x1
"start" convolution, written as a lookup.

Parameter counts: WaveNet-512 has 2,540,288 parameters and WaveNet-1024 4,113,152. The paper's table
lists 2.67M and 4.24M: the official training framework wraps the network in an ``Embedding(256, 256)``
encoder and a ``Linear(256, 256)`` decoder (131,328 parameters, linear maps composed with the start
convolution and with the last output convolution, so they add no function), and 2,540,288 + 131,328
= 2,671,616, 4,113,152 + 131,328 = 4,244,480.

Differences from the official module: every position gets logits (the official forward drops the first
``receptive_field`` outputs of a zero-padded input, its data pipeline left-pads every example by
``receptive_field`` samples), and there is no per-sample generation queue (this baseline is for
likelihood training and throughput comparisons).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sashimi._validate import is_int as _is_int
from sashimi.models.base import PretrainedModel, register_model
from sashimi.models.config import ModelConfig, TokenConfigMixin
from sashimi.models.tokens import TokenModelMixin

__all__ = ["PAPER_WRAPPER_PARAMETERS", "WaveNet", "WaveNetConfig", "wavenet_paper"]


#: parameters of the official framework's Embedding(256, 256) encoder and Linear(256, 256) decoder,
#: counted in the paper's parameter totals of the WaveNet baselines (see the module docstring)
PAPER_WRAPPER_PARAMETERS = 256 * 256 + (256 * 256 + 256)


@dataclass
class WaveNetConfig(TokenConfigMixin, ModelConfig):
    """Hyperparameters of :class:`WaveNet` (defaults: the paper's WaveNet-512).

    Attributes:
        n_layers: gated residual layers (40 in the paper: 4 blocks of 10).
        dilation_cycle: dilations are ``2**(i % dilation_cycle)`` for layer i (10: 1..512, 4 blocks).
        residual_channels: R, width of the residual stream (64).
        dilation_channels: D, width of the gated activation (64).
        skip_channels: S, width of the skip sum (512 or 1024: "WaveNet-512" / "WaveNet-1024").
        end_channels: E, width of the hidden output convolution (512).
        kernel_size: taps of the dilated convolutions (2).
        bias: biases in the dilated and residual/skip convolutions (False in the official code;
            the two output convolutions always have biases).
        bits: the model predicts ``2**bits`` classes.
        quantization: 'mu-law' or 'linear' (what the tokens mean; used by :meth:`WaveNet.log_likelihood`).
        sample_rate: Hz (metadata).
        config_version: format version of this config.
    """

    model_type: ClassVar[str] = "wavenet"

    n_layers: int = 40
    dilation_cycle: int = 10
    residual_channels: int = 64
    dilation_channels: int = 64
    skip_channels: int = 512
    end_channels: int = 512
    kernel_size: int = 2
    bias: bool = False
    bits: int = 8
    quantization: str = "mu-law"
    sample_rate: int = 16000
    config_version: int = 1

    def __post_init__(self) -> None:
        for name in ("n_layers", "dilation_cycle", "residual_channels", "dilation_channels", "skip_channels",
                     "end_channels", "kernel_size", "sample_rate"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(self.bias, bool):
            raise TypeError(f"bias must be a bool, got {self.bias!r}")
        self._check_token_fields()
        if self.config_version != 1:
            raise ValueError(f"config_version must be 1, got {self.config_version!r}")

    @property
    def dilations(self) -> list[int]:
        return [2 ** (i % self.dilation_cycle) for i in range(self.n_layers)]

    @property
    def receptive_field(self) -> int:
        """Input positions each output sees, the current one included: ``1 + (k - 1) * sum(dilations)``
        (4093 for the paper's configs, the official code's ``receptive_field``)."""
        return 1 + (self.kernel_size - 1) * sum(self.dilations)


def wavenet_paper(skip_channels: int = 512, **overrides: Any) -> WaveNetConfig:
    """The paper's baseline config: 40 layers, 64 residual / dilation channels, 512 end channels and
    ``skip_channels`` skip channels (512: WaveNet-512, 1024: WaveNet-1024)."""
    return WaveNetConfig(skip_channels=skip_channels, **overrides)


class _GatedLayer(nn.Module):
    def __init__(self, res: int, dil: int, skip: int, kernel_size: int, dilation: int, bias: bool) -> None:
        super().__init__()
        self.pad = (kernel_size - 1) * dilation
        self.dil = dil
        self.res = res
        self.conv = nn.Conv1d(res, 2 * dil, kernel_size, dilation=dilation, bias=bias)
        self.out = nn.Conv1d(dil, res + skip, 1, bias=bias)  # rows [:res] residual, [res:] skip

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, R, L) -> the gated activation z (B, D, L)."""
        h = self.conv(F.pad(x, (self.pad, 0)))
        return torch.tanh(h[:, : self.dil]) * torch.sigmoid(h[:, self.dil :])

    def residual(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The layer's output on the residual stream: x + (residual 1x1 conv)(z), as a matrix product
        (a 1x1 convolution with the sliced weight takes a slow im2col path on CPU)."""
        r = torch.matmul(self.out.weight[: self.res, :, 0], z)  # (B, R, L)
        if self.out.bias is not None:
            r = r + self.out.bias[: self.res, None]
        return x + r

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, R, L) -> (residual output (B, R, L), skip (B, S, L)) (the layer on its own)."""
        z = self.gate(x)
        o = self.out(z)
        return x + o[:, : self.res], o[:, self.res :]


@register_model
class WaveNet(TokenModelMixin, PretrainedModel, nn.Module):
    """Autoregressive WaveNet over ``2**bits`` token classes, with the :class:`SaShiMiLM` token interface.

    Inputs are token sequences shifted right by one with the zero token in front
    (``x = [zero, q_0, ..., q_{L-2}]``, :meth:`shift_right`); the output at position t is the logits
    of ``q_t`` and depends on the inputs ``x[t - receptive_field + 1 .. t]`` only (zero padding
    before the start), i.e. on the targets ``q[t - receptive_field .. t - 1]``.
    """

    config_class = WaveNetConfig
    card_tags = ("audio", "raw-waveform", "wavenet", "sashimi-audio")

    def __init__(self, config: WaveNetConfig | dict | None = None) -> None:
        super().__init__()
        config = self._coerce_config(config)
        self.config = config
        R, D, S, E = config.residual_channels, config.dilation_channels, config.skip_channels, config.end_channels
        self.embed = nn.Embedding(config.n_classes, R)
        self.layers = nn.ModuleList(
            _GatedLayer(R, D, S, config.kernel_size, d, config.bias) for d in config.dilations
        )
        self.head1 = nn.Conv1d(S, E, 1)
        self.head2 = nn.Conv1d(E, config.n_classes, 1)

    @property
    def receptive_field(self) -> int:
        return self.config.receptive_field

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) int (already shifted: see :meth:`shift_right`) -> logits (B, L, 2**bits)."""
        tokens = self._check_tokens(tokens)
        x = self.embed(tokens).transpose(1, 2)  # (B, R, L)
        zs = []
        for layer in self.layers:
            z = layer.gate(x)
            zs.append(z)
            x = layer.residual(x, z)
        # sum over layers of the 1x1 skip convolutions = one product with the stacked activations
        R = self.config.residual_channels
        w = torch.cat([layer.out.weight[R:, :, 0] for layer in self.layers], dim=1)  # (S, n_layers * D)
        skip = torch.matmul(w, torch.cat(zs, dim=1))  # (B, S, L)
        if self.config.bias:
            skip = skip + sum(layer.out.bias[R:] for layer in self.layers).unsqueeze(-1)
        h = self.head2(F.relu(self.head1(F.relu(skip))))  # (B, C, L)
        return h.transpose(1, 2)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def card_description(self) -> str:
        cfg = self.config
        return (
            f"The WaveNet baseline of the SaShiMi paper ({cfg.n_layers} gated layers, {cfg.residual_channels} "
            f"residual / {cfg.skip_channels} skip channels, receptive field {cfg.receptive_field} samples) over "
            f"{cfg.n_classes}-way {cfg.quantization} samples at {cfg.sample_rate} Hz, for the "
            "[`sashimi-audio`](https://pypi.org/project/sashimi-audio/) library. It scores audio "
            "(`model.log_likelihood(audio)`, bits per sample); it has no step mode for generation."
        )
