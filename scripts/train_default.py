"""Train the small SaShiMiLM that ships inside the package (``sashimi generate`` with no ``--model``).

Reproducible from a seed: the data are synthetic plucked-string melodies
(:func:`sashimi.data.plucked_melody`, one seed per clip; by default six pitches, one pentatonic octave
on A3, one note at a time) written as 16 kHz WAV files into train / valid / test folders, and training
is :func:`sashimi.train.train` with fixed settings on one process and one thread. On the shared 2-core
CPU of the development machines the default settings took 14 min of training (2026-12-06).

After training, the script measures the held-out NLL (bits per sample, convolution mode) on the test
clips against a trivial baseline: the cross-entropy of the unigram token distribution of the training
clips (what a model that ignores all context would reach). Then the quality check: it picks the default
sampling temperature (the highest of :data:`TEMPERATURES` whose samples on seed :data:`SELECT_SEED`
reach a median periodicity of :data:`TARGET_PERIODICITY`) and scores ``sashimi generate``'s samples at
it (batch 4, seeds 0-3): their median :func:`sashimi.metrics.periodicity` must reach 0.6 and their
convolution-mode bits/sample stay within 1.5x the held-out NLL. It writes ``config.json``,
``model.safetensors``, ``generation.json`` (the default temperature), ``README.md`` (model card with the
figures) and ``training.json`` (settings and results) into ``--out`` (default:
``sashimi/pretrained/default``, the bundled model) and prints a markdown table; the exit status is 1
when the model misses the unigram baseline or the quality check.

    python scripts/train_default.py                      # the bundled model (about 25 min with the check)
    python scripts/train_default.py --steps 20 --clips 4 --out /tmp/smoke   # a smoke run
    python scripts/train_default.py --evaluate FOLDER --work-dir W          # re-run only the check
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from sashimi.audio import dequantize, quantize, save_audio
from sashimi.data import plucked_melody
from sashimi.data.audio_folder import find_audio_files
from sashimi.metrics import periodicity
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
#: one octave of the pentatonic scale on a fixed root (A3: six pitches of 220-440 Hz in all clips), one note at a
#: time (no note rings into the next): a small set of string lengths that a small model can master
OCTAVES, RING, ROOT_HZ, ROOT_SPREAD = 1, 0.0, 220.0, 0
#: sampling temperatures tried, most faithful first; the first whose samples reach TARGET_PERIODICITY
#: (median over the clips of SELECT_SEED) becomes the stored default in generation.json
TEMPERATURES = (1.0, 0.9, 0.8, 0.7)
TARGET_PERIODICITY = 0.75
SELECT_SEED = 1000
#: the quality check: ``sashimi generate`` at its defaults (batch 4) with these seeds
CHECK_SEEDS = (0, 1, 2, 3)
CHECK_BATCH = 4


def melody(seconds: float, seed: int, octaves: int = OCTAVES, ring: float = RING, root: float = ROOT_HZ,
           spread: int = ROOT_SPREAD) -> torch.Tensor:
    """The clip of one seed: the root is ``root`` Hz raised by ``seed % spread`` semitones (spread 0 or 1: fixed)."""
    root_hz = root * 2.0 ** ((seed % max(1, spread)) / 12)
    return plucked_melody(seconds, SAMPLE_RATE, seed=seed, root=root_hz, octaves=octaves, ring=ring)


def write_data(root: Path, clips: int, seconds: float, seed: int, octaves: int = OCTAVES,
               ring: float = RING, root_hz: float = ROOT_HZ, spread: int = ROOT_SPREAD) -> dict[str, int]:
    """Synthetic plucked-string melodies in ``root/{train,valid,test}``; returns clips per split."""
    counts = {"train": clips, "valid": max(1, clips // 8), "test": max(1, clips // 8)}
    for split, n in counts.items():
        for i in range(n):
            s = seed * 100_000 + SPLIT_SEEDS[split] + i
            clip = melody(seconds, s, octaves, ring, root_hz, spread)
            save_audio(root / split / f"clip_{i:04d}.wav", clip, SAMPLE_RATE)
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


@torch.no_grad()
def sample_quality(model: SaShiMiLM, seconds: float, seeds: tuple[int, ...], temperature: float,
                   batch: int = CHECK_BATCH) -> dict[str, list[float]]:
    """Periodicity and convolution-mode bits/sample of ``batch`` samples per seed (as ``sashimi generate
    --seed s`` draws them), one entry per clip, plus the wall time of each batch."""
    model.eval()
    num = round(seconds * model.config.sample_rate)
    per, bits, secs = [], [], []
    for seed in seeds:
        t0 = time.perf_counter()
        out = model.generate(batch, num, temperature=temperature, generator=torch.Generator().manual_seed(seed),
                             progress=False)
        secs.append(time.perf_counter() - t0)
        per += periodicity(out.waveform, model.config.sample_rate).tolist()
        bits += model.log_likelihood(out.tokens).tolist()  # (B,) rescored in convolution mode
    return {"periodicity": per, "bits_per_sample": bits, "seconds_per_batch": secs}


def choose_temperature(model: SaShiMiLM, seconds: float) -> tuple[float, dict[str, float]]:
    """The highest temperature in :data:`TEMPERATURES` whose samples (seed :data:`SELECT_SEED`, never a
    check seed) reach :data:`TARGET_PERIODICITY`; else the one with the most periodic samples."""
    tried = {}
    for temperature in TEMPERATURES:
        q = sample_quality(model, seconds, (SELECT_SEED,), temperature)
        tried[str(temperature)] = round(statistics.median(q["periodicity"]), 4)
        if tried[str(temperature)] >= TARGET_PERIODICITY:
            return temperature, tried
    best = max(tried, key=tried.get)
    return float(best), tried


def data_periodicity(files: list[Path], bits: int, quantization: str) -> dict[str, float]:
    """Median periodicity of the clips, as stored and as the model sees them (quantized and decoded)."""
    import soundfile as sf

    waves = [torch.from_numpy(sf.read(str(f), dtype="float32")[0]) for f in files]
    stored = [float(periodicity(w, SAMPLE_RATE)) for w in waves]
    seen = [float(periodicity(dequantize(quantize(w, bits, quantization), bits, quantization), SAMPLE_RATE))
            for w in waves]
    return {"stored": round(statistics.median(stored), 4), "quantized": round(statistics.median(seen), 4),
            "min_stored": round(min(stored), 4)}


def quality_report(model: SaShiMiLM, data: Path, held_out: float, seconds: float) -> tuple[dict, float]:
    """Choose the default temperature, then run the check (:data:`CHECK_SEEDS`, ``seconds`` long) at it."""
    temperature, tried = choose_temperature(model, min(seconds, 1.0))
    q = sample_quality(model, seconds, CHECK_SEEDS, temperature)
    med_per = statistics.median(q["periodicity"])
    mean_bits = statistics.fmean(q["bits_per_sample"])
    report = {
        "check": f"sashimi generate: batch {CHECK_BATCH}, {seconds:g} s, seeds {list(CHECK_SEEDS)}, "
                 f"temperature {temperature}",
        "temperature": temperature,
        "temperature_choice": {"seed": SELECT_SEED, "target_periodicity": TARGET_PERIODICITY,
                               "median_periodicity_by_temperature": tried},
        "samples_median_periodicity": round(med_per, 4),
        "samples_periodicity": [round(v, 4) for v in q["periodicity"]],
        "samples_bits_per_sample": round(mean_bits, 4),
        "samples_over_held_out_nll": round(mean_bits / held_out, 4),
        "samples_seconds_per_batch": [round(v, 1) for v in q["seconds_per_batch"]],
        "train_data_periodicity": data_periodicity(find_audio_files(data / "train"), model.config.bits,
                                                   model.config.quantization),
        "passes": bool(med_per >= 0.6 and mean_bits <= 1.5 * held_out),
    }
    return report, temperature


CARD_SECTION = "## Training data and quality"


def write_card(folder: Path, report: dict) -> None:
    """Write the data, training and quality figures of ``report`` into the model card (replacing an older copy)."""
    r, q, d = report["results"], report["quality"], report["data"]
    text = (folder / "README.md").read_text(encoding="utf-8").split(CARD_SECTION)[0].rstrip("\n")
    # reports of the script before issue 14 lack the data fields: its data were 2 octaves, roots 110 Hz + 0-11
    # semitones, notes ringing 1 s into the next
    d = {"octaves": 2, "ring_seconds": 1.0, "root_hz": 110.0, "root_spread_semitones": 12, **d}
    spread = d["root_spread_semitones"]
    ring = d["ring_seconds"]
    notes = "one note at a time" if ring == 0 else f"notes ring up to {ring:g} s into the next"
    roots = f"root {d['root_hz']:g} Hz" + (f" raised by 0-{spread - 1} semitones by clip" if spread > 1 else "")
    text += f"""

