"""Load the official SaShiMi release checkpoints (state-spaces/s4, Hub repo ``krandiash/sashimi-release``)
into :class:`~sashimi.models.lm.SaShiMiLM`, without Hydra.

The released ``.pt`` files are plain PyTorch-Lightning state dicts (``torch.save(ckpt['state_dict'])``)
whose architecture is only described by the Hydra experiment they were trained with. A *variant* fixes
that architecture and the data settings (see :data:`VARIANTS`); the few architecture details visible in
the tensors themselves (GLU or plain S4 output linears, weight-normed pooling, one shared SSM or one per
channel) are read from the file.

Key layouts (prefix ``model.`` = backbone, ``K`` = number of pooling tiers)::

    model.d_layers.<n>               flat list per down tier: [U-Net residual blocks...] then its DownPool
    model.c_layers.<j>               center residual blocks
    model.u_layers.<g>.0 / .<m>      SaShiMi: up tier g (deepest first): UpPool, then residual blocks
    model.u_layers.<n>               U-Net: flat list, per up tier (deepest first): UpPool, blocks...
    model.norm.{weight, bias}        final LayerNorm
    encoder.0.weight                 token embedding (2**bits, d_model)
    decoder.0.output_transform.*     output linear (2**bits, d_model)

Pooling layer: ``linear.{weight_g (out, 1), weight_v (out, in), bias}`` (weight norm) or ``linear.weight``.
Residual block ``<p>``: ``<p>.norm.norm.{m, s}`` (scalar channel norm) and an S4 or FF layer. FF:
``<p>.layer.ff.0.0.*`` (H -> ff*H, GELU) and ``<p>.layer.ff.2.*``. S4, in one of two generations:

* **v3** (the release files): ``<p>.layer.D`` (1, H), ``<p>.layer.output_linear.0.*``,
  ``<p>.layer.kernel.kernel.{log_dt (H,), inv_w_real (n_ssm, N/2), w_imag, B (1, n_ssm, N/2, 2),
  P (rank, n_ssm, N/2, 2), C (1, H, N/2, 2), L ()}`` with ``dt = exp(log_dt)``,
  ``Re Lambda = -exp(inv_w_real)``, ``Im Lambda = w_imag``.
* **v4** (the official ``convert_v3_to_v4`` port, ``*_v4.pt``): ``<p>.layer.layer.D``,
  ``<p>.layer.layer.kernel.{inv_dt (H, 1), A_real, A_imag, B, P, C, l_kernel}`` with
  ``Re Lambda = -exp(A_real)``, ``Im Lambda = -A_imag``. The port renames ``log_dt`` to ``inv_dt``
  but keeps its value, so ``dt = exp(inv_dt)`` (``dt_transform='exp'``, the default here). The v4
  code's *default* transform is softplus, which is why ported files produce noise there; only a
  checkpoint trained natively with v4 defaults needs ``dt_transform='softplus'``.

In both, the stored C is ``C~ = C (I - Abar^L)`` for the layer's training length ``L`` (the ``L`` /
``l_kernel`` buffer: 16000 / 4000 / 1000 for SC09); it is solved back to the canonical C that
:class:`~sashimi.layers.S4Kernel` stores (:func:`~sashimi.convert.standalone.detilde`).

Files are read with ``torch.load(weights_only=True)`` (or safetensors) only: a pickle that would
build arbitrary objects or run code is refused (:class:`UnsafeCheckpointError`).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sashimi.convert.standalone import detilde
from sashimi.hub.format import describe_file
from sashimi.models.config import SaShiMiLMConfig

__all__ = [
    "VARIANTS",
    "UnsafeCheckpointError",
    "Variant",
    "convert_state_spaces_state_dict",
    "detect_layout",
    "load_state_spaces",
    "read_checkpoint",
    "as_state_dict",
    "variant_config",
]

DT_TRANSFORMS = ("exp", "softplus")


@dataclass(frozen=True)
class Variant:
    """An official SaShiMi experiment: its architecture and data settings.

    Attributes:
        name: the variant name (``from_state_spaces(..., variant=name)``).
        experiment: the Hydra experiment of state-spaces/s4 it corresponds to.
        description: one line for docs and model cards.
        config: :class:`~sashimi.models.lm.SaShiMiLMConfig` keyword arguments.
        train_length: the training sample length (the ``L`` buffers of the outer tier).
    """

    name: str
    experiment: str
    description: str
    config: Mapping[str, Any] = field(default_factory=dict)
    train_length: int = 16000


_SASHIMI = dict(
    d_model=64, n_layers=8, pool=(4, 4), expand=2, ff=2, d_state=64, unet=False, dropout=0.0, n_ssm=1,
    norm="scalar", pool_weight_norm=True, ssm_mode="dplr", init="legs", rank=1, dt_min=1e-3, dt_max=1e-1,
    activation="gelu", postact="glu", bits=8, sample_rate=16000,
)

VARIANTS: dict[str, Variant] = {
    "sc09": Variant(
        "sc09", "audio/sashimi-sc09", "SaShiMi on SC09 spoken digits (1 s clips), 8-bit mu-law, 16 kHz",
        {**_SASHIMI, "quantization": "mu-law"}, 16000,
    ),
    "youtubemix": Variant(
        "youtubemix", "audio/sashimi-youtubemix", "SaShiMi on YouTubeMix piano music, 8-bit mu-law, 16 kHz",
        {**_SASHIMI, "quantization": "mu-law"}, 131072,
    ),
    "beethoven": Variant(
        "beethoven", "audio/sashimi-beethoven", "SaShiMi on Beethoven piano sonatas, 8-bit linear, 16 kHz",
        {**_SASHIMI, "quantization": "linear"}, 128000,
    ),
    "sc09-unet": Variant(
        "sc09-unet", "audio/sashimi-sc09-unet",
        "U-Net SaShiMi on SC09 (one SSM per channel, plain pooling linears), 8-bit mu-law, 16 kHz",
        {**_SASHIMI, "quantization": "mu-law", "unet": True, "n_ssm": None, "pool_weight_norm": False}, 16000,
    ),
}

# settings read from the tensors (they override the variant; everything else must match it)
_FROM_FILE = ("postact", "pool_weight_norm", "n_ssm")


class UnsafeCheckpointError(ValueError):
    """A checkpoint file that ``torch.load(weights_only=True)`` refuses: it is not a plain tensor dict."""


# ---- reading ----------------------------------------------------------------------------------------
def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file or a ``.pt``/``.ckpt`` pickle.

    Pickles are opened with ``torch.load(weights_only=True)`` only, which builds nothing but tensors and
    plain containers and never runs code from the file. A full Lightning checkpoint (a dict with a
    ``'state_dict'`` entry) is unwrapped.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the pickle holds other objects (it could run code): refused.
        ValueError: not a readable checkpoint, or not a dict of tensors.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint file at {p}")
    with open(p, "rb") as f:
        head = f.read(9)
    # torch.save writes a zip archive ("PK...") or, in the legacy format, a pickle (b"\x80..."); a
    # safetensors file starts with the 8-byte length of its JSON header, then "{"
    pickled = head.startswith(b"PK") or head.startswith(b"\x80")
    header_len = int.from_bytes(head[:8], "little") if len(head) == 9 else -1
    safetensors = head[8:9] == b"{" and 0 < header_len < p.stat().st_size
    if p.suffix == ".safetensors" or safetensors:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(p))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(
                f"{p} is not a readable safetensors file: it is {describe_file(p)} ({err})"
            ) from err
    elif not pickled:
        raise ValueError(
            f"{p} is not a checkpoint: it is {describe_file(p)}. Expected a torch.save file (a zip archive or a "
            "protocol-2+ pickle of tensors) or a .safetensors file"
        )
    else:
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise UnsafeCheckpointError(
                f"refusing to load {p}: torch.load(weights_only=True) rejected it because the pickle contains "
                "objects other than tensors and plain containers, and unpickling those can execute arbitrary "
                "code. sashimi-audio never unpickles such files. If you trust the file, extract its state dict "
                f"in a separate, sandboxed process and save it with safetensors. Details: {err}"
            ) from err
        except (RuntimeError, EOFError, OSError) as err:
            raise ValueError(f"{p} is not a readable PyTorch checkpoint (truncated or corrupt?): {err}") from err
    return as_state_dict(obj, str(p))


def as_state_dict(obj: Any, origin: str) -> dict[str, torch.Tensor]:
    """``obj`` as a dict of named tensors, unwrapping a training checkpoint's ``state_dict`` /
    ``model_state_dict``; ValueError naming ``origin`` otherwise."""
    for wrapper in ("state_dict", "model_state_dict"):  # a full Lightning / diffwave-sashimi training checkpoint
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping):
        raise ValueError(f"{origin}: expected a state dict (a dict of tensors), got {type(obj).__name__}")
    bad = sorted(str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor))
    if bad:
        raise ValueError(f"{origin}: not a state dict: entries that are not named tensors: {bad[:10]}")
    return dict(obj)


# ---- layout -----------------------------------------------------------------------------------------
def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """'v3' (``layer.kernel.kernel.*``, ``log_dt``) or 'v4' (``layer.layer.kernel.*``, ``inv_dt``).

    Raises ValueError naming the S4-looking keys when the dict has neither (or both)."""
    v3 = any(".layer.kernel.kernel." in k for k in state_dict)
    v4 = any(".layer.layer.kernel." in k for k in state_dict)
    if v3 and v4:
        raise ValueError("the state dict mixes v3 (layer.kernel.kernel.*) and v4 (layer.layer.kernel.*) S4 keys")
    if v3:
        return "v3"
    if v4:
        return "v4"
    kernelish = sorted(k for k in state_dict if "kernel" in k)[:10]
    raise ValueError(
        "not a state-spaces SaShiMi checkpoint: found neither the v3 S4 keys (<block>.layer.kernel.kernel.*) "
        f"nor the v4 ones (<block>.layer.layer.kernel.*); kernel-like keys: {kernelish or 'none'}; "
        f"first keys: {sorted(state_dict)[:10]}"
    )


def variant_config(variant: str, **overrides: Any):
    """The :class:`~sashimi.models.config.SaShiMiLMConfig` of a variant (with optional overrides)."""
    v = _variant(variant)
    return SaShiMiLMConfig(**{**v.config, **overrides})


def _variant(variant: str) -> Variant:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known variants: {sorted(VARIANTS)}")
    return VARIANTS[variant]


def _squeeze_conv(w: torch.Tensor) -> torch.Tensor:
    """(out, in, 1) 1x1-convolution weight -> (out, in)."""
    return w.squeeze(-1) if w.ndim == 3 and w.shape[-1] == 1 else w


class _Mapper:
    """Maps one release state dict onto SaShiMiLM keys, recording which source keys it used."""

    def __init__(self, sd: Mapping[str, torch.Tensor], layout: str, dt_transform: str) -> None:
        self.sd, self.layout, self.dt_transform = sd, layout, dt_transform
        self.out: dict[str, torch.Tensor] = {}
        self.used: set[str] = set()
        self.seen: dict[str, set] = {"postact": set(), "pool_weight_norm": set(), "n_ssm": set(), "norm": set()}

    def has(self, key: str) -> bool:
        return key in self.sd

    def take(self, key: str) -> torch.Tensor:
        self.used.add(key)
        return self.sd[key]

    def children(self, prefix: str) -> list[str]:
        return [k[len(prefix):] for k in self.sd if k.startswith(prefix)]

    # -- pieces --
    def pool(self, src: str, dst: str) -> None:
        if self.has(f"{src}.linear.weight_g"):
            self.seen["pool_weight_norm"].add(True)
            self.out[f"{dst}.linear.parametrizations.weight.original0"] = _squeeze_conv(
                self.take(f"{src}.linear.weight_g")
            )
            self.out[f"{dst}.linear.parametrizations.weight.original1"] = _squeeze_conv(
                self.take(f"{src}.linear.weight_v")
            )
        else:
            self.seen["pool_weight_norm"].add(False)
            self.out[f"{dst}.linear.weight"] = _squeeze_conv(self.take(f"{src}.linear.weight"))
        if self.has(f"{src}.linear.bias"):
            self.out[f"{dst}.linear.bias"] = self.take(f"{src}.linear.bias")

    def is_pool(self, src: str) -> bool:
        return any(self.has(f"{src}.linear.{n}") for n in ("weight", "weight_v", "weight_g"))

    def block(self, src: str, dst: str) -> None:
        # residual norm
        if self.has(f"{src}.norm.norm.m") or self.has(f"{src}.norm.norm.s"):
            self.seen["norm"].add("scalar")
            for n in ("m", "s"):
                if self.has(f"{src}.norm.norm.{n}"):
                    self.out[f"{dst}.norm.{n}"] = self.take(f"{src}.norm.norm.{n}")
        else:
            for ref in (f"{src}.norm.norm.ln", f"{src}.norm.norm"):
                if self.has(f"{ref}.weight"):
                    self.seen["norm"].add("layer")
                    for n in ("weight", "bias"):
                        if self.has(f"{ref}.{n}"):
                            self.out[f"{dst}.norm.{n}"] = self.take(f"{ref}.{n}")
                    break
        # layer
        if any(k.startswith("ff.") for k in self.children(f"{src}.layer.")):
            for ref, ours in (("ff.0.0", "fc1"), ("ff.2", "fc2")):
                for n in ("weight", "bias"):
                    key = f"{src}.layer.{ref}.{n}"
                    if self.has(key):
                        t = self.take(key)
                        self.out[f"{dst}.layer.{ours}.{n}"] = _squeeze_conv(t) if n == "weight" else t
        elif self.has(f"{src}.layer.D") or self.has(f"{src}.layer.layer.D"):
            self.s4(src, dst)

    def s4(self, src: str, dst: str) -> None:
        if self.layout == "v3":
            D_key, kp = f"{src}.layer.D", f"{src}.layer.kernel.kernel."
            names = {"dt": "log_dt", "re": ("inv_w_real", "log_w_real"), "im": "w_imag", "L": "L"}
        else:
            D_key, kp = f"{src}.layer.layer.D", f"{src}.layer.layer.kernel."
            names = {"dt": "inv_dt", "re": ("A_real",), "im": "A_imag", "L": "l_kernel"}
        re_key = next((kp + n for n in names["re"] if self.has(kp + n)), None)
        need = [kp + names["dt"], kp + names["im"], kp + "B", kp + "P", kp + "C", D_key]
        missing = [k for k in need if not self.has(k)] + ([] if re_key else [kp + names["re"][0]])
        if missing:
            raise ValueError(f"S4 layer {src!r} ({self.layout} layout) lacks key(s) {missing}")
        f64 = torch.float64
        raw_dt = self.take(kp + names["dt"])
        A_real = self.take(re_key)
        A_imag = self.take(kp + names["im"])
        B, P, C = self.take(kp + "B"), self.take(kp + "P"), self.take(kp + "C")
        L = int(self.take(kp + names["L"]).item()) if self.has(kp + names["L"]) else 0
        D = self.take(D_key)
        dtype = C.dtype

        x = raw_dt.to(f64).reshape(-1)  # (H,)
        if self.layout == "v3" or self.dt_transform == "exp":
            log_dt = x
        else:  # softplus: dt = log(1 + exp(x))
            log_dt = torch.log(F.softplus(x))
        im = A_imag.to(f64) if self.layout == "v3" else -A_imag.to(f64)  # ours: Im(Lambda)
        if B.ndim == 4:
            if B.shape[0] != 1:
                raise ValueError(f"{kp}B has shape {tuple(B.shape)}; expected (1, n_ssm, N/2, 2)")
            B = B[0]
        if A_real.ndim != 2 or C.ndim != 4 or P.ndim != 4:
            raise ValueError(
                f"S4 layer {src!r}: unexpected shapes A_real {tuple(A_real.shape)}, P {tuple(P.shape)}, "
                f"C {tuple(C.shape)} (expected (n_ssm, N/2), (rank, n_ssm, N/2, 2), (c, H, N/2, 2))"
            )
        H, n_ssm = C.shape[1], A_real.shape[0]
        if H % n_ssm:
            raise ValueError(f"S4 layer {src!r}: {n_ssm} SSMs do not tile its {H} channels")
        self.seen["n_ssm"].add(1 if n_ssm == 1 else ("per-channel" if n_ssm == H else n_ssm))
        if L > 0:  # C~ at length L -> canonical C
            tile = H // n_ssm
            lam = torch.complex(-torch.exp(A_real.to(f64)), im).repeat(tile, 1)  # (H, N/2)
            Pc = torch.view_as_complex(P.to(f64).contiguous()).repeat(1, tile, 1)  # (r, H, N/2)
            Ct = torch.view_as_complex(C.to(f64).contiguous())  # (c, H, N/2)
            C = torch.view_as_real(detilde(torch.exp(log_dt), lam, Pc, Ct, L))
        k = f"{dst}.layer.kernel."
        self.out[f"{dst}.layer.D"] = D
        self.out[k + "log_dt"] = log_dt.to(raw_dt.dtype)
        self.out[k + "A_real_log"] = A_real
        self.out[k + "A_imag"] = im.to(A_imag.dtype)
        self.out[k + "B"] = B
        self.out[k + "P"] = P
        self.out[k + "C"] = C.to(dtype).contiguous()
        w_key = f"{src}.layer.output_linear.0.weight"
        if self.has(w_key):
            w = _squeeze_conv(self.take(w_key))
            self.seen["postact"].add("glu" if w.shape[0] == 2 * w.shape[1] else "linear")
            self.out[f"{dst}.layer.output_linear.weight"] = w
            if self.has(f"{src}.layer.output_linear.0.bias"):
                self.out[f"{dst}.layer.output_linear.bias"] = self.take(f"{src}.layer.output_linear.0.bias")
        else:
            self.seen["postact"].add(None)


_IDX = re.compile(r"^(\d+)\.")


def _indices(sd: Mapping[str, torch.Tensor], prefix: str) -> list[int]:
    return sorted({int(m.group(1)) for k in sd if k.startswith(prefix) and (m := _IDX.match(k[len(prefix):]))})


def convert_state_spaces_state_dict(
    state_dict: Mapping[str, torch.Tensor], variant: str = "sc09", *, dt_transform: str = "exp"
) -> tuple[dict[str, torch.Tensor], Any]:
    """Map a release state dict (v3 or v4 key layout) to :class:`~sashimi.models.lm.SaShiMiLM` keys.

    Args:
        state_dict: the checkpoint's tensors (Lightning keys: ``model.*``, ``encoder.*``, ``decoder.*``).
        variant: one of :data:`VARIANTS`; fixes the architecture and the data settings.
        dt_transform: v4 layout only: how ``inv_dt`` encodes dt. 'exp' (default) for the official
            v3-to-v4 ports (the released ``*_v4.pt`` files); 'softplus' for checkpoints trained natively
            with the v4 defaults. v3 files always store log dt.

    Returns:
        (new state dict, :class:`~sashimi.models.lm.SaShiMiLMConfig`). Tensor dtypes are kept; C is
        de-tilded in float64 and cast back.

    Raises:
        ValueError: unknown variant, unrecognised layout, keys it cannot map (listed by name), or a file
            whose architecture contradicts the variant.
    """
    v = _variant(variant)
    if dt_transform not in DT_TRANSFORMS:
        raise ValueError(f"dt_transform must be one of {DT_TRANSFORMS}, got {dt_transform!r}")
    sd = as_state_dict(state_dict, "state_dict")
    layout = detect_layout(sd)
    m = _Mapper(sd, layout, dt_transform)

    # down path: per tier a flat list of [U-Net blocks..., pool]
    tier, j, down_blocks = 0, 0, 0
    for n in _indices(sd, "model.d_layers."):
        src = f"model.d_layers.{n}"
        if m.is_pool(src):
            m.pool(src, f"backbone.down.{tier}.pool")
            tier, j = tier + 1, 0
        else:
            m.block(src, f"backbone.down.{tier}.blocks.{j}")
            j, down_blocks = j + 1, down_blocks + 1
    if j:
        raise ValueError(f"model.d_layers ends with {j} residual block(s) after the last pooling layer")
    K = tier
    for n in _indices(sd, "model.c_layers."):
        m.block(f"model.c_layers.{n}", f"backbone.center.{n}")
    # up path: nested (SaShiMi: u_layers.<tier>.<i>) or flat (U-Net: u_layers.<n>)
    groups = _indices(sd, "model.u_layers.")
    nested = any(re.match(r"^model\.u_layers\.\d+\.\d+\.", k) for k in sd)
    if nested:
        if groups and groups != list(range(K)):
            raise ValueError(f"model.u_layers has tiers {groups}, but model.d_layers has {K} pooling layers")
        for g in groups:
            i = K - 1 - g  # deepest first; our up[i] mirrors down[i]
            for n in _indices(sd, f"model.u_layers.{g}."):
                src = f"model.u_layers.{g}.{n}"
                if n == 0:
                    m.pool(src, f"backbone.up.{i}.pool")
                else:
                    m.block(src, f"backbone.up.{i}.blocks.{n - 1}")
    else:
        g, j = -1, 0
        for n in groups:
            src = f"model.u_layers.{n}"
            if m.is_pool(src):
                g, j = g + 1, 0
                if g >= K:
                    raise ValueError(f"model.u_layers has more pooling layers than model.d_layers ({K})")
                m.pool(src, f"backbone.up.{K - 1 - g}.pool")
            else:
                if g < 0:
                    raise ValueError(f"model.u_layers.{n} is a residual block before the first UpPool")
                m.block(src, f"backbone.up.{K - 1 - g}.blocks.{j}")
                j += 1
    for n in ("weight", "bias"):
        if m.has(f"model.norm.{n}"):
            m.out[f"backbone.norm.{n}"] = m.take(f"model.norm.{n}")
    if m.has("encoder.0.weight"):
        m.out["encoder.weight"] = m.take("encoder.0.weight")
    for n in ("weight", "bias"):
        if m.has(f"decoder.0.output_transform.{n}"):
            m.out[f"decoder.{n}"] = m.take(f"decoder.0.output_transform.{n}")

    unmapped = sorted(set(sd) - m.used)
    if unmapped:
        shown = unmapped[:20]
        more = f" (and {len(unmapped) - 20} more)" if len(unmapped) > 20 else ""
        raise ValueError(
            f"{len(unmapped)} key(s) of the {layout} checkpoint could not be mapped to SaShiMiLM: {shown}{more}"
        )
    return m.out, _config_for(v, m, sd, unet=down_blocks > 0, K=K)


def _config_for(v: Variant, m: _Mapper, sd: Mapping[str, torch.Tensor], unet: bool, K: int):
    """The variant's config, with the settings visible in the tensors read from them; contradictions
    with the variant's fixed architecture raise ValueError."""
    kw = dict(v.config)
    for name in _FROM_FILE:
        seen = m.seen[name]
        if len(seen) > 1:
            raise ValueError(f"the checkpoint is inconsistent: its layers disagree on {name}: {sorted(map(str, seen))}")
        if seen:
            val = next(iter(seen))
            kw[name] = None if val == "per-channel" else val
    problems = []
    if m.seen["norm"] and m.seen["norm"] != {kw["norm"]}:
        problems.append(f"residual norm: file {sorted(m.seen['norm'])}, variant {kw['norm']!r}")
    if unet != kw["unet"]:
        problems.append(
            f"U-Net: the file {'has' if unet else 'has no'} residual blocks on the down path, the variant "
            f"{'is' if kw['unet'] else 'is not'} a U-Net"
            + (" (use variant='sc09-unet')" if unet else "")
        )
    if K != len(kw["pool"]):
        problems.append(f"pooling tiers: file {K}, variant {len(kw['pool'])}")
    emb = sd.get("encoder.0.weight")
    if emb is not None:
        if emb.shape[1] != kw["d_model"]:
            problems.append(f"d_model: file {emb.shape[1]}, variant {kw['d_model']}")
        if emb.shape[0] != 2 ** kw["bits"]:
            problems.append(f"token classes: file {emb.shape[0]}, variant {2 ** kw['bits']} ({kw['bits']} bits)")
    c = next((t for k, t in m.out.items() if k.endswith(".layer.kernel.C")), None)
    if c is not None and 2 * c.shape[-2] != kw["d_state"]:
        problems.append(f"d_state: file {2 * c.shape[-2]}, variant {kw['d_state']}")
    if problems:
        raise ValueError(f"the checkpoint does not match variant {v.name!r}: " + "; ".join(problems))
    return SaShiMiLMConfig(**kw)


