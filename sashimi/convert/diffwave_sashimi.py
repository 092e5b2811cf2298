"""Load the official DiffWave + SaShiMi checkpoints (``albertfgu/diffwave-sashimi``) into
:class:`~sashimi.models.diffwave.DiffWaveSaShiMi`.

The official ``.pkl`` files are ``torch.save({'model_state_dict', 'optimizer_state_dict'})``; the architecture
is given by the official model config (``d_model``, ``n_layers``, ``pool``, ``expand``, ``ff``, ``unet``,
``unconditional``, ``mel_upsample``, ``L``, ...), or one of the names of :data:`OFFICIAL_CONFIGS`.

Two key layouts, recognised from the keys:

* ``master`` (the maintained code; the released LJSpeech vocoder): S4 keys ``<blk>.layer.kernel.kernel.{log_dt,
  inv_w_real, w_imag, B, P, C, L}``, ``<blk>.layer.D`` (1, H), ``<blk>.layer.output_linear.0.*`` (GLU). The
  stored C is ``C~ = C (I - Abar^L)`` with L the tier length; it is solved back to the canonical C.
* ``paper`` (branch ``checkpoints``: the SC09 models of the paper's table): ``<blk>.layer.kernel.krylov.*`` and
  ``<blk>.layer.kernel2.krylov.*`` (two kernels), ``<blk>.layer.D`` (H,), ``<blk>.layer.output_linear.{weight
  (H, 2H), bias (H, 1)}``; converted to ``s4_layout='paper'``.

Both get ``mel_alignment='truncated'`` (the official code's mel quirk, which the weights were trained with).
Layer lists: ``d_layers`` per tier [n_layers blocks (U-Net only), DownPool], ``c_layers``, ``u_layers`` per tier,
deepest first, [UpPool, n_layers blocks]. Weight-normed convolutions store ``weight_g`` (out, 1, 1) and
``weight_v`` (out, in, 1), mapped to PyTorch's weight-norm parametrization of our linears.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sashimi.convert.standalone import detilde
from sashimi.convert.state_spaces import as_state_dict, read_checkpoint

__all__ = [
    "OFFICIAL_CONFIGS",
    "config_from_official",
    "convert_diffwave_sashimi_state_dict",
    "detect_diffwave_layout",
    "load_diffwave_sashimi",
    "read_diffwave_sashimi_checkpoint",
]

_COMMON = {"in_channels": 1, "out_channels": 1, "diffusion_step_embed_dim_in": 128, "diffusion_step_embed_dim_mid": 512,
           "diffusion_step_embed_dim_out": 512, "n_layers": 6, "pool": [4, 4], "expand": 2, "ff": 2, "unet": True,
           "L": 16000}
#: the official model configs of the released checkpoints (``configs/model/*.yaml`` and the vocoder README)
OFFICIAL_CONFIGS: dict[str, dict[str, Any]] = {
    "sc09": {**_COMMON, "d_model": 128, "unconditional": True},
    "sc09-small": {**_COMMON, "d_model": 64, "unconditional": True},
    "vocoder": {**_COMMON, "d_model": 32, "unconditional": False, "mel_upsample": [16, 16]},
}
_OFFICIAL_KEYS = {"in_channels", "out_channels", "diffusion_step_embed_dim_in", "diffusion_step_embed_dim_mid",
                  "diffusion_step_embed_dim_out", "d_model", "n_layers", "pool", "expand", "ff", "unet",
                  "unconditional", "mel_upsample", "L", "bidirectional"}
_REQUIRED = ("d_model", "n_layers", "pool", "expand", "ff", "unet", "L")
#: the diffusion process of the official experiments (not stored with the model): SC09 for unconditional
#: models, LJSpeech for vocoders (``configs/experiment/{sc09,ljspeech}.yaml``)
_PROCESS = {
    False: {"num_train_steps": 200, "beta_start": 1e-4, "beta_end": 0.02, "sample_rate": 16000},
    True: {"num_train_steps": 50, "beta_start": 1e-4, "beta_end": 0.05, "sample_rate": 22050},
}
LAYOUTS = ("master", "paper")


def read_diffwave_sashimi_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model state dict of an official ``.pkl`` checkpoint (``{'model_state_dict', ...}``) or of a plain
    state-dict file, read with ``torch.load(weights_only=True)`` only.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the pickle holds objects other than tensors and containers (loading it could
            run code): refused.
        ValueError: not a readable checkpoint, or no dict of named tensors inside.
    """
    return read_checkpoint(path)


