"""SaShiMiLM: the autoregressive raw-waveform model (token embedding -> SaShiMi -> logits) and its generation."""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, fields
import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from sashimi.audio import dequantize, quantize
from sashimi.models.config import SaShiMiConfig
from sashimi.models import _fast_step
from sashimi.models.sashimi import SaShiMi, SaShiMiState

__all__ = ["SaShiMiLM", "SaShiMiLMConfig", "GenerationOutput"]

QUANTIZATIONS = ("mu-law", "linear")


#: the smallest batch :meth:`SaShiMiLM.generate` pipelines on the CPU with ``num_threads > 1``: below
#: it a step's work is too small for the thread handoffs (measured on 2 cores, SC09 model: batch 1
#: 0.72 ms per step pipelined vs 0.64 inline, batch 8 0.95 vs 0.89, batch 16 1.13 vs 1.14, batch 32
#: 1.30 vs 1.66)
PIPELINE_MIN_BATCH = 16


class TokenConfigMixin:
    """For the configs of token models (fields ``bits`` and ``quantization``): the class count, the zero
    token and the validation of both fields."""

    bits: int
    quantization: str

    def _check_token_fields(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= 16:
            raise ValueError(f"bits must be an int in [1, 16], got {self.bits!r}")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {self.quantization!r}")

    @property
    def n_classes(self) -> int:
        return 2**self.bits

    @property
    def zero_token(self) -> int:
        """The token of silence, fed as the first input (``2**(bits-1)``)."""
        return 2 ** (self.bits - 1)


@dataclass
class SaShiMiLMConfig(TokenConfigMixin, SaShiMiConfig):
    """:class:`SaShiMiConfig` plus the data settings the model's tokens mean.

    Attributes:
        bits: tokens are ``2**bits`` classes (8 for the paper's models).
        quantization: 'mu-law' (SC09, YouTubeMix) or 'linear' (Beethoven).
        sample_rate: the audio rate the model was trained at, in Hz.
    """

    bits: int = 8
    quantization: str = "mu-law"
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bidirectional:
            raise ValueError("SaShiMiLM is autoregressive: bidirectional must be False")
        self._check_token_fields()
        if isinstance(self.sample_rate, bool) or not isinstance(self.sample_rate, int) or self.sample_rate < 1:
            raise ValueError(f"sample_rate must be a positive int (Hz), got {self.sample_rate!r}")

    def backbone_config(self) -> SaShiMiConfig:
        return SaShiMiConfig(**{f.name: getattr(self, f.name) for f in fields(SaShiMiConfig)})


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
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(dim=1)  # (B,) nats
        return nll / math.log(2)


@dataclass
class GenerationOutput:
    """Result of :meth:`SaShiMiLM.generate`.

    Attributes:
        waveform: (B, T) float32 in [-1, 1], decoded with the model's quantization.
        tokens: (B, T) int64.
        log_likelihood: (B,) float64: sum over all T tokens of log p(token | past) in nats, from the
            untempered model (the prompt's tokens included).
        sample_rate: Hz.
    """

    waveform: torch.Tensor
    tokens: torch.Tensor
    log_likelihood: torch.Tensor
    sample_rate: int

    @property
    def bits_per_sample(self) -> torch.Tensor:
        """(B,) negative log-likelihood per token in bits (the paper's NLL metric)."""
        return -self.log_likelihood / self.tokens.shape[1] / math.log(2)


class SaShiMiLM(
    TokenModelMixin,
    nn.Module,
    PyTorchModelHubMixin,
    library_name="sashimi-audio",
    tags=["audio", "raw-waveform", "sashimi", "s4", "state-space-model"],
    paper_url="https://arxiv.org/abs/2202.09729",
):
    """Autoregressive waveform model: ``Embedding(2**bits, d_model) -> SaShiMi -> Linear(d_model, 2**bits)``.

    Inputs are token sequences shifted right by one with the zero token in front
    (``x = [zero, q_0, ..., q_{L-2}]``), outputs the logits of ``q`` at every position.
    """

    def __init__(self, config: SaShiMiLMConfig | dict | None = None) -> None:
        super().__init__()
        config = SaShiMiLMConfig() if config is None else config
        if isinstance(config, dict):  # as read from config.json by from_pretrained
            config = SaShiMiLMConfig.from_dict(config)
        if not isinstance(config, SaShiMiLMConfig):
            raise TypeError(f"config must be a SaShiMiLMConfig, got {type(config).__name__}")
        if config.transposed:
            raise ValueError("SaShiMiLM takes token sequences (B, L): config.transposed must be False")
        self.config = config
        self.encoder = nn.Embedding(config.n_classes, config.d_model)
        self.backbone = SaShiMi(config.backbone_config())
        self.decoder = nn.Linear(config.d_model, config.n_classes)

    # ---- helpers ---------------------------------------------------------------------------------
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
        """One step: (B,) input tokens -> (B, 2**bits) logits of the next token; the state is updated in place."""
        tokens = self._check_tokens(tokens, 1)
        if isinstance(state, SaShiMiState):
            want = torch.complex64 if self.decoder.weight.dtype != torch.float64 else torch.complex128
            got = next((_made_for(s) for s in _s4_states(state)), want)
            if got != want:
                raise TypeError(
                    f"state dtype {got} does not match the model's dtype {self.decoder.weight.dtype} "
                    f"(expected {want}): make it with init_state(batch_size) on this model"
                )
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

    @torch.no_grad()
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
        """Sample waveforms autoregressively in step mode.

        Args:
            batch_size: B.
            num_samples: T, total length including the prompt.
            prompt: optional (B, P) or (P,) int tokens or float waveform in [-1, 1] (quantized with
                the model's settings): the first P <= T output tokens.
            temperature: softmax temperature for sampling (> 0); the returned likelihood is untempered.
            top_p: nucleus sampling mass in (0, 1].
            generator: torch.Generator for reproducible sampling.
            progress: show a tqdm bar with samples/s and the real-time factor.
            mode: S4 step discretization (see :meth:`S4Block.init_state`).
            compile: compile each tier's per-sample step with ``torch.compile`` (slow to start:
                worth it for long generations).
            num_threads: CPU threads while generating (default 1; torch's setting is restored
                afterwards; None keeps it). With n > 1 and at least :data:`PIPELINE_MIN_BATCH`
                streams, the lower tiers of the step program (run when the top tier's pooling window
                closes) run in a second thread while the top tier goes on (exact: the UpPool is one
                window behind; see ``pipeline`` in :class:`sashimi.models._fast_step.FastStepper`).
                torch gets n - 1 intra-op threads, pipelined or not (a step's tensors are small:
                intra-op threading mostly adds synchronisation). The tokens do not depend on it.
                Ignored off the CPU.

        The sampling loop steps a flat program built once from the weights (see
        :mod:`sashimi.models._fast_step`: real arithmetic, no per-step validation); configurations it
        does not cover step with :meth:`step`. Sampling is by inverse CDF with the uniforms drawn
        from ``generator`` in blocks of steps (the same tokens for the same generator state).
        """
        if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int)
                                        or num_threads < 1):
            raise ValueError(f"num_threads must be a positive int or None, got {num_threads!r}")
        on_cpu = self.decoder.weight.device.type == "cpu"
        threads = torch.get_num_threads() if num_threads is None else num_threads
        pipeline = on_cpu and threads > 1 and batch_size >= PIPELINE_MIN_BATCH
        # n - 1 intra-op threads, pipelined or not: a step's tensors are too small to share
        intra = None if num_threads is None and not pipeline else max(1, threads - 1)
        with _cpu_threads(intra if on_cpu else None):
            return self._generate(batch_size, num_samples, prompt, temperature, top_p, generator, progress, mode,
                                  compile, pipeline)

    def _generate(
        self, batch_size: int, num_samples: int, prompt: torch.Tensor | None, temperature: float, top_p: float,
        generator: torch.Generator | None, progress: bool, mode: str, compile: bool, pipeline: bool = False,
    ) -> GenerationOutput:
        cfg = self.config
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        if isinstance(temperature, bool) or not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if isinstance(top_p, bool) or not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
        device = self.decoder.weight.device
        if generator is not None and generator.device.type != device.type:
            raise ValueError(f"generator is on {generator.device}, the model on {device}: "
                             f"use torch.Generator(device={device.type!r})")
        if prompt is not None and not isinstance(prompt, torch.Tensor):
            raise TypeError(f"prompt must be a tensor of tokens or a waveform, got {type(prompt).__name__}")
        tokens = torch.empty(batch_size, num_samples, dtype=torch.long, device=device)
        ll = torch.zeros(batch_size, dtype=torch.float64, device=device)
        start = 0
        if prompt is not None:
            p = prompt.unsqueeze(0) if prompt.ndim == 1 else prompt
            if p.is_floating_point():
                p = quantize(p, bits=cfg.bits, quantization=cfg.quantization)
            p = self._check_tokens(p.to(device), 2, "prompt")
            if p.shape[0] == 1 and batch_size > 1:
                p = p.expand(batch_size, -1)
            if p.shape[0] != batch_size:
                raise ValueError(f"prompt has batch size {p.shape[0]}, expected 1 or batch_size={batch_size}")
            if p.shape[1] > num_samples:
                raise ValueError(f"prompt has {p.shape[1]} samples, longer than num_samples={num_samples}")
            start = p.shape[1]
            tokens[:, :start] = p
            logits, state = self.prefill(self.shift_right(p), mode=mode) if start > 1 else (None, None)
            if state is None:  # a one-token prompt: step the zero token
                state = self.init_state(batch_size, device=device, mode=mode)
                logits = self.step(torch.full((batch_size,), cfg.zero_token, device=device), state)[0].unsqueeze(1)
            logp = torch.log_softmax(logits.double(), dim=-1)  # (B, P, C)
            ll += logp.gather(-1, p.unsqueeze(-1)).squeeze(-1).sum(dim=1)
            if start == num_samples:
                return self._output(tokens, ll)
            logits, _ = self.step(p[:, -1], state)  # logits of token `start`
        else:
            state = self.init_state(batch_size, device=device, mode=mode)
            logits, _ = self.step(torch.full((batch_size,), cfg.zero_token, device=device), state)

        emb, dec_w, dec_b = self.encoder.weight, self.decoder.weight, self.decoder.bias
        # without a nucleus the step program also draws (inside its last unit; see FastStepper)
        draw = (emb, float(temperature)) if top_p >= 1.0 else None
        stepper = _fast_step.build(self.backbone, state, compile=compile, pipeline=pipeline, decoder=(dec_w, dec_b),
                                   draw=draw)
        if stepper is None and compile:
            warnings.warn(
                "generate(compile=True) steps uncompiled: the fast step program does not cover this model "
                f"({_fast_step.unsupported_reason(self.backbone, state)})", stacklevel=3,
            )
        sample = _Sampler(batch_size, logits.shape[-1], temperature, top_p, generator, device)
        logp = torch.log_softmax(logits.double(), dim=-1)  # (B, C): the first draw's
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=num_samples - start, unit="step", desc="generating", leave=False)
        t0 = time.perf_counter()
        t = start
        x = None  # once the step program draws: the embedding of the last class drawn
        try:
            with torch.no_grad():
                while t < num_samples:
                    i0 = sample.refill()  # uniforms for steps t .. t + n - 1 at block positions i0 ..
                    n = min(sample.left(), num_samples - t, 256)  # the bar moves every 256 steps
                    drawn = []
                    for j in range(n):
                        u = sample.noise[i0 + j]  # (B,)
                        if x is not None:  # a step on the last class, then the draw of this one
                            nxt, x = stepper.step(x, u, ll)
                        else:
                            nxt = _sample_from(logp, u, temperature, top_p)  # (B,)
                            ll += logp.gather(-1, nxt.unsqueeze(-1)).squeeze(-1)
                            if t + j + 1 < num_samples:
                                if stepper is None:
                                    logp = torch.log_softmax(self.step(nxt, state)[0].double(), dim=-1)
                                elif draw is not None:
                                    x = F.embedding(nxt, emb)
                                else:  # log-probabilities straight from the step program
                                    logp = stepper.step(F.embedding(nxt, emb))
                        drawn.append(nxt)
                    tokens[:, t : t + n] = torch.stack(drawn, dim=1)
                    sample.consume(n)
                    t += n
                    if bar is not None:
                        rate = (t - start) * batch_size / max(time.perf_counter() - t0, 1e-9)
                        bar.update(t - start - bar.n)
                        bar.set_postfix(samples_per_s=f"{rate:,.0f}", rtf=f"{rate / cfg.sample_rate:.3f}")
        finally:
            if stepper is not None:
                stepper.close()
            if bar is not None:
                bar.close()
        return self._output(tokens, ll)

    def _output(self, tokens: torch.Tensor, ll: torch.Tensor) -> GenerationOutput:
        cfg = self.config
        wav = dequantize(tokens.cpu(), bits=cfg.bits, quantization=cfg.quantization).float()
        return GenerationOutput(wav, tokens.cpu(), ll.cpu(), cfg.sample_rate)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- Hub and conversion (the logic lives in sashimi.hub and sashimi.convert.state_spaces) -----
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str,
        *,
        revision: str | None = None,
        cache_dir: str | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        map_location: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        strict: bool = True,
    ) -> "SaShiMiLM":
        """Load a model from a local folder, a Hub repo id, or a known pretrained name.

        Args:
            pretrained_model_name_or_path: a folder with ``config.json`` + ``model.safetensors``; a
                registry name such as ``"sashimi-sc09"`` (see :func:`sashimi.hub.list_pretrained`: the
                official release file is downloaded, converted once and cached); or a Hub repo id.
            revision, cache_dir, force_download, local_files_only, token: as for ``hf_hub_download``.
            map_location: device of the returned model.
            dtype: cast the model to this floating dtype (default: the dtype stored in the file).
            strict: missing or unexpected tensors are an error (default); wrong shapes always are.

        Only safetensors weights are read (never a pickle). Returns the model in eval mode.
        """
        from sashimi.hub import load_pretrained

        return load_pretrained(
            cls, pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir,
            force_download=force_download, local_files_only=local_files_only, token=token,
            map_location=map_location, dtype=dtype, strict=strict,
        )

    @classmethod
    def _from_pretrained(
        cls, *, model_id: str, revision: str | None, cache_dir: str | None, force_download: bool,
        local_files_only: bool, token: str | bool | None, map_location: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None, strict: bool = True, **model_kwargs,
    ) -> "SaShiMiLM":
        # the mixin's hook: same strict, safetensors-only loader (the config comes from config.json)
        from sashimi.hub import load_pretrained

        return load_pretrained(
            cls, model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
            local_files_only=local_files_only, token=token, map_location=map_location, dtype=dtype, strict=strict,
        )

    def _save_pretrained(self, save_directory) -> None:
        from sashimi.hub import save_model_files

        save_model_files(self, save_directory)

    def generate_model_card(self, *args, **kwargs):
        from sashimi.hub import model_card

        return model_card(self, **kwargs)

    @classmethod
    def from_state_spaces(
        cls,
        path_or_state_dict,
        variant: str = "sc09",
        *,
        dt_transform: str = "exp",
        dtype: torch.dtype | None = None,
        map_location: str | torch.device = "cpu",
    ) -> "SaShiMiLM":
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


