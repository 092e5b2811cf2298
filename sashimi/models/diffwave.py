"""DiffWaveSaShiMi: the diffusion noise predictor of the SaShiMi paper (DiffWave with a bidirectional SaShiMi
backbone), unconditional (SC09) or mel-conditioned (vocoder).

``eps = model(x_t, t, mel=None)``::

    h = ReLU(Linear_wn(1 -> d_model)(x))                              # per sample
    e = DiffusionStepEmbedding(t)                                      # (B, 512), shared by all blocks
    down tiers: [unet: n_layers x DiffWaveBlock] -> DownPool (H -> expand H, L -> L / pool)
    center:     n_layers x DiffWaveBlock, + skip
    up tiers:   UpPool + skip -> n_layers x (DiffWaveBlock [unet: + skip])
    eps = Linear_zero(ReLU(Linear_wn(ScalarNorm(h))))

    DiffWaveBlock:  y = S4(norm1(x) + Linear(512 -> H)(e)) [+ Linear_wn(n_mels -> H)(upsample(mel))]
                    x = x + y;  x = x + FF_wn(norm2(x))

The S4 layer is the ``master`` branch's (per-channel A, B, dt; GLU output; strictly anticausal backward
kernel: :class:`~sashimi.layers.S4Block`) or, with ``s4_layout='paper'``, the January-2022 layer of the
paper's released SC09 checkpoints (:class:`~sashimi.layers.s4_paper.PaperS4Block`).

Mel alignment: every block upsamples the spectrogram to the audio rate. The official code truncates that
full-rate signal to the block's tier length, so the blocks of lower tiers see only the first 1/4 (1/16) of
the spectrogram, misaligned with their audio (``mel_alignment='truncated'``, set by the converter of
official checkpoints). New models default to ``'aligned'``: the full-rate signal is averaged over each
tier's pooling window, so every tier sees the spectrogram of its own time span (same parameters).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from sashimi.convert.diffwave_sashimi import load_diffwave_sashimi
from sashimi.generation.diffusion import sample
from sashimi.layers.blocks import FFBlock, ScalarChannelNorm
from sashimi.layers.embeddings import DiffusionStepEmbedding, MelUpsampler
from sashimi.layers.kernel_cache import cached_kernels
from sashimi.layers.pool import DownPool, UpPool
from sashimi.layers.s4_paper import PaperS4Block
from sashimi.layers.s4block import S4Block
from sashimi.losses.denoising import denoising_loss
from sashimi.models.base import ModelConfig, PretrainedModel, register_model
from sashimi.schedulers.noise import DDPMScheduler

__all__ = ["PRESETS", "DiffWaveBlock", "DiffWaveSaShiMi", "DiffWaveSaShiMiConfig", "convert_diffwave_sashimi"]

S4_LAYOUTS = ("master", "paper")
MEL_ALIGNMENTS = ("aligned", "truncated")

#: named configurations: the paper's SC09 models and the released LJSpeech vocoder (d_model 32)
PRESETS: dict[str, dict[str, Any]] = {
    "sc09": {"d_model": 128, "n_layers": 6, "pool": (4, 4), "expand": 2, "ff": 2, "unet": True, "n_mels": 0,
             "segment_length": 16000, "num_train_steps": 200, "beta_start": 1e-4, "beta_end": 0.02,
             "sample_rate": 16000},
    "sc09-small": {"d_model": 64, "n_layers": 6, "pool": (4, 4), "expand": 2, "ff": 2, "unet": True, "n_mels": 0,
                   "segment_length": 16000, "num_train_steps": 200, "beta_start": 1e-4, "beta_end": 0.02,
                   "sample_rate": 16000},
    "vocoder": {"d_model": 32, "n_layers": 6, "pool": (4, 4), "expand": 2, "ff": 2, "unet": True, "n_mels": 80,
                "mel_upsample": (16, 16), "segment_length": 16000, "num_train_steps": 50, "beta_start": 1e-4,
                "beta_end": 0.05, "sample_rate": 22050},
}


def _int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")


@dataclass
class DiffWaveSaShiMiConfig(ModelConfig):
    """Architecture and diffusion process of a :class:`DiffWaveSaShiMi`.

    Attributes:
        d_model: width of the outer tier (tier i has ``d_model * expand**i``).
        n_layers: DiffWave blocks per tier (down tiers only with ``unet``), and in the center.
        pool: pooling factor of each tier.
        expand: width factor per tier.
        ff: feed-forward expansion.
        unet: blocks on the down path too, with a skip per block.
        d_state: S4 state size N.
        step_embed_dim_in / _mid / _out: step embedding sinusoid size and MLP widths.
        n_mels: mel bands of the conditioning spectrogram; 0 = unconditional.
        mel_upsample: strides of the mel upsampler (their product is the hop length).
        mel_alignment: 'aligned' (default) or 'truncated' (the official quirk; see the module docstring).
        s4_layout: 'master' (default) or 'paper' (the released SC09 checkpoints' older S4).
        segment_length: training length L (samples); the paper layout's maximum input length; the
            default length of :meth:`DiffWaveSaShiMi.generate` for unconditional models.
        dt_min, dt_max: S4 dt init range.
        num_train_steps, beta_start, beta_end: the linear beta schedule of the diffusion process.
        sample_rate: audio sample rate (Hz).
        config_version: format version of this config.
    """

    model_type: ClassVar[str] = "diffwave-sashimi"

    d_model: int = 64
    n_layers: int = 6
    pool: tuple[int, ...] = (4, 4)
    expand: int = 2
    ff: int = 2
    unet: bool = True
    d_state: int = 64
    step_embed_dim_in: int = 128
    step_embed_dim_mid: int = 512
    step_embed_dim_out: int = 512
    n_mels: int = 0
    mel_upsample: tuple[int, ...] = (16, 16)
    mel_alignment: str = "aligned"
    s4_layout: str = "master"
    segment_length: int = 16000
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    num_train_steps: int = 200
    beta_start: float = 1e-4
    beta_end: float = 0.02
    sample_rate: int = 16000
    config_version: int = 1

    def __post_init__(self) -> None:
        for name, minimum in (("d_model", 1), ("n_layers", 0), ("expand", 1), ("ff", 1), ("d_state", 2),
                              ("step_embed_dim_in", 4), ("step_embed_dim_mid", 1), ("step_embed_dim_out", 1),
                              ("n_mels", 0), ("segment_length", 1), ("num_train_steps", 1), ("sample_rate", 1),
                              ("config_version", 1)):
            _int(name, getattr(self, name), minimum)
        if self.config_version != 1:
            raise ValueError(f"config_version {self.config_version} is not supported (this library reads 1)")
        if not isinstance(self.unet, bool):
            raise TypeError(f"unet must be a bool, got {self.unet!r}")
        if self.d_state % 2:
            raise ValueError(f"d_state must be even, got {self.d_state}")
        if self.step_embed_dim_in % 2:
            raise ValueError(f"step_embed_dim_in must be even, got {self.step_embed_dim_in}")
        for name in ("pool", "mel_upsample"):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)):
                raise TypeError(f"{name} must be a tuple of ints, got {value!r}")
            value = tuple(value)
            for v in value:
                _int(f"{name}[i]", v, 1)
            object.__setattr__(self, name, value)
        if not self.mel_upsample or any(s % 2 for s in self.mel_upsample):
            raise ValueError(f"mel_upsample must be a non-empty tuple of even strides, got {self.mel_upsample}")
        if self.segment_length % math.prod(self.pool):
            raise ValueError(
                f"segment_length={self.segment_length} must be divisible by prod(pool)={math.prod(self.pool)}"
            )
        if self.mel_alignment not in MEL_ALIGNMENTS:
            raise ValueError(f"mel_alignment must be one of {MEL_ALIGNMENTS}, got {self.mel_alignment!r}")
        if self.s4_layout not in S4_LAYOUTS:
            raise ValueError(f"s4_layout must be one of {S4_LAYOUTS}, got {self.s4_layout!r}")
        for name in ("dt_min", "dt_max", "beta_start", "beta_end"):
            _number(name, getattr(self, name))
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={self.dt_min}, dt_max={self.dt_max}")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}")

    @property
    def conditional(self) -> bool:
        """Whether the model takes a mel spectrogram."""
        return self.n_mels > 0

    @property
    def hop_length(self) -> int:
        """Audio samples per spectrogram frame (the product of ``mel_upsample``)."""
        return math.prod(self.mel_upsample)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DiffWaveSaShiMiConfig:
        """A named configuration: 'sc09' (23,470,971 parameters), 'sc09-small' (7,734,267) or 'vocoder'
        (the released LJSpeech vocoder at d_model 32: 3,153,459), with optional field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


def _wn_linear(d_in: int, d_out: int) -> nn.Linear:
    """A weight-normed 1x1 convolution on (..., d_in): ``W = g v / ||v||_row`` (PyTorch's parametrization)."""
    return weight_norm(nn.Linear(d_in, d_out), name="weight", dim=0)


class DiffWaveBlock(nn.Module):
    """One residual block of DiffWaveSaShiMi at width H (see the module docstring).

    Args:
        d_model: H.
        l_max: the tier's training length (the paper layout's kernel length).
        rate: the tier's pooling factor relative to the audio (1, pool[0], pool[0]*pool[1], ...).
        config: the model config.
    """

    def __init__(self, d_model: int, l_max: int, rate: int, config: DiffWaveSaShiMiConfig) -> None:
        super().__init__()
        self.d_model, self.rate, self.mel_alignment = d_model, rate, config.mel_alignment
        self.norm1 = ScalarChannelNorm(d_model)
        self.step_proj = nn.Linear(config.step_embed_dim_out, d_model)
        if config.s4_layout == "master":
            self.s4 = S4Block(d_model, config.d_state, bidirectional=True, activation="gelu", postact="glu",
                              mode="dplr", dt_min=config.dt_min, dt_max=config.dt_max)
        else:
            self.s4 = PaperS4Block(d_model, l_max, config.d_state, config.dt_min, config.dt_max)
        if config.conditional:
            self.mel_upsample = MelUpsampler(config.mel_upsample)
            self.mel_proj = _wn_linear(config.n_mels, d_model)
        self.norm2 = ScalarChannelNorm(d_model)
        self.ff = FFBlock(d_model, config.ff)
        self.ff.fc1 = _wn_linear(d_model, config.ff * d_model)
        self.ff.fc2 = _wn_linear(config.ff * d_model, d_model)

    def mel_term(self, mel: torch.Tensor, L: int) -> torch.Tensor:
        """The block's mel conditioning: (B, n_mels, F) -> (B, L, H) (needs ``F * hop >= L * rate``)."""
        m = self.mel_upsample(mel)  # (B, n_mels, F * hop)
        if self.mel_alignment == "truncated" or self.rate == 1:
            m = m[..., :L]  # official: the full-rate signal cut to the tier length
        else:
            m = F.avg_pool1d(m[..., : L * self.rate], self.rate)  # (B, n_mels, L): aligned with the tier
        return self.mel_proj(m.transpose(1, 2))  # (B, L, H)

    def forward(self, x: torch.Tensor, e: torch.Tensor, mel_term: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, H), e (B, step_embed_dim_out), mel_term (B, L, H) or None -> (B, L, H)."""
        y = self.norm1(x) + self.step_proj(e).unsqueeze(1)  # (B, L, H)
        y = self.s4(y)
        if mel_term is not None:
            y = y + mel_term
        x = x + y
        return x + self.ff(self.norm2(x))


class _Tier(nn.Module):
    def __init__(self, pool: nn.Module, blocks: nn.ModuleList) -> None:
        super().__init__()
        self.pool = pool
        self.blocks = blocks


@register_model
class DiffWaveSaShiMi(PretrainedModel, nn.Module):
    """The DiffWave noise predictor on a bidirectional SaShiMi backbone: ``eps = model(x_t, t, mel=None)``.

    Args:
        config: a :class:`DiffWaveSaShiMiConfig` (e.g. ``DiffWaveSaShiMiConfig.preset('sc09')``).
    """

    config_class = DiffWaveSaShiMiConfig

    card_tags = ("audio", "sashimi-audio", "diffusion", "diffwave")

    def __init__(self, config: DiffWaveSaShiMiConfig | dict | None = None) -> None:
        super().__init__()
        config = self._coerce_config(config)
        self.config = config
        c = config
        self.embed = DiffusionStepEmbedding(c.step_embed_dim_in, c.step_embed_dim_mid, c.step_embed_dim_out)
        self.input_proj = _wn_linear(1, c.d_model)
        H, L, rate = c.d_model, c.segment_length, 1

        def blocks(H: int, L: int, rate: int) -> nn.ModuleList:
            return nn.ModuleList(DiffWaveBlock(H, L, rate, c) for _ in range(c.n_layers))

        self.down = nn.ModuleList()
        for p in c.pool:
            self.down.append(_Tier(DownPool(H, c.expand, p, weight_norm=True), blocks(H, L, rate) if c.unet else
                                   nn.ModuleList()))
            H, L, rate = H * c.expand, L // p, rate * p
        self.center = blocks(H, L, rate)
        self.up = nn.ModuleList()  # up[i] mirrors down[i]
        H, L, rate = c.d_model, c.segment_length, 1
        for p in c.pool:
            self.up.append(_Tier(UpPool(H * c.expand, c.expand, p, weight_norm=True, shift=False), blocks(H, L, rate)))
            H, L, rate = H * c.expand, L // p, rate * p
        self.norm = ScalarChannelNorm(c.d_model)
        self.output_hidden = _wn_linear(c.d_model, c.d_model)
        self.output_proj = nn.Linear(c.d_model, 1)
        nn.init.zeros_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    # ---- blocks in execution order ----------------------------------------------------------------
    def diffwave_blocks(self) -> list[DiffWaveBlock]:
        """All DiffWave blocks in the order the forward pass runs them (down, center, up deepest first)."""
        out = [b for tier in self.down for b in tier.blocks] + list(self.center)
        return out + [b for tier in reversed(self.up) for b in tier.blocks]

    @property
    def total_pool(self) -> int:
        """The input length must be a multiple of this (the product of the pooling factors)."""
        return math.prod(self.config.pool)

    # ---- input checks -----------------------------------------------------------------------------
    def _check_inputs(
        self, x: object, t: object, mel: object
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool]:
        c = self.config
        dtype = self.output_proj.weight.dtype
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (B, L) or (B, 1, L), got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating tensor (the model's dtype {dtype}), got dtype {x.dtype}")
        if x.dtype != dtype:
            raise TypeError(f"x has dtype {x.dtype} but the model is {dtype}: convert one of them (model.to(...))")
        channel = x.ndim == 3
        if not (x.ndim == 2 or (channel and x.shape[1] == 1)):
            raise ValueError(f"x must have shape (B, L) or (B, 1, L), got {tuple(x.shape)}")
        x = x.reshape(x.shape[0], x.shape[-1])  # (B, L)
        B, L = x.shape
        if B == 0 or L == 0:
            raise ValueError(f"x must be non-empty, got shape {tuple(x.shape)}")
        if L % self.total_pool:
            raise ValueError(
                f"x length L={L} must be divisible by the product of the pooling factors {self.total_pool} "
                f"(pool={list(c.pool)}); pad or crop the audio"
            )
        if c.s4_layout == "paper" and L > c.segment_length:
            raise ValueError(f"x length L={L} exceeds segment_length={c.segment_length}, the paper layout's maximum")
        if not torch.isfinite(x).all():
            raise ValueError("x contains NaN or Inf")
        # t
        if isinstance(t, (int, float)) and not isinstance(t, bool):
            t = torch.full((B,), float(t), dtype=torch.float64, device=x.device)
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"t must be a tensor of shape (B,) of diffusion steps, got {type(t).__name__}")
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"t must hold integer or floating diffusion steps, got dtype {t.dtype}")
        if t.ndim == 2 and t.shape[1] == 1:
            t = t[:, 0]
        if t.ndim == 0:
            t = t.expand(B)
        if t.ndim != 1 or t.shape[0] != B:
            raise ValueError(f"t must have shape (B,)=({B},) (or (B, 1)), got {tuple(t.shape)}")
        if not torch.isfinite(t.double()).all() or (t < 0).any() or (t >= c.num_train_steps).any():
            raise ValueError(
                f"t must lie in [0, num_train_steps={c.num_train_steps}), got values in "
                f"[{t.min().item()}, {t.max().item()}]"
            )
        # mel
        if not c.conditional:
            if mel is not None:
                raise ValueError("this model is unconditional (n_mels=0): mel must be None")
            return x, t, None, channel
        mel = self.check_mel(mel, L, B)
        return x, t, mel, channel

    def check_mel(self, mel: object, L: int, batch_size: int | None = None) -> torch.Tensor:
        """Validate a conditioning spectrogram (B or 1, n_mels, frames) for audio of length L; returns it."""
        c = self.config
        dtype = self.output_proj.weight.dtype
        if mel is None:
            raise ValueError(f"this model is a vocoder (n_mels={c.n_mels}): a mel spectrogram is required")
        if not isinstance(mel, torch.Tensor):
            raise TypeError(f"mel must be a tensor of shape (B, {c.n_mels}, frames), got {type(mel).__name__}")
        if not mel.is_floating_point() or mel.dtype != dtype:
            raise TypeError(f"mel must have the model's dtype {dtype}, got {mel.dtype}")
        if mel.ndim != 3 or mel.shape[1] != c.n_mels:
            raise ValueError(f"mel must have shape (B, n_mels={c.n_mels}, frames), got {tuple(mel.shape)}")
        if batch_size is not None and mel.shape[0] not in (1, batch_size):
            raise ValueError(f"mel batch size {mel.shape[0]} must be 1 or match the audio's {batch_size}")
        if mel.shape[2] * c.hop_length < L:
            need = -(-L // c.hop_length)
            raise ValueError(
                f"mel has {mel.shape[2]} frames ({mel.shape[2] * c.hop_length} samples at hop {c.hop_length}), "
                f"too short for audio of length {L}: it needs at least {need} frames"
            )
        if not torch.isfinite(mel).all():
            raise ValueError("mel contains NaN or Inf")
        return mel

    # ---- forward ----------------------------------------------------------------------------------
    def mel_terms(self, mel: torch.Tensor, L: int) -> list[torch.Tensor]:
        """Each block's mel conditioning (B, L_tier, H), in :meth:`diffwave_blocks` order (constant while
        sampling, so :meth:`generate` computes them once)."""
        out = []
        L_tier = {id(b): L // b.rate for b in self.diffwave_blocks()}
        for b in self.diffwave_blocks():
            out.append(b.mel_term(mel, L_tier[id(b)]))
        return out

    def forward(self, x: torch.Tensor, t: torch.Tensor, mel: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the noise of ``x_t`` at diffusion step ``t``.

        Args:
            x: (B, L) or (B, 1, L) noisy audio, L divisible by ``prod(pool)``.
            t: (B,) (or (B, 1)) diffusion steps in [0, num_train_steps), integer or fractional.
            mel: (B or 1, n_mels, frames) for a vocoder (``frames * hop >= L``), else None.

        Returns:
            eps: same shape as x.
        """
        x2, t, mel, channel = self._check_inputs(x, t, mel)
        terms = self.mel_terms(mel, x2.shape[1]) if mel is not None else None
        eps = self._forward(x2, t, terms)  # (B, L)
        return eps.unsqueeze(1) if channel else eps

    def _forward(self, x: torch.Tensor, t: torch.Tensor, mel_terms: list[torch.Tensor] | None) -> torch.Tensor:
        """(B, L), (B,), per-block mel terms or None -> (B, L); no input checks."""
        e = self.embed(t)  # (B, D_e)
        terms = iter(mel_terms) if mel_terms is not None else None
        h = F.relu(self.input_proj(x.unsqueeze(-1)))  # (B, L, H)
        skips = []
        for tier in self.down:
            for block in tier.blocks:
                skips.append(h)
                h = block(h, e, next(terms) if terms else None)
            skips.append(h)
            h = tier.pool(h)  # (B, L / p, expand H)
        skips.append(h)
        for block in self.center:
            h = block(h, e, next(terms) if terms else None)
        h = h + skips.pop()
        for tier in reversed(self.up):
            h = tier.pool(h) + skips.pop()  # (B, L * p, H / expand)
            for block in tier.blocks:
                h = block(h, e, next(terms) if terms else None)
                if self.config.unet:
                    h = h + skips.pop()
        h = F.relu(self.output_hidden(self.norm(h)))  # (B, L, H)
        return self.output_proj(h).squeeze(-1)  # (B, L)

    # ---- diffusion ------------------------------------------------------------------------------------
    def scheduler(self) -> DDPMScheduler:
        """The training noise schedule of this model (linear betas from the config)."""
        c = self.config
        return DDPMScheduler(c.num_train_steps, c.beta_start, c.beta_end)

    def training_loss(
        self,
        x0: torch.Tensor,
        mel: torch.Tensor | None = None,
        loss: Literal["mse", "l1"] = "mse",
        generator: torch.Generator | None = None,
        *,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The denoising loss (eps-prediction MSE as the official code, or L1 as lmnt) of clean audio ``x0``
        (B, L) with ``t`` uniform in [0, T) and Gaussian noise (drawn from ``generator`` unless given).

        See :func:`sashimi.losses.denoising.denoising_loss`. Returns a scalar tensor.
        """
        return denoising_loss(self, x0, self.scheduler(), mel, loss, generator, t=t, noise=noise)

    @torch.no_grad()
    def generate(
        self,
        batch_size: int = 1,
        num_samples: int | None = None,
        mel: torch.Tensor | None = None,
        steps: Literal["full", "fast"] | int = "full",
        sampler: Literal["ddpm", "ddim"] = "ddpm",
        generator: torch.Generator | None = None,
        progress: bool = True,
        *,
        eta: float = 0.0,
        clip: bool = False,
        noises: torch.Tensor | list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Sample waveforms by reverse diffusion; every S4 kernel, weight-normed weight and block's mel
        conditioning is computed once per call (the input length is fixed while sampling), not once per step.

        Args:
            batch_size: B (for a vocoder: 1 takes the batch of ``mel``).
            num_samples: length L (default: ``segment_length``; for a vocoder ``frames * hop``); a multiple of
                ``prod(pool)``.
            mel: (B or 1, n_mels, frames) for a vocoder, else None.
            steps: 'full' (the T training steps, the official sampler), 'fast' (lmnt's 6-step schedule) or
                an int number of steps.
            sampler: 'ddpm' (ancestral) or 'ddim'.
            generator: source of every Gaussian draw (reproducible sampling).
            progress: tqdm bar with steps/s and the real-time factor.
            eta: DDIM noise scale (0: deterministic).
            clip: clamp to [-1, 1] at every step (lmnt does; the official sampler does not).
            noises: the Gaussian draws to use instead (see :func:`sashimi.generation.diffusion.sample`).

        Returns:
            (B, L) waveforms in the model's dtype.
        """
        c = self.config
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if c.conditional:
            if mel is None:
                raise ValueError(f"this model is a vocoder (n_mels={c.n_mels}): pass mel (B, {c.n_mels}, frames)")
            if num_samples is None and isinstance(mel, torch.Tensor) and mel.ndim == 3:
                num_samples = mel.shape[-1] * c.hop_length
            if batch_size == 1 and isinstance(mel, torch.Tensor) and mel.ndim == 3:
                batch_size = mel.shape[0]
        elif mel is not None:
            raise ValueError("this model is unconditional (n_mels=0): mel must be None")
        L = c.segment_length if num_samples is None else num_samples
        if isinstance(L, bool) or not isinstance(L, int) or L < 1 or L % self.total_pool:
            raise ValueError(f"num_samples must be a positive multiple of prod(pool)={self.total_pool}, got {L!r}")
        if c.s4_layout == "paper" and L > c.segment_length:
            raise ValueError(f"num_samples={L} exceeds segment_length={c.segment_length}, the paper layout's maximum")
        terms = self.mel_terms(self.check_mel(mel, L, batch_size), L) if c.conditional else None
        ref = self.output_proj.weight

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self._forward(x, t, terms)  # (B, L)

        was_training = self.training
        self.eval()
        try:
            # S4 kernels and weight-normed weights are computed once for the whole run
            with cached_kernels(self), parametrize.cached():
                return sample(
                    denoise, self.scheduler(), (batch_size, L), steps, sampler, eta, clip, generator, progress,
                    c.sample_rate, noises, dtype=ref.dtype, device=ref.device,
                )
        finally:
            self.train(was_training)

    # ---- official checkpoints and model cards ----------------------------------------------------------
    @classmethod
    def from_diffwave_sashimi(
        cls,
        path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
        config: Mapping[str, Any] | str | os.PathLike,
        *,
        dtype: torch.dtype | None = None,
        **overrides: Any,
    ) -> DiffWaveSaShiMi:
        """Build a model from an official diffwave-sashimi checkpoint (either branch's layout), in eval mode.

        Args:
            path_or_state_dict: an official ``.pkl`` (``{'model_state_dict', ...}``, read with
                ``torch.load(weights_only=True)`` only) or its model state dict.
            config: the official model config (dict), a JSON file holding it, or 'sc09', 'sc09-small',
                'vocoder' (see :data:`sashimi.convert.diffwave_sashimi.OFFICIAL_CONFIGS`).
            dtype: cast the model to this dtype (default: the checkpoint's).
            **overrides: fields of :class:`DiffWaveSaShiMiConfig` (e.g. ``sample_rate``).
        """
        state_dict, fields_ = load_diffwave_sashimi(path_or_state_dict, config, **overrides)
        model = cls(DiffWaveSaShiMiConfig(**fields_))
        floats = {t.dtype for t in state_dict.values() if t.is_floating_point()}
        if len(floats) == 1:
            model.to(next(iter(floats)))
        own = model.state_dict()
        missing = sorted(set(own) - set(state_dict))
        wrong = sorted(f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                       for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
        if missing or wrong:
            raise ValueError(
                f"the checkpoint does not fit the config: missing {missing[:10]}; wrong shapes {wrong[:10]}"
            )
        model.load_state_dict(state_dict, strict=True)
        if dtype is not None:
            model.to(dtype)
        return model.eval()

    def card_description(self) -> str:
        c = self.config
        kind = f"mel vocoder ({c.n_mels} bands, hop {c.hop_length})" if c.conditional else "unconditional"
        return (
            f"DiffWave + SaShiMi diffusion model ({kind}, {c.sample_rate} Hz): the noise predictor of Goel et al. "
            f"(2022) on a bidirectional SaShiMi backbone (d_model {c.d_model}, pool {list(c.pool)}, "
            f"{c.n_layers} blocks per tier, S4 layout '{c.s4_layout}', mel alignment '{c.mel_alignment}'), "
            f"trained with T={c.num_train_steps} linear betas {c.beta_start} -> {c.beta_end}. Sample with "
            "`model.generate(...)`."
        )


def convert_diffwave_sashimi(
    file: str | os.PathLike, config: Mapping[str, Any] | str | os.PathLike, out_dir: str | os.PathLike
) -> Path:
    """Convert an official diffwave-sashimi checkpoint into a Hub-ready folder (``config.json``,
    ``model.safetensors``, ``README.md``) that :func:`sashimi.load_model` reads.

    Args:
        file: the official ``.pkl``.
        config: 'sc09', 'sc09-small', 'vocoder', a JSON file holding the official model config, or the dict.
        out_dir: the folder to write.

    Returns:
        The folder.
    """
    model = DiffWaveSaShiMi.from_diffwave_sashimi(file, config)
    model.save_pretrained(out_dir)
    return Path(out_dir)
