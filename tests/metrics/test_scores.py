"""sashimi.metrics scores against the official SaShiMi metric values (golden data, float64) and math identities."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sashimi.metrics import (
    am_score,
    fid,
    inception_score,
    modified_inception_score,
    ndb,
    ndb_from_labels,
)

RTOL = 1e-9  # the reference README's tolerance for FID, IS, mIS, AM in float64


@pytest.fixture(scope="module")
def metrics_dir(reference_dir):
    path = reference_dir / "metrics"
    if not path.is_dir():
        pytest.skip(f"metrics golden data not found at {path}")
    return path


def _case(metrics_dir, name, legacy=False):
    arrays = dict(np.load(metrics_dir / f"metrics_{name}.npz"))
    folder = metrics_dir / "legacy" if legacy else metrics_dir
    meta = json.loads((folder / f"metrics_{name}.json").read_text())
    return arrays, meta


@pytest.mark.parametrize("case", ["A", "B"])
def test_official_values(metrics_dir, case):
    a, meta = _case(metrics_dir, case)
    ref = meta["values"]
    assert fid(a["gen_feats"], a["train_feats"]) == pytest.approx(ref["FID"], rel=RTOL)
    assert inception_score(a["gen_probs"], variant="sashimi") == pytest.approx(ref["IS"], rel=RTOL)
    assert modified_inception_score(a["gen_probs"]) == pytest.approx(ref["mIS"], rel=RTOL)
    assert am_score(a["train_probs"], a["gen_probs"]) == pytest.approx(ref["AM"], rel=RTOL)
    # the textbook 1-split IS recorded next to the official one (a different number)
    diag = meta["diagnostics_not_official"]
    assert inception_score(a["gen_probs"], variant="standard") == pytest.approx(diag["is_standard_1split"], rel=RTOL)
    assert abs(diag["is_standard_1split"] - ref["IS"]) > 1e-3


def test_official_values_train_self(metrics_dir):
    a, _ = _case(metrics_dir, "A")
    ref = json.loads((metrics_dir / "metrics_train_self.json").read_text())
    assert inception_score(a["train_probs"]) == pytest.approx(ref["IS(train)"], rel=RTOL)
    assert modified_inception_score(a["train_probs"]) == pytest.approx(ref["mIS(train)"], rel=RTOL)
    assert am_score(a["train_probs"], a["train_probs"]) == pytest.approx(ref["AM(train,train)"], rel=RTOL)
    value = fid(a["train_feats"], a["train_feats"])
    assert -1e-9 <= value < 1e-9


def test_float32_inputs_close_to_official_float32(metrics_dir):
    """torch float32 outputs go in; the scores run in float64 and stay within float32 noise of the official."""
    a, meta = _case(metrics_dir, "A")
    ref = meta["values_float32_inputs"]
    probs32 = torch.from_numpy(a["gen_probs"]).float()
    assert inception_score(probs32) == pytest.approx(ref["IS"], rel=1e-5)
    assert modified_inception_score(probs32) == pytest.approx(ref["mIS"], rel=1e-5)
    assert fid(torch.from_numpy(a["gen_feats"]).float(), a["train_feats"]) == pytest.approx(ref["FID"], rel=1e-5)


@pytest.mark.parametrize("case", ["A", "B"])
def test_ndb_z_test_exact_given_saved_labels(metrics_dir, case):
    km = np.load(metrics_dir / f"metrics_{case}_ndb_kmeans.npz")
    _, meta = _case(metrics_dir, case)
    res = ndb_from_labels(km["labels_data"].astype(np.int64), km["labels_gen"].astype(np.int64), 50)
    np.testing.assert_array_equal(res.different, km["different_bins"])
    np.testing.assert_array_equal(res.prop_ref, km["prop_data"])
    np.testing.assert_array_equal(res.prop_gen, km["prop_gen"])
    np.testing.assert_allclose(res.z, km["z"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(res.p_values, km["p_values"], rtol=1e-9, atol=1e-300)
    assert res.value == meta["values"]["NDB"]


@pytest.mark.parametrize("case", ["A", "B"])
def test_ndb_legacy_values_with_n_init_10(metrics_dir, case):
    pytest.importorskip("sklearn", reason="ndb needs scikit-learn (metrics extra)")
    a, legacy = _case(metrics_dir, case, legacy=True)
    assert ndb(a["train_feats"], a["gen_feats"], n_clusters=50, seed=0) == legacy["values"]["NDB"]


def test_ndb_labels_match_kmeans_check(metrics_dir):
    """With n_init pinned to 10, the reference set's bins are the ones scikit-learn 1.3 (paper-era default) gave."""
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    a, _ = _case(metrics_dir, "A")
    expected = np.load(metrics_dir / "kmeans_check" / "legacy" / "labels_n_init10_lloyd.npy")
    km = sklearn_cluster.KMeans(n_clusters=50, random_state=0, n_init=10).fit(a["train_feats"])
    np.testing.assert_array_equal(km.predict(a["train_feats"]), expected)


