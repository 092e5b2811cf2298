"""The fused diagonal SSM step (:func:`sashimi.kernels.diag_step`): Triton kernel against its references.

The Triton checks run in a subprocess with ``TRITON_INTERPRET=1 SASHIMI_BACKEND=triton`` (``triton.jit``
picks the interpreter when a kernel is decorated, so the variable must be set before
:mod:`sashimi.kernels.triton` is imported; see ``tests/kernels/test_triton.py``), and also compiled on
CUDA where a GPU is present. Each check is one pytest test reading the subprocess's JSON report.
Run the checks directly, printing the measured errors::

    TRITON_INTERPRET=1 SASHIMI_BACKEND=triton python tests/kernels/test_triton_step.py --device cpu

Accuracy criterion (as for the other kernels): with ``err(x) = max|x - ref64| / max|ref64|`` against
:func:`diag_step_ref` on the inputs upcast to float64, ``err(triton) <= 2 err(torch) + floor`` for the
output ``y`` and for the updated state ``x``. The PyTorch path and the block's step are checked in
this process (no Triton needed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # when run as a script
    sys.path.insert(0, str(REPO_ROOT))

from sashimi.kernels.step import diag_step, diag_step_ref  # noqa: E402

FLOOR = {torch.float32: 1e-6, torch.float64: 2e-15}
CHECKS: dict = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


def _cplx(real):
    return torch.complex64 if real == torch.float32 else torch.complex128


def _up(t):
    return t.detach().to(torch.complex128 if t.is_complex() else torch.float64)


def _err(x, ref):
    x, ref = _up(x), _up(ref)
    return ((x - ref).abs().max() / ref.abs().max()).item()


def _case(seed, B, H, M, C, real, with_d=True, device="cpu"):
    """Random state and constants of a stable diagonal SSM (|dA| < 1), as a step would see them."""
    g = torch.Generator().manual_seed(seed)

    def crandn(*shape):
        return torch.complex(
            torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)
        )

    mag = 0.5 + 0.49 * torch.rand(H, M, generator=g, dtype=torch.float64)
    ang = (2 * torch.rand(H, M, generator=g, dtype=torch.float64) - 1) * math.pi
    dA = torch.polar(mag, ang)
    t = {
        "x": crandn(B, H, M),
        "dA": dA,
        "dB": 0.1 * crandn(H, M),
        "dC": crandn(C, H, M),
        "u": torch.randn(B, H, generator=g, dtype=torch.float64),
        "D": torch.randn(C, H, generator=g, dtype=torch.float64) if with_d else None,
    }
    cdt = _cplx(real)
    return {k: (None if v is None else v.to(cdt if v.is_complex() else real).to(device)) for k, v in t.items()}


def _run_all(t, two_re, **kw):
    """(y, x_after) for the triton, torch and ref (float64) paths on copies of the same state."""
    res = {}
    for be in ("triton", "torch"):
        x = t["x"].clone()
        y = diag_step(x, t["dA"], t["dB"], t["dC"], t["u"], t["D"], two_re=two_re, backend=be, **kw)
        res[be] = (y, x)
    x64 = _up(t["x"])
    y64 = diag_step_ref(x64, _up(t["dA"]), _up(t["dB"]), _up(t["dC"]), _up(t["u"]),
                        None if t["D"] is None else _up(t["D"]), two_re)
    res["ref"] = (y64, x64)
    return res


def _compare(metrics, name, tri, tor, ref, real):
    e_tri, e_tor = _err(tri, ref), _err(tor, ref)
    metrics[name] = {"triton": e_tri, "torch": e_tor}
    assert e_tri == e_tri, f"{name}: NaN"
    bound = 2 * e_tor + FLOOR[real]
    assert e_tri <= bound, f"{name}: triton error {e_tri:.3e} > 2 x torch error {e_tor:.3e} + floor {FLOOR[real]:.0e}"


# ----------------------------------------------------------------------------------------------
# checks (run inside the subprocess): each takes the device string, returns measured errors

STEP_CASES = {
    # name: (B, H, M, C, with D, two_re)
    "s4d_c1": (2, 8, 32, 1, True, True),  # the common S4D layer: N/2 = 32 modes, one channel
    "dplr_eig_c2": (3, 6, 64, 2, True, False),  # an eigendecomposed DPLR state (M = N, Re), two channels
    "odd_sizes": (1, 37, 33, 3, False, True),  # partial H and M blocks, 3 channels padded to 4, no D
    "wide_h": (2, 130, 7, 1, True, True),  # several H blocks, tiny state
    "many_channels": (1, 4, 96, 5, True, True),  # M over one block (96 = 64 + 32), 5 channels
}


def _make_step_check(case, real, seed):
    def fn(device):
        B, H, M, C, with_d, two_re = STEP_CASES[case]
        t = _case(seed, B, H, M, C, real, with_d, device)
        res = _run_all(t, two_re)
        y, x = res["triton"]
        assert y.shape == (B, C, H) and y.dtype == real and y.device.type == device
        metrics = {}
        _compare(metrics, "y", y, res["torch"][0], res["ref"][0], real)
        _compare(metrics, "x", x, res["torch"][1], res["ref"][1], real)
        return metrics

    fn.__name__ = f"step_{case}_{'f32' if real == torch.float32 else 'f64'}"
    return check(fn)


for _i, _case_name in enumerate(STEP_CASES):
    for _real_t in (torch.float32, torch.float64):
        _make_step_check(_case_name, _real_t, 700 + _i)


@check
def in_place_and_strided_state(device):
    """x is written through its own storage: a non-contiguous slice of a larger buffer, whose other
    elements stay untouched; constants given as lazy conjugates / broadcast views; ``out=`` buffers."""
    from sashimi.kernels.triton import diag_step_fwd

    real = torch.float64
    B, H, M, C = 3, 5, 20, 2
    t = _case(800, B, H, M, C, real, True, device)
    big = torch.randn(H, B, M + 7, dtype=torch.complex128, generator=torch.Generator().manual_seed(1)).to(device)
    before = big.clone()
    x = big.permute(1, 0, 2)[:, :, 3 : 3 + M]  # (B, H, M), strides (M+7, B(M+7), 1), offset 3
    x.copy_(t["x"])
    before[:, :, 3 : 3 + M] = t["x"].permute(1, 0, 2)
    ptr = x.data_ptr()
    dC_lazy = t["dC"].conj().resolve_conj().conj()  # a lazy conj-bit view whose values equal dC
    assert dC_lazy.is_conj()
    dA_b = t["dA"][:1].expand(H, M)  # stride-0 broadcast constants
    y = diag_step(x, dA_b, t["dB"], dC_lazy, t["u"], t["D"], backend="triton")
    x_ref = t["x"].clone()
    y_ref = diag_step_ref(x_ref, dA_b, t["dB"], t["dC"], t["u"], t["D"])
    assert x.data_ptr() == ptr
    assert _err(x, x_ref) < 1e-14 and _err(y, y_ref) < 1e-14
    untouched = torch.ones_like(big, dtype=torch.bool)
    untouched[:, :, 3 : 3 + M] = False
    assert torch.equal(big[untouched], before[untouched]), "elements outside the state were written"
    # out= buffer, NaN-filled: every element written
    out = torch.full((B, C, H), float("nan"), dtype=real, device=device)
    x2 = t["x"].clone()
    assert diag_step_fwd(x2, t["dA"], t["dB"], t["dC"], t["u"], t["D"], out=out) is out
    assert torch.isfinite(out).all()
    x3 = t["x"].clone()
    assert _err(out, diag_step_ref(x3, t["dA"], t["dB"], t["dC"], t["u"], t["D"])) < 1e-14
    # a transposed (non-contiguous) out= buffer
    out_t = torch.full((H, C, B), float("nan"), dtype=real, device=device).permute(2, 1, 0)
    x4 = t["x"].clone()
    diag_step_fwd(x4, t["dA"], t["dB"], t["dC"], t["u"], t["D"], out=out_t)
    assert torch.equal(out_t, out)
    return {}


@check
def recurrence_many_steps(device):
    """100 steps of a slowly decaying SSM: the Triton and PyTorch recurrences stay together."""
    metrics = {}
    for real in (torch.float32, torch.float64):
        B, H, M, C = 2, 6, 32, 1
        t = _case(900, B, H, M, C, real, True, device)
        t["dA"] = t["dA"] / t["dA"].abs() * 0.995  # |dA| = 0.995: long memory
        g = torch.Generator().manual_seed(901)
        xs = {be: t["x"].clone() for be in ("triton", "torch")}
        x64 = _up(t["x"])
        ys = {"triton": [], "torch": [], "ref": []}
        for _ in range(100):
            u = torch.randn(B, H, generator=g, dtype=torch.float64)
            for be in ("triton", "torch"):
                ys[be].append(diag_step(xs[be], t["dA"], t["dB"], t["dC"], u.to(real).to(device), t["D"], backend=be))
            ys["ref"].append(diag_step_ref(x64, _up(t["dA"]), _up(t["dB"]), _up(t["dC"]),
                                           u.to(real).double().to(device), _up(t["D"])))
        tag = "f32" if real == torch.float32 else "f64"
        _compare(metrics, f"y_{tag}", torch.stack(ys["triton"]), torch.stack(ys["torch"]), torch.stack(ys["ref"]), real)
        _compare(metrics, f"x_{tag}", xs["triton"], xs["torch"], x64, real)
    return metrics


@check
def drop_in_for_s4block_step(device):
    """With the block's diagonal step constants, ``diag_step`` + the block's output layers equal
    ``S4Block.step`` (S4D, 2 Re, 3 channels; and a random DPLR block in eigenbasis, Re)."""
    from sashimi import S4Block

    metrics = {}
    cases = {
        "s4d": dict(mode="diag", channels=3),
        "dplr_eig": dict(mode="dplr"),
    }
    for name, kw in cases.items():
        for real in (torch.float32, torch.float64):
            torch.manual_seed(5)
            blk = S4Block(4, 16, **kw).to(real).to(device)
            with torch.no_grad():
                blk.kernel.A_imag.copy_(5 * torch.randn_like(blk.kernel.A_imag))
            st_ref = blk.init_state(2, mode="diagonal", on_fail="raise")
            st_tri = st_ref.clone()
            assert st_ref.consts.two_re == (name == "s4d")
            x = torch.randn(2, 40, 4, dtype=real, device=device)
            ys_ref, ys_tri = [], []
            with torch.no_grad():
                for i in range(x.shape[1]):
                    ys_ref.append(blk.step(x[:, i], st_ref)[0])
                    c = st_tri.consts
                    u = x[:, i].to(st_tri.x.real.dtype)
                    y = diag_step(st_tri.x, c["dA"], c["dB"], c["dC"], u, blk.D, two_re=c.two_re, backend="triton")
                    ys_tri.append(blk._output(y.reshape(2, -1).to(x.dtype)))
            tag = f"{name}_{'f32' if real == torch.float32 else 'f64'}"
            metrics[tag] = {"y": _err(torch.stack(ys_tri), torch.stack(ys_ref)), "state": _err(st_tri.x, st_ref.x)}
            tol = 1e-5 if real == torch.float32 else 1e-12
            assert max(metrics[tag].values()) < tol, (tag, metrics[tag])
    return metrics


@check
def grad_mode_falls_back_to_torch(device):
    """The kernel has no backward: with an input requiring grad, the PyTorch path runs and gradients flow."""
    import sashimi.kernels.triton.step as tstep

    t = _case(950, 2, 3, 8, 2, torch.float64, True, device)
    calls = []
    saved = tstep.diag_step_fwd

    def spy(*a, **k):
        calls.append(1)
        return saved(*a, **k)

    tstep.diag_step_fwd = spy
    try:
        dC = t["dC"].clone().requires_grad_(True)
        y = diag_step(t["x"].clone(), t["dA"], t["dB"], dC, t["u"], t["D"], backend="triton")
        (g,) = torch.autograd.grad(y.sum(), dC)
        assert not calls and torch.isfinite(torch.view_as_real(g)).all()
        with torch.no_grad():
            diag_step(t["x"].clone(), t["dA"], t["dB"], dC, t["u"], t["D"], backend="triton")
        assert len(calls) == 1
    finally:
        tstep.diag_step_fwd = saved
    return {}


@check
def triton_argument_errors(device):
    from sashimi.kernels.triton import diag_step_fwd

    t = _case(960, 2, 3, 8, 1, torch.float64, True, device)
    with pytest.raises(ValueError, match="lazily conjugated"):
        diag_step_fwd(t["x"].conj(), t["dA"], t["dB"], t["dC"], t["u"])
    with pytest.raises(TypeError, match="dC must be"):
        diag_step_fwd(t["x"], t["dA"], t["dB"], t["dC"].to(torch.complex64), t["u"])
    with pytest.raises(ValueError, match="broadcast"):
        diag_step_fwd(t["x"], t["dA"][:, :3], t["dB"], t["dC"], t["u"])
    with pytest.raises(ValueError, match="out must be"):
        diag_step_fwd(t["x"], t["dA"], t["dB"], t["dC"], t["u"],
                      out=torch.empty(2, 1, 4, dtype=torch.float64, device=device))
    return {}


# ----------------------------------------------------------------------------------------------
# subprocess runner


def run_checks(device: str, names: list[str]) -> dict:
    import warnings

    warnings.filterwarnings("ignore", category=RuntimeWarning)  # the interpreter's numpy overflow chatter
    torch.set_num_threads(1)
    results = {}
    for name in names:
        t0 = time.perf_counter()
        try:
            results[name] = {"ok": True, "metrics": CHECKS[name](device)}
        except BaseException:  # pytest.raises failures are BaseException subclasses
            results[name] = {"ok": False, "error": traceback.format_exc(limit=8)}
        results[name]["seconds"] = round(time.perf_counter() - t0, 3)
    return results


def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="write the report here instead of printing it")
    ap.add_argument("-k", default=None, help="only checks whose name contains this")
    args = ap.parse_args(argv)
    names = [k for k in CHECKS if args.k is None or args.k in k]
    results = run_checks(args.device, names)
    if args.json:
        Path(args.json).write_text(json.dumps(results))
    else:
        for name, r in results.items():
            print(f"{'ok  ' if r['ok'] else 'FAIL'} {name} ({r['seconds']}s) {json.dumps(r.get('metrics', {}))}")
            if not r["ok"]:
                print(r["error"])
    return 0 if all(r["ok"] for r in results.values()) else 1


def _run_device(device: str, workdir: Path) -> dict:
    env = os.environ.copy()
    env["SASHIMI_BACKEND"] = "triton"
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    report = workdir / f"{device}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--device", device, "--json", str(report)]
    proc = subprocess.run(cmd, env=env, cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=900)
    if report.is_file():
        return json.loads(report.read_text())
    tail = (proc.stdout + proc.stderr)[-4000:]
    return {"__crash__": {"ok": False, "error": f"check subprocess died (rc={proc.returncode}):\n{tail}"}}


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module", params=DEVICES)
def step_report(request, tmp_path_factory):
    pytest.importorskip("triton")
    return _run_device(request.param, tmp_path_factory.mktemp(f"triton-step-{request.param}"))


@pytest.mark.parametrize("name", list(CHECKS))
def test_triton_step(step_report, name):
    if name not in step_report:
        crash = step_report.get("__crash__", {}).get("error", "no result")
        pytest.fail(f"{name}: no result from the check subprocess\n{crash}")
    r = step_report[name]
    assert r["ok"], r["error"]


# ----------------------------------------------------------------------------------------------
# in-process tests: the PyTorch path, the reference, validation (no Triton involved)


@pytest.mark.parametrize("real", [torch.float32, torch.float64])
@pytest.mark.parametrize("C,two_re,with_d", [(1, True, True), (3, False, False), (2, True, False)])
def test_torch_path_matches_ref(real, C, two_re, with_d):
    t = _case(10 + C, 2, 5, 12, C, real, with_d)
    xa, xb = t["x"].clone(), t["x"].clone()
    ya = diag_step(xa, t["dA"], t["dB"], t["dC"], t["u"], t["D"], two_re=two_re, backend="torch")
    yb = diag_step(xb, t["dA"], t["dB"], t["dC"], t["u"], t["D"], two_re=two_re, backend="ref")
    tol = 1e-5 if real == torch.float32 else 1e-13
    assert ya.shape == (2, C, 5) and ya.dtype == real
    assert _err(ya, yb) < tol and _err(xa, xb) < tol


def test_torch_path_is_ssm_step_plus_d_bit_for_bit():
    """The torch path is the block's diagonal step op for op: S4Block.step's outputs, exactly."""
    from sashimi import S4Block

    torch.manual_seed(0)
    blk = S4Block(6, 16, mode="diag", channels=2).double()
    st_a = blk.init_state(3, mode="diagonal")
    st_b = st_a.clone()
    x = torch.randn(3, 10, 6, dtype=torch.float64)
    with torch.no_grad():
        for i in range(x.shape[1]):
            ya = blk.step(x[:, i], st_a)[0]
            c = st_b.consts
            y = diag_step(st_b.x, c["dA"], c["dB"], c["dC"], x[:, i], blk.D, two_re=c.two_re, backend="torch")
            yb = blk._output(y.reshape(3, -1))
            assert torch.equal(ya, yb)
    assert torch.equal(st_a.x, st_b.x)


def test_ref_is_an_unrolled_linear_recurrence():
    """diag_step_ref against the closed form x_t = dA^t x_0 + sum_s dA^(t-1-s) dB u_s (float64)."""
    t = _case(20, 1, 3, 4, 2, torch.float64)
    x0 = t["x"].clone()
    x = t["x"].clone()
    us = torch.randn(6, 1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for k in range(6):
        y = diag_step_ref(x, t["dA"], t["dB"], t["dC"], us[k], t["D"], two_re=True)
    xs = t["dA"] ** 6 * x0 + sum(t["dA"] ** (5 - s) * t["dB"] * us[s].unsqueeze(-1) for s in range(6))
    assert _err(x, xs) < 1e-13
    y_cf = 2 * torch.einsum("chn,bhn->bch", t["dC"], xs).real + t["D"] * us[-1].unsqueeze(1)
    assert _err(y, y_cf) < 1e-13


def test_argument_errors():
    t = _case(30, 2, 3, 8, 1, torch.float64)
    x, dA, dB, dC, u = t["x"], t["dA"], t["dB"], t["dC"], t["u"]
    with pytest.raises(TypeError, match="x must be a complex"):
        diag_step(x.real, dA, dB, dC, u)
    with pytest.raises(TypeError, match="x must be a complex"):
        diag_step(x[0], dA, dB, dC, u)
    with pytest.raises(TypeError, match="dA must have the state's dtype"):
        diag_step(x, dA.to(torch.complex64), dB, dC, u)
    with pytest.raises(ValueError, match="dB must have shape"):
        diag_step(x, dA, dB[:, :4], dC, u)
    with pytest.raises(ValueError, match="dC must have shape"):
        diag_step(x, dA, dB, dC[0], u)
    with pytest.raises(TypeError, match="u must be a real"):
        diag_step(x, dA, dB, dC, u.to(torch.complex128))
    with pytest.raises(ValueError, match="u must have shape"):
        diag_step(x, dA, dB, dC, u[:, :2])
    with pytest.raises(ValueError, match="D must have shape"):
        diag_step(x, dA, dB, dC, u, torch.ones(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="backend must be"):
        diag_step(x, dA, dB, dC, u, backend="cuda")
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        with pytest.raises(RuntimeError, match="needs CUDA"):
            diag_step(x, dA, dB, dC, u, backend="triton")


def test_import_does_not_import_triton_or_the_library():
    code = (
        "import sys, sashimi, sashimi.kernels, sashimi.kernels.step; from sashimi.kernels import diag_step; "
        "bad = [m for m in ('triton', 'sashimi.kernels._library', 'torch._dynamo') if m in sys.modules]; "
        "assert not bad, bad"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


if __name__ == "__main__":
    sys.exit(_main())