def detect_diffwave_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """'master' (``*.layer.kernel.kernel.*``) or 'paper' (``*.layer.kernel.krylov.*``); ValueError otherwise."""
    master = any(".layer.kernel.kernel." in k for k in state_dict)
    paper = any(".layer.kernel.krylov." in k for k in state_dict)
    if master and paper:
        raise ValueError(
            "the state dict mixes master (layer.kernel.kernel.*) and paper (layer.kernel.krylov.*) S4 keys"
        )
    if master or paper:
        return "master" if master else "paper"
    raise ValueError(
        "not a diffwave-sashimi SaShiMi checkpoint: it has neither the master S4 keys (<block>.layer.kernel.kernel.*) "
        f"nor the paper-branch ones (<block>.layer.kernel.krylov.*); first keys: {sorted(state_dict)[:10]}"
    )


def config_from_official(official: Mapping[str, Any] | str, layout: str = "master", **overrides: Any) -> dict[str, Any]:
    """The :class:`~sashimi.models.diffwave.DiffWaveSaShiMiConfig` fields of an official model config (dict, or
    a name of :data:`OFFICIAL_CONFIGS`) in the given layout ('master' or 'paper').

    The diffusion process is not part of the official model config: unconditional models get SC09's
    (T=200, beta 1e-4 -> 0.02, 16 kHz), vocoders LJSpeech's (T=50, beta 1e-4 -> 0.05, 22,050 Hz, 80 mels);
    ``overrides`` set any field. Converted models keep the official mel quirk (``mel_alignment='truncated'``).
    """
    if isinstance(official, str):
        if official not in OFFICIAL_CONFIGS:
            raise ValueError(f"unknown official config {official!r}; known: {sorted(OFFICIAL_CONFIGS)}")
        official = OFFICIAL_CONFIGS[official]
    if not isinstance(official, Mapping):
        raise TypeError(f"config must be a dict (the official model config) or a name, got {type(official).__name__}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    unknown = sorted(set(official) - _OFFICIAL_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) in the official model config: {unknown}; known: {sorted(_OFFICIAL_KEYS)}")
    missing = [k for k in _REQUIRED if k not in official]
    if missing:
        raise ValueError(f"the official model config lacks {missing}")
    for k in ("in_channels", "out_channels"):
        if official.get(k, 1) != 1:
            raise ValueError(f"{k}={official[k]} is not supported (mono audio: 1)")
    if not official.get("bidirectional", True):
        raise ValueError("bidirectional=False (the unidirectional ablation) is not supported")
    conditional = not official.get("unconditional", True)
    kw: dict[str, Any] = {
        "d_model": official["d_model"], "n_layers": official["n_layers"], "pool": tuple(official["pool"]),
        "expand": official["expand"], "ff": official["ff"], "unet": bool(official["unet"]),
        "segment_length": official["L"],
        "step_embed_dim_in": official.get("diffusion_step_embed_dim_in", 128),
        "step_embed_dim_mid": official.get("diffusion_step_embed_dim_mid", 512),
        "step_embed_dim_out": official.get("diffusion_step_embed_dim_out", 512),
        "n_mels": 80 if conditional else 0, "mel_upsample": tuple(official.get("mel_upsample", (16, 16))),
        "mel_alignment": "truncated", "s4_layout": layout, **_PROCESS[conditional],
    }
    return {**kw, **overrides}


