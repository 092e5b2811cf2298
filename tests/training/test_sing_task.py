"""``sashimi train --task sing``: SING's three phases chained through the CLI on NSynth-layout notes, the sequence
phase's truncated backpropagation against the family's own reference loop, exact resumption, the phases'
frozen parts, and the errors of a wrong chain."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from torch.utils.data.distributed import DistributedSampler

from sashimi import load_model
from sashimi.cli import main
from sashimi.data.nsynth import NSynth, write_synthetic_nsynth
from sashimi.models.sing import SING, FrameEncoder, sequence_steps, sing_preset
from sashimi.training import TrainConfig, get_task, train
from sashimi.training.config import resolve_config
from sashimi.training.tasks.sing import ENCODER_WEIGHTS, TRUNCATION, collate_notes, sing_presets

REPO = Path(__file__).resolve().parents[2]
NOTE = 8192  # samples per toy note: 47 frames with SING's frame geometry (two truncation chunks of 32 + 15)


@pytest.fixture(scope="module")
def nsynth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nsynth")
    write_synthetic_nsynth(root, instruments=(0, 1, 2), pitches=(57, 60, 64), velocities=(50, 100), num_samples=NOTE)
    return root


def _config(data: Path, out: Path, **kw: object) -> TrainConfig:
    base = dict(data=str(data), out=str(out), task="sing", preset="tiny-sing", model={"note_length": NOTE},
                batch_size=4, steps=3, lr=1e-3, eval_every=0, progress=False)
    return TrainConfig(**{**base, **kw})


def _state(folder: Path) -> dict[str, torch.Tensor]:
    return SING.from_pretrained(str(folder)).state_dict()


def _encoder(folder: Path, model: SING) -> FrameEncoder:
    c = model.config
    enc = FrameEncoder(c.dimension, c.channels, c.kernel_size, c.stride, c.rewrite_layers)
    enc.load_state_dict(load_file(str(folder / ENCODER_WEIGHTS)))
    return enc


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str) -> bool:
    keys = [k for k in a if k.startswith(prefix)]
    assert keys, prefix
    return all(torch.equal(a[k], b[k]) for k in keys)


def test_three_phases_chained_through_the_cli(nsynth: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run1, run2, run3 = tmp_path / "ae", tmp_path / "seq", tmp_path / "e2e"
    opts = ["--steps", "3", "--batch-size", "4", "--lr", "1e-3", "--eval-every", "0", "--quiet"]
    assert main(["train", "--task", "sing", "--phase", "autoencoder", "--data", str(nsynth), "--preset", "tiny-sing",
                 "--note-length", str(NOTE), "--out", str(run1), *opts]) == 0
    assert "finished at step 3: eval loss" in capsys.readouterr().out
    # the later phases take --task, --data, --preset and the model options from the run they start from
    assert main(["train", "--phase", "sequence", "--init-from", str(run1), "--out", str(run2), *opts]) == 0
    assert main(["train", "--phase", "end2end", "--init-from", str(run2), "--out", str(run3), *opts]) == 0
    out = capsys.readouterr().out
    assert out.count("finished at step 3") == 2 and f"sashimi.load_model({str(run3)!r})" in out
    for run, phase in ((run1, "autoencoder"), (run2, "sequence"), (run3, "end2end")):
        saved = json.loads((run / "train_config.json").read_text())
        assert (saved["task"], saved["phase"], saved["data"], saved["model"]) == (
            "sing", phase, str(nsynth), {"note_length": NOTE})
        assert (saved["lr"], saved["schedule"], saved["grad_clip"]) == (1e-3, "constant", 0.0)
        summary = json.loads((run / "train_summary.json").read_text())
        assert summary["eval_split"] == "validation" and math.isfinite(summary["eval_loss"])
    # the encoder travels with the first two phases and is dropped by the end-to-end phase
    assert (run1 / ENCODER_WEIGHTS).is_file() and (run2 / ENCODER_WEIGHTS).is_file()
    assert not (run3 / ENCODER_WEIGHTS).exists()

    s1, s2, s3 = _state(run1), _state(run2), _state(run3)
    torch.manual_seed(0)  # the trainer's initialization of the first phase
    init = SING(sing_preset("tiny-sing", note_length=NOTE)).state_dict()
    # each phase trains exactly its part: autoencoder -> decoder (and encoder), sequence -> generator,
    # end2end -> generator and decoder
    assert _equal(s1, init, "generator.") and not _equal(s1, init, "decoder.")
    assert _equal(s2, s1, "decoder.") and not _equal(s2, s1, "generator.")
    assert not _equal(s3, s2, "decoder.") and not _equal(s3, s2, "generator.")
    m1, m2 = SING.from_pretrained(str(run1)), SING.from_pretrained(str(run2))
    e1, e2 = _encoder(run1, m1).state_dict(), _encoder(run2, m2).state_dict()
    assert _equal(e1, e2, "layers.")  # frozen in the sequence phase

    # the result is a SING model folder that generates notes
    model = load_model(str(run3))
    assert isinstance(model, SING) and model.config == sing_preset("tiny-sing", note_length=NOTE)
    notes = model.generate([0, 2], [57, 64], [0, 1])
    assert notes.shape == (2, NOTE) and bool(torch.isfinite(notes).all()) and float(notes.abs().max()) > 0
    assert main(["generate", "--model", str(run3), "--instrument", "1", "--pitch", "60", "--velocity", "50",
                 "--out", str(tmp_path / "notes"), "--quiet"]) == 0
    wavs = sorted((tmp_path / "notes").glob("*.wav"))
    assert wavs and all(sf.info(str(w)).frames == NOTE for w in wavs)


def test_sequence_phase_is_sings_truncated_backpropagation(nsynth: Path, tmp_path: Path) -> None:
    """One trainer step of the sequence phase = :func:`sequence_steps` (one Adam update per 32-frame chunk, the
    LSTM state detached in between) on the same batch, with ``torch.optim.Adam`` at the same rate."""
    run1, run2 = tmp_path / "ae", tmp_path / "seq"
    train(_config(nsynth, run1, steps=1))
    train(_config(nsynth, run2, steps=1, batch_size=64, phase="sequence", init_from=str(run1)))
    model = SING.from_pretrained(str(run1)).train()
    encoder = _encoder(run1, model)
    notes = NSynth(nsynth, pad=model.config.pad, num_samples=NOTE)
    train_notes, _, _ = notes.split()
    order = list(DistributedSampler(train_notes, num_replicas=1, rank=0, shuffle=True, seed=0))  # the trainer's
    batch = collate_notes([train_notes[i] for i in order])
    with torch.no_grad():
        embeddings = encoder(batch["wav"])  # (B, 16, 47)
    assert embeddings.shape[-1] == 47 and math.ceil(47 / TRUNCATION) == 2
    optimizer = torch.optim.Adam(model.generator.parameters(), lr=1e-3)
    sequence_steps(model.generator, batch, embeddings, optimizer, truncation=TRUNCATION)
    trained = SING.from_pretrained(str(run2)).state_dict()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(trained[name], value, msg=name)
    # the sequence phase's truncation matters: a single whole-note update gives other weights
    whole = SING.from_pretrained(str(run1)).train()
    sequence_steps(whole.generator, batch, embeddings, torch.optim.Adam(whole.generator.parameters(), lr=1e-3),
                   truncation=0)
    assert not torch.allclose(whole.generator.output.weight, trained["generator.output.weight"])


@pytest.mark.parametrize("phase", ["sequence", "end2end"])
def test_resumed_phase_is_bit_identical(nsynth: Path, tmp_path: Path, phase: str) -> None:
    init = tmp_path / "ae"
    train(_config(nsynth, init, steps=1))
    if phase == "end2end":
        train(_config(nsynth, tmp_path / "seq", steps=1, phase="sequence", init_from=str(init)))
        init = tmp_path / "seq"
    common = dict(steps=5, batch_size=3, phase=phase, init_from=str(init))  # 12 training notes: resumes mid-epoch
    full = train(_config(nsynth, tmp_path / "full", **common))
    train(_config(nsynth, tmp_path / "split", **common), stop_at=2)
    resumed = train(_config(nsynth, tmp_path / "split", **common), resume=True)
    assert resumed.step == full.step == 5 and resumed.weights_sha256 == full.weights_sha256
    a, b = _state(tmp_path / "full"), _state(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    if phase == "sequence":
        assert (tmp_path / "split" / ENCODER_WEIGHTS).read_bytes() == (tmp_path / "full" / ENCODER_WEIGHTS).read_bytes()


def test_wrong_chains_are_refused_before_writing(nsynth: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["train", "--task", "sing", "--data", str(nsynth), "--preset", "tiny-sing", "--note-length", str(NOTE),
            "--steps", "1", "--batch-size", "2", "--quiet"]
    assert main([*base, "--phase", "sequence", "--out", str(tmp_path / "a")]) == 2
    assert "--phase sequence starts from the run folder of --phase autoencoder" in capsys.readouterr().err
    assert main([*base, "--phase", "decode", "--out", str(tmp_path / "a")]) == 2
    assert "phase must be one of ('autoencoder', 'sequence', 'end2end')" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    # phases belong to the tasks that have them
    with pytest.raises(ValueError, match="trains in one phase"):
        resolve_config(TrainConfig(data=str(nsynth), out=str(tmp_path / "b"), phase="sequence"))
    with pytest.raises(ValueError, match="does not take init_from"):
        resolve_config(TrainConfig(data=str(nsynth), out=str(tmp_path / "b"), init_from=str(tmp_path)))
    # the sequence phase needs an encoder: an end-to-end run has none
    e2e = tmp_path / "e2e"
    ae = tmp_path / "ae"
    train(_config(nsynth, ae, steps=1))
    train(_config(nsynth, e2e, steps=1, phase="end2end", init_from=str(ae)))
    with pytest.raises(FileNotFoundError, match=f"no {ENCODER_WEIGHTS}"):
        train(_config(nsynth, tmp_path / "c", phase="sequence", init_from=str(e2e)))
    # another model is named field by field
    with pytest.raises(ValueError, match="lstm_hidden: 128 there, 64 here"):
        train(_config(nsynth, tmp_path / "c", phase="sequence", init_from=str(ae),
                      model={"note_length": NOTE, "lstm_hidden": 64}))
    # labels beyond the model's tables name the option that fixes them
    with pytest.raises(ValueError, match="pass --num-instruments 3"):
        train(_config(nsynth, tmp_path / "c", model={"note_length": NOTE, "num_instruments": 2}))
    assert not (tmp_path / "c").exists()


def test_presets_follow_the_paper(nsynth: Path, tmp_path: Path) -> None:
    task = get_task("sing")
    presets = sing_presets()
    assert tuple(presets) == task.preset_names == ("nsynth-sing", "tiny-sing")
    assert task.model_config(presets["nsynth-sing"], {}) == sing_preset("nsynth-sing")
    assert task.model_config(presets["tiny-sing"], {"note_length": NOTE}) == sing_preset("tiny-sing", note_length=NOTE)
    cfg = resolve_config(TrainConfig(data=str(nsynth), out=str(tmp_path / "r"), task="sing", preset="nsynth-sing"))
    # Adam at 3e-4 (AdamW without weight decay), no schedule, no clipping, batch 256, the first phase by default
    assert (cfg.lr, cfg.weight_decay, cfg.betas, cfg.schedule, cfg.grad_clip, cfg.batch_size, cfg.phase) == (
        3e-4, 0.0, (0.9, 0.999), "constant", 0.0, 256, "autoencoder")
    # the other tasks keep their defaults
    lm = resolve_config(TrainConfig(data=str(nsynth), out=str(tmp_path / "r")))
    assert (lm.schedule, lm.grad_clip, lm.phase, lm.init_from) == ("plateau", 1.0, None, None)


@pytest.mark.slow
def test_ddp_sequence_phase_matches_one_process(nsynth: Path, tmp_path: Path) -> None:
    """Two gloo processes of batch 2 = one process of batch 4 (the same notes per step; every chunk's gradients
    averaged over the ranks), through the chunked updates of the sequence phase."""
    run1 = tmp_path / "ae"
    train(_config(nsynth, run1, steps=1))
    one = train(_config(nsynth, tmp_path / "one", steps=2, batch_size=4, phase="sequence", init_from=str(run1)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "sashimi",
           "train", "--phase", "sequence", "--init-from", str(run1), "--out", str(tmp_path / "ddp"), "--steps", "2",
           "--batch-size", "2", "--lr", "1e-3", "--eval-every", "0", "--device", "cpu", "--quiet"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and len(set(summary["rank_weights_sha256"])) == 1
    assert one.step == summary["step"] == 2
    a, b = _state(tmp_path / "one"), _state(tmp_path / "ddp")
    for k in a:
        torch.testing.assert_close(b[k], a[k], msg=k)
    assert not _equal(b, _state(run1), "generator.")