def test_standard_inception_score_known_cases():
    assert inception_score(np.full((40, 10), 0.1), variant="standard") == pytest.approx(1.0, abs=1e-12)
    one_hot = np.eye(10)[np.arange(50) % 10]
    assert inception_score(one_hot, variant="standard") == pytest.approx(10.0, rel=1e-12)
    # the official variant is 1 for identical rows and M * exp(-H) in general (closed form, independent check)
    assert inception_score(np.full((40, 10), 0.1)) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(10), size=31)
    half = p[np.random.RandomState(0).permutation(31)][:15]
    cols = half / half.sum(0)
    expected = 15 * np.exp(-np.mean(-(cols * np.log(cols)).sum(0)))
    assert inception_score(p) == pytest.approx(expected, rel=1e-12)


def test_modified_inception_score_and_am_identities():
    one_hot = np.eye(4)[[0, 1, 2, 3] * 5]
    assert modified_inception_score(np.full((7, 4), 0.25)) == pytest.approx(1.0, abs=1e-12)
    assert modified_inception_score(one_hot) == np.inf  # KL to a different one-hot row is infinite, as officially
    # AM of a set against itself is its mean entropy; of confident balanced predictions against themselves, 0
    p = np.random.default_rng(1).dirichlet(np.ones(5), size=20)
    h = -(p * np.log(p)).sum(1).mean()
    assert am_score(p, p) == pytest.approx(h, rel=1e-12)
    assert am_score(one_hot, one_hot) == pytest.approx(0.0, abs=1e-12)


def test_fid_gaussian_closed_form_and_symmetry():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((400, 6))
    y = rng.standard_normal((300, 6)) * 2.0 + 1.0
    mx, my = x.mean(0), y.mean(0)
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    # float64 reference by a different route: sqrtm of the non-symmetric product via its eigendecomposition
    w, v = np.linalg.eig(cx @ cy)
    covmean = (v * np.sqrt(w.astype(complex))) @ np.linalg.inv(v)
    expected = np.sum((mx - my) ** 2) + np.trace(cx + cy - 2 * covmean.real)
    assert fid(x, y) == pytest.approx(expected, rel=1e-10)
    assert fid(y, x) == pytest.approx(fid(x, y), rel=1e-10)


def test_fid_refuses_few_samples_and_non_finite():
    rng = np.random.default_rng(4)
    ref = rng.standard_normal((200, 64))
    with pytest.raises(ValueError, match="more samples than feature dimensions"):
        fid(rng.standard_normal((40, 64)), ref)
    bad = rng.standard_normal((100, 8))
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        fid(bad, rng.standard_normal((100, 8)))
    with pytest.raises(ValueError, match="feature dimension"):
        fid(rng.standard_normal((100, 8)), rng.standard_normal((100, 9)))


def test_probability_inputs_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        inception_score(np.ones((10, 4)))
    with pytest.raises(ValueError, match="finite"):
        modified_inception_score(np.array([[0.5, np.inf], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="variant"):
        inception_score(np.full((10, 4), 0.25), variant="textbook")
    with pytest.raises(ValueError, match="non-negative"):
        am_score(np.array([[1.5, -0.5]] * 3), np.full((3, 2), 0.5))


def test_fid_invariant_under_shared_rotation_and_shift():
    """FID depends only on the two Gaussians: a common orthogonal map and shift of both sets leaves it unchanged."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 10)) @ rng.standard_normal((10, 10))
    y = rng.standard_normal((250, 10)) * 1.5 + 0.3
    q, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    shift = rng.standard_normal(10) * 5
    assert fid(x @ q + shift, y @ q + shift) == pytest.approx(fid(x, y), rel=1e-9)
    # and it grows by exactly |delta|^2 when one set alone is shifted by delta
    delta = np.full(10, 0.7)
    assert fid(x + delta, x) == pytest.approx(float(delta @ delta), rel=1e-9)


def test_ndb_counts_bins_by_id_when_a_reference_bin_is_empty():
    """The official code counts bins positionally, which shifts them when a reference cluster is empty."""
    ref = np.array([0, 0, 1, 1, 3, 3] * 50)  # bin 2 empty in the reference
    gen = np.array([0, 1, 2, 3] * 75)
    res = ndb_from_labels(ref, gen, 4)
    np.testing.assert_array_equal(res.prop_ref, [1 / 3, 1 / 3, 0.0, 1 / 3])
    np.testing.assert_array_equal(res.prop_gen, [0.25] * 4)
    assert res.different[2] and res.z[2] < 0
    # identical assignments: no bin differs, z = 0 where both shares are 0
    same = ndb_from_labels(ref, ref, 4)
    assert same.value == 0.0 and same.z[2] == 0.0 and same.p_values[2] == 1.0
