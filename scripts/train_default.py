"""Train the small SaShiMiLM that ships inside the package (``sashimi generate`` with no ``--model``).

Reproducible from a seed: the data are synthetic plucked-string melodies
(:func:`sashimi.data.plucked_melody`, one seed per clip) written as 16 kHz WAV files into train /
valid / test folders, and training is :func:`sashimi.train.train` with fixed settings on one process.
On the 2-core CPU of the development machines the default settings take about half an hour.

After training, the script measures the held-out NLL (bits per sample, convolution mode) on the test
clips against a trivial baseline: the cross-entropy of the unigram token distribution of the training
clips (what a model that ignores all context would reach). It writes ``config.json``,
``model.safetensors``, ``README.md`` (model card) and ``training.json`` (settings and results) into
``--out`` (default: ``sashimi/pretrained/default``, the bundled model) and prints a markdown table.

    python scripts/train_default.py                      # the bundled model (about 30 min on 2 cores)
    python scripts/train_default.py --steps 20 --clips 4 --out /tmp/smoke   # a smoke run
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

from sashimi.audio import quantize, save_audio
from sashimi.data import plucked_melody
from sashimi.data.audio_folder import find_audio_files
from sashimi.models.lm import SaShiMiLM
from sashimi.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "sashimi" / "pretrained" / "default"
SAMPLE_RATE = 16000
#: the bundled model: SaShiMi with two tiers below the top (pool 4, 4), 2 layers per tier
MODEL = dict(d_model=32, n_layers=2, pool=(4, 4), expand=2, ff=2, d_state=32, bits=8, quantization="mu-law",
             sample_rate=SAMPLE_RATE)
#: clip seeds per split are disjoint: train 0.., validation 10000.., test 20000..
SPLIT_SEEDS = {"train": 0, "valid": 10_000, "test": 20_000}


def write_data(root: Path, clips: int, seconds: float, seed: int) -> dict[str, int]:
    """Synthetic plucked-string melodies in ``root/{train,valid,test}``; returns clips per split."""
    counts = {"train": clips, "valid": max(1, clips // 8), "test": max(1, clips // 8)}
    for split, n in counts.items():
        for i in range(n):
            s = seed * 100_000 + SPLIT_SEEDS[split] + i
            # the root note varies per clip (A2 .. A3) so the model sees many pitches
            root_hz = 110.0 * 2.0 ** ((s % 12) / 12)
            save_audio(root / split / f"clip_{i:04d}.wav", plucked_melody(seconds, SAMPLE_RATE, seed=s, root=root_hz),
                       SAMPLE_RATE)
    return counts


def tokens_of(files: list[Path]) -> list[torch.Tensor]:
    """The stored (16-bit) audio of each file, quantized as the model does."""
    import soundfile as sf

    return [quantize(torch.from_numpy(sf.read(str(f), dtype="float32")[0]), MODEL["bits"], MODEL["quantization"])
            for f in files]


def unigram_cross_entropy(train_tokens: list[torch.Tensor], test_tokens: list[torch.Tensor]) -> float:
    """Bits per sample of the test tokens under the (add-one smoothed) unigram distribution of training."""
    classes = 2 ** MODEL["bits"]
    counts = sum(torch.bincount(t, minlength=classes).double() for t in train_tokens) + 1.0
    logp = (counts / counts.sum()).log2()
    n = sum(t.numel() for t in test_tokens)
    return float(-sum(logp[t].sum() for t in test_tokens) / n)


@torch.no_grad()
def held_out_bits(model: SaShiMiLM, test_tokens: list[torch.Tensor]) -> float:
    """Mean NLL (bits per sample) of whole test clips in convolution mode, weighted by length."""
    model.eval()
    total = sum(float(model.log_likelihood(t)) * t.numel() for t in test_tokens)
    return total / sum(t.numel() for t in test_tokens)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(DEFAULT_OUT), help="model folder to write (default: the bundled model)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--clips", type=int, default=48, help="training clips (validation and test: clips/8 each)")
    p.add_argument("--seconds", type=float, default=4.0, help="length of each clip")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (fixed: results depend on it)")
    p.add_argument("--work-dir", default=None, help="keep the data and the run folder here (default: a temp dir)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="sashimi_default_"))
    data, run = work / "data", work / "run"
    if run.exists():
        raise SystemExit(f"error: {run} exists; pass another --work-dir")
    t0 = time.perf_counter()
    counts = write_data(data, args.clips, args.seconds, args.seed)
    settings = dict(
        data=str(data), out=str(run), preset="tiny", model=dict(MODEL), layout="folder", seq_len=args.seq_len,
        mode="crop", minmax=False, steps=args.steps, batch_size=args.batch_size, lr=args.lr, schedule="cosine",
        warmup_steps=min(100, args.steps // 10), min_lr_ratio=0.05, eval_every=max(1, args.steps // 4),
        eval_batches=None, checkpoint_every=0, log_every=max(1, args.steps // 100), seed=args.seed, device="cpu",
        progress=not args.quiet,
    )
    result = train(TrainConfig(**settings))
    train_s = time.perf_counter() - t0

    model = SaShiMiLM.from_pretrained(str(run))
    test_tokens = tokens_of(find_audio_files(data / "test"))
    train_tokens = tokens_of(find_audio_files(data / "train"))
    nll = held_out_bits(model, test_tokens)
    unigram = unigram_cross_entropy(train_tokens, test_tokens)
    report = {
        "model": {**MODEL, "pool": list(MODEL["pool"])},
        "parameters": model.num_parameters(),
        "data": {"generator": "sashimi.data.plucked_melody", "sample_rate": SAMPLE_RATE, "seconds_per_clip": args.seconds,
                 "clips": counts, "seed": args.seed},
        "training": {k: v for k, v in settings.items() if k not in ("data", "out", "progress")},
        "threads": args.threads,
        "results": {
            "test_bits_per_sample": round(nll, 4),
            "unigram_bits_per_sample": round(unigram, 4),
            "validation_bits_per_sample": round(result.eval_bits, 4),
            "final_train_bits_per_sample": round(result.train_bits, 4),
            "train_seconds": round(train_s, 1),
        },
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, model_card_kwargs={"repo_id": "sashimi-default"})
    (tmp / "training.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)

    print(f"wrote {out} ({model.num_parameters():,} parameters) in {train_s / 60:.1f} min")
    print("| split | clips | NLL (bits/sample) |\n|---|---|---|")
    print(f"| test, SaShiMiLM | {counts['test']} | {nll:.4f} |")
    print(f"| test, unigram baseline (training token frequencies) | {counts['test']} | {unigram:.4f} |")
    print(f"| validation, SaShiMiLM | {counts['valid']} | {result.eval_bits:.4f} |")
    ok = math.isfinite(nll) and nll < unigram
    print(f"held-out NLL below the unigram baseline: {'yes' if ok else 'NO'} ({nll:.3f} vs {unigram:.3f} bits)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
