"""The S4 state pass of streaming generation on CPU, as a small C kernel compiled on first use.

Autoregressive generation steps every S4 layer once per sample. With the layer's input applied
*lazily* (the input ``u`` of step t is folded into the state at the start of step t + 1), everything
a step needs from the big (B, 2M, H) state is available before the step's input is known, so the
state work of all the S4 layers of a tier is one pass (:func:`ssm_phase`) at the start of the tier's
step, and the layer-by-layer part of the step touches only (B, H) tensors. Per layer and batch row:

* ``x <- x + u * G`` (the pending input of the previous step);
* ``r_k = sum_j W_k[j] x[j]`` for ``k < nk`` (per channel; the rows the step reads: the output and,
  for a DPLR 'linear' state, the two low-rank coefficients);
* ``x_m + i x_{m+M} <- a_m (x_m + i x_{m+M}) + sum_{e < ne} E_e r_e`` (the diagonal transition
  ``a_m = A_m + i A_{m+M}``, a complex product in real arithmetic, plus the low-rank terms), in place.

Rows ``0..M-1`` of ``x`` hold the real parts and ``M..2M-1`` the imaginary parts. The (2M, H)
arrays are *channel-blocked*, (H / C, 2M, C) with C = :func:`block_width` (64 bytes of channels when
H is a multiple of it, else C = H), so that the rows of a block of channels are contiguous in memory
(:func:`to_blocked` / :func:`from_blocked` convert). :func:`ssm_phase_ref` is the specification (PyTorch, any device).
:class:`PhaseProgram` runs a list of layers with the C kernel (``ssm_phase.c`` beside this file,
compiled with the system C compiler (``$CC``, else ``cc``) into :func:`sashimi._paths.cache_root`
``/native`` the first time it is needed, keyed by source, compiler, flags and CPU) or, when that is
unavailable, disabled (``SASHIMI_NATIVE=0``) or the tensors are not on the CPU, with
:func:`ssm_phase_ref`. Nothing is compiled or loaded at import; :func:`native_status` says whether
the kernel loaded and, if not, why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from sashimi._paths import cache_root

__all__ = ["PhaseLayer", "PhaseProgram", "block_width", "from_blocked", "native_status", "ssm_phase_ref", "to_blocked"]

_SOURCE = Path(__file__).with_name("ssm_phase.c")
_ABI = 2
_FLAG_SETS = (["-O3", "-march=native"], ["-O3"])  # -march=native is not supported everywhere
_COMMON = ["-std=c99", "-fPIC", "-shared", "-fno-math-errno", "-ffp-contract=fast"]


def block_width(H: int, dtype: torch.dtype) -> int:
    """The channel block C of the state layout: 64 bytes of channels when H is a multiple, else H."""
    c = 64 // torch.empty(0, dtype=dtype).element_size()
    return c if H % c == 0 else H


def to_blocked(t: torch.Tensor, C: int) -> torch.Tensor:
    """(..., 2M, H) -> a new contiguous (..., H / C, 2M, C) tensor (never a view of ``t``)."""
    J, H = t.shape[-2:]
    return t.reshape(*t.shape[:-1], H // C, C).transpose(-3, -2).clone(memory_format=torch.contiguous_format)


def from_blocked(t: torch.Tensor) -> torch.Tensor:
    """(..., H / C, 2M, C) -> (..., 2M, H) (a view when possible)."""
    nb, J, C = t.shape[-3:]
    return t.transpose(-3, -2).reshape(*t.shape[:-3], J, nb * C)


class PhaseLayer(NamedTuple):
    """The tensors of one layer of :func:`ssm_phase_ref` / :class:`PhaseProgram` (one dtype, contiguous;
    nb = H / C channel blocks, see :func:`block_width`).

    X: (B, nb, 2M, C) state (real parts, then imaginary parts), updated in place. U: (B, H) pending
    input. G: (nb, 2M, C) input weights. W: (nk, nb, 2M, C) reduction rows. A: (nb, 2M, C) diagonal
    transition (real parts, then imaginary parts). E: (ne, nb, 2M, C) low-rank weights of the first ne
    reductions (ne <= nk). R: (B, nk, H) output of the reductions.
    """

    X: torch.Tensor
    U: torch.Tensor
    G: torch.Tensor
    W: torch.Tensor
    A: torch.Tensor
    E: torch.Tensor
    R: torch.Tensor


def ssm_phase_ref(layer: PhaseLayer) -> None:
    """The state pass of one layer in PyTorch (the specification; see the module docstring).

    Updates ``layer.X`` and writes ``layer.R`` in place.
    """
    X, U, G, W, A, E, R = layer
    B, nb, J, C = X.shape
    M = J // 2
    # (..., nb, 2M, C) -> views (..., 2M, nb, C): channels are the two trailing dimensions
    X, G, W, A, E = (t.transpose(-3, -2) for t in (X, G, W, A, E))
    U, R = U.view(B, nb, C), R.view(B, -1, nb, C)
    X.addcmul_(U.unsqueeze(1), G)  # (B, 2M, nb, C), in place in the state
    torch.sum(X.unsqueeze(1) * W, dim=2, out=R)  # (B, nk, nb, C)
    xr, xi = X[:, :M], X[:, M:]  # (B, M, nb, C)
    ar, ai = A[:M], A[M:]
    new = torch.cat([xr * ar - xi * ai, xr * ai + xi * ar], 1)  # (B, 2M, nb, C)
    for e in range(E.shape[0]):
        new.addcmul_(R[:, e : e + 1], E[e])
    X.copy_(new)


def _validate(layer: PhaseLayer) -> None:
    X, U, G, W, A, E, R = layer
    if X.ndim != 4 or X.shape[2] % 2:
        raise ValueError(f"X must be a (B, H / C, 2M, C) state, got shape {tuple(X.shape)}")
    B, nb, J, C = X.shape
    H = nb * C
    if C != block_width(H, X.dtype):
        raise ValueError(
            f"the channel block of X is {C}; for H = {H} and {X.dtype} it must be {block_width(H, X.dtype)}"
        )
    nk, ne = W.shape[0], E.shape[0]
    blk = (nb, J, C)
    want = {"U": (B, H), "G": blk, "W": (nk, *blk), "A": blk, "E": (ne, *blk), "R": (B, nk, H)}
    for name, t in zip(PhaseLayer._fields, layer):
        if name != "X" and tuple(t.shape) != want[name]:
            raise ValueError(f"{name} must have shape {want[name]}, got {tuple(t.shape)}")
        if t.dtype != X.dtype or t.device != X.device:
            raise ValueError(f"{name} is {t.dtype} on {t.device}; X is {X.dtype} on {X.device}")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
    if ne > nk:
        raise ValueError(f"E has {ne} rows but there are only {nk} reductions")


def _cpu_signature() -> str:
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = line
                    break
    except OSError:
        pass
    return f"{platform.machine()}|{platform.processor()}|{flags}"


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc) or cc
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _compile(cc: str, src: bytes, dest: Path) -> tuple[str | None, str]:
    """Compile ``src`` into a shared library under ``dest`` (atomically, reused when it exists):
    (its path, '') or (None, the reason)."""
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as err:
        return None, f"C compiler {cc!r} does not run: {err}"
    errors = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256(b"\0".join([src, version, " ".join(flags + _COMMON).encode(), _cpu_signature().encode()]))
        out = dest / f"ssm_phase-{key.hexdigest()[:20]}.so"
        if out.exists():
            return str(out), ""
        dest.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=dest)
        os.close(fd)
        try:
            proc = subprocess.run([cc, *flags, *_COMMON, "-o", tmp, str(_SOURCE)], capture_output=True, timeout=300)
            if proc.returncode == 0:
                os.replace(tmp, out)
                return str(out), ""
            errors.append(proc.stderr.decode(errors="replace").strip()[-500:])
        except (OSError, subprocess.SubprocessError) as err:
            errors.append(str(err))
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return None, "compilation failed: " + " | ".join(errors)


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str]:
    """(library, '') or (None, the reason it is unavailable); tried once per process."""
    if os.environ.get("SASHIMI_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None, "disabled by SASHIMI_NATIVE=0"
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found (set CC)"
    try:
        result, why = _compile(cc, _SOURCE.read_bytes(), cache_root() / "native")
    except OSError as err:  # e.g. an unwritable cache folder
        return None, f"cannot write the compiled kernel: {err}"
    if result is None:
        return None, why
    try:
        lib = ctypes.CDLL(result)
        lib.sashimi_ssm_phase_abi.restype = ctypes.c_int64
        if lib.sashimi_ssm_phase_abi() != _ABI:
            return None, f"{result} has another interface version"
        for name in ("sashimi_ssm_phase_f32", "sashimi_ssm_phase_f64"):
            fn = getattr(lib, name)
            fn.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]
            fn.restype = None
    except (OSError, AttributeError) as err:
        return None, f"loading {result} failed: {err}"
    return lib, ""


def native_status() -> str:
    """``'ok'`` when the C kernel is loaded (compiling it if needed), else the reason it is not."""
    lib, why = _load()
    return "ok" if lib is not None else why


_FUNCS = {torch.float32: "sashimi_ssm_phase_f32", torch.float64: "sashimi_ssm_phase_f64"}


class PhaseProgram:
    """The state pass of a fixed list of layers, run by ``program()``.

    The tensors are validated once and must stay allocated (the program keeps references and the C
    kernel keeps their addresses). ``native=None`` uses the C kernel when it is available for the
    tensors (CPU, float32 / float64), ``False`` forces :func:`ssm_phase_ref`, ``True`` raises if the
    kernel is unavailable.
    """

    def __init__(self, layers: Sequence[PhaseLayer], native: bool | None = None) -> None:
        self.layers = [PhaseLayer(*t) for t in layers]
        for layer in self.layers:
            _validate(layer)
        self._calls: list[tuple] = []
        usable = all(lay.X.device.type == "cpu" and lay.X.dtype in _FUNCS for lay in self.layers)
        lib = None
        if native is not False and self.layers:
            lib, why = _load()
            if native and (lib is None or not usable):
                raise RuntimeError(f"the native SSM kernel is unavailable: {why or 'tensors not float32/64 on CPU'}")
        self.native = lib is not None and usable and bool(self.layers)
        if self.native:
            for dtype, fname in _FUNCS.items():
                group = [lay for lay in self.layers if lay.X.dtype == dtype]
                if not group:
                    continue
                dims, ptrs = [], []
                for lay in group:
                    B, nb, J, C = lay.X.shape
                    dims += [B, J // 2, nb * C, lay.E.shape[0], lay.W.shape[0], C]
                    ptrs += [t.data_ptr() for t in lay]
                self._calls.append((
                    getattr(lib, fname), len(group),
                    (ctypes.c_int64 * len(dims))(*dims), (ctypes.c_void_p * len(ptrs))(*ptrs),
                ))

    def __call__(self) -> None:
        if self.native:
            for fn, n, dims, ptrs in self._calls:
                fn(n, dims, ptrs)
        else:
            for layer in self.layers:
                ssm_phase_ref(layer)
