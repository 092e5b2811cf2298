"""Train a bundled-size MaskedSaShiMi on exactly the data recipe of the bundled SaShiMiLM.

The data are those of ``scripts/train_default.py`` at its defaults (its ``write_data`` and ``tokens_of``
are reused: :func:`sashimi.data.plucked_melody`, one seed per clip, one pentatonic octave on A3 (six
pitches), one note at a time, 128 training clips of 4 s and 16 test clips, disjoint train / valid / test
seeds, stored as 16-bit WAV and quantized to 8-bit mu-law), and so is the training regime: crops of 1024
samples, batch 4, AdamW at 4e-3 with warm-up and a cosine schedule down to 5 %, the SSM parameters in their
own group at 1e-3 without weight decay (:func:`sashimi.optim.param_groups`, as the trainer), one CPU thread. The
model has the bundled model's backbone size (d_model 32, 2 layers per tier, pool 4 x 4, FF 2, d_state 32),
bidirectional with U-Net skips, spans of ``--span-len`` samples; the loss is
:func:`sashimi.models.masked.masked_training_loss` (the trainer's task ``masked`` runs the same loss).

At the end the held-out masked-token cross-entropy (bits per masked sample, fixed masks on the test clips
cut into crops of ``--seq-len``) is compared with the unigram baseline of ``scripts/train_default.py``,
and ``config.json``, ``model.safetensors``, ``README.md`` and ``training.json`` are written to ``--out``
(load it with ``sashimi.load_model(OUT)``). Everything is reproducible from ``--seed`` (and one thread).

    python scripts/train_masked_default.py --out runs/masked-default              # default settings
    python scripts/train_masked_default.py --steps 20 --clips 8 --out /tmp/smoke  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_default import OCTAVES, RING, ROOT_HZ, ROOT_SPREAD, SAMPLE_RATE, tokens_of, unigram_cross_entropy, write_data

from sashimi.data.audio_folder import find_audio_files
from sashimi.models.masked import MaskedSaShiMi, MaskedSaShiMiConfig, masked_training_loss
from sashimi.optim import param_groups
from sashimi.schedulers.masking import span_mask

#: the bundled SaShiMiLM's backbone size, bidirectional
MODEL = {"d_model": 32, "n_layers": 2, "pool": (4, 4), "expand": 2, "ff": 2, "d_state": 32, "unet": True,
         "n_codebooks": 1, "card": 256, "quantization": "mu-law", "sample_rate": SAMPLE_RATE}


def crops(clips: list[torch.Tensor], length: int) -> torch.Tensor:
    """(N, 1, length) consecutive non-overlapping crops of the (T,) token clips (a remainder is dropped)."""
    out = [c[: c.numel() // length * length].reshape(-1, length) for c in clips]  # (n_i, length)
    return torch.cat(out).unsqueeze(1)


@torch.no_grad()
def held_out_bits(model: MaskedSaShiMi, tokens: torch.Tensor, draws: int = 2, batch: int = 64) -> float:
    """Mean masked-token cross-entropy (bits per masked token) of (N, 1, L) crops over fixed masks."""
    model.eval()
    g = torch.Generator().manual_seed(1234)
    total, count = 0.0, 0
    for _ in range(draws):
        for x in tokens.split(batch):
            out = masked_training_loss(model, x, generator=g)
            total += float(out["bits"]) * int(out["count"])
            count += int(out["count"])
    model.train()
    return total / count


@torch.no_grad()
def held_out_bits_at(model: MaskedSaShiMi, tokens: torch.Tensor, rate: float, batch: int = 64) -> float:
    """Masked-token cross-entropy (bits per masked token) of (N, 1, L) crops with every crop masked at ``rate``."""
    model.eval()
    g = torch.Generator().manual_seed(4321)
    c = model.config
    total, count = 0.0, 0
    for x in tokens.split(batch):
        rates = torch.full((x.shape[0],), rate, dtype=torch.float64)
        mask = span_mask(x.shape[0], x.shape[-1], rates, c.span_len, generator=g)  # (b, L)
        inputs = x.clone()
        inputs[:, 0] = x[:, 0].masked_fill(mask, c.mask_id)
        logits = model(inputs)[:, 0]  # (b, L, card)
        total += float(F.cross_entropy(logits[mask].float(), x[:, 0][mask], reduction="sum")) / math.log(2)
        count += int(mask.sum())
    model.train()
    return total / count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--clips", type=int, default=128, help="training clips (validation and test: clips/8 each)")
    p.add_argument("--seconds", type=float, default=4.0, help="length of each clip")
    p.add_argument("--seq-len", type=int, default=1024, help="training crop length (tokens)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--span-len", type=int, default=8)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--ssm-lr", type=float, default=1e-3, help="SSM parameters' lr (0: one group at --lr)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (fixed: results depend on it)")
    p.add_argument("--work-dir", default=None, help="keep the data here (default: a temp dir, removed)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="sashimi_masked_"))
    data = work / "data"
    counts = write_data(data, args.clips, args.seconds, args.seed)  # train_default.py's defaults
    train_tokens = tokens_of(find_audio_files(data / "train"))  # [(T,)] 8-bit mu-law
    test_tokens = tokens_of(find_audio_files(data / "test"))
    train = torch.stack(train_tokens).unsqueeze(1)  # (N, 1, T)
    test = crops(test_tokens, args.seq_len)  # (M, 1, seq_len)
    config = MaskedSaShiMiConfig(**MODEL, span_len=args.span_len)
    model = MaskedSaShiMi(config)
    warmup = min(100, args.steps // 10)
    opt = torch.optim.AdamW(param_groups(model, args.lr, ssm_lr=args.ssm_lr) if args.ssm_lr > 0
                            else model.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, warmup)) * (0.05 + 0.95 * 0.5 * (1 + math.cos(
            math.pi * min(s, args.steps) / args.steps))))
    g = torch.Generator().manual_seed(args.seed)
    before = held_out_bits(model, test)
    log = []
    t_train = time.perf_counter()
    bar = tqdm(range(args.steps), desc="train masked", disable=args.quiet, mininterval=10)
    for step in bar:
        idx = torch.randint(train.shape[0], (args.batch_size,), generator=g)
        start = torch.randint(train.shape[-1] - args.seq_len + 1, (args.batch_size,), generator=g)
        batch = torch.stack([train[i, :, s:s + args.seq_len] for i, s in zip(idx.tolist(), start.tolist())])
        out = masked_training_loss(model, batch, generator=g)  # batch (B, 1, seq_len)
        opt.zero_grad()
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % max(1, args.steps // 50) == 0 or step == args.steps - 1:
            log.append({"step": step, "bits": round(float(out["bits"]), 4),
                        "accuracy": round(float(out["accuracy"]), 4), "seconds": round(time.perf_counter() - t0, 1)})
            bar.set_postfix(bits=f"{float(out['bits']):.3f}")
    loop_s = time.perf_counter() - t_train
    after = held_out_bits(model, test)
    unigram = unigram_cross_entropy(train_tokens, test_tokens)
    at_rates = {str(r): round(held_out_bits_at(model, test, r), 4) for r in (0.1, 0.5, 0.9)}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # config.json, model.safetensors, README.md
    report = {
        "model": config.to_dict(), "parameters": model.num_parameters(),
        "data": {"generator": "sashimi.data.plucked_melody", "recipe": "scripts/train_default.py defaults",
                 "sample_rate": SAMPLE_RATE, "seconds_per_clip": args.seconds, "octaves": OCTAVES,
                 "ring_seconds": RING, "root_hz": ROOT_HZ, "root_spread_semitones": ROOT_SPREAD, "clips": counts,
                 "seed": args.seed, "stored_as": "16-bit WAV, then 8-bit mu-law"},
        "training": {k: getattr(args, k)
                     for k in ("steps", "seq_len", "batch_size", "span_len", "lr", "ssm_lr", "seed")}
        | {"warmup_steps": warmup, "schedule": "cosine", "min_lr_ratio": 0.05, "optimizer": "AdamW",
           "weight_decay": 0.0, "clip_grad_norm": 1.0},
        "threads": args.threads,
        "results": {"test_masked_bits_before": round(before, 4), "test_masked_bits": round(after, 4),
                    "unigram_bits": round(unigram, 4),
                    "test_masked_bits_at_rate": at_rates, "test_crops": test.shape[0], "eval_mask_draws": 2,
                    "train_loop_seconds": round(loop_s, 1), "seconds_per_step": round(loop_s / max(1, args.steps), 3),
                    "total_seconds": round(time.perf_counter() - t0, 1)},
        "log": log, "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }
    (out_dir / "training.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    r = report["results"]
    print("| test masked bits (untrained) | test masked bits | unigram bits | s/step | total s |")
    print("|---|---|---|---|---|")
    print(f"| {r['test_masked_bits_before']} | {r['test_masked_bits']} | {r['unigram_bits']} "
          f"| {r['seconds_per_step']} | {r['total_seconds']} |")
    ok = math.isfinite(after) and after < unigram
    print(f"held-out masked bits below the unigram baseline: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
