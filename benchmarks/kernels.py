"""Benchmark of the SSM kernels: the memory-frugal PyTorch path vs the dense ``*_ref`` (naive) algorithm.

Prints one table, measured in one run, for H SSMs with N/2 stored modes at each length L:

* ``vandermonde``  -- the S4D kernel core ``vandermonde(C dB, log dA, L)`` (complex64).
* ``cauchy``       -- the Cauchy sum as the DPLR kernel uses it: v (4, H, N/2) (the 2x2 Woodbury
  numerator rows for rank 1, one channel) with shared poles dt*Lambda (H, N/2) and the nodes
  z_k = 2i tan(pi k / L), k < L/2 (complex64).
* ``ssm_dplr`` / ``ssm_s4d`` -- the full ``ssm_kernel`` (float32 parameters); ``ref`` here means
  ``ssm_kernel(..., backend='ref')``, i.e. the same algorithm with the dense Cauchy / Vandermonde
  products of the official ("naive") implementation.

Every measurement runs in a fresh subprocess: time is the median over ``--repeats`` calls after one
warm-up call, as wall-clock time and as the process's CPU time (``time.process_time``; on a shared,
oversubscribed machine the latter is the more stable measure, especially with ``--threads 1``), peak memory is
the increase of the process's peak RSS (``getrusage`` max RSS; CUDA: ``max_memory_allocated``) over its baseline
after the inputs were built, output included. A dense reference whose estimated (batch, N, L) complex temporaries
exceed ``--mem-limit-gib`` is not run; the table shows ``OOM (needs X GiB)`` instead.

Error: relative L2 error against a float64 evaluation of the same (float32-rounded) inputs on
``--err-rows`` evenly spaced SSMs out of H. The float64 truth is the dense spec: ``vandermonde_ref``,
``cauchy_ref`` (evaluated in chunks of nodes) and ``ssm_kernel_ref`` (the step-by-step unroll of the
discretized N x N system, independent of the Cauchy / Vandermonde paths).

Usage::

    python benchmarks/kernels.py                      # full CPU run (several minutes)
    python benchmarks/kernels.py --quick              # tiny smoke run
    python benchmarks/kernels.py --device cuda --lengths 16384 65536 262144
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _common import machine_description

OPS = ("vandermonde", "cauchy", "ssm_dplr", "ssm_s4d")
OP_LABEL = {
    "vandermonde": "vandermonde (S4D core)",
    "cauchy": "cauchy (DPLR core, 4 rows)",
    "ssm_dplr": "ssm_kernel DPLR",
    "ssm_s4d": "ssm_kernel S4D (zoh)",
}
GIB = 1024**3


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------


def make_params(H: int, n2: int, seed: int = 0):
    """float64 / complex128 parameters (rounded through float32 / complex64 so that the float64 truth
    sees exactly the benchmarked inputs). S4D-Lin-like spectrum, dt log-spaced in [1e-3, 1e-1]."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def cn(*shape, scale=1.0):
        re = torch.randn(*shape, generator=g, dtype=torch.float64)
        im = torch.randn(*shape, generator=g, dtype=torch.float64)
        return (scale / math.sqrt(2)) * torch.complex(re, im)

    dt = torch.exp(torch.linspace(math.log(1e-3), math.log(1e-1), H, dtype=torch.float64))
    n = torch.arange(n2, dtype=torch.float64)
    lam = torch.complex(torch.full((H, n2), -0.5, dtype=torch.float64), (math.pi * n).expand(H, n2).clone())
    p = dict(dt=dt, A=lam, B=cn(H, n2), C=cn(1, H, n2, scale=1 / math.sqrt(n2)), P=cn(1, H, n2, scale=0.5))
    return {k: (v.to(torch.complex64).to(torch.complex128) if v.is_complex() else v.float().double())
            for k, v in p.items()}


