"""SaShiMiLM: the autoregressive raw-waveform model (token embedding -> SaShiMi -> logits).

Generation lives in :mod:`sashimi.generation.autoregressive`; :meth:`SaShiMiLM.generate` calls it.
"""

from __future__ import annotations

import torch
from torch import nn

from sashimi.generation.autoregressive import PIPELINE_MIN_BATCH, GenerationOutput
from sashimi.generation.autoregressive import generate as _generate
from sashimi.models.base import PretrainedModel, register_model
from sashimi.models.config import SaShiMiLMConfig
from sashimi.models.sashimi import SaShiMi, SaShiMiState
from sashimi.models.tokens import TokenModelMixin

__all__ = ["PIPELINE_MIN_BATCH", "GenerationOutput", "SaShiMiLM", "SaShiMiLMConfig"]


@register_model
class SaShiMiLM(TokenModelMixin, PretrainedModel, nn.Module):
    """Autoregressive waveform model: ``Embedding(2**bits, d_model) -> SaShiMi -> Linear(d_model, 2**bits)``.

    Inputs are token sequences shifted right by one with the zero token in front
    (``x = [zero, q_0, ..., q_{L-2}]``), outputs the logits of ``q`` at every position.
    """

    config_class = SaShiMiLMConfig
    card_tags = ("audio", "raw-waveform", "sashimi", "s4", "state-space-model", "sashimi-audio")

    def __init__(self, config: SaShiMiLMConfig | dict | None = None) -> None:
        super().__init__()
        config = self._coerce_config(config)
        if config.transposed:
            raise ValueError("SaShiMiLM takes token sequences (B, L): config.transposed must be False")
        self.config = config
        self.encoder = nn.Embedding(config.n_classes, config.d_model)
        self.backbone = SaShiMi(config.backbone_config())
        self.decoder = nn.Linear(config.d_model, config.n_classes)

    # ---- sequence mode ---------------------------------------------------------------------------
    def forward(
        self, tokens: torch.Tensor, state: SaShiMiState | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, SaShiMiState]:
        """Logits for every position.

        Args:
            tokens: (B, L) int input tokens (already shifted: see :meth:`shift_right`).
            state: optional stream state; the chunk continues it and the state is returned too.

        Returns:
            logits: (B, L, 2**bits), and the state when one was given.
        """
        tokens = self._check_tokens(tokens, 2)
        h = self.encoder(tokens)  # (B, L, H)
        if state is None:
            return self.decoder(self.backbone(h))
        h, state = self.backbone(h, state)
        return self.decoder(h), state

    # ---- recurrent mode --------------------------------------------------------------------------
    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
        mode: str = "auto",
    ) -> SaShiMiState:
        """A fresh stream state (see :meth:`SaShiMi.init_state`)."""
        return self.backbone.init_state(batch_size, device=device, dtype=dtype, mode=mode)

    def step(self, tokens: torch.Tensor, state: SaShiMiState) -> tuple[torch.Tensor, SaShiMiState]:
        """One step: (B,) input tokens -> (B, 2**bits) logits of the next token; the state is updated in place.

        The backbone steps through its flat step program (see :meth:`SaShiMi.step`)."""
        tokens = self._check_tokens(tokens, 1)
        h, state = self.backbone.step(self.encoder(tokens), state)
        return self.decoder(h), state

    @torch.no_grad()
    def prefill(self, prompt_tokens: torch.Tensor, mode: str = "auto") -> tuple[torch.Tensor, SaShiMiState]:
        """Run an input prompt in convolution mode, returning its logits and the state after it.

        Equal to stepping through ``prompt_tokens`` from a fresh state (to float precision).

        Args:
            prompt_tokens: (B, P) input tokens (shifted: the first is normally the zero token).

        Returns:
            logits (B, P, 2**bits), state.
        """
        prompt_tokens = self._check_tokens(prompt_tokens, 2, "prompt_tokens")
        state = self.init_state(prompt_tokens.shape[0], device=self.decoder.weight.device, mode=mode)
        return self(prompt_tokens, state)

    def generate(
        self,
        batch_size: int,
        num_samples: int,
        prompt: torch.Tensor | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        progress: bool = True,
        mode: str = "auto",
        compile: bool = False,
        num_threads: int | None = 1,
    ) -> GenerationOutput:
        """Sample waveforms autoregressively in step mode: see :func:`sashimi.generation.autoregressive.generate`
        for the arguments (B = ``batch_size`` streams of T = ``num_samples`` tokens, an optional prompt,
        temperature, nucleus ``top_p``, a generator, progress bar, S4 step mode, ``compile``, threads).

        Returns:
            :class:`GenerationOutput`: waveform (B, T), tokens (B, T), untempered log-likelihoods (B,).
        """
        return _generate(self, batch_size, num_samples, prompt=prompt, temperature=temperature, top_p=top_p,
                         generator=generator, progress=progress, mode=mode, compile=compile,
                         num_threads=num_threads)

    def card_description(self) -> str:
        cfg = self.config
        return (
            "An autoregressive [SaShiMi](https://arxiv.org/abs/2202.09729) model (Goel et al., \"It's Raw! Audio "
            "Generation with State-Space Models\", ICML 2022) for the "
            "[`sashimi-audio`](https://pypi.org/project/sashimi-audio/) library. It predicts "
            f"{cfg.n_classes}-way {cfg.quantization} quantized samples ({cfg.bits} bits) at {cfg.sample_rate} Hz."
        )

    def card_sections(self) -> str:
        conv = getattr(self, "_conversion_info", None)
        if not conv:
            return ""
        return (
            "\n## Source\n\nConverted with `sashimi convert state-spaces` from the official state-spaces/s4 release "
            f"checkpoint `{conv['source']}` (variant `{conv['variant']}`, Hydra experiment `{conv['experiment']}`, "
            f"{conv['layout']} key layout, dt transform `{conv['dt_transform']}`). The weights are the released "
            "ones; the truncation-corrected C~ was solved back to the canonical C, which is exact.\n"
        )

    def card_usage(self, model_id: str) -> str:
        sr = self.config.sample_rate
        t = self.generation_defaults.get("temperature")
        temp = f", temperature={t}" if t is not None else ""
        stored = (f" (`sashimi generate` uses the stored default temperature {t}, from `generation.json`)"
                  if t is not None else "")
        return (
            f"```python\nimport sashimi\n\nmodel = sashimi.load_model({model_id!r})\n"
            f"out = model.generate(batch_size=4, num_samples={sr}{temp})  # 1 s of audio per sample\n"
            f"out.waveform  # (4, {sr}) float32 in [-1, 1]\n```\n\n"
            f"or from the command line: `sashimi generate --model {model_id} --seconds 1 --out samples/`{stored}."
        )

    @classmethod
    def from_state_spaces(
        cls,
        path_or_state_dict,
        variant: str = "sc09",
        *,
        dt_transform: str = "exp",
        dtype: torch.dtype | None = None,
        map_location: str | torch.device = "cpu",
    ) -> SaShiMiLM:
        """Build a model from an official state-spaces/s4 release checkpoint (no Hydra needed).

        Args:
            path_or_state_dict: a ``.pt``/``.ckpt`` file (read with ``torch.load(weights_only=True)``
                only), a ``.safetensors`` file, or a state dict. v3 and v4 key layouts are detected.
            variant: 'sc09', 'youtubemix', 'beethoven' or 'sc09-unet': fixes the architecture and the
                data settings (see :data:`sashimi.convert.state_spaces.VARIANTS`).
            dt_transform: v4 layout only: 'exp' (the official ports) or 'softplus' (v4-native training).
            dtype: cast to this dtype (default: the checkpoint's, float32 for the release files).
            map_location: device of the returned model.
        """
        from sashimi.convert.state_spaces import load_state_spaces

        return load_state_spaces(
            cls, path_or_state_dict, variant, dt_transform=dt_transform, dtype=dtype, map_location=map_location
        )
