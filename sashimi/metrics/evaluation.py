"""The SaShiMi paper's SC09 evaluation: a classifier's features and probabilities of generated and
reference clips, then FID, IS (both variants), mIS, AM and NDB, as a dict, a JSON file and a markdown table.

The classifier enters only as a callable ``classify(audio (B, T)) -> (features (B, D), probs (B, C))``
(e.g. :meth:`sashimi.models.classifier.SC09Classifier.classify`). The reference set plays the role of the
SC09 train split in the paper (FID, AM and NDB compare against it; IS and mIS use only the samples).

Two protocols (official ``test_speech_commands.py``):

* ``'diffusion'`` (non-autoregressive models): every sample is scored.
* ``'autoregressive'``: the samples come in ascending model log-likelihood (or ``log_likelihoods`` gives
  it). They are split in two halves (``val``, ``test``; both keep the likelihood order); on the validation
  half a window ``[lower, upper)`` of likelihood quantiles is chosen by the IS over the grid
  ``lower in {0, .1, .2, .3, .4}``, ``upper in {.6, .65, ..., .95}``; the metrics are computed on the same
  window of the test half. The official loop never updates its best value, so it always selects the last
  grid point (0.4, 0.95): "drop the 40% least and 5% most likely samples". Here the window with the best
  validation IS is selected; ``reproduce_official_bug=True`` selects as the official code does (and also
  slices the test half with ``N // 2`` as it does when ``N`` is odd).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from sashimi.data.labelled import load_clips
from sashimi.hub.format import atomic_write_bytes
from sashimi.metrics.periodicity import periodicity
from sashimi.metrics.scores import am_score, fid, inception_score, modified_inception_score, ndb

__all__ = [
    "LikelihoodWindow",
    "classifier_outputs",
    "evaluate",
    "evaluate_folders",
    "evaluation_table",
    "score_sets",
    "select_likelihood_window",
    "write_report",
]

Classify = Callable[[Tensor], tuple[Tensor, Tensor]]

#: the official threshold grid (``np.arange`` values, including their float rounding)
LOWER_GRID: tuple[float, ...] = tuple(float(v) for v in np.arange(0.0, 0.5, 0.1))
UPPER_GRID: tuple[float, ...] = tuple(float(v) for v in np.arange(0.6, 1.0, 0.05))
MIN_AUTOREGRESSIVE_SAMPLES = 20


@dataclass
class LikelihoodWindow:
    """The autoregressive protocol's selection.

    Attributes:
        lower, upper: selected likelihood-quantile window.
        val_is: the 'sashimi' IS of the validation half's window.
        grid: ``[{"lower", "upper", "IS"}]`` for every grid point, in grid order.
        val_indices, test_indices: the halves (sorted indices into the likelihood-ordered samples).
        test_slice: ``(start, stop)`` of the window within the test half.
        selected: indices (into the likelihood-ordered samples) of the scored samples.
        reproduce_official_bug: whether the official selection was reproduced.
    """

    lower: float
    upper: float
    val_is: float
    grid: list[dict[str, float]]
    val_indices: np.ndarray
    test_indices: np.ndarray
    test_slice: tuple[int, int]
    selected: np.ndarray
    reproduce_official_bug: bool

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (no index arrays)."""
        return {"lower": self.lower, "upper": self.upper, "val_IS": self.val_is, "test_slice": list(self.test_slice),
                "n_scored": int(self.selected.size), "reproduce_official_bug": self.reproduce_official_bug,
                "grid": self.grid}


