"""The paper's SaShiMi vs WaveNet comparison rerun on real music with the task trainer (issue 17, item 4).

Both models train with :func:`sashimi.training.train` (tasks ``lm`` and ``wavenet``: the same items, loss,
optimizer recipe and schedule) on the same real music: Beethoven scores from the music21 corpus rendered to
piano by ``/work/shared/tools/realdata.py OUT --only beethoven`` (8-s clips at 16 kHz, split by piece into
``train/`` and ``test/``), 8-bit linear quantization as the paper's Beethoven setting. Items are random crops
of ``--seq-len`` samples (no min-max scaling: the rendered clips are peak-normalized). Test NLL (bits per
sample) is measured on the first ``--eval-len`` samples of every test clip (pieces never seen in training).

``run``: one model for a wall-clock budget (``--budget-min``) with a constant learning rate. A task subclass
(registered in this process only) stops training when the budget is spent and saves a snapshot of the
weights at every time mark (``--marks``, minutes) and every ``--snap-every`` steps, so that one run gives the
results of every shorter budget (with a constant rate a shorter run is the same run stopped earlier) and of
any step count on the snapshot grid. Run the two models at the same time, one thread each, so that load
from other jobs on a shared machine hits both alike.

``report``: test NLL of both models at each time mark (the same wall-clock budget) and at the same number
of steps (the largest snapshot step both reached within the budget), with parameters and training
samples/s; a markdown table on stdout and ``report.json``.

``reference``: test NLL of the marginal (unigram) and previous-sample (bigram) tables fitted on the training
tokens, the two levels a model passes early in training.

``extend``: continue both runs with the trainer's resume to ``--steps`` steps and score them (equal steps
beyond the budget).

``ablate``: short controlled SaShiMi runs of a fixed number of steps (optimizer groups, learning rate,
sequence length at a fixed number of samples per step, model shape) next to WaveNet, each scored on the
same test tiles.

Usage (the times in docs/benchmarks.md)::

    python /work/shared/tools/realdata.py /tmp/real --only beethoven
    python benchmarks/paper_tables.py run --model sashimi --data /tmp/real/beethoven --out /tmp/pt/sashimi &
    python benchmarks/paper_tables.py run --model wavenet --data /tmp/real/beethoven --out /tmp/pt/wavenet &
    wait; python benchmarks/paper_tables.py report --runs /tmp/pt/sashimi /tmp/pt/wavenet --data /tmp/real/beethoven
    python benchmarks/paper_tables.py ablate --data /tmp/real/beethoven --out /tmp/pt/ablate --steps 200
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from _common import machine_description

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from sashimi.data import AudioFolder  # noqa: E402
from sashimi.training import TrainConfig, load_train_config, register_task, train  # noqa: E402
from sashimi.training.tasks.lm import LMTask  # noqa: E402
from sashimi.training.tasks.tokens import evaluate  # noqa: E402
from sashimi.training.tasks.wavenet import WaveNetTask  # noqa: E402

TOKENS = {"bits": 8, "quantization": "linear", "sample_rate": 16000}
#: matched parameter counts (0.65M and 0.62M; the WaveNet is the issue's 0.62M one)
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "sashimi": ("lm", {"d_model": 28, "n_layers": 5, "pool": [4, 4], "expand": 2, "ff": 2, "d_state": 16, **TOKENS}),
    "wavenet": ("wavenet", {"n_layers": 20, "dilation_cycle": 10, "residual_channels": 48, "dilation_channels": 48,
                            "skip_channels": 256, "end_channels": 256, **TOKENS}),
}


class BudgetReached(KeyboardInterrupt):
    """Raised after the optimizer step that spends the wall-clock budget (the trainer checkpoints and re-raises)."""


class _Clock:
    """Budget, time marks and the snapshot grid of the run in this process."""

    out: Path
    budget_s: float = math.inf
    marks_s: tuple[float, ...] = ()
    snap_every: int = 0
    t0: float = 0.0
    steps: int = 0
    head: int = 0  # > 0: replace SaShiMiLM's linear decoder by an MLP of this width (an experiment of this script)
    done: set[float] = set()
    index: dict[str, dict[str, float]] = {}

    @classmethod
    def snapshot(cls, model: nn.Module, name: str, elapsed: float) -> None:
        folder = cls.out / "snapshots"
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()},
                  str(folder / f"{name}.safetensors"))
        cls.index[name] = {"step": cls.steps, "elapsed_s": elapsed}
        (folder / "index.json").write_text(json.dumps(cls.index, indent=1) + "\n")

    @classmethod
    def tick(cls, model: nn.Module) -> None:
        cls.steps += 1
        elapsed = time.perf_counter() - cls.t0
        if cls.snap_every and cls.steps % cls.snap_every == 0:
            cls.snapshot(model, f"step_{cls.steps:06d}", elapsed)
        for mark in cls.marks_s:
            if elapsed >= mark and mark not in cls.done:
                cls.done.add(mark)
                cls.snapshot(model, f"time_{mark / 60:g}min", elapsed)
        if elapsed >= cls.budget_s:
            raise BudgetReached


def _mlp_head(model: nn.Module, width: int) -> nn.Module:
    """SaShiMiLM with its decoder ``Linear(d_model, 256)`` replaced by ``Linear(d_model, width), ReLU,
    Linear(width, 256)`` (WaveNet's output head has this form, width 256); the state dict changes accordingly."""
    d_model, n_classes = model.decoder.in_features, model.decoder.out_features
    model.decoder = nn.Sequential(nn.Linear(d_model, width), nn.ReLU(), nn.Linear(width, n_classes))
    return model


class _Timed:
    """Mixin for the token tasks: the clock starts when the model is built (after the data is loaded)."""

    def build_model(self, model_config: Any) -> nn.Module:
        model = super().build_model(model_config)  # type: ignore[misc]
        if _Clock.head and isinstance(self, LMTask):
            model = _mlp_head(model, _Clock.head)
        _Clock.t0 = time.perf_counter()
        return model

    def after_step(self, model: nn.Module) -> None:
        _Clock.tick(model)


@register_task
class TimedLM(_Timed, LMTask):
    name: ClassVar[str] = "paper-lm"


@register_task
class TimedWaveNet(_Timed, WaveNetTask):
    name: ClassVar[str] = "paper-wavenet"


def _config(model: str, data: str, out: Path, args: argparse.Namespace, **over: Any) -> TrainConfig:
    task, shape = MODELS[model]
    shape = {**shape, **over.pop("shape", {})}
    kw = dict(data=str(Path(data) / "train"), out=str(out), task=f"paper-{task}", preset="tiny", model=shape,
              seq_len=args.seq_len, mode="crop", minmax=False, steps=over.pop("steps", 10**7),
              batch_size=args.batch_size, lr=args.lr,
              ssm_lr=args.ssm_lr, schedule="constant", eval_every=0, checkpoint_every=0, keep_checkpoints=1,
              log_every=10, eval_batches=2, seed=0, device=args.device, progress=False)
    kw.update(over)
    return TrainConfig(**kw)


def _test_items(data: str, eval_len: int) -> AudioFolder:
    """The first ``eval_len`` samples of every clip in ``data/test`` (realdata.py's layout has no validation
    folder, so the trainer gets ``data/train`` alone and never sees the test pieces)."""
    test = Path(data) / "test"
    if not test.is_dir() or not (Path(data) / "train").is_dir():
        raise SystemExit(f"{data} needs train/ and test/ (run realdata.py --only beethoven)")
    return AudioFolder(test, seq_len=eval_len, mode="crop", random_crop=False, crops_per_clip=1,
                       minmax=False, progress=False, **TOKENS)


def _test_bits(model_name: str, shape: dict[str, Any], weights: Path, items: AudioFolder, head: int = 0) -> float:
    task, base = MODELS[model_name]
    task_obj = TimedLM() if task == "lm" else TimedWaveNet()
    cfg = task_obj.model_config(task_obj.presets()["tiny"], {**base, **shape})
    model = task_obj.model_class(cfg)
    if head:
        model = _mlp_head(model, head)
    model.load_state_dict(load_file(str(weights)))
    nats, count = evaluate(model, items, batch_size=8)
    return nats / count / math.log(2)


def cmd_run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    _Clock.out = out
    _Clock.budget_s = args.budget_min * 60
    _Clock.marks_s = tuple(m * 60 for m in args.marks)
    _Clock.snap_every = args.snap_every
    _Clock.head = args.head if args.model == "sashimi" else 0
    shape = {"n_layers": args.n_layers} if args.n_layers and args.model == "sashimi" else {}
    cfg = _config(args.model, args.data, out / "run", args, steps=args.steps or 10**7, shape=shape)
    n_params = None
    try:
        train(cfg)
    except BudgetReached:
        pass
    elapsed = time.perf_counter() - _Clock.t0
    n_params = sum(v.numel() for k, v in load_file(str(next((out / "snapshots").glob("*.safetensors")))).items())
    meta = {"model": args.model, "shape": {**MODELS[args.model][1], **shape}, "steps": _Clock.steps,
            "elapsed_s": elapsed, "samples_per_s": _Clock.steps * args.batch_size * args.seq_len / elapsed,
            "parameters": n_params, "head": _Clock.head, "lr": args.lr, "ssm_lr": args.ssm_lr,
            "batch_size": args.batch_size, "seq_len": args.seq_len,
            "threads": args.threads, "machine": machine_description("cpu", args.threads),
            "date": time.strftime("%Y-%m-%d %H:%M")}
    (out / "run_meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta))


def cmd_report(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    items = _test_items(args.data, args.eval_len)
    runs = {}
    for folder in map(Path, args.runs):
        meta = json.loads((folder / "run_meta.json").read_text())
        index = json.loads((folder / "snapshots" / "index.json").read_text())
        runs[meta["model"]] = (folder, meta, index)
    names = sorted(runs)
    rows = []
    for mark in args.marks:
        key = f"time_{mark:g}min"
        if not all(key in runs[m][2] for m in names):
            continue
        reached = {m: int(runs[m][2][key]["step"]) for m in names}
        common = min(reached.values())
        grid = {m: [int(v["step"]) for k, v in runs[m][2].items() if k.startswith("step_")] for m in names}
        matched = max((s for s in grid[names[0]] if s <= common and all(s in grid[m] for m in names)), default=None)
        for m in names:
            folder, meta, index = runs[m]
            head = meta.get("head", 0)
            t_bits = _test_bits(m, meta["shape"], folder / "snapshots" / f"{key}.safetensors", items, head)
            at_step = folder / "snapshots" / f"step_{matched:06d}.safetensors"
            s_bits = _test_bits(m, meta["shape"], at_step, items, head) if matched else math.nan
            rows.append({"budget_min": mark, "model": m, "parameters": meta["parameters"], "steps": reached[m],
                         "test_bits_at_budget": t_bits, "matched_steps": matched, "test_bits_at_matched_steps": s_bits,
                         "train_samples_per_s": meta["samples_per_s"]})
            print(f"  {m} {key}: {t_bits:.4f} bits; step {matched}: {s_bits:.4f}", file=sys.stderr)
    meta0 = runs[names[0]][1]
    print(f"Test NLL on {len(items)} held-out tiles of {args.eval_len} samples ({len(items) * args.eval_len} samples), "
          f"8-bit linear; batch {meta0['batch_size']} x {meta0['seq_len']}, lr {meta0['lr']}, ssm_lr "
          f"{meta0['ssm_lr']}, constant; {meta0['machine']}; {meta0['date']}\n")
    print("| budget | model | parameters | steps in budget | test NLL (bits) at budget | matched steps | "
          "test NLL at matched steps | train samples/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['budget_min']:g} min | {r['model']} | {r['parameters'] / 1e6:.2f}M | {r['steps']} | "
              f"{r['test_bits_at_budget']:.3f} | {r['matched_steps']} | {r['test_bits_at_matched_steps']:.3f} | "
              f"{r['train_samples_per_s']:,.0f} |")
    Path(args.runs[0]).parent.joinpath("report.json").write_text(json.dumps(rows, indent=1) + "\n")


#: the controlled comparisons: name -> (model, overrides of the run settings)
ABLATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "sashimi, no SSM group, lr 2e-3 (the issue's loop)": ("sashimi", {"lr": 2e-3, "ssm_lr": 2e-3}),
    "sashimi, SSM group 1e-3, lr 2e-3": ("sashimi", {"lr": 2e-3, "ssm_lr": 1e-3}),
    "sashimi, SSM group 1e-3, lr 4e-3": ("sashimi", {"lr": 4e-3, "ssm_lr": 1e-3}),
    "sashimi, SSM group 1e-3, lr 8e-3": ("sashimi", {"lr": 8e-3, "ssm_lr": 1e-3}),
    "sashimi, lr 4e-3, batch 1 x 16000": ("sashimi", {"lr": 4e-3, "ssm_lr": 1e-3, "batch_size": 1,
                                                      "seq_len": 16000}),
    "sashimi wide (d_model 40, 2 layers per tier), lr 4e-3": ("sashimi", {"lr": 4e-3, "ssm_lr": 1e-3,
                                                                          "shape": {"d_model": 40, "n_layers": 2}}),
    "wavenet, lr 2e-3": ("wavenet", {"lr": 2e-3}),
    "wavenet, lr 4e-3": ("wavenet", {"lr": 4e-3}),
    "sashimi, SSM group 1e-3, lr 1.6e-2": ("sashimi", {"lr": 1.6e-2, "ssm_lr": 1e-3}),
    "sashimi wide (d_model 40, 2 layers per tier), lr 8e-3": ("sashimi", {"lr": 8e-3, "ssm_lr": 1e-3,
                                                                          "shape": {"d_model": 40, "n_layers": 2}}),
    "sashimi 4 layers per tier + MLP head (width 256), lr 4e-3": ("sashimi", {"lr": 4e-3, "ssm_lr": 1e-3, "head": 256,
                                                                             "shape": {"n_layers": 4}}),
}


def cmd_ablate(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    items = _test_items(args.data, args.eval_len)
    out = Path(args.out)
    results_path = out / "ablate.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    chosen = [k for i, k in enumerate(ABLATIONS) if args.only is None or i in args.only]
    for name in chosen:
        if name in results:
            continue
        model, over = ABLATIONS[name]
        over = dict(over)
        shape = over.get("shape", {})
        head = over.pop("head", 0)
        run_dir = out / f"run_{list(ABLATIONS).index(name)}"
        _Clock.out, _Clock.budget_s, _Clock.marks_s, _Clock.snap_every, _Clock.steps = run_dir, math.inf, (), 0, 0
        _Clock.head = head
        cfg = _config(model, args.data, run_dir / "run", args, steps=args.steps, **over)
        t = time.perf_counter()
        result = train(cfg)
        wall = time.perf_counter() - t
        core = result.run_dir / "model.safetensors"
        bits = _test_bits(model, shape, core, items, head)
        n_params = sum(v.numel() for v in load_file(str(core)).values())
        results[name] = {"model": model, "settings": {**over, "head": head}, "parameters": n_params,
                         "steps": args.steps, "train_bits_last": result.train_bits, "test_bits": bits,
                         "wall_s": wall}
        results_path.write_text(json.dumps(results, indent=1) + "\n")
        print(f"{name}: test {bits:.4f} bits ({n_params / 1e6:.2f}M, {wall:.0f} s)", flush=True)
    print(f"\n{args.steps} steps each, test NLL on {len(items)} held-out tiles of {args.eval_len} samples; "
          f"{machine_description('cpu', args.threads)}\n")
    print("| run | parameters | test NLL (bits) | last train NLL | wall s (loaded machine) |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['parameters'] / 1e6:.2f}M | {r['test_bits']:.3f} | {r['train_bits_last']:.3f} | "
              f"{r['wall_s']:.0f} |")


def cmd_extend(args: argparse.Namespace) -> None:
    """Continue runs of ``run`` (from the checkpoint written when the budget stopped them) to ``--steps`` steps
    with the trainer's resume, and score each on the test tiles: the equal-steps comparison beyond the budget.
    (The budget's checkpoint is labelled one step early: the stop is raised from ``after_step``, before the
    trainer counts the step, so each continued run has one step more than its label.)"""
    torch.set_num_threads(args.threads)
    items = _test_items(args.data, args.eval_len)
    for folder in map(Path, args.runs):
        meta = json.loads((folder / "run_meta.json").read_text())
        cfg = load_train_config(folder / "run")
        cfg.steps = args.steps
        _Clock.out, _Clock.budget_s, _Clock.marks_s, _Clock.snap_every, _Clock.steps = folder, math.inf, (), 0, 0
        t = time.perf_counter()
        result = train(cfg, resume=True)
        bits = _test_bits(meta["model"], {}, result.run_dir / "model.safetensors", items)
        print(f"| {meta['model']} | {meta['parameters'] / 1e6:.2f}M | {result.step} | {bits:.3f} | "
              f"{time.perf_counter() - t:.0f} |", flush=True)


def cmd_reference(args: argparse.Namespace) -> None:
    """Test NLL of two count-based references fitted on the training tokens: the marginal (unigram, +0.5
    smoothing) and the previous-sample table P(x_t | x_{t-1}) (bigram, +0.1 smoothing)."""
    train_items = AudioFolder(Path(args.data) / "train", mode="crop", minmax=False, progress=False, **TOKENS)
    train_tokens = [train_items[i] for i in range(len(train_items))]  # whole clips, (L,) each
    n = 2 ** TOKENS["bits"]
    uni = torch.full((n,), 0.5, dtype=torch.float64)
    bi = torch.full((n, n), 0.1, dtype=torch.float64)
    for x in train_tokens:
        uni += torch.bincount(x, minlength=n)
        bi.index_put_((x[:-1], x[1:]), torch.ones(len(x) - 1, dtype=torch.float64), accumulate=True)
    uni, bi = uni / uni.sum(), bi / bi.sum(1, keepdim=True)
    test = _test_items(args.data, args.eval_len)
    tokens = torch.cat([test[i] for i in range(len(test))])  # (N,)
    prev = torch.cat([torch.cat([torch.tensor([n // 2]), test[i][:-1]]) for i in range(len(test))])
    print(f"marginal (unigram): {-uni[tokens].log2().mean():.4f} bits; previous sample (bigram): "
          f"{-bi[prev, tokens].log2().mean():.4f} bits, on {len(tokens)} test samples")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", required=True, help="realdata.py's beethoven/ folder (train/ and test/)")
    common.add_argument("--threads", type=int, default=1)
    common.add_argument("--batch-size", type=int, default=4)
    common.add_argument("--seq-len", type=int, default=4000)
    common.add_argument("--lr", type=float, default=2e-3)
    common.add_argument("--ssm-lr", type=float, default=1e-3)
    common.add_argument("--eval-len", type=int, default=16000)
    common.add_argument("--device", default="cpu", help="training device (test NLL is computed on the CPU)")
    r = sub.add_parser("run", parents=[common])
    r.add_argument("--model", choices=sorted(MODELS), required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--budget-min", type=float, default=12.0)
    r.add_argument("--marks", type=float, nargs="+", default=[4.0, 12.0])
    r.add_argument("--snap-every", type=int, default=25)
    r.add_argument("--steps", type=int, default=0, help="also stop after this many steps (0: budget only)")
    r.add_argument("--head", type=int, default=0, help="sashimi: an MLP output head of this width (0: linear)")
    r.add_argument("--n-layers", type=int, default=0, help="sashimi: layers per tier (0: the default 5)")
    q = sub.add_parser("report", parents=[common])
    q.add_argument("--runs", nargs="+", required=True)
    q.add_argument("--marks", type=float, nargs="+", default=[4.0, 12.0])
    a = sub.add_parser("ablate", parents=[common])
    a.add_argument("--out", required=True)
    a.add_argument("--steps", type=int, default=200)
    a.add_argument("--only", type=int, nargs="+", help="indices of the ablations to run (default: all)")
    e = sub.add_parser("extend", parents=[common])
    e.add_argument("--runs", nargs="+", required=True)
    e.add_argument("--steps", type=int, default=150)
    sub.add_parser("reference", parents=[common])
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    {"run": cmd_run, "report": cmd_report, "ablate": cmd_ablate, "extend": cmd_extend,
     "reference": cmd_reference}[args.cmd](args)


if __name__ == "__main__":
    main()
