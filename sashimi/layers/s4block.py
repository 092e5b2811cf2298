"""S4Block: FFT convolution with an S4/S4D kernel, D skip, activation, GLU output linear, and an exact step mode."""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from sashimi.kernels import vandermonde, vandermonde_transpose
from sashimi.layers.s4kernel import S4Kernel, StepConstants, check_rate

__all__ = ["S4Block", "S4State", "check_input_dtype", "check_sequence_input"]


@dataclass
class S4State:
    """Recurrent state of one S4 layer, owned by the caller.

    A state belongs to the block whose :meth:`S4Block.init_state` made it (a weak reference to that
    block, kept by :meth:`clone` and ``copy.deepcopy``); every other block refuses it, even one of the
    same architecture, because its constants would silently be the wrong ones.

    Attributes:
        x: (B, H, M) complex state (M per ``consts.state_size``), updated in place by ``step``.
        consts: the discretized step constants (computed once by ``init_state``; read-only).
        rate: the step-size multiplier the constants were computed for.
        dtype: the real dtype of the layer inputs/outputs the state was made for (None: the
            precision of ``x``). A float32 layer may step a complex128 state ('diagonal64').
        owner: weak reference to the block that made the state (None: made by hand, refused).
        check_finite: :meth:`S4Block.step` refuses NaN/Inf inputs (one reduction per step; on a GPU
            it also waits for the device). Set False to skip the check where speed matters: a
            non-finite input then makes the state non-finite for good.
    """

    x: torch.Tensor
    consts: StepConstants
    rate: float = 1.0
    dtype: torch.dtype | None = None
    owner: weakref.ReferenceType | None = field(default=None, repr=False, compare=False)
    check_finite: bool = True

    @property
    def batch_size(self) -> int:
        return self.x.shape[0]

    @property
    def mode(self) -> str:
        return self.consts.mode

    def clone(self) -> S4State:
        """A copy whose state tensor is independent (the constants and the owner are shared)."""
        return S4State(self.x.clone(), self.consts, self.rate, self.dtype, self.owner, self.check_finite)

    def owned_by(self, block: nn.Module) -> bool:
        """Whether ``block`` made this state (an identity test: one call and one comparison)."""
        return self.owner is not None and self.owner() is block

    def check_owner(self, block: nn.Module, name: str = "state") -> None:
        """Raise ValueError (naming ``name``) unless ``block`` made this state with ``init_state``."""
        if self.owner is not None and self.owner() is block:
            return
        made = self.owner() if self.owner is not None else None
        if made is None:
            origin = "was not made by init_state() (built by hand, or its block was freed)"
        else:
            origin = (
                f"was made by another {type(made).__name__} (its d_state={getattr(made, 'd_state', '?')}, "
                f"this block's d_state={getattr(block, 'd_state', '?')})"
            )
        raise ValueError(
            f"{name} {origin}; a state only fits the block that made it: use "
            f"{type(block).__name__}.init_state() of this block"
        )


def _complex_of(dtype: torch.dtype) -> torch.dtype:
    return torch.complex64 if dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.complex128


def check_sequence_input(
    x: object, d_model: int, transposed: bool, name: str = "x", *, dtype: torch.dtype | None = None,
    finite: bool = True,
) -> None:
    """Validate a (B, L, H) (or (B, H, L) when transposed) floating sequence with B, L >= 1, without NaN/Inf
    when ``finite`` and, when ``dtype`` is given, of that dtype (see :func:`check_input_dtype`)."""
    layout = "(B, H, L)" if transposed else "(B, L, H)"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor of shape {layout}, got dtype {x.dtype}")
    if x.ndim != 3:
        raise ValueError(f"{name} must have shape {layout} with H={d_model}, got shape {tuple(x.shape)}")
    h = x.shape[1] if transposed else x.shape[2]
    if h != d_model:
        raise ValueError(f"{name} must have shape {layout} with H=d_model={d_model}, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} has batch size 0: expected shape {layout} with B >= 1")
    if x.shape[2 if transposed else 1] == 0:
        raise ValueError(f"{name} has length 0: expected shape {layout} with L >= 1")
    if dtype is not None:
        check_input_dtype(x, dtype, name)
    if finite and not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf")


