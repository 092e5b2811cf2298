"""The SC09 classifier: official architecture size, input pipeline vs librosa, features, training on tones."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import sashimi
from sashimi.audio import save_audio
from sashimi.data.labelled import LabelledAudioFolder
from sashimi.models import SaShiMiLM, SaShiMiLMConfig
from sashimi.models.classifier import (
    SC09Classifier,
    SC09ClassifierConfig,
    augment_waveforms,
    classifier_accuracy,
    classifier_losses,
    train_classifier,
    train_classifier_on_folders,
)


def test_official_parameter_count_and_widths():
    """34,425,546 parameters: the count of the official CifarResNeXt(nlabels=10, in_channels=1) definition."""
    cfg = SC09ClassifierConfig()
    model = SC09Classifier(cfg)
    assert model.num_parameters() == 34_425_546
    assert [cfg.bottleneck_width(w) for w in cfg.stage_widths] == [512, 1024, 2048]
    assert cfg.feature_dim == 1024 and model.classifier.in_features == 1024
    assert sum(1 for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.bias is not None) == 0
    logits = model(torch.randn(2, 1, 32, 32))
    assert logits.shape == (2, 10)


def test_classify_features_are_the_last_linear_input():
    torch.manual_seed(0)
    model = SC09Classifier(SC09ClassifierConfig.small())
    captured = []
    model.classifier.register_forward_hook(lambda mod, inp, out: captured.append((inp[0], out)))
    audio = torch.randn(3, 16000) * 0.1
    feats, probs = model.classify(audio)
    assert feats.shape == (3, model.config.feature_dim) and probs.shape == (3, 10)
    torch.testing.assert_close(feats, captured[-1][0], rtol=0, atol=0)
    torch.testing.assert_close(probs, torch.softmax(captured[-1][1], dim=-1), rtol=0, atol=0)
    assert (feats >= 0).all()  # post-ReLU pooled activations
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))


def test_preprocess_matches_float64_librosa_pipeline():
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(n) * 0.1 for n in (15000, 16000, 17000)]
    model = SC09Classifier(SC09ClassifierConfig.small())
    ours = torch.cat([model.preprocess(torch.from_numpy(c)) for c in clips])  # (3, 1, 32, 32)
    assert ours.dtype == torch.float64 and ours.shape == (3, 1, 32, 32)
    basis = librosa.filters.mel(sr=16000, n_fft=2048, n_mels=32, dtype=np.float64)
    for i, y in enumerate(clips):
        y = librosa.util.fix_length(y, size=16000)
        power = np.abs(librosa.stft(y, n_fft=2048, hop_length=512, center=True, pad_mode="reflect")) ** 2
        ref = librosa.power_to_db(basis @ power, ref=np.max, top_db=80.0)
        np.testing.assert_allclose(ours[i, 0].numpy(), ref, rtol=1e-9, atol=1e-8)


def test_config_round_trip_and_validation():
    cfg = SC09ClassifierConfig.small(n_classes=3, labels=["a", "b", "c"], pad_mode="constant")
    data = cfg.to_dict()
    assert data["model_type"] == "sc09-classifier" and data["config_version"] == 1
    assert "Classes: a, b, c" in SC09Classifier(cfg).card_description()
    assert SC09ClassifierConfig.from_dict(data) == cfg
    with pytest.raises(ValueError, match="unknown"):
        SC09ClassifierConfig.from_dict({**data, "dropout": 0.1})
    with pytest.raises(ValueError, match="model type"):
        SC09ClassifierConfig.from_dict({**data, "model_type": "sashimi-lm"})
    with pytest.raises(ValueError, match="depth"):
        SC09ClassifierConfig(depth=28)
    with pytest.raises(ValueError, match="labels"):
        SC09ClassifierConfig(n_classes=3)  # the default labels name 10 digits
    with pytest.raises(TypeError, match="cardinality"):
        SC09ClassifierConfig(cardinality=8.0)
    with pytest.raises(ValueError, match="pad_mode"):
        SC09ClassifierConfig(pad_mode="edge")


def _pattern_clips(n: int, seed: int, length: int, sr: int = 16000) -> list[tuple[np.ndarray, int]]:
    """Four classes of tones: steady, rising chirp, falling chirp, gated; random pitch, level and phase."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / sr
    out = []
    for i in range(n):
        label = i % 4
        f0 = rng.uniform(300, 1500)
        bend = {0: 0.0, 1: 1.0 / 2, 2: -1.0 / 4, 3: 0.0}[label]
        x = np.sin(2 * np.pi * f0 * (t + bend * t**2 / t[-1]) + rng.uniform(0, 2 * np.pi))
        if label == 3:
            x = x * (np.sin(2 * np.pi * rng.uniform(6, 10) * t) > 0)
        out.append((rng.uniform(0.2, 0.9) * x + 0.02 * rng.standard_normal(length), label))
    return out


def _write_folder(root, clips, names, sr=16000):
    for i, (x, label) in enumerate(clips):
        save_audio(root / names[label] / f"clip_{i}.wav", x.astype(np.float32), sr)


