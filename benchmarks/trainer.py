"""Trainer overhead: a step of ``sashimi.training.train`` vs a bare training step of the same model, one run.

Both run the same model, data and optimizer: the ``tiny`` preset of a task (``lm`` or ``wavenet``) on synthetic
plucked strings, ``--batch`` crops of ``--seq-len`` samples, AdamW with the SSM groups, gradient clipping 1.0,
one CPU thread. The bare loop is forward + cross-entropy + backward + clip + AdamW step over the same
DataLoader; the trainer adds what a run needs (per-step seeding, the finite-loss check, metric accumulation,
the CSV log every step here, the schedule). Fixed costs (dataset scan, model build, the final evaluation and
checkpoint) are removed by timing runs of ``--steps`` and ``2 * --steps`` steps and taking the difference.
The two are measured alternately, ``--repeats`` times each, in process CPU time (``time.process_time``:
the steadier measure on a shared machine, with one thread); the table shows medians.

Usage::

    python benchmarks/trainer.py                 # lm, 20 / 40 steps, 3 repeats
    python benchmarks/trainer.py --task wavenet
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from sashimi.audio import save_audio
from sashimi.data import karplus_strong
from sashimi.data.audio_folder import IGNORE_INDEX
from sashimi.optim import param_groups
from sashimi.training import TrainConfig, get_task, resolve_config, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_description  # noqa: E402

SR = 16000


def _data(root: Path) -> Path:
    for i in range(4):
        save_audio(root / f"clip{i}.wav", karplus_strong(200.0 + 40 * i, 1.0, SR, seed=i), SR)
    return root


def _trainer_seconds(cfg: TrainConfig, steps: int, out: Path) -> float:
    t = time.process_time()
    train(TrainConfig(**{**cfg.to_dict(), "steps": steps, "out": str(out), "betas": tuple(cfg.betas)}))
    return time.process_time() - t


def _bare_seconds(cfg: TrainConfig, steps: int) -> float:
    task = get_task(cfg.task)
    r = resolve_config(cfg)
    mcfg = task.model_config(task.presets()[r.preset], r.model)
    data = task.datasets(r, mcfg, progress=False)
    t = time.process_time()
    torch.manual_seed(0)
    model = task.build_model(mcfg).train()
    groups = param_groups(model, lr=r.lr, weight_decay=r.weight_decay, ssm_lr=r.ssm_lr)
    opt = torch.optim.AdamW(groups, lr=r.lr, betas=r.betas)
    loader = DataLoader(data.train, batch_size=r.batch_size, shuffle=True, collate_fn=data.collate)
    done = 0
    while done < steps:
        for targets in loader:  # (B, L)
            logits = model(model.shift_right(targets.clamp_min(0)))  # (B, L, C)
            loss = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            done += 1
            if done == steps:
                break
    return time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="lm", choices=("lm", "wavenet"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=2048)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    data = _data(tmp / "data")
    cfg = TrainConfig(data=str(data), out=str(tmp / "unused"), task=args.task, preset="tiny", seq_len=args.seq_len,
                      batch_size=args.batch, eval_every=0, eval_batches=1, checkpoint_every=0, log_every=1,
                      progress=False)
    n = args.steps
    trainer, bare = [], []
    for k in range(args.repeats):
        a = _trainer_seconds(cfg, 2 * n, tmp / f"t2_{k}") - _trainer_seconds(cfg, n, tmp / f"t1_{k}")
        b = _bare_seconds(cfg, 2 * n) - _bare_seconds(cfg, n)
        trainer.append(a / n)
        bare.append(b / n)
    t, b = statistics.median(trainer), statistics.median(bare)
    print(f"# {machine_description('cpu', 1)}; task {args.task}, tiny preset, batch {args.batch} x {args.seq_len}")
    print("| loop | CPU ms per step (median of %d) | ratio |" % args.repeats)
    print("|---|---|---|")
    print(f"| bare step (baseline) | {1e3 * b:.1f} | 1.00x |")
    print(f"| sashimi.training.train | {1e3 * t:.1f} | {t / b:.2f}x |")


if __name__ == "__main__":
    main()
