"""What the token model families (SaShiMiLM, WaveNet) share: input validation, the one-step shift of
targets into inputs, and the NLL in bits per sample."""

from __future__ import annotations

import torch

from sashimi.audio import quantize
from sashimi.losses.tokens import cross_entropy_bits
from sashimi.models.config import TokenConfigMixin

__all__ = ["TokenConfigMixin", "TokenModelMixin"]


class TokenModelMixin:
    """For ``nn.Module`` token models with a :class:`TokenConfigMixin` config whose ``forward`` maps
    (B, L) input tokens to (B, L, C) logits: input validation, the one-step shift of targets into inputs
    (the zero token in front), and the NLL in bits per sample."""

    config: TokenConfigMixin

    def _check_tokens(self, tokens: object, ndim: int = 2, name: str = "tokens") -> torch.Tensor:
        shape = "(B, L)" if ndim == 2 else "(B,)"
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"{name} must be an int64 tensor of shape {shape}, got {type(tokens).__name__}")
        if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"{name} must be an integer tensor of shape {shape}, got dtype {tokens.dtype}")
        if tokens.ndim != ndim or (ndim == 2 and tokens.shape[1] == 0):
            raise ValueError(f"{name} must have shape {shape} with L >= 1, got {tuple(tokens.shape)}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.config.n_classes):
            raise ValueError(
                f"{name} out of range: expected values in [0, {self.config.n_classes}) for bits={self.config.bits}, "
                f"got [{int(tokens.min())}, {int(tokens.max())}]"
            )
        return tokens.long()

    def shift_right(self, targets: torch.Tensor) -> torch.Tensor:
        """(B, L) targets -> (B, L) inputs ``[zero, q_0, ..., q_{L-2}]``."""
        zero = torch.full_like(targets[:, :1], self.config.zero_token)
        return torch.cat([zero, targets[:, :-1]], dim=1)

    @torch.no_grad()
    def log_likelihood(self, audio_or_tokens: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood in bits per sample (the paper's NLL), in convolution mode.

        Args:
            audio_or_tokens: (B, T) or (T,) waveform in [-1, 1] (quantized with the model's settings)
                or int tokens (the targets q).

        Returns:
            (B,) bits per sample (float64 for float64 models, else float32).
        """
        x = audio_or_tokens
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"audio_or_tokens must be a tensor, got {type(x).__name__}")
        if x.ndim == 1:
            x = x.unsqueeze(0)
        if x.is_floating_point():
            x = quantize(x, bits=self.config.bits, quantization=self.config.quantization)
        targets = self._check_tokens(x.to(next(self.parameters()).device), 2, "audio_or_tokens")
        logits = self(self.shift_right(targets))  # (B, T, C)
        return cross_entropy_bits(logits, targets, reduction="sequence")  # (B,)
