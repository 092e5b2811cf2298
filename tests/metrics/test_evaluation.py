"""sashimi.metrics.evaluation: the protocols against the official run (golden data), folders end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sashimi.audio import save_audio
from sashimi.metrics import evaluate, evaluate_folders, evaluation_table, select_likelihood_window, write_report
from sashimi.models.classifier import SC09Classifier, SC09ClassifierConfig

RTOL = 1e-9


@pytest.fixture(scope="module")
def case_a(reference_dir):
    path = reference_dir / "metrics"
    if not path.is_dir():
        pytest.skip(f"metrics golden data not found at {path}")
    arrays = dict(np.load(path / "metrics_A.npz"))
    meta_t = json.loads((path / "metrics_T.json").read_text())
    indices = dict(np.load(path / "metrics_T_indices.npz"))
    meta_a = json.loads((path / "metrics_A.json").read_text())
    return arrays, meta_a, meta_t, indices


def _lookup_classifier(feats: np.ndarray, probs: np.ndarray):
    """A classifier callable over 'clips' that carry their row index: returns the saved outputs of that row."""
    f, p = torch.from_numpy(feats), torch.from_numpy(probs)

    def classify(audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = audio[:, 0].long()
        return f[idx], p[idx]

    return classify


def _index_clips(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float64)[:, None].repeat(1, 3)  # (n, 3)


def test_grid_and_official_selection_match_the_official_run(case_a):
    arrays, _, meta_t, indices = case_a
    window = select_likelihood_window(arrays["gen_probs"], val_indices=indices["val_indices"],
                                      reproduce_official_bug=True)
    np.testing.assert_array_equal(window.test_indices, indices["test_indices"])
    assert len(window.grid) == len(meta_t["is_grid_on_val"]) == 40
    for ours, ref in zip(window.grid, meta_t["is_grid_on_val"]):
        assert (ours["lower"], ours["upper"]) == (ref["lower"], ref["upper"])
        assert ours["IS"] == pytest.approx(ref["IS"], rel=RTOL)
    assert [window.lower, window.upper] == meta_t["best_thresholds_is_selected_by_code"]
    assert window.val_is == pytest.approx(meta_t["selected_IS_on_val"], rel=RTOL)
    assert list(window.test_slice) == meta_t["test_half_slice"]


def test_fixed_selection_takes_the_best_validation_window(case_a):
    arrays, _, meta_t, indices = case_a
    window = select_likelihood_window(arrays["gen_probs"], val_indices=indices["val_indices"])
    assert [window.lower, window.upper] == meta_t["true_argmax_thresholds"]
    # windows too small for FID are not candidates: (0.3, 0.65) scores 175 test samples
    narrower = select_likelihood_window(arrays["gen_probs"], val_indices=indices["val_indices"], min_selected=176)
    assert narrower.selected.size >= 176 and narrower.val_is < window.val_is
    with pytest.raises(ValueError, match="min_selected"):
        select_likelihood_window(arrays["gen_probs"], val_indices=indices["val_indices"], min_selected=500)
    assert window.val_is == pytest.approx(meta_t["true_argmax_IS"], rel=RTOL)
    assert window.val_is == max(g["IS"] for g in window.grid)
    start, stop = int(window.lower * 500), int(window.upper * 500)
    np.testing.assert_array_equal(window.selected, indices["test_indices"][start:stop])


def test_evaluate_autoregressive_reproduces_official_scores(case_a):
    arrays, _, meta_t, indices = case_a
    classify = _lookup_classifier(np.concatenate([arrays["gen_feats"], arrays["train_feats"]]),
                                  np.concatenate([arrays["gen_probs"], arrays["train_probs"]]))
    samples, reference = _index_clips(1000), _index_clips(3000)[1000:]
    # likelihoods given explicitly, samples shuffled: evaluate must restore the ascending order
    perm = np.random.default_rng(0).permutation(1000)
    result = evaluate(classify, samples[perm], reference, protocol="autoregressive",
                      log_likelihoods=torch.from_numpy(perm.astype(np.float64)), val_indices=indices["val_indices"],
                      reproduce_official_bug=True, with_ndb=False, progress=False)
    ref = meta_t["values_on_selected_test_half"]
    assert result["n_scored"] == meta_t["n_selected_for_metrics"] == 275
    for key in ("FID", "IS", "mIS", "AM"):
        assert result["metrics"][key] == pytest.approx(ref[key], rel=RTOL), key
    assert result["selection"]["test_slice"] == [200, 475]


def test_evaluate_diffusion_reproduces_official_scores(case_a):
    arrays, meta_a, _, _ = case_a
    classify = _lookup_classifier(np.concatenate([arrays["gen_feats"], arrays["train_feats"]]),
                                  np.concatenate([arrays["gen_probs"], arrays["train_probs"]]))
    result = evaluate(classify, _index_clips(1000), _index_clips(3000)[1000:], with_ndb=False, progress=False,
                      nll_bits=2.5)
    for key in ("FID", "IS", "mIS", "AM"):
        assert result["metrics"][key] == pytest.approx(meta_a["values"][key], rel=RTOL), key
    assert result["metrics"]["IS_standard"] == pytest.approx(
        meta_a["diagnostics_not_official"]["is_standard_1split"], rel=RTOL)
    table = evaluation_table(result)
    assert "| FID ↓ | 36.1182 |" in table and "NLL (bits/sample) ↓ | 2.5000" in table


def _tiny_classifier() -> SC09Classifier:
    torch.manual_seed(0)
    cfg = SC09ClassifierConfig(n_classes=4, labels=None, depth=11, cardinality=2, base_width=4, widen_factor=1,
                               base_channels=4, stem_channels=4, num_samples=4000)
    return SC09Classifier(cfg)  # feature dimension 16


def _write_tones(folder, n, sr=16000, length=4000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(length) / sr
    for i in range(n):
        x = 0.5 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + 0.01 * rng.standard_normal(length)
        save_audio(folder / f"gen_{i + 1}.wav", x.astype(np.float32), sr)


def test_evaluate_folders_end_to_end(tmp_path):
    pytest.importorskip("sklearn", reason="NDB needs scikit-learn (metrics extra)")
    _write_tones(tmp_path / "samples", 80, seed=1)
    _write_tones(tmp_path / "reference", 60, seed=2)
    model = _tiny_classifier()
    for protocol in ("diffusion", "autoregressive"):
        result = evaluate_folders(model.classify, tmp_path / "samples", tmp_path / "reference", sample_rate=16000,
                                  num_samples=4000, protocol=protocol, ndb_clusters=5, progress=False)
        json_path, md_path = write_report(result, tmp_path / "out", name=protocol)
        saved = json.loads(json_path.read_text())
        assert saved["metrics"].keys() == {"FID", "IS", "IS_standard", "mIS", "AM", "NDB", "periodicity"}
        assert all(np.isfinite(v) for v in saved["metrics"].values())
        assert saved["metrics"]["periodicity"] > 0.9 and saved["reference_metrics"]["periodicity"] > 0.9  # tones
        assert saved["n_reference"] == 60 and md_path.read_text() == evaluation_table(result)
    assert 17 <= saved["n_scored"] < 40 and "selection" in saved  # a window of the test half, > feature dim


def test_evaluate_folders_bad_input(tmp_path):
    model = _tiny_classifier()
    (tmp_path / "empty").mkdir()
    _write_tones(tmp_path / "ref", 30)
    with pytest.raises(ValueError, match="no audio files"):
        evaluate_folders(model.classify, tmp_path / "empty", tmp_path / "ref", sample_rate=16000, num_samples=4000,
                         progress=False)
    _write_tones(tmp_path / "other_rate", 30, sr=8000)
    with pytest.raises(ValueError, match="8000 Hz but 16000 Hz"):
        evaluate_folders(model.classify, tmp_path / "other_rate", tmp_path / "ref", sample_rate=16000,
                         num_samples=4000, progress=False)
    _write_tones(tmp_path / "few", 10)
    with pytest.raises(ValueError, match="more samples than feature dimensions"):
        evaluate_folders(model.classify, tmp_path / "few", tmp_path / "ref", sample_rate=16000, num_samples=4000,
                         with_ndb=False, progress=False)
    with pytest.raises(ValueError, match="protocol"):
        evaluate(model.classify, torch.zeros(30, 4000), torch.zeros(30, 4000), protocol="masked")


def test_cli_evaluate_end_to_end(tmp_path, capsys):
    """``sashimi evaluate`` with a saved classifier and an autoregressive model: the JSON and markdown
    reports (NLL of the reference clips included); a classifier folder of another family is refused."""
    from sashimi.cli import main
    from sashimi.models import SaShiMiLM, SaShiMiLMConfig

    pytest.importorskip("sklearn", reason="NDB needs scikit-learn (metrics extra)")
    _write_tones(tmp_path / "samples", 80, seed=1)
    _write_tones(tmp_path / "reference", 60, seed=2)
    _tiny_classifier().save_pretrained(tmp_path / "clf")
    torch.manual_seed(0)
    SaShiMiLM(SaShiMiLMConfig(d_model=8, n_layers=1, pool=(4,), d_state=8)).save_pretrained(tmp_path / "lm")
    args = ["evaluate", "--classifier", str(tmp_path / "clf"), "--samples", str(tmp_path / "samples"),
            "--reference", str(tmp_path / "reference"), "--ndb-clusters", "5", "--quiet"]
    assert main([*args, "--protocol", "autoregressive", "--model", str(tmp_path / "lm"),
                 "--out", str(tmp_path / "out")]) == 0
    saved = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert saved["protocol"] == "autoregressive" and np.isfinite(saved["nll_bits"]) and "selection" in saved
    assert "NLL (bits/sample)" in (tmp_path / "out" / "evaluation.md").read_text()
    with pytest.raises(SystemExit, match="not a classifier"):
        main(["evaluate", "--classifier", str(tmp_path / "lm"), "--samples", str(tmp_path / "samples"),
              "--reference", str(tmp_path / "reference")])
    with pytest.raises(SystemExit, match="needs --model"):
        main([*args, "--protocol", "autoregressive"])
    capsys.readouterr()


def test_cli_evaluate_checks_the_output_folder_first(tmp_path, monkeypatch):
    """An output path that cannot be a folder is refused before anything is classified."""
    from sashimi.cli import main

    _tiny_classifier().save_pretrained(tmp_path / "clf")
    monkeypatch.setattr(SC09Classifier, "classify", lambda *a, **k: pytest.fail("classified before the check"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit, match="not a folder"):
        main(["evaluate", "--classifier", str(tmp_path / "clf"), "--samples", str(tmp_path),
              "--reference", str(tmp_path), "--out", str(tmp_path / "file"), "--quiet"])
