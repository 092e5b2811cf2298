"""TokenFolder: the three file formats, labels from folders or JSON, crops, and bad files."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sashimi.data import TokenFolder, load_tokens


def _write(root, rel, x):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, x.numpy())
    elif path.suffix == ".safetensors":
        save_file({"tokens": x}, str(path))
    else:
        torch.save({"tokens": x}, path)
    return path


def test_formats_and_folder_labels(tmp_path):
    g = torch.Generator().manual_seed(0)
    clips = {f"{cls}/{i}{ext}": torch.randint(0, 2048, (4, 20 + i), generator=g)
             for cls, ext in (("dog", ".npy"), ("rain", ".safetensors"), ("bell", ".pt")) for i in range(2)}
    for rel, x in clips.items():
        _write(tmp_path, rel, x)
    ds = TokenFolder(tmp_path, labels="folders", card=2048)
    assert ds.classes == ["bell", "dog", "rain"] and len(ds) == 6
    for i, f in enumerate(ds.files):
        x, y = ds[i]
        rel = f.relative_to(tmp_path).as_posix()
        assert torch.equal(x, clips[rel]) and x.dtype == torch.long
        assert ds.classes[int(y)] == rel.split("/")[0]
    crop = TokenFolder(tmp_path, segment=16, generator=torch.Generator().manual_seed(1))[0]
    assert crop.shape == (4, 16)
    full = load_tokens(crop_src := TokenFolder(tmp_path).files[0])
    assert any(torch.equal(crop, full[:, s:s + 16]) for s in range(full.shape[1] - 15)), crop_src


def test_json_labels_and_one_stream(tmp_path):
    _write(tmp_path, "a.npy", torch.arange(10, dtype=torch.int16))
    _write(tmp_path, "b.npy", torch.arange(12, dtype=torch.int32))
    (tmp_path / "labels.json").write_text(json.dumps({"a.npy": "seven", "b.npy": "three"}))
    ds = TokenFolder(tmp_path, labels=tmp_path / "labels.json")
    x, y = ds[0]
    assert x.shape == (1, 10) and ds.classes == ["seven", "three"] and int(y) == 0
    (tmp_path / "labels.json").write_text(json.dumps({"a.npy": "seven"}))
    with pytest.raises(ValueError, match="no label"):
        TokenFolder(tmp_path, labels=tmp_path / "labels.json")


def test_bad_files(tmp_path):
    _write(tmp_path, "f.npy", torch.rand(2, 8))
    with pytest.raises(ValueError, match="integers"):
        TokenFolder(tmp_path)[0]
    (tmp_path / "f.npy").unlink()
    _write(tmp_path, "g.npy", torch.full((2, 8), 300))
    with pytest.raises(ValueError, match="out of range"):
        TokenFolder(tmp_path, card=256)[0]
    with pytest.raises(ValueError, match="n_codebooks=4"):
        TokenFolder(tmp_path, n_codebooks=4)[0]
    with pytest.raises(ValueError, match="shorter than segment"):
        TokenFolder(tmp_path, segment=9)[0]
    with pytest.raises(ValueError, match="subfolder"):
        TokenFolder(tmp_path, labels="folders")
    # a pickled object is refused (weights_only=True)
    torch.save({"tokens": torch.zeros(2, 3, dtype=torch.long), "obj": object()}, tmp_path / "h.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only"):
        load_tokens(tmp_path / "h.pt")
    with pytest.raises(ValueError, match="no token files"):
        TokenFolder(_empty(tmp_path))


def _empty(root):
    d = root / "empty"
    d.mkdir()
    return d