def op_inputs(op: str, H: int, n2: int, L: int, dtype: str, rows=None):
    """Arguments of the benchmarked call (dtype 'float32' or 'float64'), optionally for a subset of SSMs."""
    import torch

    p = make_params(H, n2)
    if rows is not None:
        p = {k: (v[rows] if k == "dt" else v[..., rows, :]) for k, v in p.items()}
    cd = torch.complex64 if dtype == "float32" else torch.complex128
    rd = torch.float32 if dtype == "float32" else torch.float64
    if op == "vandermonde":
        x = p["dt"][:, None] * p["A"]  # log dA (ZOH)
        dB = torch.expm1(x) / p["A"] * p["B"]
        return dict(v=(p["C"][0] * dB).to(cd), x=x.to(cd), L=L)
    if op == "cauchy":
        dt = p["dt"]
        a = torch.cat([p["C"], p["P"].conj()], dim=0)  # (2, H, N2)
        b = torch.cat([p["B"].unsqueeze(0), p["P"]], dim=0)  # (2, H, N2)
        v = (a.unsqueeze(1) * b.unsqueeze(0) * dt[:, None]).reshape(4, *p["A"].shape)
        k = torch.arange((L + 1) // 2, dtype=torch.float64)
        z = torch.complex(torch.zeros_like(k), 2 * torch.tan(math.pi * k / L))
        return dict(v=v.to(cd), z=z.to(cd), w=(dt[:, None] * p["A"]).to(cd))
    args = dict(dt=p["dt"].to(rd), A=p["A"].to(cd), B=p["B"].to(cd), C=p["C"].to(cd), L=L)
    if op == "ssm_dplr":
        args["P"] = p["P"].to(cd)
    return args


def run_op(op: str, backend: str, args: dict):
    from sashimi.kernels import cauchy, ssm_kernel, vandermonde

    if op == "vandermonde":
        return vandermonde(args["v"], args["x"], args["L"], backend=backend)
    if op == "cauchy":
        return cauchy(args["v"], args["z"], args["w"], backend=backend)
    return ssm_kernel(**args, backend=backend)


def select_rows(op: str, out, rows):
    """The error rows of an op's output: vandermonde (H, L); the others (., H, L)."""
    return out[rows] if op == "vandermonde" else out[:, rows]


def ref_bytes(op: str, H: int, n2: int, L: int) -> int:
    """Estimated peak bytes of the dense reference in float32 (its (batch, N, L) complex temporaries)."""
    N, Lh = 2 * n2, (L + 1) // 2
    if op == "vandermonde":  # x * l and exp(x * l): two complex64 (H, N2, L)
        return 16 * H * n2 * L + 12 * H * L
    if op == "ssm_s4d":  # log dA is complex128 there: x * l, exp (complex128) and the cast to complex64
        return 32 * H * n2 * L + 12 * H * L
    # cauchy / DPLR: (z - w) (H, N, L/2) and the 4-row quotient (4, H, N, L/2), complex64
    return 5 * 8 * H * N * Lh + 3 * 4 * 8 * H * Lh


# ---------------------------------------------------------------------------------------------
# subprocess workers
# ---------------------------------------------------------------------------------------------


def _rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def worker_truth(spec: dict) -> dict:
    """float64 dense-spec evaluation on the error rows; saved to spec['path']."""
    import torch

    from sashimi.kernels import cauchy_ref, ssm_kernel_ref, vandermonde_ref

    torch.set_grad_enabled(False)
    if spec["op"] in ("ssm_dplr", "ssm_s4d"):
        torch.set_num_threads(1)  # the unroll is L tiny steps: threads only add synchronisation
    op, H, n2, L = spec["op"], spec["H"], spec["N2"], spec["L"]
    rows = torch.tensor(spec["rows"])
    args = op_inputs(op, H, n2, L, "float64", rows=rows)
    t0 = time.perf_counter()
    if op == "vandermonde":
        out = vandermonde_ref(args["v"], args["x"], L)
    elif op == "cauchy":
        step = max(1, (1 << 26) // (5 * args["v"].numel() * 2))
        out = torch.cat([cauchy_ref(args["v"], args["z"][s : s + step], args["w"])
                         for s in range(0, args["z"].shape[0], step)], dim=-1)
    else:
        out = ssm_kernel_ref(**args)
    torch.save(out, spec["path"])
    return dict(truth="float64 dense spec", seconds=time.perf_counter() - t0)


def worker_measure(spec: dict) -> dict:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    torch.set_grad_enabled(False)
    op, backend, H, n2, L, device = spec["op"], spec["backend"], spec["H"], spec["N2"], spec["L"], spec["device"]
    args = op_inputs(op, H, n2, L, "float32")
    args = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in args.items()}
    cuda = device.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    # load libraries / thread pools on a tiny call so the baseline does not charge them to the op
    small = op_inputs(op, min(H, 2), n2, min(L, 64), "float32")
    run_op(op, backend, {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in small.items()})
    sync()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    t0 = time.perf_counter()
    out = run_op(op, backend, args)
    sync()
    first = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if cuda else _rss_bytes()) - base
    repeats = spec["repeats"] if first < 20 else 1
    times, cpu_times = [], []
    for _ in range(repeats):
        del out
        t0, c0 = time.perf_counter(), time.process_time()
        out = run_op(op, backend, args)
        sync()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    truth = torch.load(spec["truth_path"])
    got = select_rows(op, out, torch.tensor(spec["rows"], device=out.device)).cpu()
    err = ((got.to(truth.dtype) - truth).norm() / truth.norm()).item()
    return dict(seconds=statistics.median(times), cpu_seconds=statistics.median(cpu_times), first_call=first,
                peak_bytes=max(0, peak), rel_err=err)


