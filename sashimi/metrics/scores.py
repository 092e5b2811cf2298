"""Sample-quality scores from a classifier's features and class probabilities: FID, IS, mIS, AM, NDB.

These are the SC09 metrics of the SaShiMi paper (official code: ``state-spaces/s4``,
``models/sashimi/metrics.py``). Every score runs in float64 on numpy arrays (tensors are accepted and
converted). Inputs are refused when they are not finite, have the wrong rank, or probabilities that are
negative or do not sum to 1 per row (to 1e-3; rows are then renormalised, as scipy's ``entropy`` does).

Differences from the official functions, all documented in ``docs/evaluation.md``:

* :func:`fid` always returns a real float: the trace of the matrix square root is computed from the
  eigenvalues of the symmetric PSD matrix ``S_ref^1/2 S_gen S_ref^1/2`` (same trace as the official
  ``sqrtm(S_ref S_gen)``), with rounding-level negative eigenvalues dropped after a check; sets with no more
  samples than feature dimensions (singular covariances, where the official code returns a complex number)
  are an error.
* :func:`inception_score` has two variants. ``'sashimi'`` reproduces the official split-half computation
  exactly, including its quirk (scipy's ``entropy`` reduces over axis 0, so the KL runs down each class column
  of the first half and the second half has no effect); the paper's numbers use it. ``'standard'`` is the
  textbook ``exp(E_x KL(p(y|x) || p(y)))`` over all samples.
* :func:`ndb` pins scikit-learn's KMeans ``n_init=10`` (the paper-era default; newer scikit-learn runs once)
  and counts clusters by id, so an empty reference cluster cannot shift the bins.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "NDBResult",
    "am_score",
    "fid",
    "inception_score",
    "modified_inception_score",
    "ndb",
    "ndb_from_labels",
]

ArrayLike = np.ndarray | torch.Tensor

_PROB_SUM_TOL = 1e-3  # rows of float32 softmax outputs sum to 1 within ~1e-6
_EIG_NEG_TOL = 1e-8  # negative eigenvalues of a PSD product smaller than this (relative) are rounding


def _as_float64(x: ArrayLike, name: str, ndim: int = 2) -> np.ndarray:
    """``x`` as a finite float64 numpy array of rank ``ndim``; clear errors otherwise."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or torch.Tensor, got {type(x).__name__}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"{name} must be real-valued, got dtype {x.dtype}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} must contain only finite values (found NaN or inf)")
    return x


def _as_probs(p: ArrayLike, name: str) -> np.ndarray:
    """Class probabilities ``(N, C)``: non-negative rows summing to 1 (within 1e-3), renormalised exactly."""
    p = _as_float64(p, name)
    if p.shape[1] < 2:
        raise ValueError(f"{name} must have at least 2 classes, got shape {p.shape}")
    if (p < 0).any():
        raise ValueError(f"{name} must be non-negative probabilities")
    sums = p.sum(axis=1, keepdims=True)  # (N, 1)
    if np.abs(sums - 1.0).max() > _PROB_SUM_TOL:
        raise ValueError(f"each row of {name} must sum to 1 (softmax outputs), found row sums up to "
                         f"{float(np.abs(sums - 1.0).max()):.3g} away from 1")
    return p / sums


def _rel_entr(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Elementwise ``p log(p / q)`` with ``0 log 0 = 0`` and ``+inf`` where ``p > 0 = q``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = p * np.log(p / q)
    out = np.where(p > 0, out, 0.0)
    return np.where((p > 0) & (q == 0), np.inf, out)


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy (nats) of the distributions along ``axis``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=axis)


