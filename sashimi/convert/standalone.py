"""Load the reference *standalone* Sashimi (``models/sashimi/sashimi.py`` of the official v4 code) into
:class:`~sashimi.models.SaShiMi` / :class:`~sashimi.models.BiSaShiMi`.

Reference layout (``K = len(pool)`` down tiers)::

    d_layers.<n>             flat list, per tier: [U-Net residual blocks...] then a pooling layer
                             (``linear.{weight (out, in, 1), bias}``)
    c_layers.<j>             center residual blocks
    u_layers.<k>.0           UpPool of the k-th up tier, deepest first (``linear.*``)
    u_layers.<k>.<m >= 1>    its residual blocks
    norm.{weight, bias}      final LayerNorm

Residual block ``<p>``: ``<p>.norm.{weight, bias}`` (LayerNorm) and either an S4 layer
(``<p>.layer.layer.D``, ``<p>.layer.layer.kernel.{inv_dt, A_real, A_imag, B, P, C, l_kernel}``,
``<p>.layer.output_linear.0.{weight, bias}``) or an FF layer (``<p>.layer.ff.0.0.*``, ``<p>.layer.ff.2.*``,
1x1 convolution weights (out, in, 1)).

S4 conventions (see the golden-data README): ``dt = exp(inv_dt)``, ``Re Lambda = -exp(A_real)``,
``Im Lambda = -A_imag``; B, P, C are real views (..., N/2, 2); the stored C is ``C~ = C (I - Abar^L)``
for ``L = l_kernel`` (``l_kernel = 0``: C is canonical). Our kernel stores the canonical C, so
C~ is solved back with :func:`detilde`.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from sashimi.kernels.ssm import bilinear, dplr_matrix, full_pairs, truncation_factor
from sashimi.models.config import SaShiMiConfig

__all__ = ["convert_standalone_state_dict", "detilde", "standalone_config"]

STANDALONE_ARGS = ("d_model", "n_layers", "pool", "expand", "ff", "unet", "bidirectional", "dropout")
KERNEL_KEYS = ("inv_dt", "A_real", "A_imag", "B", "P", "C", "l_kernel")


def detilde(dt: torch.Tensor, A: torch.Tensor, P: torch.Tensor, C_tilde: torch.Tensor, L: int) -> torch.Tensor:
    """Undo the truncation correction: the canonical C from ``C~ = C (I - Abar^L)``.

    Solves ``(I - Abar^L)^T Cf = C~_full`` on the full N-dimensional bilinear system of the stable DPLR
    matrix ``A = diag([Lambda, conj Lambda]) - Pf Pf^H`` (float64), and keeps the first N/2 entries.

    Args:
        dt: (H,) positive step sizes.
        A: (H, N/2) complex Lambda.
        P: (rank, H, N/2) complex.
        C_tilde: (c, H, N/2) complex.
        L: the truncation length (``l_kernel``); 0 returns ``C_tilde`` unchanged (already canonical).

    Returns:
        C: (c, H, N/2) complex, in C_tilde's dtype.
    """
    if isinstance(L, torch.Tensor):
        L = int(L.item())
    if isinstance(L, bool) or not isinstance(L, int) or L < 0:
        raise ValueError(f"L must be an int >= 0, got {L!r}")
    if A.ndim != 2 or not A.is_complex():
        raise ValueError(f"A must be complex with shape (H, N/2), got {tuple(A.shape)} {A.dtype}")
    H, n2 = A.shape
    if tuple(dt.shape) != (H,):
        raise ValueError(f"dt must have shape ({H},), got {tuple(dt.shape)}")
    if P.ndim != 3 or tuple(P.shape[1:]) != (H, n2):
        raise ValueError(f"P must have shape (rank, {H}, {n2}), got {tuple(P.shape)}")
    if C_tilde.ndim != 3 or tuple(C_tilde.shape[1:]) != (H, n2):
        raise ValueError(f"C_tilde must have shape (c, {H}, {n2}), got {tuple(C_tilde.shape)}")
    if L == 0:
        return C_tilde
    c128 = torch.complex128
    A64, P64 = A.to(c128), P.to(c128)
    dA, _ = bilinear(dt.double(), dplr_matrix(A64, P64), torch.zeros(H, 2 * n2, dtype=c128, device=A.device))
    M = truncation_factor(dA, L)  # (H, N, N): C~_full = Cf M
    Ctf = full_pairs(C_tilde.to(c128))  # (c, H, N)
    Cf = torch.linalg.solve(M.transpose(-1, -2), Ctf.unsqueeze(-1)).squeeze(-1)  # (c, H, N)
    return Cf[..., :n2].to(C_tilde.dtype)


def standalone_config(sashimi_args: dict[str, Any], **overrides: Any) -> SaShiMiConfig:
    """The :class:`SaShiMiConfig` of a reference standalone ``Sashimi(**sashimi_args)``.

    The standalone uses S4Block defaults (d_state 64, one SSM per channel, LegS, GELU, GLU output),
    ``nn.LayerNorm`` residual norms and plain pooling linears. ``overrides`` are passed on (e.g. d_state).
    """
    if not isinstance(sashimi_args, dict):
        raise TypeError(f"sashimi_args must be a dict, got {type(sashimi_args).__name__}")
    unknown = sorted(set(sashimi_args) - set(STANDALONE_ARGS))
    if unknown:
        raise ValueError(f"unknown standalone Sashimi argument(s): {unknown}; known: {list(STANDALONE_ARGS)}")
    kw: dict[str, Any] = dict(
        n_ssm=None, norm="layer", pool_weight_norm=False, ssm_mode="dplr", init="legs", d_state=64
    )
    kw.update(sashimi_args)
    kw["pool"] = tuple(kw.get("pool", (4, 4)))
    kw.update(overrides)
    return SaShiMiConfig(**kw)


def _conv_weight(w: torch.Tensor) -> torch.Tensor:
    """(out, in, 1) 1x1-convolution weight -> (out, in) linear weight."""
    return w.squeeze(-1) if w.ndim == 3 and w.shape[-1] == 1 else w


class _Converter:
    def __init__(self, sd: dict[str, torch.Tensor]) -> None:
        self.sd = sd
        self.out: dict[str, torch.Tensor] = {}
        self.used: set[str] = set()

    def take(self, key: str) -> torch.Tensor:
        self.used.add(key)
        return self.sd[key]

    def pool(self, src: str, dst: str) -> None:
        for name in ("weight", "bias"):
            key = f"{src}.linear.{name}"
            if key in self.sd:
                t = self.take(key)
                self.out[f"{dst}.linear.{name}"] = _conv_weight(t) if name == "weight" else t

    def block(self, src: str, dst: str) -> None:
        """One residual block: norm, and an S4 or FF layer."""
        for name in ("weight", "bias"):
            if f"{src}.norm.{name}" in self.sd:
                self.out[f"{dst}.norm.{name}"] = self.take(f"{src}.norm.{name}")
        if f"{src}.layer.layer.D" in self.sd:
            self.s4(src, dst)
        for ref, ours in (("ff.0.0", "fc1"), ("ff.2", "fc2")):
            for name in ("weight", "bias"):
                key = f"{src}.layer.{ref}.{name}"
                if key in self.sd:
                    t = self.take(key)
                    self.out[f"{dst}.layer.{ours}.{name}"] = _conv_weight(t) if name == "weight" else t

    def s4(self, src: str, dst: str) -> None:
        self.out[f"{dst}.layer.D"] = self.take(f"{src}.layer.layer.D")
        for name in ("weight", "bias"):
            key = f"{src}.layer.output_linear.0.{name}"
            if key in self.sd:
                self.out[f"{dst}.layer.output_linear.{name}"] = self.take(key)
        kp = f"{src}.layer.layer.kernel."
        missing = [k for k in ("inv_dt", "A_real", "A_imag", "B", "C") if kp + k not in self.sd]
        if missing:
            raise ValueError(f"S4 layer {src!r} lacks kernel parameter(s) {missing}")
        inv_dt, A_real, A_imag = self.take(kp + "inv_dt"), self.take(kp + "A_real"), self.take(kp + "A_imag")
        B, C = self.take(kp + "B"), self.take(kp + "C")
        P = self.take(kp + "P") if kp + "P" in self.sd else None
        L = int(self.take(kp + "l_kernel").item()) if kp + "l_kernel" in self.sd else 0
        log_dt = inv_dt.reshape(-1)  # (H,)
        if B.ndim == 4:
            if B.shape[0] != 1:
                raise ValueError(f"{kp}B has shape {tuple(B.shape)}; expected (1, n_ssm, N/2, 2)")
            B = B[0]  # (n_ssm, N/2, 2)
        k = f"{dst}.layer.kernel."
        self.out[k + "log_dt"] = log_dt
        self.out[k + "A_real_log"] = A_real
        self.out[k + "A_imag"] = -A_imag  # the reference stores -Im(Lambda)
        self.out[k + "B"] = B
        if P is not None:
            self.out[k + "P"] = P
        if P is not None and L > 0:
            H = C.shape[1]
            tile = H // A_real.shape[0]
            f64 = torch.float64
            dt = torch.exp(log_dt.to(f64))
            lam = torch.complex(-torch.exp(A_real.to(f64)), -A_imag.to(f64)).repeat(tile, 1)  # (H, N/2)
            Pc = torch.view_as_complex(P.to(f64).contiguous()).repeat(1, tile, 1)  # (r, H, N/2)
            Ct = torch.view_as_complex(C.to(f64).contiguous())  # (c, H, N/2)
            C = torch.view_as_real(detilde(dt, lam, Pc, Ct, L)).to(C.dtype)
        self.out[k + "C"] = C


_D = re.compile(r"^d_layers\.(\d+)\.(.+)$")
_C = re.compile(r"^c_layers\.(\d+)\.(.+)$")
_U = re.compile(r"^u_layers\.(\d+)\.(\d+)\.(.+)$")


def convert_standalone_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a reference standalone Sashimi state dict to :class:`~sashimi.models.SaShiMi` /
    :class:`~sashimi.models.BiSaShiMi` keys (load with ``strict=True``).

    Works with C~ (after a forward, ``l_kernel > 0``) and with raw C (``l_kernel = 0``). Tensor dtypes
    are kept; ``C`` is de-tilded in float64 and cast back. Raises ValueError listing any key it cannot map.

    Args:
        state_dict: the reference module's ``state_dict()`` (keys as in the module docstring).

    Returns:
        A new state dict with this package's keys.
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict must be a dict of tensors, got {type(state_dict).__name__}")
    cv = _Converter(state_dict)
    # down path: a flat list per tier of [blocks..., pool]
    d_idx = sorted({int(m.group(1)) for k in state_dict if (m := _D.match(k))})
    tier, j = 0, 0
    for n in d_idx:
        src = f"d_layers.{n}"
        if f"{src}.linear.weight" in state_dict:
            cv.pool(src, f"down.{tier}.pool")
            tier, j = tier + 1, 0
        else:
            cv.block(src, f"down.{tier}.blocks.{j}")
            j += 1
    if j:
        raise ValueError(f"d_layers end with {j} residual block(s) after the last pooling layer")
    K = tier
    for n in sorted({int(m.group(1)) for k in state_dict if (m := _C.match(k))}):
        cv.block(f"c_layers.{n}", f"center.{n}")
    u_groups = sorted({int(m.group(1)) for k in state_dict if (m := _U.match(k))})
    if u_groups and u_groups != list(range(K)):
        raise ValueError(f"u_layers groups {u_groups} do not match the {K} pooling layers of d_layers")
    for g in u_groups:
        i = K - 1 - g  # u_layers run deepest first; our up[i] mirrors down[i]
        for m_ in sorted({int(m.group(2)) for k in state_dict if (m := _U.match(k)) and int(m.group(1)) == g}):
            src = f"u_layers.{g}.{m_}"
            if m_ == 0:
                cv.pool(src, f"up.{i}.pool")
            else:
                cv.block(src, f"up.{i}.blocks.{m_ - 1}")
    for name in ("weight", "bias"):
        if f"norm.{name}" in state_dict:
            cv.out[f"norm.{name}"] = cv.take(f"norm.{name}")
    unmapped = sorted(set(state_dict) - cv.used)
    if unmapped:
        shown = unmapped[:20]
        more = f" (and {len(unmapped) - 20} more)" if len(unmapped) > 20 else ""
        raise ValueError(f"convert_standalone_state_dict: {len(unmapped)} unmapped key(s): {shown}{more}")
    return cv.out
