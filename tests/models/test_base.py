"""The shared saved-model format: every registered family round-trips through ``save_pretrained`` ->
``sashimi.load_model`` (same class, config, state dict and outputs); folders written before
``config.json`` recorded a ``model_type`` load as SaShiMiLM; another family's folder, an unknown model
type, missing fields, a non-UTF-8 config and non-finite weights are refused with clear errors; writes are
atomic."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

import sashimi
from sashimi.hub import format as fmt
from sashimi.models import (
    SaShiMiLM,
    SaShiMiLMConfig,
    SC09Classifier,
    SC09ClassifierConfig,
    WaveNet,
    WaveNetConfig,
    DiffWaveSaShiMi,
    DiffWaveSaShiMiConfig,
    DiffWaveWaveNet,
    DiffWaveWaveNetConfig,
    MaskedSaShiMi,
    MaskedSaShiMiConfig,
    SING,
    model_types,
)
from sashimi.models.sing import sing_preset


def tiny_models() -> dict[str, torch.nn.Module]:
    """One small instance of every registered family (keyed by model type)."""
    torch.manual_seed(0)
    return {
        "sashimi-lm": SaShiMiLM(SaShiMiLMConfig(d_model=8, n_layers=1, pool=(2,), d_state=8)),
        "wavenet": WaveNet(WaveNetConfig(n_layers=4, dilation_cycle=2, residual_channels=8, dilation_channels=8,
                                         skip_channels=8, end_channels=8)),
        "sc09-classifier": SC09Classifier(SC09ClassifierConfig.small(n_classes=3, labels=["a", "b", "c"],
                                                                     num_samples=4000)),
        "masked-sashimi": MaskedSaShiMi(MaskedSaShiMiConfig(d_model=8, n_layers=1, pool=(2,), d_state=8, card=16)),
        "diffwave-sashimi": DiffWaveSaShiMi(DiffWaveSaShiMiConfig(d_model=8, n_layers=1, pool=(2,), n_mels=0)),
        "sing": SING(sing_preset("tiny-sing", num_instruments=3, num_pitches=5, channels=16, dimension=8,
                                 lstm_hidden=16)),
        "diffwave-wavenet": DiffWaveWaveNet(DiffWaveWaveNetConfig(n_layers=2, dilation_cycle=2, residual_channels=4,
                                                                  skip_channels=4)),
    }


def example_input(mtype: str) -> tuple[torch.Tensor, ...]:
    """The arguments of the family's forward for a small batch."""
    g = torch.Generator().manual_seed(0)
    if mtype == "masked-sashimi":
        return (torch.randint(0, 16, (2, 1, 16), generator=g),)
    if mtype == "sc09-classifier":
        return (torch.randn(2, 1, 32, 32, generator=g),)
    if mtype == "sing":
        return torch.tensor([0, 2]), torch.tensor([1, 4]), torch.tensor([0, 3])
    if mtype.startswith("diffwave"):
        return torch.randn(2, 16, generator=g), torch.tensor([3, 17])
    return (torch.randint(0, 256, (2, 16), generator=g),)


def test_every_registered_family_has_a_tiny_instance_here():
    assert set(tiny_models()) == set(model_types())


@pytest.mark.parametrize("mtype", sorted(tiny_models()))
def test_round_trip_through_load_model(tmp_path, mtype):
    model = tiny_models()[mtype].eval()
    model.save_pretrained(tmp_path / "m")
    raw = json.loads((tmp_path / "m" / "config.json").read_text())
    assert raw["model_type"] == mtype
    loaded = sashimi.load_model(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.config == model.config
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    args = example_input(mtype)
    with torch.no_grad():
        assert torch.equal(loaded(*args), model(*args))
    card = (tmp_path / "m" / "README.md").read_text()
    assert "library_name: sashimi-audio" in card and model.card_description().split(".")[0] in card


def test_folder_without_model_type_loads_as_sashimi_lm(tmp_path):
    model = tiny_models()["sashimi-lm"]
    model.save_pretrained(tmp_path / "m")
    cfg = tmp_path / "m" / "config.json"
    raw = json.loads(cfg.read_text())
    del raw["model_type"]
    cfg.write_text(json.dumps(raw))
    assert type(sashimi.load_model(tmp_path / "m")) is SaShiMiLM
    assert type(SaShiMiLM.from_pretrained(tmp_path / "m")) is SaShiMiLM
    assert type(sashimi.load_model("sashimi-default")) is SaShiMiLM  # the bundled folder


def test_another_family_and_unknown_types_are_refused(tmp_path):
    tiny_models()["wavenet"].save_pretrained(tmp_path / "w")
    with pytest.raises(ValueError, match=r"'wavenet'.*'sashimi-lm'"):
        SaShiMiLM.from_pretrained(tmp_path / "w")
    cfg = tmp_path / "w" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "model_type": "banana"}))
    with pytest.raises(ValueError, match=r"unknown model_type 'banana'.*sashimi-lm"):
        sashimi.load_model(tmp_path / "w")


@pytest.mark.parametrize("field", ["sample_rate", "quantization", "bits", "d_state"])
def test_missing_meaningful_fields_are_named(tmp_path, field):
    tiny_models()["sashimi-lm"].save_pretrained(tmp_path / "m")
    cfg = tmp_path / "m" / "config.json"
    raw = json.loads(cfg.read_text())
    del raw[field]
    cfg.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=rf"lacks field\(s\) \['{field}'\]"):
        sashimi.load_model(tmp_path / "m")


def test_non_utf8_config_names_the_file(tmp_path):
    tiny_models()["sashimi-lm"].save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_bytes(b'{"bits": "\xff\xfe"}')
    with pytest.raises(ValueError, match=r"config.json is not UTF-8"):
        sashimi.load_model(tmp_path / "m")


def test_non_finite_weights_are_refused_unless_asked(tmp_path):
    model = tiny_models()["sashimi-lm"]
    with torch.no_grad():
        model.decoder.bias[3] = float("nan")
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match=r"non-finite.*decoder.bias"):
        sashimi.load_model(tmp_path / "m")
    loaded = sashimi.load_model(tmp_path / "m", check_finite=False)
    assert torch.isnan(loaded.decoder.bias[3])


def test_a_failed_save_leaves_the_old_model_and_no_temporaries(tmp_path, monkeypatch):
    old, new = tiny_models()["sashimi-lm"], SaShiMiLM(SaShiMiLMConfig(d_model=8, n_layers=2, pool=(2,), d_state=8))
    old.save_pretrained(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}

    import builtins

    real_open = builtins.open
    calls = {"n": 0}

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, data):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(28, "No space left on device")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(fmt, "open", lambda *a, **k: Full(real_open(*a, **k)), raising=False)
    with pytest.raises(OSError, match="No space"):
        new.save_pretrained(tmp_path / "m")
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    assert after == before  # nothing replaced, no temporary left
    assert type(sashimi.load_model(tmp_path / "m")) is SaShiMiLM


def test_saved_files_share_normal_permissions(tmp_path):
    tiny_models()["sashimi-lm"].save_pretrained(tmp_path / "m")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "m").iterdir()}
    assert len(set(modes.values())) == 1, modes
    umask = os.umask(0)
    os.umask(umask)
    assert set(modes.values()) == {0o666 & ~umask}


def test_generate_model_card_is_a_hub_model_card():
    from huggingface_hub import ModelCard

    card = tiny_models()["sashimi-lm"].generate_model_card("me/tiny")
    assert isinstance(card, ModelCard) and card.data.library_name == "sashimi-audio" and "me/tiny" in card.text
