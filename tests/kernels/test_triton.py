"""Triton kernels against their dense references: in Triton's interpreter on CPU, compiled on CUDA when present.

``triton.jit`` chooses the interpreter when a kernel is *decorated*, so ``TRITON_INTERPRET=1`` must
be set before :mod:`sashimi.kernels.triton` is first imported, and the other tests of the same
pytest process must not see that variable. The checks therefore run in subprocesses (two shards,
one per core) with ``TRITON_INTERPRET=1 SASHIMI_BACKEND=triton``; each writes a JSON report and
every check is one pytest test reading it. Run the checks directly, printing the measured errors::

    TRITON_INTERPRET=1 SASHIMI_BACKEND=triton python tests/kernels/test_triton.py --device cpu

Accuracy criterion: with ``err(x) = max|x - ref64| / max|ref64|`` against the dense ``*_ref`` spec
evaluated on the same inputs upcast to float64 / complex128, the Triton path must satisfy
``err(triton) <= 2 err(torch) + floor`` (floor: a few ulps of the working precision), for outputs
and for the autograd gradients (random cotangents, never zeros or ones).
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
FLOOR = {torch.float32: 1e-6, torch.float64: 2e-15}
CHECKS: dict = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


# ----------------------------------------------------------------------------------------------
# helpers (run inside the subprocess)


def _real(dtype):
    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)


def _cplx(real):
    return torch.complex64 if real == torch.float32 else torch.complex128


def _up(t):
    return t.detach().to(torch.complex128 if t.is_complex() else torch.float64)


def _err(x, ref):
    x = _up(x)
    return ((x - ref).abs().max() / ref.abs().max()).item()


def _compare(metrics, name, tri, tor, ref, real):
    e_tri, e_tor = _err(tri, ref), _err(tor, ref)
    metrics[name] = {"triton": e_tri, "torch": e_tor}
    bound = 2 * e_tor + FLOOR[real]
    assert e_tri <= bound, f"{name}: triton error {e_tri:.3e} > 2 x torch error {e_tor:.3e} + floor {FLOOR[real]:.0e}"
    assert e_tri == e_tri, f"{name}: NaN"


def _gen(device, seed):
    return torch.Generator(device="cpu").manual_seed(seed), device


def _crandn(g, shape, real, device, scale=1.0):
    x = torch.complex(
        torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)
    )
    return (scale * x).to(_cplx(real)).to(device)


def _poles(g, shape, real, device):
    """Stable poles: real part in [-1, -0.1], imaginary part ~ 3 N(0, 1)."""
    re = -(0.1 + 0.9 * torch.rand(shape, generator=g, dtype=torch.float64))
    im = 3 * torch.randn(shape, generator=g, dtype=torch.float64)
    return torch.complex(re, im).to(_cplx(real)).to(device)


def _log_nodes(g, shape, dtype, device, damp=(1e-3, 1e-2)):
    """log of stable nodes: real part in -[damp], phase uniform in (-pi, pi)."""
    re = -(damp[0] + (damp[1] - damp[0]) * torch.rand(shape, generator=g, dtype=torch.float64))
    im = (2 * torch.rand(shape, generator=g, dtype=torch.float64) - 1) * math.pi
    return torch.complex(re, im).to(dtype).to(device)


def _grads(fn, inputs, cot):
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    return out.detach(), torch.autograd.grad(out, leaves, cot)


# ----------------------------------------------------------------------------------------------
# checks: each takes the device string, returns a dict of measured errors, raises on failure


@check
def probe_and_backend(device):
    from sashimi.kernels import available_backends
    from sashimi.kernels.triton import probe

    assert probe(device), "probe() returned False"
    assert "triton" in available_backends(device), available_backends(device)
    return {}


CAUCHY_CASES = {
    # name: (v shape, w shape, L)
    "dplr_rows": ((3, 2, 2, 7), (2, 7), 997),  # (c + r, 1 + r, H, N2) numerators sharing (H, N2) poles; L prime
    "odd_n": ((4, 33), (4, 33), 61),  # no sharing, N/2 = 33 (three partial pole blocks)
    "mid_bcast": ((2, 3, 5), (2, 1, 5), 40),  # poles broadcast along a middle dim
    "v_bcast": ((5,), (3, 5), 19),  # numerators broadcast, poles not
}


def _cauchy_case(device, case, real, seed):
    from sashimi.kernels import cauchy, cauchy_ref

    vs, ws, L = CAUCHY_CASES[case]
    g, _ = _gen(device, seed)
    v = _crandn(g, vs, real, device)
    w = _poles(g, ws, real, device)
    zi = 3 * torch.randn(L, generator=g, dtype=torch.float64)
    z = torch.complex(0.05 * torch.randn(L, generator=g, dtype=torch.float64), zi).to(_cplx(real)).to(device)
    batch = torch.broadcast_shapes(vs[:-1], ws[:-1])
    cot = _crandn(g, (*batch, L), real, device)
    metrics = {}
    ref, ref_g = _grads(lambda a, b: cauchy_ref(a, _up(z), b), [_up(v), _up(w)], _up(cot))
    tri, tri_g = _grads(lambda a, b: cauchy(a, z, b, backend="triton"), [v, w], cot)
    tor, tor_g = _grads(lambda a, b: cauchy(a, z, b, backend="torch"), [v, w], cot)
    assert tri.dtype == v.dtype and tri.shape == ref.shape
    _compare(metrics, "out", tri, tor, ref, real)
    for k, name in enumerate(("dv", "dw")):
        assert tri_g[k].shape == ref_g[k].shape and tri_g[k].dtype == v.dtype
        _compare(metrics, name, tri_g[k], tor_g[k], ref_g[k], real)
    return metrics


def _make_cauchy_check(case, real, seed):
    def fn(device):
        return _cauchy_case(device, case, real, seed)

    fn.__name__ = f"cauchy_{case}_{'f32' if real == torch.float32 else 'f64'}"
    return check(fn)


for _i, _case in enumerate(CAUCHY_CASES):
    for _real_t in (torch.float32, torch.float64):
        _make_cauchy_check(_case, _real_t, 100 + _i)


VAND_CASES = {
    # name: (v shape, x shape, L, x in complex128 whatever v's precision)
    "rows": ((2, 3, 7), (3, 7), 997, False),  # channels sharing nodes, L prime
    "odd_n": ((4, 33), (4, 33), 61, False),
    "mixed": ((2, 3, 7), (3, 7), 997, True),  # x complex128, v in the working precision (as in ssm_kernel)
}


def _vand_case(device, case, real, seed):
    from sashimi.kernels import vandermonde, vandermonde_ref

    vs, xs, L, x64 = VAND_CASES[case]
    g, _ = _gen(device, seed)
    v = _crandn(g, vs, real, device)
    x = _log_nodes(g, xs, torch.complex128 if x64 else _cplx(real), device)
    batch = torch.broadcast_shapes(vs[:-1], xs[:-1])
    cot = torch.randn((*batch, L), generator=g, dtype=torch.float64).to(real).to(device)
    metrics = {}
    ref, ref_g = _grads(lambda a, b: vandermonde_ref(a, b, L), [_up(v), _up(x)], _up(cot))
    tri, tri_g = _grads(lambda a, b: vandermonde(a, b, L, backend="triton"), [v, x], cot)
    tor, tor_g = _grads(lambda a, b: vandermonde(a, b, L, backend="torch"), [v, x], cot)
    assert tri.dtype == real and tri.shape == ref.shape
    _compare(metrics, "out", tri, tor, ref, real)
    for k, (name, like) in enumerate((("dv", v), ("dx", x))):
        assert tri_g[k].shape == like.shape and tri_g[k].dtype == like.dtype
        _compare(metrics, name, tri_g[k], tor_g[k], ref_g[k], real)
    return metrics


def _vand_t_case(device, case, real, seed, u_complex):
    from sashimi.kernels import vandermonde_transpose, vandermonde_transpose_ref

    vs, xs, L, x64 = VAND_CASES[case]
    g, _ = _gen(device, seed)
    lead = vs[:-1]
    if u_complex:
        u = _crandn(g, (*lead, L), real, device)
    else:
        u = torch.randn((*lead, L), generator=g, dtype=torch.float64).to(real).to(device)
    x = _log_nodes(g, xs, torch.complex128 if x64 else _cplx(real), device)
    batch = torch.broadcast_shapes(lead, xs[:-1])
    cot = _crandn(g, (*batch, xs[-1]), real, device)
    metrics = {}
    ref, ref_g = _grads(vandermonde_transpose_ref, [_up(u), _up(x)], _up(cot))
    tri, tri_g = _grads(lambda a, b: vandermonde_transpose(a, b, backend="triton"), [u, x], cot)
    tor, tor_g = _grads(lambda a, b: vandermonde_transpose(a, b, backend="torch"), [u, x], cot)
    assert tri.dtype == _cplx(real) and tri.shape == ref.shape
    _compare(metrics, "out", tri, tor, ref, real)
    for k, (name, like) in enumerate((("du", u), ("dx", x))):
        assert tri_g[k].shape == like.shape and tri_g[k].dtype == like.dtype
        _compare(metrics, name, tri_g[k], tor_g[k], ref_g[k], real)
    return metrics


def _make_vand_checks(case, real, seed):
    tag = "f32" if real == torch.float32 else "f64"

    def fwd(device):
        return _vand_case(device, case, real, seed)

    def t_real(device):
        return _vand_t_case(device, case, real, seed + 50, False)

    def t_cplx(device):
        return _vand_t_case(device, case, real, seed + 70, True)

    fwd.__name__ = f"vandermonde_{case}_{tag}"
    t_real.__name__ = f"vandermonde_transpose_{case}_real_u_{tag}"
    t_cplx.__name__ = f"vandermonde_transpose_{case}_complex_u_{tag}"
    for fn in (fwd, t_real, t_cplx):
        check(fn)


for _i, _case in enumerate(VAND_CASES):
    for _real_t in (torch.float32, torch.float64):
        if VAND_CASES[_case][3] and _real_t == torch.float64:
            continue
        _make_vand_checks(_case, _real_t, 200 + _i)


@check
def vandermonde_long_phase_f32(device):
    """L = 2^14 + 3 in float32 with float64 nodes: the two-level exponent keeps the phase accurate."""
    from sashimi.kernels import vandermonde, vandermonde_ref, vandermonde_transpose, vandermonde_transpose_ref

    L = (1 << 14) + 3
    g, _ = _gen(device, 300)
    x = _log_nodes(g, (4,), torch.complex128, device, damp=(1e-5, 1e-4))
    v = _crandn(g, (4,), torch.float32, device)
    u = torch.randn(L, generator=g, dtype=torch.float64).to(torch.float32).to(device)
    metrics = {}
    ref = vandermonde_ref(_up(v), x, L)
    _compare(metrics, "out", vandermonde(v, x, L, backend="triton"), vandermonde(v, x, L, backend="torch"), ref,
             torch.float32)
    # what a float32 product x * l costs at this length (the naive kernel), for the record
    metrics["out"]["naive_f32_nodes"] = _err(vandermonde_ref(v, x.to(torch.complex64), L), ref)
    assert metrics["out"]["triton"] < 1e-5
    ref_t = vandermonde_transpose_ref(_up(u), x)
    tri_t = vandermonde_transpose(u, x, backend="triton")
    _compare(metrics, "transpose", tri_t, vandermonde_transpose(u, x, backend="torch"), ref_t, torch.float32)
    assert metrics["transpose"]["triton"] < 1e-5
    return metrics


@check
def poisoned_buffers(device):
    """Every element of every kernel-written buffer is written: NaN-filled allocations and ``out=`` buffers."""
    import sashimi.kernels.triton._common as common
    from sashimi.kernels import cauchy, vandermonde, vandermonde_transpose
    from sashimi.kernels.triton import cauchy_bwd, cauchy_fwd, vandermonde_fwd, vandermonde_transpose_fwd

    real = torch.float64
    g, _ = _gen(device, 400)
    v = _crandn(g, (3, 2, 5), real, device)
    w = _poles(g, (2, 5), real, device)
    z = _crandn(g, (37,), real, device)
    x = _log_nodes(g, (2, 5), torch.complex128, device)
    u = torch.randn((3, 2, 45), generator=g, dtype=real).to(device)
    uc = _crandn(g, (3, 2, 45), real, device)

    def nan_alloc(shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    saved = common.alloc
    common.alloc = nan_alloc
    checked = 0
    try:
        ops = [
            (lambda a, b: cauchy(a, z, b, backend="triton"), lambda a, b: cauchy(a, z, b, backend="torch"), (v, w)),
            (lambda a, b: vandermonde(a, b, 45, backend="triton"),
             lambda a, b: vandermonde(a, b, 45, backend="torch"), (v, x)),
            (lambda a, b: vandermonde_transpose(a, b, backend="triton"),
             lambda a, b: vandermonde_transpose(a, b, backend="torch"), (u, x)),
            (lambda a, b: vandermonde_transpose(a, b, backend="triton"),
             lambda a, b: vandermonde_transpose(a, b, backend="torch"), (uc, x)),
        ]
        for tri_fn, tor_fn, args in ops:
            out0 = tor_fn(*args)
            cot = torch.randn(out0.shape, generator=g, dtype=torch.float64).to(out0.dtype).to(device)
            tri, tri_g = _grads(tri_fn, args, cot)
            tor, tor_g = _grads(tor_fn, args, cot)
            for a, b in zip((tri, *tri_g), (tor, *tor_g)):
                assert torch.isfinite(torch.view_as_real(a) if a.is_complex() else a).all(), "unwritten (NaN) elements"
                assert _err(a, _up(b)) < 1e-12
                checked += 1
    finally:
        common.alloc = saved

    def nan_like(shape, dtype, transposed=False):
        if transposed:  # a layout that cannot be viewed as (rows, M, K): exercises the copy path
            return torch.full(tuple(reversed(shape)), float("nan"), dtype=dtype, device=device).permute(
                *range(len(shape) - 1, -1, -1)
            )
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    # out= buffers: contiguous, reversed strides (written in place through strides), and a batch whose
    # shared-pole rows sit between other dims so (R, M, K) is no view of out (the copy path)
    we = w.expand(3, 2, 5)
    for transposed in (False, True):
        out = nan_like((3, 2, 37), v.dtype, transposed)
        res = cauchy_fwd(v, z, we, out=out)
        assert res is out and _err(out, _up(cauchy(v, z, w, backend="torch"))) < 1e-12
        out = nan_like((3, 2, 45), real, transposed)
        res = vandermonde_fwd(v, x, 45, out=out)
        assert res is out and _err(out, _up(vandermonde(v, x, 45, backend="torch"))) < 1e-12
        out = nan_like((3, 2, 5), v.dtype, transposed)
        res = vandermonde_transpose_fwd(u, x, out=out)
        assert res is out and _err(out, _up(vandermonde_transpose(u, x, backend="torch"))) < 1e-12
        checked += 3
    cot = _crandn(g, (3, 2, 37), real, device)
    ev, ew = cauchy_bwd(v, z, we, cot)
    for tv, tw in ((False, False), (True, False), (False, True)):
        dv, dw = nan_like((3, 2, 5), v.dtype, tv), nan_like((3, 2, 5), v.dtype, tw)
        rv, rw = cauchy_bwd(v, z, we, cot, out=(dv, dw))
        assert rv is dv and rw is dw and _err(dv, _up(ev)) == 0 and _err(dw, _up(ew)) == 0
        checked += 2
    v4 = _crandn(g, (2, 3, 4, 5), real, device)
    w4 = _poles(g, (2, 1, 4, 5), real, device).expand(2, 3, 4, 5)
    x4 = _log_nodes(g, (2, 1, 4, 5), torch.complex128, device).expand(2, 3, 4, 5)
    out = nan_like((2, 3, 4, 37), v.dtype)
    assert cauchy_fwd(v4, z, w4, out=out) is out and _err(out, _up(cauchy(v4, z, w4, backend="torch"))) < 1e-12
    out = nan_like((2, 3, 4, 45), real)
    assert (vandermonde_fwd(v4, x4, 45, out=out) is out
            and _err(out, _up(vandermonde(v4, x4, 45, backend="torch"))) < 1e-12)
    checked += 2
    return {"buffers_checked": checked}


@check
def layouts_and_conj_views(device):
    """Lazily conjugated, non-contiguous inputs and expanded (stride-0) incoming gradients."""
    from sashimi.kernels import cauchy, vandermonde, vandermonde_transpose

    real = torch.float64
    g, _ = _gen(device, 500)
    v = _crandn(g, (7, 3), real, device).t().conj()  # (3, 7), conj bit, non-contiguous
    w = _poles(g, (7,), real, device).conj()
    z = _crandn(g, (23,), real, device)
    x = _log_nodes(g, (7, 3), torch.complex128, device).t()
    u = torch.randn((23, 3), generator=g, dtype=real).to(device).t()
    metrics = {}
    for name, fn, args in (
        ("cauchy", lambda a, b, be: cauchy(a, z, b, backend=be), (v, w)),
        ("vandermonde", lambda a, b, be: vandermonde(a, b, 23, backend=be), (v, x)),
        ("transpose", lambda a, b, be: vandermonde_transpose(a, b, backend=be), (u, x)),
    ):
        res = {}
        for be in ("triton", "torch"):
            leaves = [t.detach().clone().requires_grad_(True) for t in args]
            out = fn(*leaves, be)
            loss = (out.real if out.is_complex() else out).sum()  # expanded stride-0 gradient
            res[be] = (out.detach(), *torch.autograd.grad(loss, leaves))
        errs = [_err(a, _up(b)) for a, b in zip(res["triton"], res["torch"])]
        metrics[name] = max(errs)
        assert max(errs) < 1e-12, (name, errs)
    return metrics


def _ssm_params(g, H, N2, c, r, real, device):
    dt = (0.01 + 0.1 * torch.rand(H, generator=g, dtype=torch.float64)).to(real).to(device)
    A = torch.complex(-(0.1 + torch.rand(H, N2, generator=g, dtype=torch.float64)),
                      3 * torch.randn(H, N2, generator=g, dtype=torch.float64))
    A = A.to(_cplx(real)).to(device)
    B = _crandn(g, (H, N2), real, device)
    C = _crandn(g, (c, H, N2), real, device)
    P = _crandn(g, (r, H, N2), real, device, scale=0.3) if r else None
    return dt, A, B, C, P


SSM_CASES = {
    # name: (H, N2, channels, rank, L, discretization)
    "s4d_zoh": (2, 8, 2, 0, 64, "zoh"),
    "s4d_bilinear": (2, 8, 1, 0, 63, "bilinear"),
    "dplr_rank1": (2, 8, 2, 1, 64, "bilinear"),
    "dplr_rank2_odd_L": (2, 7, 1, 2, 63, "bilinear"),
}


def _make_ssm_check(case, seed):
    def fn(device):
        from sashimi.kernels import ssm_kernel

        H, N2, c, r, L, disc = SSM_CASES[case]
        g, _ = _gen(device, seed)
        params = [t for t in _ssm_params(g, H, N2, c, r, torch.float64, device) if t is not None]
        cot = torch.randn((c, H, L), generator=g, dtype=torch.float64).to(device)
        res = {}
        for be in ("triton", "torch"):
            def kern(*p, be=be):
                return ssm_kernel(p[0], p[1], p[2], p[3], L, p[4] if r else None, disc, backend=be)

            res[be] = _grads(kern, params, cot)
        metrics = {"K": _err(res["triton"][0], res["torch"][0])}
        assert metrics["K"] < 1e-12, metrics
        for name, a, b in zip(("ddt", "dA", "dB", "dC", "dP"), res["triton"][1], res["torch"][1]):
            metrics[name] = _err(a, _up(b))
            assert metrics[name] < 1e-11, (name, metrics[name])
        return metrics

    fn.__name__ = f"ssm_kernel_{case}_f64"
    return check(fn)


for _i, _case in enumerate(SSM_CASES):
    _make_ssm_check(_case, 600 + _i)


# ----------------------------------------------------------------------------------------------
# runner (subprocess side)


def run_checks(device: str, names: list[str]) -> dict:
    import warnings

    warnings.filterwarnings("ignore", category=RuntimeWarning)  # the interpreter's numpy overflow chatter
    torch.set_num_threads(1)
    results = {}
    for name in names:
        t0 = time.perf_counter()
        try:
            metrics = CHECKS[name](device)
            results[name] = {"ok": True, "metrics": metrics}
        except Exception:
            results[name] = {"ok": False, "error": traceback.format_exc(limit=8)}
        results[name]["seconds"] = round(time.perf_counter() - t0, 3)
    return results


def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="write the report here instead of printing it")
    ap.add_argument("--shard", default="0/1", help="i/n: run every n-th check starting at i")
    ap.add_argument("-k", default=None, help="only checks whose name contains this")
    args = ap.parse_args(argv)
    i, n = (int(s) for s in args.shard.split("/"))
    names = [k for k in CHECKS if args.k is None or args.k in k][i::n]
    results = run_checks(args.device, names)
    if args.json:
        Path(args.json).write_text(json.dumps(results))
    else:
        for name, r in results.items():
            print(f"{'ok  ' if r['ok'] else 'FAIL'} {name} ({r['seconds']}s) {json.dumps(r.get('metrics', {}))}")
            if not r["ok"]:
                print(r["error"])
    return 0 if all(r["ok"] for r in results.values()) else 1


# ----------------------------------------------------------------------------------------------
# pytest side


def _run_device(device: str, workdir: Path) -> dict:
    env = os.environ.copy()
    env["SASHIMI_BACKEND"] = "triton"
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    shards = 2 if device == "cpu" and (os.cpu_count() or 1) >= 2 else 1
    procs = []
    for i in range(shards):
        report = workdir / f"{device}-{i}.json"
        log = open(workdir / f"{device}-{i}.log", "w")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--device", device, "--json", str(report),
               "--shard", f"{i}/{shards}"]
        procs.append(
            (subprocess.Popen(cmd, env=env, cwd=str(REPO_ROOT), stdout=log, stderr=subprocess.STDOUT), report, log)
        )
    results = {}
    for proc, report, log in procs:
        try:
            proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if report.is_file():
            results.update(json.loads(report.read_text()))
        else:
            tail = Path(log.name).read_text()[-4000:]
            results.setdefault(
                "__crash__", {"ok": False, "error": f"check subprocess died (rc={proc.returncode}):\n{tail}"}
            )
    return results


# CPU: the kernels in Triton's interpreter; CUDA (compiled kernels) only where a GPU is present.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module", params=DEVICES)
def triton_report(request, tmp_path_factory):
    pytest.importorskip("triton")
    device = request.param
    return _run_device(device, tmp_path_factory.mktemp(f"triton-{device}"))


@pytest.mark.parametrize("name", list(CHECKS))
def test_triton_kernel(triton_report, name):
    if name not in triton_report:
        crash = triton_report.get("__crash__", {}).get("error", "no result")
        pytest.fail(f"{name}: no result from the check subprocess\n{crash}")
    r = triton_report[name]
    assert r["ok"], r["error"]


def test_import_sashimi_does_not_import_triton():
    code = ("import sys, sashimi, sashimi.kernels, sashimi.kernels.cauchy, sashimi.kernels.vandermonde; "
            "assert 'triton' not in sys.modules, 'imported'")
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


if __name__ == "__main__":
    sys.exit(_main())
