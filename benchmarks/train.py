"""Training-throughput benchmark: SaShiMi vs the paper's WaveNet baselines, measured in one run.

One training step is forward + cross-entropy + backward + AdamW step on a (batch, seq_len) batch of
8-bit tokens (inputs shifted right, as in training). Models (all built here, random init):

* ``sashimi-8`` -- the paper's SaShiMi: d_model 64, 8 layers per tier, pooling (4, 4), expand 2,
  FF 2, N = 64 DPLR S4 (the released SC09 configuration: one SSM shared by the channels of a
  layer, scalar norms, weight-normalised pooling).
* ``sashimi-2`` -- the same with 2 layers per tier (the paper's SaShiMi-2).
* ``wavenet-512`` / ``wavenet-1024`` -- the paper's WaveNet baselines (40 dilated layers, 64
  residual channels, 512 end channels, 512 / 1024 skip channels;
  :mod:`sashimi.models.baselines.wavenet`).

All models live in one process and are measured *interleaved*: after one warm-up step each, every
round runs one step of every model (in a rotating order), so load from other jobs on a shared machine
hits all models alike. Time is the median over ``--repeats`` rounds, as wall-clock time and as the
process's CPU time (``time.process_time``; the more stable measure on a loaded machine with
``--threads 1``). CUDA steps are timed with ``torch.cuda.synchronize()`` around them (CPU time is
then meaningless and not reported). Throughput is ``batch * seq_len / median step time``. Ratios are
taken against the WaveNet baselines measured in the same run: SaShiMi-8 vs WaveNet-1024 and
SaShiMi-2 vs WaveNet-512 (the paper's comparison, V100: 129K vs 182K and 596K vs 185K samples/s,
i.e. 0.71x and 3.2x).

Memory allocator (CPU): glibc serves blocks above 32 MiB with fresh ``mmap`` pages and returns them
on free, so every step page-faults its large activations again; WaveNet's activations are several
times SaShiMi's (its 40 stacked gated activations alone are 168 MB per 16k sequence), so at batch > 1
this overhead alone can slow WaveNet down by tens of percent. For a comparison of the models rather
than of the allocator, run with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736`` (heap
blocks are kept and reused after the warm-up step); the header line says whether they were set.

Usage::

    python benchmarks/train.py --threads 1                 # CPU, L = 16384, batch 4 (minutes)
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 python benchmarks/train.py --threads 1 --batch 4
    python benchmarks/train.py --quick                     # tiny smoke run (L = 2048, 1 repeat)
    python benchmarks/train.py --device cuda --batch 8     # GPU
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import statistics
import sys
import time

from _common import machine_description

MODELS = ("sashimi-8", "sashimi-2", "wavenet-512", "wavenet-1024")
#: (model, baseline, required throughput ratio model / baseline)
TARGETS = (("sashimi-8", "wavenet-1024", 1.5), ("sashimi-2", "wavenet-512", 4.0))
#: the paper's V100 throughputs (samples/s), for reference in the table
PAPER = {"sashimi-8": 129e3, "sashimi-2": 596e3, "wavenet-512": 185e3, "wavenet-1024": 182e3}
GIB = 1024**3


def build(name: str):
    """The model called ``name`` (see :data:`MODELS`), in float32 on the CPU."""
    if name.startswith("sashimi-"):
        from sashimi.convert.state_spaces import VARIANTS
        from sashimi.models.lm import SaShiMiLM, SaShiMiLMConfig

        cfg = dict(VARIANTS["sc09"].config)
        cfg["n_layers"] = int(name.split("-")[1])
        return SaShiMiLM(SaShiMiLMConfig(**cfg))
    if name.startswith("wavenet-"):
        from sashimi.models.baselines.wavenet import WaveNet, wavenet_paper

        return WaveNet(wavenet_paper(int(name.split("-")[1])))
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


class Runner:
    """One model, its optimizer and a fixed batch; :meth:`step` runs one timed training step."""

    def __init__(self, name: str, batch: int, seq_len: int, device: str, seed: int = 0) -> None:
        import torch

        torch.manual_seed(seed)
        self.name = name
        self.model = build(name).to(device).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(seed)
        self.targets = torch.randint(0, self.model.config.n_classes, (batch, seq_len), generator=g).to(device)
        self.inputs = self.model.shift_right(self.targets)
        self.cuda = str(device).startswith("cuda")
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.peak = 0
        self.loss = float("nan")

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def step(self, record: bool = True) -> None:
        import torch
        import torch.nn.functional as F

        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        self._sync()
        t0, c0 = time.perf_counter(), time.process_time()
        logits = self.model(self.inputs)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.targets.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self._sync()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        self.loss = loss.item()
        del logits, loss
        if self.cuda:
            self.peak = max(self.peak, torch.cuda.max_memory_allocated() - base)
        if record:
            self.wall.append(wall)
            self.cpu.append(cpu)


def fmt_rate(x: float) -> str:
    return f"{x / 1e3:,.1f}K" if x >= 1e3 else f"{x:,.0f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--seq-len", type=int, default=16384, help="samples per sequence (default 16384)")
    ap.add_argument("--batch", type=int, default=4,
                    help="sequences per step (default 4; 1 measures the per-step kernel cost)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up (default 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--quick", action="store_true", help="smoke run: seq-len 2048, 1 repeat; exit 0 on misses")
    args = ap.parse_args(argv)
    if args.quick:
        args.seq_len, args.repeats = 2048, 1
    if args.seq_len < 16 or args.seq_len % 16:
        ap.error("--seq-len must be a positive multiple of 16 (SaShiMi's pooling 4 x 4)")
    if args.batch < 1 or args.repeats < 1:
        ap.error("--batch and --repeats must be >= 1")

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    cuda = args.device.startswith("cuda")

    print(f"# training-throughput benchmark: forward + backward + AdamW step, batch {args.batch} x "
          f"{args.seq_len} samples, float32, device={args.device}")
    print(f"# machine: {machine_description(args.device, threads)}")
    print(f"# date: {datetime.date.today().isoformat()}; all models in one process, interleaved rounds; "
          f"median of {args.repeats} steps after 1 warm-up step each")
    if not cuda:
        tuned = {k: os.environ[k] for k in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_") if k in os.environ}
        print(f"# allocator: glibc "
              f"{'with ' + ', '.join(f'{k}={v}' for k, v in tuned.items()) if tuned else 'defaults'}")
    if hasattr(os, "getloadavg"):
        print("# load average at start (1/5/15 min): %.2f %.2f %.2f" % os.getloadavg(), flush=True)

    runners = []
    for name in args.models:
        r = Runner(name, args.batch, args.seq_len, args.device)
        runners.append(r)
    for r in runners:  # warm-up: allocator, lazy initialisation, first-call library set-up
        r.step(record=False)
    for k in range(args.repeats):
        order = runners[k % len(runners):] + runners[: k % len(runners)]
        for r in order:
            r.step()
            gc.collect()
        print(f"# round {k + 1}/{args.repeats}: " + ", ".join(f"{r.name} {r.wall[-1]:.2f} s" for r in runners),
              flush=True)

    samples = args.batch * args.seq_len
    res = {}
    for r in runners:
        wall, cpu = statistics.median(r.wall), statistics.median(r.cpu)
        res[r.name] = dict(wall=wall, cpu=cpu, rate=samples / wall, cpu_rate=samples / cpu,
                           params=sum(p.numel() for p in r.model.parameters()), peak=r.peak, loss=r.loss)

    def baseline(name: str) -> str | None:
        for m, b, _ in TARGETS:
            if m == name and b in res:
                return b
        return None

    print()
    cpu_cols = "" if cuda else " median CPU time (s) |"
    mem_col = " peak memory (GiB) |" if cuda else ""
    print(f"| model | params | median step (s) |{cpu_cols} throughput (samples/s) |{mem_col} "
          f"vs baseline, wall{'' if cuda else ' (CPU)'} | paper (V100) |")
    print("|" + "---|" * (6 + (0 if cuda else 1) + (1 if cuda else 0)))
    for name in args.models:
        x = res[name]
        b = baseline(name)
        ratio = ""
        if b:
            ratio = f"{x['rate'] / res[b]['rate']:.2f}x {b}"
            if not cuda:
                ratio += f" ({x['cpu_rate'] / res[b]['cpu_rate']:.2f}x)"
        paper = fmt_rate(PAPER[name])
        pb = baseline(name) or {"sashimi-8": "wavenet-1024", "sashimi-2": "wavenet-512"}.get(name)
        if pb:
            paper += f" ({PAPER[name] / PAPER[pb]:.2f}x)"
        cpu_cell = "" if cuda else f" {x['cpu']:.3f} |"
        mem_cell = f" {x['peak'] / GIB:.2f} |" if cuda else ""
        print(f"| {name} | {x['params'] / 1e6:.2f}M | {x['wall']:.3f} |{cpu_cell} {fmt_rate(x['rate'])} |{mem_cell} "
              f"{ratio} | {paper} |")
    print()
    if hasattr(os, "getloadavg"):
        print("# load average at end (1/5/15 min): %.2f %.2f %.2f" % os.getloadavg())
    print("Targets (throughput ratio in this run, wall time):")
    ok_all = True
    for m, b, need in TARGETS:
        if m not in res or b not in res:
            print(f"  {m} >= {need:.1f}x {b}: not measured in this run")
            continue
        s = res[m]["rate"] / res[b]["rate"]
        ok = s >= need
        ok_all &= ok
        extra = "" if cuda else f"; CPU time {res[m]['cpu_rate'] / res[b]['cpu_rate']:.2f}x"
        print(f"  {m} >= {need:.1f}x {b}: {'PASS' if ok else 'FAIL'} ({s:.2f}x{extra})")
    return 0 if ok_all or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