def load_state_spaces(
    cls: type,
    path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
    variant: str = "sc09",
    *,
    dt_transform: str = "exp",
    dtype: torch.dtype | None = None,
    map_location: str | torch.device = "cpu",
):
    """Build ``cls`` (a :class:`~sashimi.models.lm.SaShiMiLM`) from a release checkpoint.

    See :meth:`SaShiMiLM.from_state_spaces`.
    """
    source = None
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        source = str(path_or_state_dict)
        sd = read_checkpoint(path_or_state_dict)
    elif isinstance(path_or_state_dict, Mapping):
        sd = as_state_dict(path_or_state_dict, "state_dict")
    else:
        raise TypeError(
            f"path_or_state_dict must be a file path or a dict of tensors, got {type(path_or_state_dict).__name__}"
        )
    layout = detect_layout(sd)
    if dtype is not None:  # convert in the target precision (C is de-tilded in float64 either way)
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    new_sd, config = convert_state_spaces_state_dict(sd, variant, dt_transform=dt_transform)
    model = cls(config)
    floats = {t.dtype for t in new_sd.values() if t.is_floating_point()}
    if len(floats) == 1:
        model.to(next(iter(floats)))
    _load_strict(model, new_sd, f"variant {variant!r}")
    if dtype is not None:
        model.to(dtype)
    model.to(map_location)
    model.eval()
    model._conversion_info = {
        "source": os.path.basename(source) if source else "state dict",
        "variant": variant,
        "layout": layout,
        "experiment": VARIANTS[variant].experiment,
        "dt_transform": "exp" if layout == "v3" else dt_transform,
    }
    return model


def _load_strict(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(sd)
        if tuple(sd[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                more = f" (and {len(items) - 10} more)" if len(items) > 10 else ""
                parts.append(f"{label}: {items[:10]}{more}")
        raise ValueError(f"the converted checkpoint does not fit the {what} architecture: " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)

