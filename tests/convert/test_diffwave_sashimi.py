"""Converting official diffwave-sashimi checkpoints: .pkl files (weights_only), both key layouts, the Hub-ready
folder, and clear errors for unsafe files, foreign layouts, unmapped keys and mismatched configs."""

from __future__ import annotations

import json

import pytest
import torch

import sashimi
from sashimi.convert.diffwave_sashimi import (
    OFFICIAL_CONFIGS,
    config_from_official,
    detect_diffwave_layout,
    read_diffwave_sashimi_checkpoint,
)
from sashimi.convert.state_spaces import UnsafeCheckpointError
from sashimi.models.diffwave import DiffWaveSaShiMi, DiffWaveSaShiMiConfig, convert_diffwave_sashimi

from_diffwave_sashimi = DiffWaveSaShiMi.from_diffwave_sashimi


@pytest.fixture(scope="module")
def case(load_case):
    def get(name: str):
        tensors, meta = load_case(f"diffwave/{name}")
        sd = {k: v for k, v in tensors.items() if not k.startswith("golden.")}
        return sd, tensors, meta

    return get


def _save_official_pkl(path, sd):
    # the official train.py layout: {'model_state_dict', 'optimizer_state_dict'}
    optim = {"state": {}, "param_groups": [{"lr": 2e-4, "betas": (0.9, 0.999), "params": list(range(len(sd)))}]}
    torch.save({"model_state_dict": sd, "optimizer_state_dict": optim}, path)


@pytest.mark.parametrize("name", ["uncond_v", "ckpt_uncond_v"])
def test_pkl_to_folder_round_trip(case, tmp_path, name):
    sd, tensors, meta = case(name)
    pkl = tmp_path / "500000.pkl"
    _save_official_pkl(pkl, sd)
    cfg_file = tmp_path / "model.json"
    cfg_file.write_text(json.dumps(meta["config"]))
    folder = convert_diffwave_sashimi(pkl, cfg_file, tmp_path / "out")
    for f in ("config.json", "model.safetensors", "README.md"):
        assert (folder / f).is_file()
    saved = json.loads((folder / "config.json").read_text())
    assert saved["model_type"] == "diffwave-sashimi"
    assert saved["s4_layout"] == ("paper" if name.startswith("ckpt") else "master")
    assert saved["mel_alignment"] == "truncated"
    card = (folder / "README.md").read_text()
    assert "DiffWave + SaShiMi diffusion model (unconditional, 16000 Hz)" in card
    model = sashimi.load_model(folder)  # the registry picks the class from config.json
    assert isinstance(model, DiffWaveSaShiMi)
    with torch.no_grad():
        eps = model(tensors["golden.input.audio"], tensors["golden.input.diffusion_steps"])
    g = tensors["golden.output"]
    assert float((eps - g).abs().max() / g.abs().max()) < 1e-9


def test_layouts_detected(case):
    assert detect_diffwave_layout(case("uncond_v")[0]) == "master"
    assert detect_diffwave_layout(case("cond_v")[0]) == "master"
    assert detect_diffwave_layout(case("ckpt_uncond_v")[0]) == "paper"


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # unpickling would create the marker file

    path = tmp_path / "evil.pkl"
    torch.save({"model_state_dict": {"x": torch.zeros(1)}, "payload": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match="weights_only=True"):
        read_diffwave_sashimi_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError):
        from_diffwave_sashimi(path, "sc09")
    assert not marker.exists()


def test_missing_or_corrupt_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_diffwave_sashimi_checkpoint(tmp_path / "nope.pkl")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="is not a checkpoint"):
        read_diffwave_sashimi_checkpoint(bad)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(b"PK\x03\x04" + b"\x00" * 40)  # a torch.save zip archive cut short
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        read_diffwave_sashimi_checkpoint(truncated)


def test_keys_of_neither_layout(case):
    sd = {k: v for k, v in case("uncond_v")[0].items() if ".layer.kernel." not in k}
    sd["d_layers.0.layer.kernel.mystery.C"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"neither the master S4 keys .* nor the paper-branch ones"):
        from_diffwave_sashimi(sd, case("uncond_v")[2]["config"])


def test_unmapped_keys_are_named(case):
    sd, _, meta = case("uncond_v")
    sd = {**sd, "d_layers.0.extra.weight": torch.zeros(3), "ema.shadow": torch.zeros(2)}
    with pytest.raises(ValueError, match=r"2 key\(s\) .*\['d_layers.0.extra.weight', 'ema.shadow'\]"):
        from_diffwave_sashimi(sd, meta["config"])


def test_config_that_does_not_fit(case):
    sd, _, meta = case("uncond_v")
    with pytest.raises(ValueError, match="lacks the key 'd_layers.2.norm1.m'"):
        from_diffwave_sashimi(sd, {**meta["config"], "n_layers": 3})
    with pytest.raises(ValueError, match=r"unknown key\(s\) in the official model config: \['dropout'\]"):
        from_diffwave_sashimi(sd, {**meta["config"], "dropout": 0.1})
    with pytest.raises(ValueError, match="does not fit the config"):
        from_diffwave_sashimi(sd, {**meta["config"], "d_model": 32})


def test_official_configs():
    """The named official configs give the official parameter counts; converted models keep the mel quirk."""
    counts = {"sc09": (23_470_971, 22_964_091), "sc09-small": (7_734_267, 7_480_827), "vocoder": (3_153_459, 3_026_739)}
    for name in OFFICIAL_CONFIGS:
        for layout, expected in zip(("master", "paper"), counts[name]):
            cfg = DiffWaveSaShiMiConfig(**config_from_official(name, layout))
            assert cfg.mel_alignment == "truncated" and cfg.s4_layout == layout
            assert sum(p.numel() for p in DiffWaveSaShiMi(cfg).parameters()) == expected
    voc = DiffWaveSaShiMiConfig(**config_from_official("vocoder"))
    got = (voc.n_mels, voc.hop_length, voc.num_train_steps, voc.beta_end, voc.sample_rate)
    assert got == (80, 256, 50, 0.05, 22050)
