"""Cost of the evaluation pieces, each against a baseline measured in the same run.

* FID at the paper's feature size (d = 1024): ``sashimi.metrics.fid`` (eigenvalues of the symmetric
  ``S_r^1/2 S_g S_r^1/2``) vs the official formula (``scipy.linalg.sqrtm`` of the non-symmetric product).
* The SC09 classifier input: ``sc09_classifier_input`` (torch, batched) vs librosa's per-clip calls.
* The classifier's ``classify``: the official ResNeXt-29 8x64d vs the small preset.

Usage: ``python benchmarks/metrics.py [--threads 1] [--repeats 3]``; prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from _common import machine_description

from sashimi.audio.features import sc09_classifier_input
from sashimi.metrics import fid
from sashimi.models.classifier import SC09Classifier, SC09ClassifierConfig


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def official_fid(gen: np.ndarray, ref: np.ndarray) -> float:
    """The official formula (real part taken so the comparison runs; the official code does not take it)."""
    import scipy.linalg

    mu = gen.mean(0) - ref.mean(0)
    s_g, s_r = np.cov(gen, rowvar=False), np.cov(ref, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_r @ s_g)
    return float(mu @ mu + np.trace(s_g + s_r - 2 * covmean.real))


def librosa_inputs(clips: np.ndarray) -> np.ndarray:
    import librosa

    out = []
    for y in clips:
        mel = librosa.feature.melspectrogram(y=librosa.util.fix_length(y, size=16000), sr=16000, n_mels=32,
                                             pad_mode="reflect")
        out.append(librosa.power_to_db(mel, ref=np.max))
    return np.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows = []

    gen = rng.standard_normal((3000, 1024)) @ rng.standard_normal((1024, 1024)) * 0.05
    ref = rng.standard_normal((3000, 1024)) * 1.1 + 0.1
    t_off = best_time(lambda: official_fid(gen, ref), args.repeats)
    t_ours = best_time(lambda: fid(gen, ref), args.repeats)
    diff = abs(fid(gen, ref) - official_fid(gen, ref)) / fid(gen, ref)
    rows.append(("FID, 3000 x 1024 per set", "scipy sqrtm (official)", t_off, t_ours, f"rel. diff {diff:.1e}"))

    clips = (rng.standard_normal((64, 16000)) * 0.1).astype(np.float32)
    t_lib = best_time(lambda: librosa_inputs(clips), args.repeats)
    t_torch = best_time(lambda: sc09_classifier_input(torch.from_numpy(clips)), args.repeats)
    rows.append(("classifier input, 64 clips", "librosa per clip", t_lib, t_torch, ""))

    audio = torch.from_numpy(clips[:8])
    full = SC09Classifier(SC09ClassifierConfig()).eval()
    small = SC09Classifier(SC09ClassifierConfig.small()).eval()
    t_full = best_time(lambda: full.classify(audio), args.repeats)
    t_small = best_time(lambda: small.classify(audio), args.repeats)
    rows.append(("classify, 8 clips", "ResNeXt-29 8x64d", t_full, t_small, "ours = small preset"))

    print(f"Machine: {machine_description('cpu', args.threads)}; best of {args.repeats}\n")
    print("| task | baseline | baseline (s) | ours (s) | speed-up | note |")
    print("|---|---|---|---|---|---|")
    for task, base, tb, to, note in rows:
        print(f"| {task} | {base} | {tb:.3f} | {to:.3f} | {tb / to:.1f}x | {note} |")


if __name__ == "__main__":
    main()