def _s4_states(state: SaShiMiState):
    """The S4 layer states inside a backbone state."""
    for tier in [*state.down, *state.up]:
        yield from (s for s in tier.blocks if s is not None and hasattr(s, "x"))
    yield from (s for s in state.center if s is not None and hasattr(s, "x"))


def _made_for(s) -> torch.dtype:
    """The complex dtype of the model precision an S4 state was made for (its own, for old states)."""
    if getattr(s, "dtype", None) is None:
        return s.x.dtype
    return torch.complex128 if s.dtype == torch.float64 else torch.complex64


@contextlib.contextmanager
def _cpu_threads(n: int | None):
    """Run with ``torch.set_num_threads(n)`` (None: unchanged), restoring the previous setting."""
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def _sample_from(logp: torch.Tensor, u: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Inverse-CDF draws from (b, C) log-probabilities with one uniform ``u`` (b,) in [0, 1 - 2**-50)
    per row.

    With ``p = softmax(logp / temperature)`` (classes outside the nucleus, the smallest set of the
    most likely classes whose tempered mass reaches ``top_p``, set to 0; the most likely class always
    stays), the sample is the first class whose cumulative mass exceeds ``u * sum(p)``: an exact
    draw from ``p``.
    """
    probs = logp.exp() if temperature == 1.0 else torch.softmax(logp / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(dim=-1) - sorted_p >= top_p  # keeps the most likely class
        probs = probs.masked_fill(torch.zeros_like(drop).scatter(-1, idx, drop), 0.0)
    cdf = probs.cumsum(dim=-1)  # (b, C)
    # u < 1 - 2**-50 (see _Sampler.refill): u * total stays below the total, so the first class whose
    # cumulative mass exceeds it exists and has a positive probability. It is the number of cumulative
    # masses at or below u * total (the CDF is nondecreasing: searchsorted's answer, as one reduction
    # that also fuses into the step program's compiled graph)
    return (cdf <= u.unsqueeze(-1) * cdf[:, -1:]).sum(dim=-1)


class _Sampler:
    """Inverse-CDF sampling (:func:`_sample_from`) with the uniforms for ``block`` steps drawn at once
    from ``generator`` (one call instead of a multinomial draw per step)."""

    def __init__(self, batch: int, classes: int, temperature: float, top_p: float,
                 generator: torch.Generator | None, device: torch.device, block: int = 4096) -> None:
        self.shape = (max(1, min(block, 2**20 // batch)), batch)  # at most 8 MB of uniforms
        self.temperature, self.top_p, self.generator = float(temperature), float(top_p), generator
        self.noise = torch.empty(self.shape, dtype=torch.float64, device=device)
        self.i = self.shape[0]

    def refill(self) -> int:
        """Draw a new block of uniforms if the current one is used up; the next unused position."""
        if self.i == self.shape[0]:
            # (block, B) in [0, 1 - 2**-50): a draw may not round up to the total mass
            self.noise.uniform_(generator=self.generator).mul_(1.0 - 2.0**-50)
            self.i = 0
        return self.i

    def left(self) -> int:
        """Unused steps of the current block."""
        return self.shape[0] - self.i

    def consume(self, n: int) -> None:
        self.i += n

    def __call__(self, logp: torch.Tensor) -> torch.Tensor:
        """The next samples of the whole batch."""
        i = self.refill()
        self.consume(1)
        return _sample_from(logp, self.noise[i], self.temperature, self.top_p)
