"""Model configs: :class:`ModelConfig`, the base of every saved model's config (flat, typed, validated,
``config_version``, strict ``to_dict`` / ``from_dict``), and :class:`SaShiMiConfig`, the SaShiMi backbone's."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from sashimi._validate import is_int as _is_int
from sashimi._validate import is_num as _is_num

__all__ = ["QUANTIZATIONS", "ModelConfig", "SaShiMiConfig", "SaShiMiLMConfig", "TokenConfigMixin"]

CONFIG_VERSION = 1
NORMS = ("layer", "scalar")
SSM_MODES = ("dplr", "diag")
QUANTIZATIONS = ("mu-law", "linear")
ACTIVATIONS = ("gelu", "silu", "relu", "tanh", "identity")
POSTACTS = ("glu", "linear", None)


def _jsonable(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    return v


class ModelConfig:
    """Base of the flat config dataclasses of this library.

    Subclasses are ``@dataclass`` es validated in ``__post_init__`` with a ``config_version`` field. A
    model family's config sets the class attribute ``model_type`` (the name ``config.json`` records).
    ``added_in`` names the fields introduced after version 1 (field -> version): only those may be
    missing from a saved config of an older version (they take their defaults); any other missing
    field is an error, since it could change what the tensors mean or their shapes.
    """

    model_type: ClassVar[str] = ""
    added_in: ClassVar[dict[str, int]] = {}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (tuples as lists), with ``model_type`` first when the class has one."""
        d = {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}
        return {"model_type": self.model_type, **d} if self.model_type else d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, complete: bool = False) -> ModelConfig:
        """Build from :meth:`to_dict` output.

        Args:
            d: the fields (a ``model_type`` entry, if any, must be this class's).
            complete: the dict is a saved config: every field of its ``config_version`` must be present
                (as read from ``config.json``).

        Raises:
            ValueError: unknown fields, missing fields (with ``complete``), another model type, or
                invalid values.
        """
        if not isinstance(d, dict):
            raise TypeError(f"from_dict needs a dict, got {type(d).__name__}")
        d = dict(d)
        mtype = d.pop("model_type", None)
        if mtype is not None and mtype != cls.model_type:
            raise ValueError(f"this config is for model type {mtype!r}, not {cls.model_type or cls.__name__!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s): {unknown}; known fields: {sorted(known)}")
        if complete:
            version = d.get("config_version", 1)
            if not _is_int(version):
                raise ValueError(f"config_version must be an int, got {version!r}")
            missing = sorted(n for n in known - set(d) if cls.added_in.get(n, 1) <= version)
            if missing:
                raise ValueError(
                    f"the saved {cls.__name__} lacks field(s) {missing} (config_version {version} has them; "
                    "they change what the weights mean, so they take no defaults)"
                )
        return cls(**d)