def _squeeze(w: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution's (out, in, 1) tensor -> (out, in)."""
    return w.squeeze(-1) if w.ndim == 3 and w.shape[-1] == 1 else w


class _Mapper:
    """Maps official keys onto ours, recording the source keys it used."""

    def __init__(self, sd: Mapping[str, torch.Tensor]) -> None:
        self.sd = sd
        self.out: dict[str, torch.Tensor] = {}
        self.used: set[str] = set()

    def take(self, key: str) -> torch.Tensor:
        if key not in self.sd:
            raise ValueError(f"the checkpoint lacks the key {key!r} that the given config needs")
        self.used.add(key)
        return self.sd[key]

    def copy(self, src: str, dst: str, squeeze: bool = False) -> None:
        t = self.take(src)
        self.out[dst] = _squeeze(t) if squeeze else t

    def wn(self, src: str, dst: str, squeeze: bool = True) -> None:
        """A weight-normed conv ``src.{weight_g, weight_v, bias}`` -> our parametrized module ``dst``."""
        self.copy(f"{src}.weight_g", f"{dst}.parametrizations.weight.original0", squeeze)
        self.copy(f"{src}.weight_v", f"{dst}.parametrizations.weight.original1", squeeze)
        self.copy(f"{src}.bias", f"{dst}.bias")

    def block(self, src: str, dst: str, layout: str, conditional: bool) -> None:
        for n in ("norm1", "norm2"):
            for p in ("m", "s"):
                self.copy(f"{src}.{n}.{p}", f"{dst}.{n}.{p}")
        self.copy(f"{src}.fc_t.weight", f"{dst}.step_proj.weight")
        self.copy(f"{src}.fc_t.bias", f"{dst}.step_proj.bias")
        self.wn(f"{src}.ff.ff.0.conv", f"{dst}.ff.fc1")
        self.wn(f"{src}.ff.ff.2.conv", f"{dst}.ff.fc2")
        if conditional:
            self.wn(f"{src}.mel_conv.conv", f"{dst}.mel_proj")
            i = 0
            while f"{src}.upsample_conv2d.{i}.weight_v" in self.sd:
                self.wn(f"{src}.upsample_conv2d.{i}", f"{dst}.mel_upsample.convs.{i}", squeeze=False)
                i += 1
        if layout == "master":
            self.master_s4(f"{src}.layer", f"{dst}.s4")
        else:
            self.paper_s4(f"{src}.layer", f"{dst}.s4")

    def master_s4(self, src: str, dst: str) -> None:
        kp = f"{src}.kernel.kernel."
        f64 = torch.float64
        log_dt, re, im = self.take(kp + "log_dt"), self.take(kp + "inv_w_real"), self.take(kp + "w_imag")
        B, P, C = self.take(kp + "B"), self.take(kp + "P"), self.take(kp + "C")
        L = int(self.take(kp + "L").item())
        H, n_ssm = C.shape[1], re.shape[0]
        if B.ndim != 4 or B.shape[0] != 1 or P.ndim != 4 or C.ndim != 4 or H % n_ssm:
            raise ValueError(
                f"S4 layer {src!r}: unexpected shapes B {tuple(B.shape)}, P {tuple(P.shape)}, C {tuple(C.shape)}"
            )
        tile = H // n_ssm
        lam = torch.complex(-torch.exp(re.to(f64)), im.to(f64)).repeat(tile, 1)  # (H, N/2)
        Pc = torch.view_as_complex(P.to(f64).contiguous()).repeat(1, tile, 1)  # (r, H, N/2)
        Ct = torch.view_as_complex(C.to(f64).contiguous())  # (2, H, N/2): C~ (or canonical when L = 0)
        Cc = detilde(torch.exp(log_dt.to(f64)), lam, Pc, Ct, L)  # canonical C
        self.out[f"{dst}.kernel.log_dt"] = log_dt
        self.out[f"{dst}.kernel.A_real_log"] = re
        self.out[f"{dst}.kernel.A_imag"] = im
        self.out[f"{dst}.kernel.B"] = B[0]
        self.out[f"{dst}.kernel.P"] = P
        self.out[f"{dst}.kernel.C"] = torch.view_as_real(Cc).to(C.dtype).contiguous()
        self.copy(f"{src}.D", f"{dst}.D")
        self.copy(f"{src}.output_linear.0.weight", f"{dst}.output_linear.weight", squeeze=True)
        self.copy(f"{src}.output_linear.0.bias", f"{dst}.output_linear.bias")

    def paper_s4(self, src: str, dst: str) -> None:
        for k in ("kernel", "kernel2"):
            for n in ("log_dt", "w", "B", "C", "nodes", "z"):
                self.copy(f"{src}.{k}.krylov.{n}", f"{dst}.{k}.{n}")
        self.copy(f"{src}.D", f"{dst}.D")
        self.copy(f"{src}.output_linear.weight", f"{dst}.output_linear.weight")
        self.out[f"{dst}.output_linear.bias"] = self.take(f"{src}.output_linear.bias").reshape(-1)


def convert_diffwave_sashimi_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any] | str, **overrides: Any
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Map an official state dict (either layout) to :class:`DiffWaveSaShiMi` keys.

    Args:
        state_dict: the official ``model_state_dict``.
        config: the official model config (dict) or a name of :data:`OFFICIAL_CONFIGS`.
        **overrides: fields of :class:`DiffWaveSaShiMiConfig` to set (e.g. ``sample_rate``).

    Returns:
        (our state dict, the fields of our config). Dtypes are kept (C is de-tilded in float64 and cast back).

    Raises:
        ValueError: a layout that is neither master nor paper, keys the config needs but the file lacks,
            or keys that map to nothing (listed by name).
    """
    sd = as_state_dict(state_dict, "state_dict")
    layout = detect_diffwave_layout(sd)
    cfg = config_from_official(config, layout, **overrides)
    pool, n_layers, unet = tuple(cfg["pool"]), cfg["n_layers"], cfg["unet"]
    m = _Mapper(sd)
    m.copy("fc_t1.weight", "embed.fc1.weight")
    m.copy("fc_t1.bias", "embed.fc1.bias")
    m.copy("fc_t2.weight", "embed.fc2.weight")
    m.copy("fc_t2.bias", "embed.fc2.bias")
    m.wn("init_conv.0.conv", "input_proj")
    m.wn("final_conv.0.conv", "output_hidden")
    m.copy("final_conv.2.conv.weight", "output_proj.weight", squeeze=True)
    m.copy("final_conv.2.conv.bias", "output_proj.bias")
    m.copy("norm.m", "norm.m")
    m.copy("norm.s", "norm.s")
    n, cond = 0, cfg["n_mels"] > 0
    for i in range(len(pool)):
        if unet:
            for j in range(n_layers):
                m.block(f"d_layers.{n}", f"down.{i}.blocks.{j}", layout, cond)
                n += 1
        m.wn(f"d_layers.{n}.linear.conv", f"down.{i}.pool.linear")
        n += 1
    for j in range(n_layers):
        m.block(f"c_layers.{j}", f"center.{j}", layout, cond)
    n = 0
    for i in reversed(range(len(pool))):
        m.wn(f"u_layers.{n}.linear.conv", f"up.{i}.pool.linear")
        n += 1
        for j in range(n_layers):
            m.block(f"u_layers.{n}", f"up.{i}.blocks.{j}", layout, cond)
            n += 1
    unmapped = sorted(set(sd) - m.used)
    if unmapped:
        more = f" (and {len(unmapped) - 20} more)" if len(unmapped) > 20 else ""
        raise ValueError(
            f"{len(unmapped)} key(s) of the {layout} checkpoint map to nothing in DiffWaveSaShiMi with this config "
            f"(wrong config?): {unmapped[:20]}{more}"
        )
    return m.out, cfg


def load_diffwave_sashimi(
    path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor], config: Mapping[str, Any] | str | os.PathLike,
    **overrides: Any,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read (if a path) and convert an official checkpoint: ``(our state dict, the fields of our config)``.

    Args:
        path_or_state_dict: an official ``.pkl`` (read with ``weights_only=True``) or its ``model_state_dict``.
        config: the official model config (dict), a JSON file holding it, or a name of :data:`OFFICIAL_CONFIGS`.
        **overrides: config fields to set.
    """
    if isinstance(config, (str, os.PathLike)) and str(config) not in OFFICIAL_CONFIGS:
        p = Path(config)
        if not p.is_file():
            raise ValueError(f"config must be one of {sorted(OFFICIAL_CONFIGS)} or a JSON file; {p} does not exist")
        config = json.loads(p.read_text())
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        sd = read_diffwave_sashimi_checkpoint(path_or_state_dict)
    elif isinstance(path_or_state_dict, Mapping):
        sd = as_state_dict(path_or_state_dict, "state_dict")
    else:
        raise TypeError(
            f"path_or_state_dict must be a file path or a dict of tensors, got {type(path_or_state_dict).__name__}"
        )
    return convert_diffwave_sashimi_state_dict(sd, str(config) if isinstance(config, os.PathLike) else config,
                                               **overrides)