def select_likelihood_window(
    probs: np.ndarray | Tensor,
    *,
    val_indices: Sequence[int] | np.ndarray | None = None,
    seed: int = 0,
    reproduce_official_bug: bool = False,
    min_selected: int = 0,
    lowers: Sequence[float] = LOWER_GRID,
    uppers: Sequence[float] = UPPER_GRID,
) -> LikelihoodWindow:
    """Choose the likelihood window of the autoregressive protocol from probabilities ``(N, C)``.

    ``probs`` rows must be in ascending log-likelihood order. ``val_indices`` (``N // 2`` distinct indices)
    fixes the validation half; by default it is ``sorted(RandomState(seed).choice(N, N // 2, replace=False))``
    (the official script draws it from a global RNG state left by earlier calls). The rest is the test half.
    Windows that would score fewer than ``min_selected`` test samples are not candidates (:func:`evaluate`
    passes the feature dimension + 1, which FID needs); the official selection ignores this.
    """
    p = probs.detach().cpu().numpy() if isinstance(probs, Tensor) else np.asarray(probs)
    if p.ndim != 2:
        raise ValueError(f"probs must have shape (N, C), got {p.shape}")
    n = p.shape[0]
    if n < MIN_AUTOREGRESSIVE_SAMPLES:
        raise ValueError(f"the autoregressive protocol needs at least {MIN_AUTOREGRESSIVE_SAMPLES} samples, got {n}")
    if not lowers or not uppers:
        raise ValueError("lowers and uppers must be non-empty")
    n_val = n // 2
    if val_indices is None:
        val = np.sort(np.random.RandomState(seed).choice(n, n_val, replace=False))
    else:
        val = np.sort(np.asarray(val_indices, dtype=np.int64))
        if val.shape != (n_val,) or np.unique(val).size != n_val or val.min() < 0 or val.max() >= n:
            raise ValueError(f"val_indices must be {n_val} distinct indices in [0, {n})")
    test = np.setdiff1d(np.arange(n), val)  # sorted complement
    n_test = n // 2 if reproduce_official_bug else test.size
    grid: list[dict[str, float]] = []
    best_key: tuple[float, float] | None = None
    best_value = -np.inf
    for lo in lowers:
        for hi in uppers:
            if not 0.0 <= lo < hi <= 1.0:
                raise ValueError(f"grid windows must satisfy 0 <= lower < upper <= 1, got ({lo}, {hi})")
            window = p[val[int(lo * n_val):int(hi * n_val)]]
            score = inception_score(window, variant="sashimi")
            grid.append({"lower": float(lo), "upper": float(hi), "IS": score})
            if reproduce_official_bug:
                best_key = (float(lo), float(hi))  # official: best_value stays 0, so every key replaces it
            elif score > best_value and int(hi * n_test) - int(lo * n_test) >= min_selected:
                best_key, best_value = (float(lo), float(hi)), score
    if best_key is None:
        raise ValueError(f"no likelihood window scores at least min_selected={min_selected} of the {test.size} "
                         "test-half samples: generate more samples")
    lo, hi = best_key
    start, stop = int(lo * n_test), int(hi * n_test)
    val_is = next(g["IS"] for g in grid if (g["lower"], g["upper"]) == best_key)
    return LikelihoodWindow(lo, hi, val_is, grid, val, test, (start, stop), test[start:stop], reproduce_official_bug)