{CARD_SECTION}

Trained by `scripts/train_default.py` (seed {d['seed']}) on synthetic plucked-string melodies
(`sashimi.data.plucked_melody`: {d['octaves']} octave(s) of a minor pentatonic scale, {roots},
{notes}: `ring={d['ring_seconds']}`), {d['clips']['train']} clips of {d['seconds_per_clip']:g} s,
for {report['training']['steps']} steps ({r['train_seconds'] / 60:.0f} min on {report['threads']} CPU thread).

| measure | value |
|---|---|
| held-out NLL (test clips, convolution mode) | {r['test_bits_per_sample']:.3f} bits/sample |
| unigram baseline | {r['unigram_bits_per_sample']:.3f} bits/sample |
| samples' NLL ({q['check']}) | {q['samples_bits_per_sample']:.3f} bits/sample |
| periodicity of the samples (median) | {q['samples_median_periodicity']:.3f} |
| periodicity of the training clips (median; after 8-bit mu-law) | {q['train_data_periodicity']['stored']:.3f} \
({q['train_data_periodicity']['quantized']:.3f}) |

Periodicity (`sashimi.metrics.periodicity`): median over 64 ms frames of the largest normalized
autocorrelation at lags of 1-25 ms; about 1 for pitched sound, 0.1 for white noise.
`generation.json` stores the default sampling temperature ({q['temperature']}), the highest of
{list(TEMPERATURES)} whose samples reach a median periodicity of {TARGET_PERIODICITY} on seed {SELECT_SEED}.
"""
    (folder / "README.md").write_text(text, encoding="utf-8")


def evaluate_folder(folder: Path, data: Path, seconds: float) -> dict:
    """Score a trained model folder: add ``quality`` to its ``training.json``, write ``generation.json``
    (the default temperature) and the card's quality section; returns the quality figures."""
    model = SaShiMiLM.from_pretrained(str(folder))
    report = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    quality, temperature = quality_report(model, data, report["results"]["test_bits_per_sample"], seconds)
    report["quality"] = quality
    (folder / "training.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (folder / "generation.json").write_text(json.dumps({"temperature": temperature}, indent=2) + "\n",
                                            encoding="utf-8")
    write_card(folder, report)
    return quality


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(DEFAULT_OUT), help="model folder to write (default: the bundled model)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--clips", type=int, default=128, help="training clips (validation and test: clips/8 each)")
    p.add_argument("--seconds", type=float, default=4.0, help="length of each clip")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--octaves", type=int, default=OCTAVES, help="octaves of the pentatonic scale per clip")
    p.add_argument("--ring", type=float, default=RING, help="seconds each note rings into the next (0: one at a time)")
    p.add_argument("--root", type=float, default=ROOT_HZ, help="lowest root note of the melodies (Hz)")
    p.add_argument("--root-spread", type=int, default=ROOT_SPREAD,
                   help="clip k's root is raised by k %% spread semitones (0: the same root in every clip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (fixed: results depend on it)")
    p.add_argument("--work-dir", default=None, help="keep the data and the run folder here (default: a temp dir)")
    p.add_argument("--check-seconds", type=float, default=2.0, help="length of the samples of the quality check")
    p.add_argument("--evaluate", default=None, metavar="FOLDER",
                   help="only (re)run the quality check on a trained model folder (the data: --work-dir/data)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.evaluate:
        if not args.work_dir:
            raise SystemExit("error: --evaluate needs --work-dir (the folder holding data/)")
        torch.set_num_threads(args.threads)
        quality = evaluate_folder(Path(args.evaluate), Path(args.work_dir) / "data", args.check_seconds)
        print(json.dumps(quality, indent=2))
        return 0 if quality["passes"] else 1

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="sashimi_default_"))
    data, run = work / "data", work / "run"
    if run.exists():
        raise SystemExit(f"error: {run} exists; pass another --work-dir")
    t0 = time.perf_counter()
    counts = write_data(data, args.clips, args.seconds, args.seed, args.octaves, args.ring, args.root,
                        args.root_spread)
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
        "data": {"generator": "sashimi.data.plucked_melody", "sample_rate": SAMPLE_RATE,
                 "seconds_per_clip": args.seconds,
                 "octaves": args.octaves, "ring_seconds": args.ring, "root_hz": args.root,
                 "root_spread_semitones": args.root_spread, "clips": counts, "seed": args.seed},
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
    quality = evaluate_folder(tmp, data, args.check_seconds)
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
    print(f"| samples ({quality['check']}) | {CHECK_BATCH * len(CHECK_SEEDS)} | "
          f"{quality['samples_bits_per_sample']:.4f} |")
    print(f"periodicity: samples {quality['samples_median_periodicity']:.3f}, "
          f"training clips {quality['train_data_periodicity']['stored']:.3f}")
    ok = math.isfinite(nll) and nll < unigram
    print(f"held-out NLL below the unigram baseline: {'yes' if ok else 'NO'} ({nll:.3f} vs {unigram:.3f} bits)")
    print(f"quality check (median periodicity >= 0.6, samples' NLL <= 1.5x held-out): "
          f"{'passes' if quality['passes'] else 'FAILS'}")
    return 0 if ok and quality["passes"] else 1


if __name__ == "__main__":
    sys.exit(main())