@dataclass
class SaShiMiConfig(ModelConfig):
    """Hyperparameters of :class:`~sashimi.models.SaShiMi` / :class:`~sashimi.models.BiSaShiMi`.

    Defaults follow the paper's SaShiMi (d_model 64, 8 layers per tier, pooling 4 x 4) with the
    reference standalone model's conventions (one SSM per channel, ``nn.LayerNorm`` residual norms,
    plain pooling linears). The released checkpoints use ``n_ssm=1, norm='scalar',
    pool_weight_norm=True``.

    Attributes:
        d_model: width H of the outer tier; tier i has width ``d_model * expand**i``.
        n_layers: S4 residual blocks per tier (each followed by an FF block when ``ff > 0``).
        pool: pooling factor of each down tier (outer first); ``()`` gives a flat S4 stack.
        expand: width factor between tiers.
        ff: FF block hidden expansion (0 = no FF blocks).
        d_state: S4 state size N (even).
        unet: residual blocks also on the down path, with U-Net skips after every block.
        dropout: dropout in S4/FF layers and on residual branches, in [0, 1).
        bidirectional: non-causal model (use :class:`~sashimi.models.BiSaShiMi`).
        n_ssm: distinct SSMs per S4 layer (None = one per channel; 1 = shared, as the checkpoints);
            must divide ``d_model``.
        norm: residual norm: 'layer' (``nn.LayerNorm``) or 'scalar' (the checkpoints' scalar channel norm).
        pool_weight_norm: weight-normalised pooling linears (the checkpoints).
        ssm_mode: 'dplr' (S4) or 'diag' (S4D).
        init: S4 init ('legs' for dplr; 'diag-lin', 'diag-inv', 'diag-legs' for diag).
        rank: low-rank size of the DPLR matrix.
        dt_min, dt_max: log-uniform dt init range.
        discretization: S4D discretization ('zoh'/'bilinear'; None = the kernel's default).
        activation: S4 block activation.
        postact: S4 block output: 'glu' (linear H->2H + GLU), 'linear' or None.
        ssm_lr: learning-rate hint for the SSM parameters (None = the optimizer's).
        up_shift: UpPools shift their output by one pooled step. Required (True) for the causal
            model; the reference's bidirectional model shifts too (checked against its outputs), so
            True is the default there as well; False gives an unshifted non-causal model.
        transposed: model inputs/outputs are (B, H, L) instead of (B, L, H).
        config_version: format version of this config.
    """

    d_model: int = 64
    n_layers: int = 8
    pool: tuple[int, ...] = (4, 4)
    expand: int = 2
    ff: int = 2
    d_state: int = 64
    unet: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    n_ssm: int | None = None
    norm: str = "layer"
    pool_weight_norm: bool = False
    ssm_mode: str = "dplr"
    init: str = "legs"
    rank: int = 1
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    discretization: str | None = None
    activation: str = "gelu"
    postact: str | None = "glu"
    ssm_lr: float | None = None
    up_shift: bool = True
    transposed: bool = False
    config_version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "expand", "d_state", "rank"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not _is_int(self.ff) or self.ff < 0:
            raise ValueError(f"ff must be an int >= 0 (0 = no FF blocks), got {self.ff!r}")
        if self.d_state % 2:
            raise ValueError(f"d_state must be even (conjugate pairs), got {self.d_state}")
        if not isinstance(self.pool, (list, tuple)):
            raise TypeError(f"pool must be a list or tuple of ints, got {type(self.pool).__name__}")
        if not all(_is_int(p) and p >= 1 for p in self.pool):
            raise ValueError(f"pool entries must be ints >= 1, got {list(self.pool)!r}")
        self.pool = tuple(self.pool)
        for name in ("unet", "bidirectional", "pool_weight_norm", "up_shift", "transposed"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if not self.up_shift and not self.bidirectional:
            raise ValueError("up_shift=False makes the model non-causal: it needs bidirectional=True")
        if not _is_num(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if self.n_ssm is not None and (not _is_int(self.n_ssm) or self.n_ssm < 1 or self.d_model % self.n_ssm):
            raise ValueError(f"n_ssm must be None or a positive divisor of d_model={self.d_model}, got {self.n_ssm!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.ssm_mode not in SSM_MODES:
            raise ValueError(f"ssm_mode must be one of {SSM_MODES}, got {self.ssm_mode!r}")
        if self.ssm_mode == "dplr" and self.init != "legs":
            raise ValueError(f"init must be 'legs' for ssm_mode='dplr', got {self.init!r}")
        if self.ssm_mode == "diag" and self.init not in ("diag-lin", "diag-inv", "diag-legs"):
            raise ValueError(
                f"init must be 'diag-lin', 'diag-inv' or 'diag-legs' for ssm_mode='diag', got {self.init!r}"
            )
        if self.discretization not in (None, "zoh", "bilinear"):
            raise ValueError(f"discretization must be None, 'zoh' or 'bilinear', got {self.discretization!r}")
        if self.ssm_mode == "dplr" and self.discretization not in (None, "bilinear"):
            raise ValueError("discretization must be None or 'bilinear' for ssm_mode='dplr'")
        for name in ("dt_min", "dt_max"):
            v = getattr(self, name)
            if not _is_num(v) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min={self.dt_min} must be <= dt_max={self.dt_max}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.postact not in POSTACTS:
            raise ValueError(f"postact must be one of {POSTACTS}, got {self.postact!r}")
        if self.ssm_lr is not None and (not _is_num(self.ssm_lr) or self.ssm_lr < 0):
            raise ValueError(f"ssm_lr must be None or a number >= 0, got {self.ssm_lr!r}")
        if self.config_version != CONFIG_VERSION:
            raise ValueError(f"config_version must be {CONFIG_VERSION}, got {self.config_version!r}")

    # ---- derived -----------------------------------------------------------------------------
    @property
    def total_pool(self) -> int:
        """prod(pool): the model's length granularity."""
        return math.prod(self.pool)

    @property
    def widths(self) -> tuple[int, ...]:
        """Channel width of each tier, outer first (``len(pool) + 1`` entries; the last is the center)."""
        return tuple(self.d_model * self.expand**i for i in range(len(self.pool) + 1))

    def s4_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~sashimi.layers.S4Block` (except d_model)."""
        kw: dict[str, Any] = dict(
            d_state=self.d_state, bidirectional=self.bidirectional, activation=self.activation,
            postact=self.postact, dropout=self.dropout, transposed=False, mode=self.ssm_mode, init=self.init,
            rank=self.rank, n_ssm=self.n_ssm, dt_min=self.dt_min, dt_max=self.dt_max, ssm_lr=self.ssm_lr,
        )
        if self.discretization is not None:
            kw["discretization"] = self.discretization
        return kw


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
    """:class:`SaShiMiConfig` plus the data settings the model's tokens mean (model type ``"sashimi-lm"``).

    Attributes:
        bits: tokens are ``2**bits`` classes (8 for the paper's models).
        quantization: 'mu-law' (SC09, YouTubeMix) or 'linear' (Beethoven).
        sample_rate: the audio rate the model was trained at, in Hz.
    """

    model_type: ClassVar[str] = "sashimi-lm"

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
