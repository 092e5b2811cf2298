"""Train a bundled-size MaskedSaShiMi on the synthetic plucked strings of the bundled SaShiMiLM.

Same data recipe as ``scripts/train_default.py`` (:func:`sashimi.data.plucked_melody`, one seed per clip,
root notes A2..A3, disjoint train / test seeds; here quantized in memory instead of through 16-bit WAV
files) and the bundled model's backbone size (d_model 32, 2 layers per tier, pool 4 x 4, FF 2, d_state 32),
bidirectional with U-Net skips, 8-bit mu-law tokens, spans of ``--span-len`` samples. The loop is
:func:`sashimi.models.masked.masked_training_loss` with AdamW and a cosine schedule (the trainer's task
``masked`` runs the same loss).

At the end the held-out masked-token cross-entropy (bits per masked sample, fixed masks) is compared with
the unigram baseline, and ``config.json``, ``model.safetensors``, ``README.md`` and ``training.json`` are
written to ``--out`` (load it with ``sashimi.load_model(OUT)`` or ``MaskedSaShiMi.from_pretrained(OUT)``).

    python scripts/train_masked_default.py --out runs/masked-default            # default settings
    python scripts/train_masked_default.py --steps 20 --clips 4 --out /tmp/smoke  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sashimi.audio import quantize
from sashimi.data import plucked_melody
from sashimi.models.masked import MaskedSaShiMi, MaskedSaShiMiConfig, masked_training_loss

SAMPLE_RATE = 16000
#: the bundled SaShiMiLM's backbone size, bidirectional
MODEL = {"d_model": 32, "n_layers": 2, "pool": (4, 4), "expand": 2, "ff": 2, "d_state": 32, "unet": True,
         "n_codebooks": 1, "card": 256, "quantization": "mu-law", "sample_rate": SAMPLE_RATE}
SPLIT_SEEDS = {"train": 0, "test": 20_000}


def clips_of(split: str, n: int, seconds: float, seed: int) -> torch.Tensor:
    """(n, 1, T) mu-law tokens of plucked-string melodies (the bundled model's recipe)."""
    out = []
    for i in range(n):
        s = seed * 100_000 + SPLIT_SEEDS[split] + i
        root_hz = 110.0 * 2.0 ** ((s % 12) / 12)
        out.append(quantize(plucked_melody(seconds, SAMPLE_RATE, seed=s, root=root_hz), 8, "mu-law"))
    return torch.stack(out).unsqueeze(1)


@torch.no_grad()
def held_out_bits(model: MaskedSaShiMi, tokens: torch.Tensor, segment: int, draws: int = 8) -> float:
    """Mean masked-token cross-entropy (bits) over fixed masks on segments of the test clips."""
    model.eval()
    g = torch.Generator().manual_seed(1234)
    T = tokens.shape[-1] // segment * segment
    x = tokens[..., :T].reshape(tokens.shape[0], 1, -1, segment).transpose(1, 2).reshape(-1, 1, segment)
    bits = sum(float(masked_training_loss(model, x, generator=g)["bits"]) for _ in range(draws)) / draws
    model.train()
    return bits


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--clips", type=int, default=48, help="training clips (test: clips/8)")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--segment", type=int, default=4096, help="training crop length (tokens)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--span-len", type=int, default=8)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    train = clips_of("train", args.clips, args.seconds, args.seed)  # (N, 1, T)
    test = clips_of("test", max(1, args.clips // 8), args.seconds, args.seed)
    config = MaskedSaShiMiConfig(**MODEL, span_len=args.span_len)
    model = MaskedSaShiMi(config)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, args.steps // 10)) * (0.05 + 0.95 * 0.5 * (1 + math.cos(
            math.pi * min(s, args.steps) / args.steps))))
    g = torch.Generator().manual_seed(args.seed)
    before = held_out_bits(model, test, args.segment)
    log = []
    bar = tqdm(range(args.steps), desc="train masked", disable=args.quiet)
    for step in bar:
        idx = torch.randint(train.shape[0], (args.batch_size,), generator=g)
        start = torch.randint(train.shape[-1] - args.segment + 1, (args.batch_size,), generator=g)
        batch = torch.stack([train[i, :, s:s + args.segment] for i, s in zip(idx.tolist(), start.tolist())])
        out = masked_training_loss(model, batch, generator=g)
        opt.zero_grad()
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % max(1, args.steps // 50) == 0:
            log.append({"step": step, "bits": round(float(out["bits"]), 4),
                        "accuracy": round(float(out["accuracy"]), 4)})
            bar.set_postfix(bits=f"{float(out['bits']):.3f}")
    after = held_out_bits(model, test, args.segment)
    counts = torch.bincount(train.flatten(), minlength=256).double() + 1
    pu = counts / counts.sum()
    unigram = float(-(pu.log2()[test.flatten()]).mean())
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # config.json, model.safetensors, README.md
    report = {
        "model": config.to_dict(), "parameters": model.num_parameters(),
        "data": {"generator": "sashimi.data.plucked_melody", "clips": args.clips, "seconds": args.seconds,
                 "seed": args.seed},
        "training": {k: getattr(args, k) for k in ("steps", "segment", "batch_size", "span_len", "lr", "threads")},
        "results": {"test_masked_bits_before": round(before, 4), "test_masked_bits": round(after, 4),
                    "unigram_bits": round(unigram, 4), "train_seconds": round(time.perf_counter() - t0, 1)},
        "log": log, "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }
    (out_dir / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    r = report["results"]
    print("| test masked bits (untrained) | test masked bits | unigram bits | seconds |")
    print("|---|---|---|---|")
    print(f"| {r['test_masked_bits_before']} | {r['test_masked_bits']} | {r['unigram_bits']} | {r['train_seconds']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