def check_input_dtype(x: torch.Tensor, dtype: torch.dtype, name: str = "x") -> None:
    """Refuse an input whose dtype differs from the module's parameter ``dtype`` (outside autocast).

    Inputs are never cast silently: a bfloat16 input to a float32 block would lose the precision the
    caller asked for one way or the other. Under ``torch.autocast`` mixed dtypes are autocast's job.
    """
    if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(
            f"{name} has dtype {x.dtype} but the module's parameters are {dtype}: convert the input "
            f"(x.to({dtype})) or the module (module.to({x.dtype})), or run under torch.autocast"
        )


class S4Block(nn.Module):
    """An S4 layer: ``y = GLU(W act(K * u + D u) + b)``, with a recurrent step mode equal to it.

    Convolution mode (training, whole sequences): the kernel K (channels, H, L) from
    :class:`S4Kernel` is applied by FFT, zero-padded to 2L (causal; the bidirectional variant
    adds a second kernel over the reversed sequence, shifted by one step). Step mode
    (streaming generation): ``state = block.init_state(B)``, then ``y, state = block.step(x, state)``.
    The two agree to float precision. ``forward(x, state)`` also streams chunk by chunk.

    Args:
        d_model: H.
        d_state: N (even).
        channels: kernels per channel; their outputs are concatenated before the output linear.
        bidirectional: non-causal (no step mode).
        activation: 'gelu', 'silu', 'relu', 'tanh' or 'identity'.
        postact: 'glu' (output linear H*c -> 2H, then GLU), 'linear' (H*c -> H) or None (no
            output linear; requires channels == 1).
        dropout: dropout after the activation.
        transposed: inputs are (B, H, L) instead of (B, L, H).
        **kernel_args: forwarded to :class:`S4Kernel` (mode, init, rank, n_ssm, dt_min, dt_max,
            discretization, unconstrained, ssm_lr).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        channels: int = 1,
        bidirectional: bool = False,
        activation: str = "gelu",
        postact: str | None = "glu",
        dropout: float = 0.0,
        transposed: bool = False,
        **kernel_args,
    ) -> None:
        super().__init__()
        acts = {"gelu": nn.GELU(), "silu": nn.SiLU(), "relu": nn.ReLU(), "tanh": nn.Tanh(), "identity": nn.Identity()}
        if activation not in acts:
            raise ValueError(f"activation must be one of {sorted(acts)}, got {activation!r}")
        if postact not in ("glu", "linear", None):
            raise ValueError(f"postact must be 'glu', 'linear' or None, got {postact!r}")
        if postact is None and channels != 1:
            raise ValueError("postact=None needs channels=1 (an output linear merges the channels)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.d_model, self.channels, self.bidirectional, self.transposed = d_model, channels, bidirectional, transposed
        self.kernel = S4Kernel(d_model, d_state, channels, bidirectional=bidirectional, **kernel_args)
        self.D = nn.Parameter(torch.randn(channels, d_model))
        self.activation = acts[activation]
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if postact is None:
            self.output_linear = nn.Identity()
        else:
            self.output_linear = nn.Linear(channels * d_model, d_model * (2 if postact == "glu" else 1))
        self.postact = postact

    @property
    def d_state(self) -> int:
        return self.kernel.d_state

    def _output(self, y: torch.Tensor) -> torch.Tensor:
        """(..., c*H) -> (..., H): activation, dropout, output linear, GLU."""
        y = self.dropout(self.activation(y))
        y = self.output_linear(y)
        return F.glu(y, dim=-1) if self.postact == "glu" else y

    def forward(
        self, x: torch.Tensor, state: S4State | None = None, *, rate: float = 1.0
    ) -> torch.Tensor | tuple[torch.Tensor, S4State]:
        """Convolution mode.

        Args:
            x: (B, L, H) (or (B, H, L) when ``transposed``).
            state: optional state from ``init_state``/``step``/a previous chunk; with it the
                chunk continues the stream and the state after the chunk is returned too (the
                state object is updated in place).
            rate: step-size multiplier (see :meth:`S4Kernel.forward`); with a state, it must
                equal the rate the state was initialised with.

        Returns:
            y: (B, L, H) (or (B, H, L)), and the updated state when ``state`` was given.
        """
        # inside a kernel cache (frozen_kernels / cached_kernels: the inner loop of sampling, whose caller checked
        # its input) the per-call NaN/Inf scan is skipped
        cached = self.kernel.kernel_cache is not None and not torch.is_grad_enabled()
        check_sequence_input(x, self.d_model, self.transposed, finite=not cached)
        check_rate(rate)
        if state is not None:
            if self.bidirectional:
                raise RuntimeError("a bidirectional S4Block is non-causal: it cannot continue a stream from a state")
            self._check_state(state, x.shape[0], x)
            if rate != state.rate:
                raise ValueError(f"rate={rate} differs from the state's rate={state.rate}")
        check_input_dtype(x, self.D.dtype)
        u = x if self.transposed else x.transpose(1, 2)  # (B, H, L)
        B_, H, L = u.shape
        with torch.autocast(device_type=u.device.type, enabled=False):
            uf = u.to(torch.promote_types(u.dtype, torch.float32))
            c = self.channels
            k_f = self._kernel_spectrum(L, rate, uf.dtype)  # (c, H, L + 1)
            y = torch.fft.irfft(torch.fft.rfft(uf, n=2 * L).unsqueeze(1) * k_f, n=2 * L)
            y = y[..., :L] + self.D.to(uf.dtype).unsqueeze(-1) * uf.unsqueeze(1)  # (B, c, H, L)
            if state is not None:
                y = y + self._stream_chunk(uf, state)
        y = y.reshape(B_, c * H, L).to(x.dtype).transpose(1, 2)  # (B, L, c*H)
        y = self._output(y)  # (B, L, H)
        y = y.transpose(1, 2) if self.transposed else y
        return (y, state) if state is not None else y

    def _kernel_spectrum(self, L: int, rate: float, dtype: torch.dtype) -> torch.Tensor:
        """The rFFT (size 2L) of the convolution kernel: (c, H, L + 1) complex. A bidirectional layer's kernel is
        the forward kernel at lags 0..L-1 plus the backward one, flipped, at lags -L..-1 (wrapped to L..2L-1).

        Inside a kernel cache (:func:`~sashimi.layers.frozen_kernels`), no-grad calls keep the spectrum with the
        kernel: the padding, flip and FFT of the kernel are done once per (length, rate, window, dtype).
        """
        cache = None if torch.is_grad_enabled() else self.kernel.kernel_cache
        key = ("spectrum", L, float(rate), self.kernel.window, dtype)
        if cache is not None and key in cache:
            return cache[key]
        K = self.kernel(L, rate).to(dtype)  # (c', H, L)
        c = self.channels
        if self.bidirectional:
            k = F.pad(K[:c], (0, L)) + F.pad(K[c:].flip(-1), (L, 0))  # (c, H, 2L)
        else:
            k = K
        k_f = torch.fft.rfft(k, n=2 * L)  # (c, H, L + 1)
        if cache is not None:
            cache[key] = k_f
        return k_f

    # ---- recurrent mode ---------------------------------------------------------------------
    def init_state(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        mode: str = "auto",
        rate: float = 1.0,
        tol: float | None = None,
        on_fail: str = "fallback",
        check_finite: bool = True,
    ) -> S4State:
        """A zero state for ``batch_size`` streams, with the step constants discretized once.

        Args:
            batch_size: B.
            device, dtype: of the state (default: the module's; the state is complex of that precision).
            mode: step discretization: 'auto' (default; exact: diagonal when its measured error is
                within ``tol`` -- with a state in the module's precision, else, below float64, with a
                complex128 state -- else linear), 'linear' (Woodbury, exact), 'dense' (exact, O(N^2)),
                'diagonal' (fast; self-checked, see :meth:`S4Kernel.step_constants`), 'diagonal64'
                (diagonal with a complex128 state; self-checked against the module precision's tolerance).
            rate: step-size multiplier.
            tol, on_fail: the diagonal self-check's tolerance and what to do when it fails
                ('fallback' to linear, or 'raise').
            check_finite: :meth:`step` refuses NaN/Inf inputs (default); False skips that check
                (see :class:`S4State`).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        check_rate(rate)
        if self.bidirectional:
            raise RuntimeError(
                "a bidirectional S4Block is non-causal and has no step mode; use forward() on whole sequences"
            )
        device = torch.device(device or self.D.device)
        dtype = dtype or self.D.dtype
        consts = self._cached_step_constants(mode, rate, dtype, device, tol, on_fail)
        x = torch.zeros(batch_size, self.d_model, consts.state_size, dtype=consts.state_dtype, device=device)
        return S4State(x, consts, rate, dtype, weakref.ref(self), bool(check_finite))

    # ---- step-constant cache ----------------------------------------------------------------
    #: how many StepConstants (distinct init_state arguments / parameter versions) a block keeps
    STEP_CACHE_SIZE = 4

    def _step_cache_dict(self) -> OrderedDict:
        cache = self.__dict__.get("_step_cache")
        if cache is None:
            cache = OrderedDict()
            self.__dict__["_step_cache"] = cache
        return cache

    def clear_step_cache(self) -> None:
        """Forget the step constants cached by :meth:`init_state` (they are recomputed on the next call)."""
        self.__dict__.pop("_step_cache", None)

    def _kernel_tensors(self) -> list[tuple[str, torch.Tensor]]:
        return [*self.kernel.named_parameters(), *self.kernel.named_buffers()]

    def _cached_step_constants(
        self, mode: str, rate: float, dtype: torch.dtype, device: torch.device, tol: float | None, on_fail: str
    ) -> StepConstants:
        """:meth:`S4Kernel.step_constants` moved to ``device``, reused while nothing it depends on changed.

        The key holds the arguments, the autograd/inference mode and, per kernel parameter and buffer,
        its name, identity (a weak reference, so a freed tensor's reused ``id`` cannot match),
        ``_version`` (bumped by in-place updates: optimizer steps, ``load_state_dict``, ``copy_``),
        dtype, device and shape. A hit is also checked against a snapshot of the values, which
        catches writes that bypass the version counter (``p.data = ...``, ``p.data.add_(...)``,
        ``module.double()`` round trips). Tensors without a version counter (inference tensors)
        disable the cache. The cached object is final and shared read-only by every state made
        from it; at most :attr:`STEP_CACHE_SIZE` entries are kept (least recently used dropped).
        """
        named = self._kernel_tensors()
        try:
            key = (
                mode, float(rate), dtype, device, tol, on_fail, torch.is_inference_mode_enabled(),
                self.kernel.mode, self.kernel.discretization,
                tuple((n, id(t), t._version, t.dtype, t.device, tuple(t.shape)) for n, t in named),
            )
            hash(key)
        except (RuntimeError, TypeError, ValueError):  # inference tensors, an unhashable rate/tol
            key = None
        cache = self._step_cache_dict()
        if key is not None and key in cache:
            refs, snapshot, consts = cache[key]
            if all(r() is t for r, (_, t) in zip(refs, named)) and all(
                torch.equal(s, t.detach()) for s, (_, t) in zip(snapshot, named)
            ):
                cache.move_to_end(key)
                return consts
            del cache[key]
        consts = self.kernel.step_constants(mode, rate, dtype=dtype, tol=tol, on_fail=on_fail)
        # copies: the constants are shared by every state made from them and must never alias a
        # parameter (S4D's dC can be a view of C), which an optimizer step would change under them
        move = lambda t: None if t is None else t.to(device, copy=True)
        consts = replace(
            consts, tensors={k: v.to(device, copy=True) for k, v in consts.tensors.items()},
            to_full=move(consts.to_full), from_full=move(consts.from_full),
        )
        if key is not None:
            with torch.no_grad():
                snapshot = [t.detach().clone() for _, t in named]
            cache[key] = ([weakref.ref(t) for _, t in named], snapshot, consts)
            while len(cache) > self.STEP_CACHE_SIZE:
                cache.popitem(last=False)
        return consts

    def __getstate__(self) -> dict:
        # the cache (weak references, derived tensors) is not part of the module's state
        state = super().__getstate__()  # a copy of __dict__
        state.pop("_step_cache", None)
        return state

    def _check_state(self, state: object, batch: int, x: torch.Tensor) -> None:
        if not isinstance(state, S4State):
            raise TypeError(f"state must be an S4State from init_state(), got {type(state).__name__}")
        if state.x.shape[0] != batch:
            raise ValueError(f"state was made for batch size {state.x.shape[0]}, but the input has batch size {batch}")
        if state.x.shape[1] != self.d_model:
            raise ValueError(f"state has H={state.x.shape[1]}, this block has d_model={self.d_model}")
        if state.x.device != x.device:
            raise ValueError(f"state is on {state.x.device}, input on {x.device}")
        want = _complex_of(x.dtype)
        made_for = _complex_of(state.dtype) if state.dtype is not None else state.x.dtype
        if made_for != want or (state.dtype is not None and state.x.dtype != state.consts.state_dtype):
            raise TypeError(
                f"state dtype {state.x.dtype} (made for {state.dtype or state.x.dtype}) does not match the input "
                f"dtype {x.dtype}: make the state with init_state(dtype={x.dtype})"
            )
        state.check_owner(self)

    def step(self, x: torch.Tensor, state: S4State) -> tuple[torch.Tensor, S4State]:
        """One recurrent step.

        Refused: a bidirectional block (no step mode), a state this block did not make (see
        :class:`S4State`), a batch or dtype that does not match, and NaN/Inf inputs unless the state
        was made with ``check_finite=False``.

        Args:
            x: (B, H) input at one time step, the dtype of the block's parameters.
            state: from :meth:`init_state`; updated in place.

        Returns:
            y: (B, H), and the same state object.
        """
        if self.bidirectional:
            raise RuntimeError(
                "a bidirectional S4Block is non-causal and has no step mode; use forward() on whole sequences"
            )
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != self.d_model:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"step input must have shape (B, H) with H={self.d_model}, got {shape}")
        if not x.is_floating_point():
            raise TypeError(f"step input must be a floating tensor, got dtype {x.dtype}")
        self._check_state(state, x.shape[0], x)
        D = self.D  # (c, H)
        check_input_dtype(x, D.dtype, "step input")
        # a sum is non-finite if any element is (NaN/inf propagate): one reduction and one read decide the
        # common case; only a non-finite sum (a bad element, or finite values overflowing) is looked at closely
        if state.check_finite and not math.isfinite(x.sum().item()) and not torch.isfinite(x).all():
            raise ValueError("step input contains NaN or Inf (it would make the state non-finite for good)")
        u = x.to(state.x.real.dtype)  # (B, H)
        yc = ssm_step(state, u)  # (B, c, H)
        y = yc + D.to(u.dtype) * u.unsqueeze(1)
        y = y.reshape(x.shape[0], -1).to(x.dtype)  # (B, c*H)
        return self._output(y), state

    def _stream_chunk(self, u: torch.Tensor, state: S4State) -> torch.Tensor:
        """Contribution of the incoming state to a chunk's outputs; advances ``state`` past the chunk.

        Args:
            u: (B, H, L) real chunk input. Returns: (B, c, H, L).
        """
        consts = state.consts
        x0 = state.x
        if consts.mode == "diagonal":
            dA, dB, dC = consts["dA"], consts["dB"], consts["dC"]
            log_dA = torch.log(dA)
            scale = 1.0 if consts.two_re else 0.5  # vandermonde returns 2 Re(.)
            ys = scale * vandermonde((dC.unsqueeze(1) * (dA * x0)).transpose(0, 1), log_dA, u.shape[-1])
            L = u.shape[-1]
            x_new = torch.exp(log_dA * L) * x0 + dB * vandermonde_transpose(u.flip(-1).to(x0.real.dtype), log_dA)
            state.x.copy_(x_new)
            return ys
        # dense / linear: work on the full N-dimensional state with the dense discretization
        dA, dB, dC = (t.to(device=u.device) for t in self.kernel.dense_system(state.rate))
        cdt = x0.dtype
        dA, dB, dC = dA.to(cdt), dB.to(cdt), dC.to(cdt)
        xf = x0 if consts.mode == "dense" else torch.cat([x0, x0.conj()], dim=-1)  # (B, H, N)
        ys, xL = dense_chunk(dA, dB, dC, xf, u)
        state.x.copy_(xL if consts.mode == "dense" else xL[..., : x0.shape[-1]])
        return ys


def ssm_step(state: S4State, u: torch.Tensor) -> torch.Tensor:
    """Advance ``state`` by one input ``u`` (B, H); return the SSM output (B, c, H) (without D)."""
    consts, x = state.consts, state.x
    uc = u.unsqueeze(-1)  # (B, H, 1)
    if consts.mode == "diagonal":
        x.mul_(consts["dA"]).add_(consts["dB"] * uc)
        dC = consts["dC"]
        y = (dC[0] * x).sum(-1).unsqueeze(1) if dC.shape[0] == 1 else torch.einsum("chn,bhn->bch", dC, x)
        return 2 * y.real if consts.two_re else y.real
    if consts.mode == "dense":
        x.copy_(torch.einsum("hmn,bhn->bhm", consts["dA"], x) + consts["dB"] * uc)
        return torch.einsum("chn,bhn->bch", consts["dC"], x).real
    # linear: x' = (I - dt/2 A)^-1 ((I + dt/2 A) x + dt B u) with A = Lambda - P P^* by Woodbury, on the
    # half-size state; inner products with the full (conjugate-symmetric) state are 2 Re of half sums.
    t = consts.tensors
    if t["Winv"].shape[-1] == 1:  # rank 1: broadcasting only
        s = (t["Pc2"][0] * x).sum(-1).real.unsqueeze(-1)  # (B, H, 1): Pf^H x
        z = t["da"] * x - t["dhP"][0] * s + t["ddtB"] * uc  # (B, H, N2)
        q = (t["Pc2"][0] * z).sum(-1).real.unsqueeze(-1) * t["Winv"][:, 0]  # (B, H, 1)
        x.copy_(z - t["dP"][0] * q)
    else:
        s = torch.einsum("rhn,bhn->brh", t["Pc2"], x).real  # (B, r, H)
        z = t["da"] * x - torch.einsum("rhn,brh->bhn", t["dhP"], s.to(x.dtype)) + t["ddtB"] * uc
        w = torch.einsum("rhn,bhn->brh", t["Pc2"], z).real  # (B, r, H)
        q = torch.einsum("hij,bjh->bih", t["Winv"], w)  # (B, r, H)
        x.copy_(z - torch.einsum("rhn,brh->bhn", t["dP"], q.to(x.dtype)))
    if t["C2"].shape[0] == 1:
        return (t["C2"][0] * x).sum(-1).real.unsqueeze(1)  # (B, 1, H)
    return torch.einsum("chn,bhn->bch", t["C2"], x).real


def dense_chunk(
    dA: torch.Tensor, dB: torch.Tensor, dC: torch.Tensor, x0: torch.Tensor, u: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stream a dense discrete SSM through a chunk in blocks (all batched matrix products).

    ``y_state[t] = Re(dC dA^(t+1) x0)`` and ``x_L = dA^L x0 + sum_s dA^(L-1-s) dB u_s``, computed with
    blocks of T ~ sqrt(L) steps: O(T + L/T) sequential small products instead of L.

    Args:
        dA: (H, N, N) complex transition.
        dB: (H, N) complex input vector.
        dC: (c, H, N) complex output vectors.
        x0: (B, H, N) complex initial state.
        u: (B, H, L) real input.

    Returns:
        y_state (B, c, H, L) real, x_L (B, H, N) complex.
    """
    B_, H, L = u.shape
    T = max(1, int(L**0.5))
    nb = -(-L // T)
    cdt = x0.dtype
    # W[j] = dC dA^j and G[j] = dA^j dB for j < T
    W, G = [dC], [dB]
    for _ in range(T - 1):
        W.append(torch.einsum("chm,hmn->chn", W[-1], dA))
        G.append(torch.einsum("hmn,hn->hm", dA, G[-1]))
    W = torch.stack(W, dim=2)  # (c, H, T, N)
    G = torch.stack(G, dim=-1)  # (H, N, T)
    AT = torch.linalg.matrix_power(dA, T)  # (H, N, N)
    # outputs from the incoming state: z_b = dA^(bT+1) x0
    z = [torch.einsum("hmn,bhn->bhm", dA, x0)]
    for _ in range(nb - 1):
        z.append(torch.einsum("hmn,bhn->bhm", AT, z[-1]))
    zs = torch.stack(z, dim=2)  # (B, H, nb, N)
    ys = torch.einsum("chjn,bhkn->bchkj", W, zs).real.reshape(B_, dC.shape[0], H, nb * T)[..., :L]
    # state after the chunk
    up = F.pad(u, (nb * T - L, 0)).reshape(B_, H, nb, T).flip(-1).to(cdt)  # (B, H, nb, T)
    s = torch.einsum("hnj,bhkj->bkhn", G, up)  # (B, nb, H, N)
    acc = s[:, 0]
    for b in range(1, nb):
        acc = torch.einsum("hmn,bhn->bhm", AT, acc) + s[:, b]
    xL = torch.einsum("hmn,bhn->bhm", torch.linalg.matrix_power(dA, L), x0) + acc
    return ys, xL