def test_small_classifier_learns_synthetic_tones(tmp_path):
    """The small preset, trained on a folder of labelled clips, classifies held-out clips (not used to select)."""
    names = ["chirp_down", "chirp_up", "gated", "steady"]  # sorted: the folder order gives these ids
    remap = {0: 3, 1: 1, 2: 0, 3: 2}
    for split, n, seed in (("train", 64, 0), ("val", 32, 1), ("test", 48, 2)):
        _write_folder(tmp_path / split, [(x, remap[y]) for x, y in _pattern_clips(n, seed, 8000)], names)
    torch.manual_seed(0)
    model, history = train_classifier_on_folders(
        tmp_path / "train", val_dir=tmp_path / "val", config=SC09ClassifierConfig.small(num_samples=8000),
        epochs=10, batch_size=8, lr=0.01, weight_decay=1e-3, progress=False)
    assert model.config.labels == names and model.config.n_classes == 4
    val_data = LabelledAudioFolder(tmp_path / "val", 16000, 8000, labels=names)
    test_data = LabelledAudioFolder(tmp_path / "test", 16000, 8000, labels=names)
    assert len(history) == 10
    best = max(history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
    assert classifier_accuracy(model, val_data)["accuracy"] == best["val_accuracy"]  # best epoch restored
    after = classifier_accuracy(model, test_data)["accuracy"]
    assert after >= 0.9, ([(round(h["train_accuracy"], 2), round(h["val_accuracy"], 2)) for h in history])
    losses = classifier_losses(model, (torch.zeros(2, 8000), torch.tensor([0, 1])))
    assert set(losses) == {"loss", "accuracy"} and losses["loss"].requires_grad


def test_labelled_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        LabelledAudioFolder(tmp_path / "missing", 16000, 16000)
    (tmp_path / "flat").mkdir()
    save_audio(tmp_path / "flat" / "a.wav", np.zeros(100, np.float32), 16000)
    with pytest.raises(ValueError, match="no class subfolders"):
        LabelledAudioFolder(tmp_path / "flat", 16000, 16000)
    (tmp_path / "flat" / "empty_class").mkdir()
    with pytest.raises(ValueError, match="contains no audio files"):
        LabelledAudioFolder(tmp_path / "flat", 16000, 16000)
    save_audio(tmp_path / "rate" / "x" / "a.wav", np.zeros(800, np.float32), 8000)
    data = LabelledAudioFolder(tmp_path / "rate", 16000, 16000)
    with pytest.raises(ValueError, match="8000 Hz"):
        data[0]
    clip, label = LabelledAudioFolder(tmp_path / "rate", 16000, 16000, resample=True)[0]
    assert clip.shape == (16000,) and label == 0


def test_train_classifier_argument_errors(tmp_path):
    model = SC09Classifier(SC09ClassifierConfig.small(n_classes=2, labels=None, num_samples=4000))
    data = torch.utils.data.TensorDataset(torch.zeros(4, 4000), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="balanced sampling needs"):
        train_classifier(model, data, epochs=1, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        train_classifier(model, data, epochs=0, balanced=False, progress=False)
    save_audio(tmp_path / "one" / "only" / "a.wav", np.zeros(4000, np.float32), 16000)
    with pytest.raises(ValueError, match="at least 2 class subfolders"):
        train_classifier_on_folders(tmp_path / "one", config=SC09ClassifierConfig.small(num_samples=4000))


def test_augment_waveforms_speed_and_shift():
    gen = torch.Generator().manual_seed(0)
    audio = torch.randn(6, 1000, dtype=torch.float64)
    torch.testing.assert_close(augment_waveforms(audio, gen, p=0.0), audio, rtol=0, atol=0)
    # shift only: each clip is the original moved by some k samples with zeros shifted in
    shifted = augment_waveforms(audio, gen, p=1.0, max_speed=0.0, max_shift=0.25)
    for x, y in zip(audio, shifted):
        ks = [k for k in range(-250, 251) if torch.equal(torch.roll(x, k)[max(k, 0):1000 + min(k, 0)],
                                                         y[max(k, 0):1000 + min(k, 0)])]
        assert len(ks) == 1
        k = ks[0]
        assert (y[:k] == 0).all() if k > 0 else (y[1000 + k:] == 0).all()
    # speed only on a ramp: a speed factor s turns x[t] = t into x'[t] = s t (until the clip ends, then zeros)
    ramp = torch.arange(1000, dtype=torch.float64)[None].repeat(4, 1)
    fast = augment_waveforms(ramp, gen, p=1.0, max_speed=0.2, max_shift=0.0)
    for y in fast:
        factor = float(y[1])
        assert 0.8 <= factor <= 1.2
        n = int(1000 / factor)  # resampled length, before padding or trimming back to 1000
        m = min(n, 1000, int(999 / factor) + 1)  # positions inside the ramp (the last sample is held beyond)
        torch.testing.assert_close(y[:m], torch.arange(m, dtype=torch.float64) * factor, rtol=1e-12, atol=1e-9)
        assert (y[n:] == 0).all() and (y[m:n] == 999).all()
    with pytest.raises(ValueError, match="max_shift"):
        augment_waveforms(audio, gen, max_shift=1.5)


def test_save_and_load_through_the_registry(tmp_path):
    torch.manual_seed(0)
    cfg = SC09ClassifierConfig.small(n_classes=3, labels=["a", "b", "c"], num_samples=4000)
    model = SC09Classifier(cfg).eval()
    model.bn_stem.running_mean.fill_(0.5)  # buffers travel too
    model.save_pretrained(tmp_path / "clf")
    saved = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert saved["model_type"] == "sc09-classifier"
    loaded = sashimi.load_model(tmp_path / "clf")
    assert isinstance(loaded, SC09Classifier) and loaded.config == cfg
    audio = torch.randn(2, 4000) * 0.1
    for a, b in zip(model.classify(audio), loaded.classify(audio)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert "Classes: a, b, c" in (tmp_path / "clf" / "README.md").read_text()


def test_loading_another_family_as_a_classifier_is_a_clear_error(tmp_path):
    SaShiMiLM(SaShiMiLMConfig(d_model=8, n_layers=1, pool=(2,), d_state=8)).save_pretrained(tmp_path / "lm")
    with pytest.raises(ValueError, match="holds a 'sashimi-lm' model, not a 'sc09-classifier'"):
        SC09Classifier.from_pretrained(tmp_path / "lm")