def _spawn(mode: str, spec: dict, timeout: float | None = None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--_worker", mode, json.dumps(spec)]
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(error=f"timeout after {timeout:.0f} s")
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
    return dict(error=f"rc={proc.returncode}: {tail[0][:120]}")


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------


def fmt_len(L: int) -> str:
    return f"{L // 1024}k" if L % 1024 == 0 and L >= 1024 else str(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--lengths", type=int, nargs="+", default=[16384, 65536, 262144])
    ap.add_argument("--H", type=int, default=256)
    ap.add_argument("--N", type=int, default=64, help="full state size N (N/2 stored modes)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    ap.add_argument("--mem-limit-gib", type=float, default=None,
                    help="do not run a dense reference whose estimated peak exceeds this (default: 16 on CPU, "
                         "75%% of the GPU's memory on CUDA)")
    ap.add_argument("--err-rows", type=int, default=8, help="SSMs (of H) on which the error is evaluated")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads in the measuring processes (default: torch's default)")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (H=8, N=16, L in {1024, 4096}, 1 repeat)")
    ap.add_argument("--_worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._worker:
        mode, spec = args._worker[0], json.loads(args._worker[1])
        res = worker_truth(spec) if mode == "truth" else worker_measure(spec)
        print("RESULT " + json.dumps(res), flush=True)
        return 0

    if args.quick:
        args.H, args.N, args.lengths, args.repeats = 8, 16, [1024, 4096], 1
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but CUDA is not available")
    if args.mem_limit_gib is None:
        args.mem_limit_gib = 16.0
        if args.device == "cuda":
            args.mem_limit_gib = 0.75 * torch.cuda.get_device_properties(0).total_memory / GIB
    H, n2 = args.H, args.N // 2
    rows = sorted({round(i * (H - 1) / max(1, args.err_rows - 1)) for i in range(min(H, args.err_rows))})

    print(f"# SSM kernel benchmark: H={H}, N={args.N} (N/2={n2} stored modes), float32 / complex64, "
          f"device={args.device}")
    print(f"# machine: {machine_description(args.device, args.threads or torch.get_num_threads())}")
    print(f"# date: {datetime.date.today().isoformat()}; median of {args.repeats} calls after a warm-up; "
          f"peak = max-RSS increase in a fresh process"
          f"{' (CUDA: max_memory_allocated)' if args.device == 'cuda' else ''}")
    if hasattr(os, "getloadavg"):
        print("# load average at start (1/5/15 min): %.2f %.2f %.2f" % os.getloadavg())
    print(f"# error: relative L2 vs the float64 dense spec on {len(rows)} of the {H} SSMs "
          f"(same float32-rounded inputs); dense refs estimated above {args.mem_limit_gib:.0f} GiB are not run")
    print()
    header = ("| op | L | backend | median wall time (s) | median CPU time (s) | peak memory (GiB) "
              "| rel. error vs float64 | speedup ref/torch: wall (CPU) |")
    print(header)
    print("|" + "---|" * 8, flush=True)

    tmp = tempfile.mkdtemp(prefix="sashimi_bench_")
    results: dict[tuple[str, int, str], dict] = {}
    try:
        for L in args.lengths:
            for op in args.ops:
                truth_path = os.path.join(tmp, f"truth_{op}_{L}.pt")
                tr = _spawn("truth", dict(op=op, H=H, N2=n2, L=L, rows=rows, path=truth_path))
                row = {}
                for backend in ("torch", "ref"):
                    need = ref_bytes(op, H, n2, L)
                    if backend == "ref" and need > args.mem_limit_gib * GIB:
                        row[backend] = dict(skipped=f"OOM (needs {need / GIB:.1f} GiB)")
                        continue
                    if "error" in tr:
                        row[backend] = dict(error=f"truth failed: {tr['error']}")
                        continue
                    row[backend] = _spawn("measure", dict(op=op, backend=backend, H=H, N2=n2, L=L,
                                                          device=args.device, repeats=args.repeats,
                                                          rows=rows, truth_path=truth_path,
                                                          threads=args.threads))
                for backend in ("torch", "ref"):
                    r = row[backend]
                    results[(op, L, backend)] = r
                    if "skipped" in r or "error" in r:
                        msg = r.get("skipped") or f"failed ({r['error']})"
                        print(f"| {OP_LABEL[op]} | {fmt_len(L)} | {backend} | {msg} | | | | |", flush=True)
                        continue
                    speed = ""
                    if backend == "torch" and "seconds" in row["ref"]:
                        speed = (f"{row['ref']['seconds'] / r['seconds']:.1f}x "
                                 f"({row['ref']['cpu_seconds'] / r['cpu_seconds']:.1f}x)")
                    elif backend == "torch":
                        speed = "ref not run"
                    print(f"| {OP_LABEL[op]} | {fmt_len(L)} | {backend} | {r['seconds']:.4f} "
                          f"| {r['cpu_seconds']:.4f} | {r['peak_bytes'] / GIB:.3f} | {r['rel_err']:.1e} | {speed} |",
                          flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    # targets
    print()
    if hasattr(os, "getloadavg"):
        print("# load average at end (1/5/15 min): %.2f %.2f %.2f" % os.getloadavg())
    print("Targets:")

    def speedup(op, L, key):
        t, r = results.get((op, L, "torch"), {}), results.get((op, L, "ref"), {})
        return r[key] / t[key] if key in t and key in r else None

    ok_all = True
    for op, need in (("vandermonde", 50.0), ("cauchy", 10.0)):
        if op not in args.ops or 16384 not in args.lengths:
            print(f"  {op} >= {need:.0f}x naive at L=16k: not measured in this run")
            continue
        s, c = speedup(op, 16384, "seconds"), speedup(op, 16384, "cpu_seconds")
        ok = s is not None and s >= need
        ok_all &= ok
        print(f"  {op} >= {need:.0f}x naive at L=16k: {'PASS' if ok else 'FAIL'} on wall time "
              f"({'n/a' if s is None else f'{s:.1f}x'}; CPU time {'n/a' if c is None else f'{c:.1f}x'})")
    Lmax = max(args.lengths)
    peaks = [results.get((op, Lmax, "torch"), {}) for op in args.ops]
    done = all("peak_bytes" in p for p in peaks)
    worst = max((p.get("peak_bytes", 0) for p in peaks), default=0)
    ok = done and worst < 24 * GIB
    ok_all &= ok
    print(f"  at L={fmt_len(Lmax)} every torch-path op completes under 24 GiB: {'PASS' if ok else 'FAIL'} "
          f"(largest peak {worst / GIB:.2f} GiB)")
    return 0 if ok_all or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
