"""NSynth notes for SING: layout, SING's (instrument, pitch) split, velocity mapping, padding, bad input."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import soundfile as sf
import torch

from sashimi.data import NSynth, map_velocity, nsynth_split, write_synthetic_nsynth
from sashimi.data.nsynth import VELOCITY_MAPPINGS, harmonic_note


def _metadata(n_instruments: int = 40, n_pitches: int = 50) -> tuple[list[str], list[tuple[int, int]]]:
    """A synthetic examples.json's sorted names and (instrument, pitch) pairs, several velocities per pair."""
    meta = {}
    for i in range(n_instruments):
        for p in range(21, 21 + n_pitches):
            for v in (25, 75, 127):
                meta[f"inst{i:03d}-{p:03d}-{v:03d}"] = (i, p)
    names = sorted(meta)
    return names, [meta[n] for n in names]


def test_split_keeps_pairs_together_and_is_deterministic() -> None:
    names, pairs = _metadata()
    state = random.getstate()
    train, valid, test = nsynth_split(names, pairs)
    assert random.getstate() == state  # the global RNG is untouched
    assert sorted(train + valid + test) == list(range(len(names)))
    split_of = {}
    for split, idx in (("train", train), ("valid", valid), ("test", test)):
        for i in idx:
            assert split_of.setdefault(pairs[i], split) == split, f"pair {pairs[i]} in two splits"
    assert (train, valid, test) == nsynth_split(names, pairs)
    # 2000 groups at 10% / 10%: both held-out splits near 200 groups (binomial sd ~13)
    n_groups = {s: len({pairs[i] for i in idx}) for s, idx in (("valid", valid), ("test", test))}
    assert all(140 < n < 260 for n in n_groups.values()), n_groups
    assert nsynth_split(names, pairs, seed=0) != (train, valid, test)


def test_split_follows_sings_draw_order() -> None:
    """SING seeds Python's global RNG with 42 and draws once per (instrument, pitch) group, taking groups in
    order of first appearance among the sorted names: < 0.1 valid, < 0.2 test."""
    names, pairs = _metadata(7, 30)
    random.seed(42)
    order = list(dict.fromkeys(pairs))
    draws = {pair: random.random() for pair in order}
    train, valid, test = nsynth_split(names, pairs)
    for i, pair in enumerate(pairs):
        u = draws[pair]
        expected = valid if u < 0.1 else test if u < 0.2 else train
        assert i in expected


def test_split_input_checks() -> None:
    names, pairs = _metadata(2, 3)
    with pytest.raises(ValueError, match="sorted"):
        nsynth_split(names[::-1], pairs[::-1])
    with pytest.raises(ValueError, match="same length"):
        nsynth_split(names, pairs[:-1])
    with pytest.raises(ValueError, match="valid_ratio"):
        nsynth_split(names, pairs, valid_ratio=1.5)


def test_velocity_mapping() -> None:
    assert [map_velocity(v, "sing") for v in (25, 50, 75, 100, 127)] == [0, 1, 2, 4, 5]  # id 3 unused
    assert [map_velocity(v, "dense") for v in (25, 50, 75, 100, 127)] == [0, 1, 2, 3, 4]
    assert set(VELOCITY_MAPPINGS) == {"sing", "dense"}
    with pytest.raises(ValueError, match=r"note 'x-060-064'"):
        map_velocity(64, "sing", note="x-060-064")
    with pytest.raises(ValueError, match="velocity_mapping"):
        map_velocity(25, "midi")


def test_dataset_items_padding_and_cardinalities(tmp_path) -> None:
    n = 4096
    assert write_synthetic_nsynth(tmp_path, instruments=(0, 3), pitches=(60, 72), velocities=(25, 100, 127),
                                  num_samples=n) == 12
    for mapping, velocity_ids in (("sing", 6), ("dense", 5)):
        data = NSynth(tmp_path, pad=100, velocity_mapping=mapping, num_samples=n)
        assert len(data) == 12 and data.names == sorted(data.names)
        assert data.cardinalities == {"instrument": 4, "pitch": 73, "velocity": velocity_ids}
    item = data[6]
    name = data.names[6]
    assert item["name"] == name == "synth_003-060-025"
    assert (item["instrument"].item(), item["pitch"].item(), item["velocity"].item()) == (3, 60, 0)
    assert item["wav"].shape == (n + 200,) and item["wav"].dtype == torch.float32
    assert torch.all(item["wav"][:100] == 0) and torch.all(item["wav"][-100:] == 0)
    # samples are the file's int16 values / (2**15 - 1), as SING reads them
    raw = sf.read(str(tmp_path / "audio" / f"{name}.wav"), dtype="int16")[0]
    torch.testing.assert_close(item["wav"][100:-100], torch.from_numpy(raw.astype(np.float32) / 32767))
    np.testing.assert_allclose(raw / 32768, harmonic_note(60, 25, 3, n), atol=1 / 32768)  # soundfile scales by 2**15
    # the split holds whole (instrument, pitch) pairs
    train, valid, test = data.split(valid_ratio=0.3, test_ratio=0.3)
    seen = [{data.labels(i)[:2] for i in s.indices} for s in (train, valid, test)]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert sum(len(s) for s in (train, valid, test)) == 12


def test_dataset_bad_input_names_the_note(tmp_path) -> None:
    n = 2048
    write_synthetic_nsynth(tmp_path, instruments=(0,), pitches=(60, 62), velocities=(50,), num_samples=n)
    audio = tmp_path / "audio"
    # wrong length
    with pytest.raises(ValueError, match=r"note 'synth_000-060-050'.*2048 samples, expected 4096"):
        NSynth(tmp_path, num_samples=4096)[0]
    # wrong rate
    sf.write(str(audio / "synth_000-062-050.wav"), np.zeros(n, np.float32), 22050, subtype="PCM_16")
    with pytest.raises(ValueError, match=r"note 'synth_000-062-050'.*22050 Hz, expected 16000"):
        NSynth(tmp_path, num_samples=n)[1]
    # stereo
    sf.write(str(audio / "synth_000-062-050.wav"), np.zeros((n, 2), np.float32), 16000, subtype="PCM_16")
    with pytest.raises(ValueError, match=r"note 'synth_000-062-050'.*2 channels"):
        NSynth(tmp_path, num_samples=n)[1]
    # an entry without its WAV
    (audio / "synth_000-062-050.wav").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 note\(s\).*'synth_000-062-050'"):
        NSynth(tmp_path, num_samples=n)
    # a velocity NSynth does not have
    meta = json.loads((tmp_path / "examples.json").read_text())
    del meta["synth_000-062-050"]
    meta["synth_000-060-050"]["velocity"] = 64
    (tmp_path / "examples.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"velocity must be one of .* got 64 \(note 'synth_000-060-050'\)"):
        NSynth(tmp_path, num_samples=n)
    meta["synth_000-060-050"]["pitch"] = "C4"
    (tmp_path / "examples.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"note 'synth_000-060-050'.*'pitch' must be an int"):
        NSynth(tmp_path, num_samples=n)
    with pytest.raises(FileNotFoundError, match="examples.json"):
        NSynth(tmp_path / "nowhere")
