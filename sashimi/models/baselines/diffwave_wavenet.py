"""DiffWave's WaveNet (Kong et al., 2021): the noise predictor the SaShiMi paper compares DiffWave+SaShiMi against.

The network of the official DiffWave + SaShiMi code (``albertfgu/diffwave-sashimi``, ``models/wavenet.py``, from
philsyn/DiffWave-unconditional), in plain PyTorch, with the interface of ``DiffWaveSaShiMi``:
``model(x, t, mel=None) -> eps``::

    e = swish(Linear(512, 512)(swish(Linear(128, 512)(sinusoid(t)))))      # shared step embedding (B, 512)
    x = ReLU(Conv1x1_wn(1 -> C)(audio))                                       # (B, C, L)
    for layer n = 0 .. n_layers - 1 (dilation 2 ** (n % dilation_cycle)):
        h = x + Linear(512 -> C)(e)[:, :, None]
        h = Conv_wn(C -> 2C, kernel 3, dilation, "same" padding)(h)
        [vocoder: h = h + Conv1x1_wn(n_mels -> 2C)(upsample_n(mel))[..., :L]]
        out = tanh(h[:, :C]) * sigmoid(h[:, C:])
        x = (x + Conv1x1_wn(C -> C)(out)) * sqrt(0.5);  skip_sum += Conv1x1_wn(C -> S)(out)
    eps = ZeroConv1x1(S -> 1)(ReLU(Conv1x1_wn(S -> S)(skip_sum * sqrt(1 / n_layers))))

``sinusoid(t) = [sin(t f_j), cos(t f_j)]``, ``f_j = 10 ** (-4 j / 63)``, ``j = 0..63``; ``t`` may be fractional.
``Conv_wn`` is a weight-normed convolution (PyTorch's ``parametrizations.weight_norm``: ``weight = g v / ||v||``);
its effective initialisation is PyTorch's default (the official code's kaiming init is overwritten by weight
norm). Each vocoder layer owns its mel upsampler: per stride ``s`` a weight-normed
``ConvTranspose2d(1, 1, (3, 2s), stride (1, s), padding (1, s // 2))`` and leaky ReLU 0.4 (frames * s per stage).
The residual and skip 1x1 convolutions of a layer run as one convolution of their concatenated weights. The step
embedding and the mel upsampler are the layers DiffWaveSaShiMi uses (:mod:`sashimi.layers.embeddings`).

Parameter counts (the official ones): SC09 ``preset("sc09")`` (36 layers, 256 channels, cycle 12) 24,071,681;
``preset("sc09-small")`` (30 layers, 128 channels, skip 256, cycle 10) 6,827,393; the README's LJSpeech vocoder
``preset("ljspeech")`` (36 x 64, skip 64, mel strides [16, 16]) 3,098,129.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from sashimi._validate import is_int as _is_int
from sashimi.generation.diffusion import sample
from sashimi.layers.embeddings import DiffusionStepEmbedding, MelUpsampler
from sashimi.losses.denoising import denoising_loss
from sashimi.models.base import ModelConfig, PretrainedModel, register_model
from sashimi.schedulers.noise import DDPMScheduler

__all__ = ["DiffWaveWaveNet", "DiffWaveWaveNetConfig"]


@dataclass
class DiffWaveWaveNetConfig(ModelConfig):
    """Hyperparameters of :class:`DiffWaveWaveNet` (defaults: the paper's SC09 model, 24.1M parameters).

    Attributes:
        residual_channels: C, width of the residual stream (256).
        skip_channels: S, width of the skip sum (256).
        n_layers: residual layers (36).
        dilation_cycle: dilation of layer n is ``2 ** (n % dilation_cycle)`` (12).
        kernel_size: taps of the dilated convolutions (3, odd: "same" padding).
        step_embed_dims: (sinusoid, hidden, output) widths of the diffusion-step embedding (128, 512, 512).
        n_mels: mel bands of the conditioning input (vocoder only).
        mel_upsample: strides of the mel upsampler (their product is the hop length); None: unconditional.
        segment_length: training length in samples; the default length of :meth:`DiffWaveWaveNet.generate`.
        num_train_steps, beta_start, beta_end: the linear beta schedule of the diffusion process.
        sample_rate: Hz.
        config_version: format version of this config.
    """

    model_type: ClassVar[str] = "diffwave-wavenet"

    residual_channels: int = 256
    skip_channels: int = 256
    n_layers: int = 36
    dilation_cycle: int = 12
    kernel_size: int = 3
    step_embed_dims: tuple[int, int, int] = (128, 512, 512)
    n_mels: int = 80
    mel_upsample: tuple[int, ...] | None = None
    segment_length: int = 16000
    num_train_steps: int = 200
    beta_start: float = 1e-4
    beta_end: float = 0.02
    sample_rate: int = 16000
    config_version: int = 1

    def __post_init__(self) -> None:
        for name in ("residual_channels", "skip_channels", "n_layers", "dilation_cycle", "kernel_size", "n_mels",
                     "segment_length", "num_train_steps", "sample_rate"):  # fmt: skip
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-length dilated convolutions), got {self.kernel_size}")
        dims = tuple(self.step_embed_dims) if isinstance(self.step_embed_dims, (list, tuple)) else None
        if dims is None or len(dims) != 3 or not all(_is_int(d) and d > 0 for d in dims) or dims[0] % 2:
            raise ValueError(
                f"step_embed_dims must be three positive ints (even sinusoid width), got {self.step_embed_dims!r}"
            )
        self.step_embed_dims = dims
        if self.mel_upsample is not None:
            ups = tuple(self.mel_upsample) if isinstance(self.mel_upsample, (list, tuple)) else ()
            if not ups or not all(_is_int(s) and s >= 2 and s % 2 == 0 for s in ups):
                raise ValueError(f"mel_upsample must be None or a list of even strides >= 2, got {self.mel_upsample!r}")
            self.mel_upsample = ups
        for name in ("beta_start", "beta_end"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"{name} must be a float, got {v!r}")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if self.config_version != 1:
            raise ValueError(f"config_version must be 1, got {self.config_version!r}")

    @property
    def unconditional(self) -> bool:
        return self.mel_upsample is None

    @property
    def hop_length(self) -> int:
        """Audio samples per mel frame (the product of the upsampling strides; 0 when unconditional)."""
        return math.prod(self.mel_upsample) if self.mel_upsample else 0

    @property
    def dilations(self) -> list[int]:
        return [2 ** (n % self.dilation_cycle) for n in range(self.n_layers)]

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DiffWaveWaveNetConfig:
        """Named configs of the official code: ``"sc09"`` (24,071,681 parameters), ``"sc09-small"``
        (6,827,393), both T=200 with betas 1e-4 -> 0.02, and ``"ljspeech"`` (the README's 64-channel vocoder, mel
        hop 256, 22,050 Hz, T=50 with betas 1e-4 -> 0.05: 3,098,129)."""
        presets: dict[str, dict[str, Any]] = {
            "sc09": {},
            "sc09-small": {"residual_channels": 128, "skip_channels": 256, "n_layers": 30, "dilation_cycle": 10},
            "ljspeech": {
                "residual_channels": 64,
                "skip_channels": 64,
                "mel_upsample": (16, 16),
                "num_train_steps": 50,
                "beta_end": 0.05,
                "sample_rate": 22050,
            },
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})


def _conv_wn(c_in: int, c_out: int, kernel_size: int = 1, dilation: int = 1) -> nn.Module:
    pad = dilation * (kernel_size - 1) // 2
    return weight_norm(nn.Conv1d(c_in, c_out, kernel_size, dilation=dilation, padding=pad))


class _ResidualLayer(nn.Module):
    def __init__(self, cfg: DiffWaveWaveNetConfig, dilation: int) -> None:
        super().__init__()
        C, S = cfg.residual_channels, cfg.skip_channels
        self.channels = C
        self.fc_t = nn.Linear(cfg.step_embed_dims[2], C)
        self.dilated_conv = _conv_wn(C, 2 * C, cfg.kernel_size, dilation)
        if cfg.mel_upsample is not None:
            self.upsample = MelUpsampler(cfg.mel_upsample)
            self.mel_conv = _conv_wn(cfg.n_mels, 2 * C)
        self.res_conv = _conv_wn(C, C)
        self.skip_conv = _conv_wn(C, S)

    def mel_term(self, mel: Tensor, L: int) -> Tensor:
        """This layer's mel conditioning (B, 2C, L) of a spectrogram (B, n_mels, F), F * hop >= L."""
        return self.mel_conv(self.upsample(mel))[..., :L]

    def forward(self, x: Tensor, e: Tensor, mel_term: Tensor | None) -> tuple[Tensor, Tensor]:
        """x (B, C, L), e (B, E), mel_term (B, 2C, L) or None -> (residual output (B, C, L), skip (B, S, L))."""
        h = x + self.fc_t(e)[:, :, None]
        h = self.dilated_conv(h)  # (B, 2C, L)
        if mel_term is not None:
            h = h + mel_term
        out = torch.tanh(h[:, : self.channels]) * torch.sigmoid(h[:, self.channels :])  # (B, C, L)
        weight = torch.cat([self.res_conv.weight, self.skip_conv.weight])  # (C + S, C, 1)
        bias = torch.cat([self.res_conv.bias, self.skip_conv.bias])
        rs = F.conv1d(out, weight, bias)  # (B, C + S, L)
        return (x + rs[:, : self.channels]) * math.sqrt(0.5), rs[:, self.channels :]


@register_model
class DiffWaveWaveNet(PretrainedModel, nn.Module):
    """The official DiffWave WaveNet noise predictor: ``model(x, t, mel=None) -> eps`` of the shape of ``x``."""

    config_class = DiffWaveWaveNetConfig
    card_tags = ("audio", "raw-waveform", "diffusion", "diffwave", "wavenet", "sashimi-audio")

    def __init__(self, config: DiffWaveWaveNetConfig | dict | None = None) -> None:
        super().__init__()
        config = self._coerce_config(config)
        self.config = config
        C, S = config.residual_channels, config.skip_channels
        self.init_conv = _conv_wn(1, C)
        self.embed = DiffusionStepEmbedding(*config.step_embed_dims)
        self.layers = nn.ModuleList(_ResidualLayer(config, d) for d in config.dilations)
        self.final_conv = _conv_wn(S, S)
        self.zero_conv = nn.Conv1d(S, 1, 1)
        nn.init.zeros_(self.zero_conv.weight)
        nn.init.zeros_(self.zero_conv.bias)

    def card_description(self) -> str:
        cfg = self.config
        kind = "unconditional" if cfg.unconditional else f"mel vocoder (hop {cfg.hop_length})"
        return (
            f"DiffWave WaveNet noise predictor ({kind}): {cfg.n_layers} layers, {cfg.residual_channels} residual "
            f"/ {cfg.skip_channels} skip channels, dilation cycle {cfg.dilation_cycle}; "
            f"{self.num_parameters():,} parameters; T={cfg.num_train_steps} diffusion steps "
            f"(betas {cfg.beta_start} -> {cfg.beta_end}), {cfg.sample_rate} Hz. The baseline of the SaShiMi paper's "
            "diffusion experiments (Goel et al., 2022), built as the official DiffWave + SaShiMi code builds it."
        )

    def _check_inputs(self, x: Tensor, t: Tensor | float, mel: Tensor | None) -> tuple[Tensor, Tensor]:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"x must be a floating-point tensor (B, L) or (B, 1, L), got {got}")
        if x.ndim == 3 and x.shape[1] != 1 or x.ndim not in (2, 3):
            raise ValueError(f"x must have shape (B, L) or (B, 1, L), got {tuple(x.shape)}")
        B, L = x.shape[0], x.shape[-1]
        t = torch.as_tensor(t, device=x.device)
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"t must hold integer or real diffusion steps, got dtype {t.dtype}")
        t = t.reshape(-1) if t.ndim else t.expand(B)
        if t.shape != (B,):
            raise ValueError(f"t must have shape ({B},) (one diffusion step per example), got {tuple(t.shape)}")
        T = self.config.num_train_steps
        if t.numel() and (bool((t < 0).any()) or bool((t >= T).any())):
            raise ValueError(f"t must lie in [0, {T}), got values in [{t.min().item()}, {t.max().item()}]")
        if self.config.unconditional:
            if mel is not None:
                raise ValueError("this model is unconditional: mel must be None")
        else:
            if mel is None:
                raise ValueError(f"this vocoder needs mel (B, {self.config.n_mels}, frames)")
            if not isinstance(mel, Tensor) or not mel.is_floating_point():
                raise TypeError("mel must be a floating-point tensor (B, n_mels, frames)")
            if mel.ndim != 3 or mel.shape[0] not in (1, B) or mel.shape[1] != self.config.n_mels:
                raise ValueError(
                    f"mel must have shape ({B} or 1, {self.config.n_mels}, frames), got {tuple(mel.shape)}"
                )
            if mel.shape[-1] * self.config.hop_length < L:
                raise ValueError(
                    f"mel has {mel.shape[-1]} frames = {mel.shape[-1] * self.config.hop_length} samples at hop "
                    f"{self.config.hop_length}, shorter than the audio ({L} samples)"
                )
        return x.reshape(B, 1, L), t

    def mel_terms(self, mel: Tensor, L: int) -> list[Tensor]:
        """Every layer's mel conditioning (B, 2C, L), in layer order (constant while sampling, so
        :meth:`generate` computes them once)."""
        return [layer.mel_term(mel, L) for layer in self.layers]

    def forward(self, x: Tensor, t: Tensor | float, mel: Tensor | None = None) -> Tensor:
        """x (B, L) or (B, 1, L), t (B,) integer or fractional steps, mel (B, n_mels, frames) -> eps (shape of x)."""
        audio, t = self._check_inputs(x, t, mel)
        terms = None
        if mel is not None:
            terms = self.mel_terms(mel.expand(audio.shape[0], -1, -1), audio.shape[-1])
        return self._forward(audio, t, terms).reshape(x.shape)

    def _forward(self, audio: Tensor, t: Tensor, mel_terms: list[Tensor] | None) -> Tensor:
        """audio (B, 1, L), t (B,), per-layer mel terms or None -> eps (B, 1, L); no input checks."""
        e = self.embed(t)  # (B, 512)
        h = F.relu(self.init_conv(audio))  # (B, C, L)
        skip = None
        for n, layer in enumerate(self.layers):
            h, s = layer(h, e, None if mel_terms is None else mel_terms[n])
            skip = s if skip is None else skip + s
        skip = skip * math.sqrt(1.0 / self.config.n_layers)  # (B, S, L)
        return self.zero_conv(F.relu(self.final_conv(skip)))  # (B, 1, L)

    # ---- diffusion ------------------------------------------------------------------------------------
    def scheduler(self) -> DDPMScheduler:
        """The training noise schedule of this model (linear betas from the config)."""
        c = self.config
        return DDPMScheduler(c.num_train_steps, c.beta_start, c.beta_end)

    def training_loss(
        self,
        x0: Tensor,
        mel: Tensor | None = None,
        loss: Literal["mse", "l1"] = "mse",
        generator: torch.Generator | None = None,
        *,
        t: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """The denoising loss of clean audio ``x0`` (B, L) (see :func:`sashimi.losses.denoising.denoising_loss`)."""
        return denoising_loss(self, x0, self.scheduler(), mel, loss, generator, t=t, noise=noise)

    @torch.no_grad()
    def generate(
        self,
        batch_size: int = 1,
        num_samples: int | None = None,
        mel: Tensor | None = None,
        steps: Literal["full", "fast"] | int = "full",
        sampler: Literal["ddpm", "ddim"] = "ddpm",
        generator: torch.Generator | None = None,
        progress: bool = True,
        *,
        eta: float = 0.0,
        clip: bool = False,
        noises: Tensor | list[Tensor] | None = None,
    ) -> Tensor:
        """Sample waveforms (B, L) by reverse diffusion (see :func:`sashimi.generation.diffusion.sample`).

        ``num_samples`` defaults to ``segment_length`` (a vocoder: ``frames * hop`` of ``mel``); a vocoder takes
        its batch from ``mel`` when ``batch_size`` is 1. Every layer's mel conditioning is computed once per call.
        """
        c = self.config
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not c.unconditional and isinstance(mel, Tensor) and mel.ndim == 3:
            num_samples = mel.shape[-1] * c.hop_length if num_samples is None else num_samples
            batch_size = mel.shape[0] if batch_size == 1 else batch_size
        L = c.segment_length if num_samples is None else num_samples
        if not _is_int(L) or L < 1:
            raise ValueError(f"num_samples must be a positive int, got {L!r}")
        ref = self.zero_conv.weight
        self._check_inputs(torch.zeros(batch_size, L, dtype=ref.dtype, device=ref.device), 0, mel)
        terms = None if mel is None else self.mel_terms(mel.expand(batch_size, -1, -1), L)

        def denoise(x: Tensor, t: Tensor) -> Tensor:
            return self._forward(x.unsqueeze(1), t, terms).squeeze(1)  # (B, L)

        was_training = self.training
        self.eval()
        try:
            return sample(
                denoise, self.scheduler(), (batch_size, L), steps, sampler, eta, clip, generator, progress,
                c.sample_rate, noises, dtype=ref.dtype, device=ref.device,
            )  # fmt: skip
        finally:
            self.train(was_training)
