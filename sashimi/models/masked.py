"""MaskedSaShiMi: a MAGNeT-style masked token model (Ziv et al. 2024) on a bidirectional SaShiMi backbone.

K parallel token streams (codebooks) of ``card`` classes each; every stream has its own embedding table
of ``card + 1`` entries (the last, ``card``, is the mask id); the embeddings are summed, run through a
:class:`~sashimi.models.BiSaShiMi`, and K linear heads give the logits. When the model predicts a stream
k > 0, every S4 kernel is restricted to +-``subcodes_context`` taps (MAGNeT's local attention window for
the upper codebooks). Optional class conditioning with a learned null label (classifier-free guidance).

Training (:func:`masked_training_loss`): one stream k per batch; the streams below are given, stream k is
span-masked at a cosine-scheduled rate, the streams above are fully masked; cross-entropy on the masked
positions of stream k. Generation: :meth:`MaskedSaShiMi.generate` (see
:func:`sashimi.generation.masked.masked_decode`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sashimi._validate import is_int as _is_int
from sashimi.audio import dequantize
from sashimi.generation.masked import masked_decode
from sashimi.layers.restricted import frozen_kernels, restricted_context
from sashimi.models.base import PretrainedModel, register_model
from sashimi.models.config import SaShiMiConfig
from sashimi.models.sashimi import BiSaShiMi
from sashimi.schedulers.masking import cosine_mask_rate, span_mask

__all__ = ["MaskedGenerationOutput", "MaskedSaShiMi", "MaskedSaShiMiConfig", "masked_training_loss"]

QUANTIZATIONS = ("mu-law", "linear")


@dataclass
class MaskedSaShiMiConfig(SaShiMiConfig):
    """:class:`SaShiMiConfig` (the backbone; ``bidirectional`` is forced True, ``unet`` defaults True) plus
    the token streams.

    Attributes:
        n_codebooks: K parallel streams (1 for audio samples; e.g. 4 for EnCodec tokens).
        card: classes per stream (256 for 8-bit audio); the mask id is ``card``.
        span_len: tokens per masked span, in training and decoding (MAGNeT: 3 = 60 ms at 50 Hz).
        n_labels: classes for conditioning (0 = unconditional); label ``n_labels`` is the learned null.
        label_dropout: probability of replacing a label by the null label in training (CFG).
        subcodes_context: S4 kernels keep +-this many taps when predicting streams k > 0 (None: no limit).
        quantization: for audio tokens (K = 1), 'mu-law' or 'linear' (generate() also returns the
            waveform); None for codec tokens.
        sample_rate: token rate in Hz (audio sample rate for audio tokens, frame rate for codecs).
    """

    model_type: ClassVar[str] = "masked-sashimi"

    unet: bool = True
    bidirectional: bool = True
    n_codebooks: int = 1
    card: int = 256
    span_len: int = 3
    n_labels: int = 0
    label_dropout: float = 0.3
    subcodes_context: int | None = 5
    quantization: str | None = "mu-law"
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.bidirectional:
            raise ValueError("MaskedSaShiMi is non-causal: bidirectional must be True")
        if self.transposed:
            raise ValueError("MaskedSaShiMi takes token streams (B, K, T): transposed must be False")
        for name in ("n_codebooks", "card", "span_len", "sample_rate"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not _is_int(self.n_labels) or self.n_labels < 0:
            raise ValueError(f"n_labels must be an int >= 0 (0 = unconditional), got {self.n_labels!r}")
        d = self.label_dropout
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d < 1:
            raise ValueError(f"label_dropout must be a number in [0, 1), got {d!r}")
        if self.subcodes_context is not None and (not _is_int(self.subcodes_context) or self.subcodes_context < 0):
            raise ValueError(f"subcodes_context must be None or an int >= 0, got {self.subcodes_context!r}")
        if self.quantization is not None:
            if self.quantization not in QUANTIZATIONS:
                raise ValueError(f"quantization must be None or one of {QUANTIZATIONS}, got {self.quantization!r}")
            if self.n_codebooks != 1 or self.card < 2 or self.card & (self.card - 1):
                raise ValueError(
                    f"quantization={self.quantization!r} means audio tokens: n_codebooks must be 1 and card a power "
                    f"of 2, got n_codebooks={self.n_codebooks}, card={self.card} (use quantization=None for codecs)"
                )

    @property
    def mask_id(self) -> int:
        """The token id of a masked position (``card``)."""
        return self.card

    @property
    def bits(self) -> int | None:
        """log2(card) for audio tokens, else None."""
        return int(math.log2(self.card)) if self.quantization is not None else None

    def backbone_config(self) -> SaShiMiConfig:
        return SaShiMiConfig(**{f.name: getattr(self, f.name) for f in fields(SaShiMiConfig)})


@dataclass
class MaskedGenerationOutput:
    """Result of :meth:`MaskedSaShiMi.generate`.

    Attributes:
        tokens: (B, K, T') int64 (T' = T trimmed to a multiple of ``span_len`` with nonoverlap spans).
        waveform: (B, T') float32 in [-1, 1] for audio-token models, else None.
        sample_rate: Hz.
    """

    tokens: torch.Tensor
    waveform: torch.Tensor | None
    sample_rate: int


@register_model
class MaskedSaShiMi(PretrainedModel, nn.Module):
    """Masked token model: ``sum_k Embedding_k(card + 1) [+ label] -> BiSaShiMi -> K heads`` (model type
    ``"masked-sashimi"``).

    ``model(tokens (B, K, T), labels=None, stage=None) -> logits (B, K, T, card)``. T need not be a
    multiple of the backbone's pooling: the input is padded on the right with mask ids and the output
    cropped. Saved and loaded like every family (``save_pretrained``, ``sashimi.load_model``).
    """

    config_class = MaskedSaShiMiConfig
    card_tags = ("audio", "masked-token-model", "magnet", "sashimi", "s4", "sashimi-audio")

    def __init__(self, config: MaskedSaShiMiConfig | dict | None = None) -> None:
        super().__init__()
        self.config = c = self._coerce_config(config)
        self.embeddings = nn.ModuleList(nn.Embedding(c.card + 1, c.d_model) for _ in range(c.n_codebooks))
        self.label_embedding = nn.Embedding(c.n_labels + 1, c.d_model) if c.n_labels > 0 else None
        self.backbone = BiSaShiMi(c.backbone_config())
        self.heads = nn.ModuleList(nn.Linear(c.d_model, c.card) for _ in range(c.n_codebooks))

    # ---- validation ----------------------------------------------------------------------------------
    def check_tokens(self, tokens: object, allow_mask: bool = True, name: str = "tokens") -> torch.Tensor:
        """Validate (B, K, T) integer tokens in [0, card] (the mask id ``card`` only when ``allow_mask``)."""
        c = self.config
        if not isinstance(tokens, torch.Tensor) or tokens.dtype.is_floating_point or tokens.dtype.is_complex \
                or tokens.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor of shape (B, K={c.n_codebooks}, T)")
        if tokens.ndim != 3 or tokens.shape[1] != c.n_codebooks or tokens.shape[2] == 0:
            raise ValueError(f"{name} must have shape (B, K={c.n_codebooks}, T >= 1), got {tuple(tokens.shape)}")
        hi = c.card if allow_mask else c.card - 1
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) > hi):
            allowed = f"[0, {c.card}] (the mask id is {c.card})" if allow_mask else \
                f"[0, {c.card - 1}] (the mask id {c.card} is not allowed here)"
            raise ValueError(f"{name} out of range: expected values in {allowed}, got "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")
        return tokens.long()

    def _check_labels(self, labels: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor | None:
        """(B,) labels on ``device`` (None -> the null label), or None for an unconditional model."""
        c = self.config
        if self.label_embedding is None:
            if labels is not None:
                raise ValueError("labels were given but the model is unconditional (n_labels=0)")
            return None
        if labels is None:
            return torch.full((batch,), c.n_labels, dtype=torch.long, device=device)  # the null label
        if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.shape != (batch,):
            raise ValueError(f"labels must be an integer tensor of shape ({batch},)")
        if int(labels.min()) < 0 or int(labels.max()) > c.n_labels:
            raise ValueError(f"labels must lie in [0, {c.n_labels}] ({c.n_labels} = the null label)")
        return labels.long().to(device)

    # ---- forward ---------------------------------------------------------------------------------------
    def forward(
        self, tokens: torch.Tensor, labels: torch.Tensor | None = None, stage: int | None = None
    ) -> torch.Tensor:
        """Logits of every stream at every position.

        Args:
            tokens: (B, K, T) ints in [0, card] (``card`` = masked).
            labels: optional (B,) labels in [0, n_labels] (``n_labels`` = null; None = null for all).
            stage: the stream being predicted; for stage > 0 the S4 kernels are restricted to
                +-``subcodes_context`` taps (None or 0: full context).

        Returns:
            logits: (B, K, T, card).
        """
        c = self.config
        tokens = self.check_tokens(tokens)
        if stage is not None and (not _is_int(stage) or not 0 <= stage < c.n_codebooks):
            raise ValueError(f"stage must be None or an int in [0, {c.n_codebooks}), got {stage!r}")
        B, _K, T = tokens.shape
        pad = (-T) % self.backbone.total_pool
        x = F.pad(tokens, (0, pad), value=c.mask_id)  # (B, K, T + pad)
        h = sum(emb(x[:, k]) for k, emb in enumerate(self.embeddings))  # (B, T + pad, H)
        lab = self._check_labels(labels, B, h.device)
        if lab is not None:
            h = h + self.label_embedding(lab).unsqueeze(1)  # (B, 1, H)
        restrict = stage is not None and stage > 0 and c.subcodes_context is not None
        with restricted_context(self.backbone, c.subcodes_context) if restrict else nullcontext():
            h = self.backbone(h)[:, :T]  # (B, T, H)
        return torch.stack([head(h) for head in self.heads], dim=1)  # (B, K, T, card)

    def _decode_fn(self, tokens: torch.Tensor, labels: torch.Tensor | None, stage: int) -> torch.Tensor:
        return self(tokens, labels, stage)

    # ---- generation -----------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        batch_size: int,
        num_tokens: int,
        steps: Sequence[int] | int = (20, 10, 10, 10),
        temperature: float = 3.0,
        top_p: float = 0.9,
        cfg: tuple[float, float] = (10.0, 1.0),
        labels: torch.Tensor | None = None,
        span_scoring: str = "max",
        span_arrangement: str = "nonoverlap",
        prompt: torch.Tensor | None = None,
        rescorer: Any = None,
        rescore_weight: float = 0.7,
        generator: torch.Generator | None = None,
        progress: bool = True,
    ) -> MaskedGenerationOutput:
        """Iterative masked decoding (see :func:`sashimi.generation.masked.masked_decode` for every knob).

        ``steps`` needs one entry per stream (an int is accepted for K = 1; the default (20, 10, 10, 10)
        is MAGNeT's for 4 codebooks). ``prompt`` is (B, K, P) tokens or, for audio-token models, (B, P)
        tokens; it is pinned. ``labels`` (B,) switches on classifier-free guidance. The S4 kernels (of the
        rescorer too) are computed once per call (each length and window), not once per step.
        """
        c = self.config
        was_training = self.training
        self.eval()
        if prompt is not None:
            if isinstance(prompt, torch.Tensor) and prompt.ndim == 2 and c.n_codebooks == 1:
                prompt = prompt.unsqueeze(1)  # (B, 1, P)
            prompt = self.check_tokens(prompt, allow_mask=False, name="prompt")
        if labels is not None:
            self._check_labels(labels, batch_size, torch.device("cpu"))
        device = self.heads[0].weight.device
        rescoring = rescorer if isinstance(rescorer, nn.Module) else nn.Module()  # (a module without kernels)
        try:
            with frozen_kernels(self.backbone), frozen_kernels(rescoring):
                tokens = masked_decode(
                    self._decode_fn, batch_size, num_tokens, n_codebooks=c.n_codebooks, card=c.card,
                    span_len=c.span_len, steps=steps, temperature=temperature, top_p=top_p, cfg=cfg,
                    labels=None if labels is None else labels.to(device), span_scoring=span_scoring,
                    span_arrangement=span_arrangement, prompt=prompt, rescorer=rescorer,
                    rescore_weight=rescore_weight, quantization=c.quantization, generator=generator,
                    device=device, progress=progress,
                )
        finally:
            self.train(was_training)
        wave = None
        if c.quantization is not None:
            wave = dequantize(tokens[:, 0].cpu(), bits=c.bits, quantization=c.quantization)  # (B, T')
        return MaskedGenerationOutput(tokens, wave, c.sample_rate)

    def card_description(self) -> str:
        """A paragraph for the model card: what the model is and how it generates."""
        c = self.config
        tokens = (f"{c.bits}-bit {c.quantization} audio samples at {c.sample_rate} Hz" if c.quantization is not None
                  else f"{c.n_codebooks} codec token streams of {c.card} classes at {c.sample_rate} Hz")
        cond = f", conditioned on {c.n_labels} labels (classifier-free guidance)" if c.n_labels else ""
        return (
            f"A MaskedSaShiMi (MAGNeT-style masked token model on a bidirectional SaShiMi backbone, "
            f"{self.num_parameters():,} parameters) over {tokens}{cond}. It generates by iterative parallel "
            f"decoding: spans of {c.span_len} tokens are filled and the least confident re-masked over a few "
            "dozen passes (`model.generate(...)`); a SaShiMiLM of the same tokens can rescore the candidates."
        )


def masked_training_loss(
    model: MaskedSaShiMi,
    tokens: torch.Tensor,
    labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """One MAGNeT training objective on a batch.

    One stream ``k ~ U{0..K-1}`` for the whole batch; per item a mask rate ``cos(pi/2 u)``, ``u ~ U(0,1)``;
    streams below k are given, stream k is span-masked (:func:`sashimi.schedulers.span_mask`), streams
    above k fully masked; labels are replaced by the null label with probability ``label_dropout``.

    Args:
        model: a :class:`MaskedSaShiMi` (in train mode for dropout), possibly DDP-wrapped.
        tokens: (B, K, T) ground-truth tokens in [0, card).
        labels: optional (B,) labels.
        generator: for every random draw (stream, rates, spans, label dropout).

    Returns:
        dict with ``loss`` (mean cross-entropy in nats over the masked tokens of stream k, differentiable),
        ``bits`` (the same in bits, detached), ``accuracy`` (argmax accuracy on those tokens), ``stage`` (k),
        ``mask_rate`` (the masked fraction of stream k), ``count`` (the number of masked tokens).
    """
    core = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if not isinstance(core, MaskedSaShiMi):
        raise TypeError(f"model must be a MaskedSaShiMi (or one wrapped in DDP), got {type(core).__name__}")
    c = core.config
    tokens = core.check_tokens(tokens, allow_mask=False)
    B, K, T = tokens.shape
    device = tokens.device
    gdev = generator.device if generator is not None else device
    k = int(torch.randint(K, (1,), generator=generator, device=gdev))
    rate = cosine_mask_rate(torch.rand(B, generator=generator, device=gdev, dtype=torch.float64))  # (B,)
    mask = span_mask(B, T, rate.clamp(0, 1), c.span_len, generator=generator, device=gdev).to(device)  # (B, T)
    inputs = tokens.clone()
    inputs[:, k] = tokens[:, k].masked_fill(mask, c.mask_id)
    inputs[:, k + 1:] = c.mask_id
    if labels is not None and c.n_labels > 0 and model.training and c.label_dropout > 0:
        drop = (torch.rand(B, generator=generator, device=gdev) < c.label_dropout).to(device)
        labels = torch.where(drop, torch.full_like(labels, c.n_labels), labels)
    logits = model(inputs, labels, stage=k)[:, k]  # (B, T, card)
    target = tokens[:, k][mask]  # (M,)
    sel = logits[mask].float()  # (M, card)
    loss = F.cross_entropy(sel, target)
    with torch.no_grad():
        acc = (sel.argmax(-1) == target).float().mean()
    return {
        "loss": loss, "bits": loss.detach() / math.log(2), "accuracy": acc, "stage": torch.tensor(k),
        "mask_rate": mask.float().mean(), "count": torch.tensor(int(mask.sum())),
    }