def fid(gen_feats: ArrayLike, ref_feats: ArrayLike) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N_gen, d)`` and ``(N_ref, d)``.

    ``||mu_g - mu_r||^2 + Tr(S_g + S_r - 2 (S_r S_g)^1/2)`` with unbiased covariances (``np.cov``).
    Symmetric in its arguments; a set against itself gives 0 up to rounding (about 1e-13). Each set needs
    more samples than feature dimensions, else its covariance is singular and the score meaningless.
    """
    gen = _as_float64(gen_feats, "gen_feats")
    ref = _as_float64(ref_feats, "ref_feats")
    if gen.shape[1] != ref.shape[1]:
        raise ValueError(f"gen_feats and ref_feats must have the same feature dimension, got {gen.shape[1]} "
                         f"and {ref.shape[1]}")
    d = gen.shape[1]
    for name, x in (("gen_feats", gen), ("ref_feats", ref)):
        if x.shape[0] <= d:
            raise ValueError(f"FID needs more samples than feature dimensions in {name}: got {x.shape[0]} samples "
                             f"of dimension {d} (the covariance would be singular); use at least {d + 1}")
    mean_term = float(np.sum((gen.mean(axis=0) - ref.mean(axis=0)) ** 2))
    cov_g = np.cov(gen, rowvar=False)  # (d, d)
    cov_r = np.cov(ref, rowvar=False)  # (d, d)
    # Tr sqrt(S_r S_g) = Tr sqrt(S_r^1/2 S_g S_r^1/2): the eigenvalues agree and the latter is symmetric PSD.
    evals_r, evecs_r = np.linalg.eigh(cov_r)
    sqrt_r = (evecs_r * np.sqrt(np.clip(evals_r, 0.0, None))) @ evecs_r.T  # (d, d)
    inner = sqrt_r @ cov_g @ sqrt_r
    evals = np.linalg.eigvalsh((inner + inner.T) / 2)  # (d,)
    scale = max(float(evals.max()), 1e-300)
    if evals.min() < -_EIG_NEG_TOL * scale:
        raise ValueError(f"covariance product has a negative eigenvalue {evals.min():.3g} (largest {scale:.3g}): "
                         "the features are numerically degenerate")
    trace_sqrt = float(np.sum(np.sqrt(np.clip(evals, 0.0, None))))
    return mean_term + float(np.trace(cov_g) + np.trace(cov_r)) - 2.0 * trace_sqrt


def inception_score(probs: ArrayLike, variant: str = "sashimi", seed: int = 0) -> float:
    """Inception score of class probabilities ``(N, C)``; higher means confident and diverse predictions.

    ``variant='sashimi'`` (the paper's numbers): rows shuffled by ``RandomState(seed).permutation(N)``, first
    ``M = N // 2`` kept; each class column normalised over those rows, ``p~_ic = P[i,c] / sum_j P[j,c]``, and
    ``IS = exp(mean_c KL(p~_.c || uniform_M)) = M exp(-mean_c H(p~_.c))``, in ``[1, M]``.
    ``variant='standard'``: ``exp(mean_i KL(p_i || mean_j p_j))`` over all rows, in ``[1, C]``
    (uniform predictions give 1, confident class-balanced predictions give ``C``).
    """
    p = _as_probs(probs, "probs")
    n = p.shape[0]
    if variant == "standard":
        marginal = p.mean(axis=0, keepdims=True)  # (1, C)
        return float(np.exp(_rel_entr(p, marginal).sum(axis=1).mean()))
    if variant != "sashimi":
        raise ValueError(f"variant must be 'sashimi' or 'standard', got {variant!r}")
    if n < 2:
        raise ValueError(f"the 'sashimi' inception score needs at least 2 rows of probs, got {n}")
    half = p[np.random.RandomState(seed).permutation(n)][: n // 2]  # (M, C)
    m = half.shape[0]
    col_sums = half.sum(axis=0)  # (C,)
    if (col_sums == 0).any():
        raise ValueError("the 'sashimi' inception score is undefined when a class has probability 0 on every "
                         f"sample of the first half (classes {np.flatnonzero(col_sums == 0).tolist()})")
    cols = half / col_sums  # (M, C), each column a distribution over the M rows
    kl = _rel_entr(cols, np.full_like(cols, 1.0 / m)).sum(axis=0)  # (C,)
    return float(np.exp(kl.mean()))


def modified_inception_score(probs: ArrayLike, n_pairs: int = 10000, seed: int = 0) -> float:
    """Modified inception score ``exp(E_{i,j} KL(p_i || p_j))`` of probabilities ``(N, C)``.

    Monte Carlo over ``n_pairs`` index pairs drawn with replacement as ``RandomState(seed).randint(0, N,
    (n_pairs, 2))`` (identical to the official loop of ``np.random.choice(N, 2)`` after ``np.random.seed(0)``).
    An exact zero probability in a row can make a pair's KL, and the score, infinite (as officially).
    """
    p = _as_probs(probs, "probs")
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, (int, np.integer)) or n_pairs <= 0:
        raise ValueError(f"n_pairs must be a positive int, got {n_pairs!r}")
    idx = np.random.RandomState(seed).randint(0, p.shape[0], size=(int(n_pairs), 2))  # (n_pairs, 2)
    kl = _rel_entr(p[idx[:, 0]], p[idx[:, 1]]).sum(axis=1)  # (n_pairs,)
    return float(np.exp(kl.mean()))


def am_score(ref_probs: ArrayLike, gen_probs: ArrayLike) -> float:
    """AM score ``KL(mean ref_probs || mean gen_probs) + mean_j H(gen_probs[j])`` (nats); lower is better.

    ``ref_probs (N_ref, C)`` is the reference set (the SC09 train split in the paper), ``gen_probs (N_gen, C)``
    the samples.
    """
    ref = _as_probs(ref_probs, "ref_probs")
    gen = _as_probs(gen_probs, "gen_probs")
    if ref.shape[1] != gen.shape[1]:
        raise ValueError(f"ref_probs and gen_probs must have the same number of classes, got {ref.shape[1]} "
                         f"and {gen.shape[1]}")
    mean_ref = ref.mean(axis=0)
    mean_gen = gen.mean(axis=0)
    mean_ref, mean_gen = mean_ref / mean_ref.sum(), mean_gen / mean_gen.sum()
    return float(_rel_entr(mean_ref, mean_gen).sum() + _entropy(gen, axis=1).mean())


class NDBResult(NamedTuple):
    """Per-bin outcome of the NDB test (``K`` bins)."""

    value: float  # fraction of statistically different bins, in [0, 1]
    different: np.ndarray  # (K,) bool
    z: np.ndarray  # (K,) two-proportion z statistics (0 where both proportions are 0)
    p_values: np.ndarray  # (K,) two-tailed p-values
    prop_ref: np.ndarray  # (K,) share of reference samples per bin
    prop_gen: np.ndarray  # (K,) share of generated samples per bin


def ndb_from_labels(ref_labels: ArrayLike, gen_labels: ArrayLike, n_bins: int, alpha: float = 0.05) -> NDBResult:
    """Number of statistically different bins from bin assignments ``(N_ref,)`` and ``(N_gen,)`` in ``[0, n_bins)``.

    Per bin, the pooled two-proportion z-test: ``p = (p1 n1 + p2 n2) / (n1 + n2)``,
    ``z = (p1 - p2) / sqrt(p (1 - p) (1 / n1 + 1 / n2))``, ``p-value = 2 Phi(-|z|)``; a bin differs when the
    p-value is below ``alpha``. The score is the fraction of differing bins (the official NDB / K).
    """
    ref = np.asarray(ref_labels.detach().cpu() if isinstance(ref_labels, torch.Tensor) else ref_labels)
    gen = np.asarray(gen_labels.detach().cpu() if isinstance(gen_labels, torch.Tensor) else gen_labels)
    for name, lab in (("ref_labels", ref), ("gen_labels", gen)):
        if lab.ndim != 1 or lab.size == 0 or not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"{name} must be a non-empty 1-D integer array, got shape {lab.shape}, dtype {lab.dtype}")
        if lab.min() < 0 or lab.max() >= n_bins:
            raise ValueError(f"{name} must lie in [0, {n_bins}), got values in [{lab.min()}, {lab.max()}]")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    n1, n2 = ref.size, gen.size
    p1 = np.bincount(ref, minlength=n_bins) / n1  # (K,)
    p2 = np.bincount(gen, minlength=n_bins) / n2  # (K,)
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (p1 - p2) / se, 0.0)
    p_values = np.array([math.erfc(abs(v) / math.sqrt(2.0)) for v in z])  # 2 Phi(-|z|)
    different = p_values < alpha
    return NDBResult(float(np.count_nonzero(different)) / n_bins, different, z, p_values, p1, p2)


def ndb(
    ref_feats: ArrayLike,
    gen_feats: ArrayLike,
    n_clusters: int = 50,
    seed: int = 0,
    n_init: int = 10,
    alpha: float = 0.05,
) -> float:
    """NDB: K-means (``n_clusters``, fitted on ``ref_feats (N_ref, d)``) bins, fraction that differ for ``gen_feats``.

    Needs scikit-learn (``pip install sashimi-audio[metrics]``). ``KMeans(n_clusters, random_state=seed,
    n_init=n_init)`` with ``n_init=10``, the default of scikit-learn <= 1.3 that the paper era used; both sets
    are assigned with ``predict``. See :func:`ndb_from_labels` for the test. Lower is better.
    """
    try:
        from sklearn.cluster import KMeans
    except ImportError as exc:  # optional dependency
        raise ImportError("ndb needs scikit-learn: pip install 'sashimi-audio[metrics]'") from exc
    ref = _as_float64(ref_feats, "ref_feats")
    gen = _as_float64(gen_feats, "gen_feats")
    if ref.shape[1] != gen.shape[1]:
        raise ValueError(f"ref_feats and gen_feats must have the same feature dimension, got {ref.shape[1]} "
                         f"and {gen.shape[1]}")
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or n_clusters < 2:
        raise ValueError(f"n_clusters must be an int >= 2, got {n_clusters!r}")
    if ref.shape[0] < n_clusters:
        raise ValueError(f"ndb needs at least n_clusters={n_clusters} reference samples, got {ref.shape[0]}")
    kmeans = KMeans(n_clusters=int(n_clusters), random_state=seed, n_init=n_init).fit(ref)
    return ndb_from_labels(kmeans.predict(ref), kmeans.predict(gen), int(n_clusters), alpha).value