def classifier_outputs(
    classify: Classify, clips: Tensor, *, batch_size: int = 64, progress: bool = True, desc: str = "classifying"
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``classify`` over ``clips (N, T)`` in batches: ``(features (N, D), probs (N, C))`` as float64 arrays."""
    if not isinstance(clips, Tensor) or clips.ndim != 2 or clips.shape[0] == 0:
        raise ValueError(f"clips must be a non-empty (N, T) tensor, got {getattr(clips, 'shape', type(clips))}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    feats, probs = [], []
    for start in tqdm(range(0, clips.shape[0], batch_size), desc=desc, disable=not progress):
        f, p = classify(clips[start:start + batch_size])  # (b, D), (b, C)
        feats.append(torch.as_tensor(f).detach().to("cpu", torch.float64))
        probs.append(torch.as_tensor(p).detach().to("cpu", torch.float64))
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


def score_sets(
    gen_feats: np.ndarray,
    gen_probs: np.ndarray,
    ref_feats: np.ndarray,
    ref_probs: np.ndarray,
    *,
    with_ndb: bool = True,
    ndb_clusters: int = 50,
    ndb_seed: int = 0,
) -> dict[str, float]:
    """FID, IS ('sashimi' and standard), mIS, AM and (``with_ndb``) NDB of samples against a reference set."""
    out = {
        "FID": fid(gen_feats, ref_feats),
        "IS": inception_score(gen_probs, variant="sashimi"),
        "IS_standard": inception_score(gen_probs, variant="standard"),
        "mIS": modified_inception_score(gen_probs),
        "AM": am_score(ref_probs, gen_probs),
    }
    if with_ndb:
        out["NDB"] = ndb(ref_feats, gen_feats, n_clusters=ndb_clusters, seed=ndb_seed)
    return out


def evaluate(
    classify: Classify,
    samples: Tensor,
    reference: Tensor,
    *,
    protocol: str = "diffusion",
    log_likelihoods: Tensor | np.ndarray | None = None,
    val_indices: Sequence[int] | np.ndarray | None = None,
    seed: int = 0,
    reproduce_official_bug: bool = False,
    nll_bits: float | None = None,
    with_ndb: bool = True,
    ndb_clusters: int = 50,
    batch_size: int = 64,
    progress: bool = True,
    sample_rate: int | None = None,
) -> dict[str, Any]:
    """Score ``samples (N, T)`` against ``reference (M, T)`` with a classifier callable.

    With ``sample_rate``, the median :func:`~sashimi.metrics.periodicity` of all samples and of the reference
    clips is reported too (``metrics["periodicity"]``, ``reference_metrics["periodicity"]``).

    ``protocol``: 'diffusion' (all samples) or 'autoregressive' (samples in ascending log-likelihood, or
    reordered by ``log_likelihoods (N,)``; window selection as in the module docstring, with
    ``val_indices``, ``seed`` and ``reproduce_official_bug``). ``nll_bits`` (the model's test NLL in bits per
    sample, computed by the caller) is recorded as is. Returns a JSON-ready dict: ``protocol``,
    ``n_samples``, ``n_reference``, ``n_scored``, ``metrics`` (FID, IS, IS_standard, mIS, AM, NDB),
    ``reference_metrics`` (IS, IS_standard, mIS, AM of the reference set against itself: the ceiling),
    ``selection`` (autoregressive only) and ``nll_bits`` when given.
    """
    if protocol not in ("diffusion", "autoregressive"):
        raise ValueError(f"protocol must be 'diffusion' or 'autoregressive', got {protocol!r}")
    if log_likelihoods is not None and protocol != "autoregressive":
        raise ValueError("log_likelihoods are only used by the 'autoregressive' protocol")
    gen_feats, gen_probs = classifier_outputs(classify, samples, batch_size=batch_size, progress=progress,
                                              desc="classifying samples")
    ref_feats, ref_probs = classifier_outputs(classify, reference, batch_size=batch_size, progress=progress,
                                              desc="classifying reference")
    if gen_feats.shape[1] != ref_feats.shape[1] or gen_probs.shape[1] != ref_probs.shape[1]:
        raise ValueError("the classifier returned different shapes for samples and reference")
    result: dict[str, Any] = {"protocol": protocol, "n_samples": int(gen_feats.shape[0]),
                              "n_reference": int(ref_feats.shape[0])}
    if protocol == "autoregressive":
        if log_likelihoods is not None:
            ll = np.asarray(torch.as_tensor(log_likelihoods).detach().cpu(), dtype=np.float64)
            if ll.shape != (gen_feats.shape[0],) or not np.isfinite(ll).all():
                raise ValueError(f"log_likelihoods must be {gen_feats.shape[0]} finite values, got shape {ll.shape}")
            order = np.argsort(ll, kind="stable")  # ascending likelihood
            gen_feats, gen_probs = gen_feats[order], gen_probs[order]
        window = select_likelihood_window(gen_probs, val_indices=val_indices, seed=seed,
                                          reproduce_official_bug=reproduce_official_bug,
                                          min_selected=gen_feats.shape[1] + 1)
        gen_feats, gen_probs = gen_feats[window.selected], gen_probs[window.selected]
        result["selection"] = window.summary()
    result["n_scored"] = int(gen_feats.shape[0])
    result["metrics"] = score_sets(gen_feats, gen_probs, ref_feats, ref_probs, with_ndb=with_ndb,
                                   ndb_clusters=ndb_clusters)
    result["reference_metrics"] = {
        "IS": inception_score(ref_probs, variant="sashimi"),
        "IS_standard": inception_score(ref_probs, variant="standard"),
        "mIS": modified_inception_score(ref_probs),
        "AM": am_score(ref_probs, ref_probs),
    }
    if sample_rate is not None:
        result["metrics"]["periodicity"] = float(periodicity(samples, sample_rate).median())
        result["reference_metrics"]["periodicity"] = float(periodicity(reference, sample_rate).median())
    if nll_bits is not None:
        result["nll_bits"] = float(nll_bits)
    return result


def evaluate_folders(
    classify: Classify,
    samples_dir: str | os.PathLike,
    reference_dir: str | os.PathLike,
    *,
    sample_rate: int,
    num_samples: int,
    resample: bool = False,
    progress: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`evaluate` on two folders of clips (natural file order; autoregressive samples named so that
    this order is ascending likelihood, as the official ``..._gen_{i}.wav``). Clips must be at
    ``sample_rate`` (or ``resample=True``) and are padded or trimmed to ``num_samples``. The result also
    records the two folders."""
    samples, _ = load_clips(samples_dir, sample_rate, num_samples, resample=resample, progress=progress)
    reference, _ = load_clips(reference_dir, sample_rate, num_samples, resample=resample, progress=progress)
    result = evaluate(classify, samples, reference, progress=progress, sample_rate=sample_rate, **kwargs)
    result["samples_dir"] = str(samples_dir)
    result["reference_dir"] = str(reference_dir)
    return result


_ROWS = (
    ("FID", "FID ↓", True),
    ("IS", "IS (SaShiMi paper variant) ↑", True),
    ("IS_standard", "IS (standard) ↑", True),
    ("mIS", "mIS ↑", True),
    ("AM", "AM ↓", True),
    ("NDB", "NDB (fraction of 50 bins) ↓", False),
    ("periodicity", "Periodicity (median; pitched ~1, noise ~0.1)", True),
)


def evaluation_table(result: dict[str, Any]) -> str:
    """Markdown table of an :func:`evaluate` result: one row per metric, samples vs the reference set."""
    lines = [(f"Protocol: {result['protocol']}; {result['n_scored']} of {result['n_samples']} samples scored "
             f"against {result['n_reference']} reference clips."), ""]
    if "selection" in result:
        sel = result["selection"]
        how = "official selection (always the last grid point)" if sel["reproduce_official_bug"] else "best val IS"
        lines += [f"Likelihood window: [{sel['lower']:.2f}, {sel['upper']:.2f}) ({how}; val IS {sel['val_IS']:.4f}).",
                  ""]
    lines += ["| metric | samples | reference |", "|---|---|---|"]
    if "nll_bits" in result:
        lines.append(f"| NLL (bits/sample) ↓ | {result['nll_bits']:.4f} | |")
    for key, label, has_ref in _ROWS:
        if key not in result["metrics"]:
            continue
        ref = result["reference_metrics"].get(key) if has_ref else None
        ref_text = "" if ref is None else f"{ref:.4f}"
        lines.append(f"| {label} | {result['metrics'][key]:.4f} | {ref_text} |")
    return "\n".join(lines) + "\n"


def write_report(result: dict[str, Any], out_dir: str | os.PathLike, name: str = "evaluation") -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` (:func:`evaluation_table`) into ``out_dir``, each through a
    temporary renamed into place; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    atomic_write_bytes(json_path, (json.dumps(result, indent=1) + "\n").encode("utf-8"))
    atomic_write_bytes(md_path, evaluation_table(result).encode("utf-8"))
    return json_path, md_path
