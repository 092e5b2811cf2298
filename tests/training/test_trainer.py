"""Tests for sashimi.train and ``sashimi train``: overfitting, exact resumption, DDP under torchrun (gloo, CPU),
the run folder format, and bad input (each a clear message, nothing overwritten)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sashimi.audio import quantize, save_audio
from sashimi.cli import main
from sashimi.data import karplus_strong, tone
from sashimi.models.lm import SaShiMiLM
from sashimi.train import LRSchedule, TrainConfig, checkpoint_dirs, load_train_config, train

SR = 8000
REPO = Path(__file__).resolve().parents[2]
TINY = dict(d_model=8, n_layers=1, pool=(4,), d_state=8, sample_rate=SR)
TINY_CLI = ["--preset", "tiny", "--d-model", "8", "--n-layers", "1", "--pool", "4", "--d-state", "8",
            "--sample-rate", str(SR), "--quiet"]


def _data(root: Path, n: int = 4, seconds: float = 0.5) -> Path:
    for i in range(n):
        save_audio(root / f"clip{i}.wav", karplus_strong(200.0 + 40 * i, seconds, SR, seed=i), SR)
    return root


def _cfg(tmp_path: Path, data: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(tmp_path / "run"), preset="tiny", model=dict(TINY), seq_len=256,
                batch_size=2, steps=10, lr=1e-2, eval_every=0, checkpoint_every=0, log_every=2, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _entropy_bits(q: torch.Tensor, classes: int) -> float:
    p = torch.bincount(q.flatten(), minlength=classes).double() / q.numel()
    p = p[p > 0]
    return float(-(p * p.log2()).sum())


# ---- learning ---------------------------------------------------------------------------------------------
def test_overfits_synthetic_audio(tmp_path: Path) -> None:
    """A tiny model on 2 s of a plucked string: NLL falls far below the unigram entropy of the clip."""
    save_audio(tmp_path / "data" / "pluck.wav", karplus_strong(220.0, 2.0, SR, seed=1), SR)
    wav = torch.from_numpy(sf.read(str(tmp_path / "data" / "pluck.wav"), dtype="float32")[0])  # as stored (16-bit)
    unigram = _entropy_bits(quantize(wav, 8, "mu-law"), 256)  # about 7.4 bits
    cfg = _cfg(tmp_path, tmp_path / "data", model=dict(TINY, d_model=16), seq_len=256, batch_size=8, steps=250,
               lr=2e-2, schedule="cosine", warmup_steps=10, log_every=50)
    result = train(cfg)
    assert result.eval_split == "train"
    assert result.eval_bits < 0.5 * unigram, (result.eval_bits, unigram)  # about 3.1 bits
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,epoch,lr,train_bits") and len(log) == 1 + 250 // 50
    # the run folder is a model folder; its likelihood is the evaluation's (tiles of 256 samples)
    model = SaShiMiLM.from_pretrained(str(tmp_path / "run"))
    q = quantize(wav, 8, "mu-law")[: 62 * 256].view(62, 256)  # 16000 // 256 tiles from the start
    assert float(model.log_likelihood(q).mean()) == pytest.approx(result.eval_bits, rel=1e-4)


def test_lr_schedule() -> None:
    cos = LRSchedule("cosine", total_steps=110, warmup_steps=10, min_ratio=0.1)
    assert cos.factor(0) == pytest.approx(0.1) and cos.factor(9) == pytest.approx(1.0)
    assert cos.factor(10) == pytest.approx(1.0) and cos.factor(60) == pytest.approx(0.55)
    assert cos.factor(110) == pytest.approx(0.1) and cos.factor(500) == pytest.approx(0.1)
    plat = LRSchedule("plateau", total_steps=100, factor=0.5, patience=1, min_ratio=0.2)
    for metric, scale in [(5.0, 1.0), (4.0, 1.0), (4.0, 1.0), (4.0, 0.5), (4.5, 0.5), (4.5, 0.25), (3.0, 0.25),
                          (3.0, 0.25), (3.0, 0.2)]:
        plat.on_eval(metric)
        assert plat.factor(50) == pytest.approx(scale)
    restored = LRSchedule("plateau", total_steps=100, factor=0.5, patience=1)
    restored.load_state_dict(plat.state_dict())
    assert restored.state_dict() == plat.state_dict()
    assert LRSchedule("constant", 10, warmup_steps=4).factor(1) == pytest.approx(0.5)


# ---- resumption -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["plateau", "cosine"])
def test_resume_matches_uninterrupted_run(tmp_path: Path, schedule: str) -> None:
    """Stop after 7 of 16 steps, resume: the same parameters as a run that never stopped.

    Covers a stop part-way through an epoch (4 clips x 2 crops, batch 3: 3 batches per epoch), dropout,
    random crops, the schedule (warmup, then plateau with evaluations every 3 steps, or cosine) and the
    optimizer state. (On one machine the match is bitwise; the tolerance allows for other kernels.)
    """
    data = _data(tmp_path / "data", n=4, seconds=0.07)  # 560 samples: 2 crops of 256 per clip
    common = dict(model=dict(TINY, dropout=0.1), batch_size=3, steps=16, schedule=schedule, plateau_patience=0,
                  plateau_factor=0.5, eval_every=3, warmup_steps=2)
    full = train(_cfg(tmp_path, data, out=str(tmp_path / "full"), **common))
    stopped = train(_cfg(tmp_path, data, out=str(tmp_path / "split"), checkpoint_every=5, **common), stop_at=7)
    assert stopped.step == 7
    assert [d.name for d in checkpoint_dirs(tmp_path / "split")] == ["step_00000005", "step_00000007"]
    resumed = train(_cfg(tmp_path, data, out=str(tmp_path / "split"), checkpoint_every=5, **common), resume=True)
    assert resumed.step == 16
    a = SaShiMiLM.from_pretrained(str(tmp_path / "full"))
    b = SaShiMiLM.from_pretrained(str(tmp_path / "split"))
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        torch.testing.assert_close(pb[k], pa[k], rtol=1e-6, atol=1e-7, msg=k)
    assert resumed.eval_bits == pytest.approx(full.eval_bits, rel=1e-5)
    # the resumed log continues the interrupted one without duplicate steps
    steps = [int(line.split(",")[0]) for line in (tmp_path / "split" / "log.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps)) and steps[-1] == 16
    assert load_train_config(tmp_path / "split").steps == 16


def test_cli_run_resume_and_load(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _data(tmp_path / "data")
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(run), *TINY_CLI, "--seq-len", "256", "--batch-size", "2",
            "--steps", "4", "--eval-every", "2", "--schedule", "cosine"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "finished at step 4" in out and "from_pretrained" in out
    assert SaShiMiLM.from_pretrained(str(run)).config.d_model == 8
    rows = (run / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["2", "4"] and rows[1].split(",")[6] != ""
    # continue the finished run for more steps: only --out, --resume and --steps are needed
    assert main(["train", "--out", str(run), "--resume", "--steps", "6", "--quiet"]) == 0
    assert json.loads((run / "train_summary.json").read_text())["step"] == 6
    assert [d.name for d in checkpoint_dirs(run)] == ["step_00000004", "step_00000006"]


# ---- distributed ------------------------------------------------------------------------------------------
def _torchrun_train(tmp_path: Path, target: list[str], run: Path, steps: int, eval_every: int) -> str:
    """``torchrun`` 2 CPU processes of ``target`` (``-m sashimi`` or a script) with ``train`` arguments for
    a tiny model on 4 clips; asserts that it exits with 0 and returns its stdout."""
    data = _data(tmp_path / "data", n=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *target,
           "train", "--data", str(data), "--out", str(run), *TINY_CLI, "--seq-len", "256", "--batch-size", "2",
           "--steps", str(steps), "--eval-every", str(eval_every), "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_ddp_two_processes_gloo(tmp_path: Path) -> None:
    run = tmp_path / "run"
    stdout = _torchrun_train(tmp_path, ["-m", "sashimi"], run, steps=4, eval_every=2)
    assert stdout.count("finished at step 4") == 1  # rank 0 reports, rank 1 stays quiet
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == 4
    digests = summary["rank_weights_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert [d.name for d in checkpoint_dirs(run)] == ["step_00000004"]
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["README.md", "checkpoints", "config.json", "log.csv", "model.safetensors", "train_config.json",
         "train_summary.json"]
    )
    rows = (run / "log.csv").read_text().splitlines()
    assert len(rows) == 3  # header + steps 2 and 4, written once
    model = SaShiMiLM.from_pretrained(str(run))
    from sashimi.training.checkpoints import weights_digest as _weights_digest

    assert _weights_digest(model) == digests[0]


_AFTER_TRAIN = """
import json, os, sys
import torch.distributed as dist
from sashimi.cli import main
rc = main(sys.argv[1:])
threads = sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
with open(f"after_train_{os.environ['RANK']}.json", "w") as f:
    json.dump({"rc": rc, "initialized": dist.is_initialized(), "threads": threads}, f)
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to list the process's threads")
def test_ddp_process_group_torn_down_before_exit(tmp_path: Path) -> None:
    # train() destroys the group it created, and the group really goes then: its gloo threads are joined while
    # the interpreter is alive, not at shutdown (where gloo now and then aborted a finished run with SIGABRT)
    script = tmp_path / "after_train.py"
    script.write_text(_AFTER_TRAIN)
    _torchrun_train(tmp_path, [str(script)], tmp_path / "run", steps=2, eval_every=0)
    for rank in (0, 1):
        r = json.loads((tmp_path / f"after_train_{rank}.json").read_text())
        assert r["rc"] == 0 and not r["initialized"]
        assert not [t for t in r["threads"] if "gloo" in t], r


# ---- bad input ----------------------------------------------------------------------------------------------
def _cli(tmp_path: Path, data: Path, run: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(run), *TINY_CLI, "--seq-len", "256", "--batch-size", "2",
            "--steps", "2", "--eval-every", "0", *extra]


def test_bad_data_messages(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(_cli(tmp_path, empty, run)) == 2
    assert "no audio files (.wav, .flac, .ogg) found under" in capsys.readouterr().err
    assert not run.exists()

    data = _data(tmp_path / "data", n=2)
    (data / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    assert main(_cli(tmp_path, data, run)) == 2
    err = capsys.readouterr().err
    assert "cannot read audio file" in err and "corrupt.wav" in err and "--skip-bad-files" in err
    sf.write(str(data / "silent.wav"), np.zeros(0, dtype=np.float32), SR)
    with pytest.warns(UserWarning, match=r"corrupt\.wav.*silent\.wav"):
        assert main(_cli(tmp_path, data, run, "--skip-bad-files")) == 0
    (data / "corrupt.wav").unlink()
    (data / "silent.wav").unlink()

    save_audio(data / "short.wav", tone(300.0, 0.01, SR), SR)  # 80 samples < 256
    assert main(_cli(tmp_path, data, tmp_path / "run2")) == 2
    err = capsys.readouterr().err
    assert "short.wav has 80 samples at 8000 Hz, shorter than the crop seq_len=256" in err and "--short pad" in err
    assert not (tmp_path / "run2").exists()
    assert main(_cli(tmp_path, data, tmp_path / "run2", "--short", "pad")) == 0
    (data / "short.wav").unlink()

    save_audio(data / "fast.wav", tone(300.0, 0.2, 16000), 16000)
    assert main(_cli(tmp_path, data, tmp_path / "run3", "--no-resample")) == 2
    err = capsys.readouterr().err
    assert "fast.wav has sample rate 16000 Hz but the model runs at 8000 Hz" in err
    assert not (tmp_path / "run3").exists()
    assert main(_cli(tmp_path, data, tmp_path / "run3")) == 0  # resampled by default


def test_bad_run_folders_nothing_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _data(tmp_path / "data", n=2)
    run = tmp_path / "run"
    assert main(_cli(tmp_path, data, run)) == 0
    before = _tree_digest(run)

    # another architecture on --resume
    assert main(_cli(tmp_path, data, run, "--resume", "--steps", "4", "--d-model", "16")) == 2
    err = capsys.readouterr().err
    assert "holds a checkpoint of a different model" in err and "d_model: checkpoint 8, requested 16" in err
    assert _tree_digest(run) == before
    # changed data settings on --resume
    assert main(["train", "--out", str(run), "--resume", "--steps", "4", "--seq-len", "128", "--quiet"]) == 2
    assert "seq_len: checkpoint 256, requested 128" in capsys.readouterr().err
    assert _tree_digest(run) == before
    # a new run into a used folder
    assert main(_cli(tmp_path, data, run)) == 2
    assert "is not empty (a previous run: pass --resume to continue it)" in capsys.readouterr().err
    assert _tree_digest(run) == before
    # --resume on a folder that is no run
    other = tmp_path / "model_only"
    SaShiMiLM.from_pretrained(str(run)).save_pretrained(other)
    assert main(["train", "--out", str(other), "--resume", "--quiet"]) == 2
    assert "has no train_config.json: not a run folder" in capsys.readouterr().err
    # nothing left to do
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 2
    assert "already completed 2 steps; pass a larger --steps" in capsys.readouterr().err
    assert _tree_digest(run) == before
    # a corrupted checkpoint is named
    ckpt = checkpoint_dirs(run)[-1]
    (ckpt / "trainer_state.pt").write_bytes(b"not a checkpoint")
    assert main(["train", "--out", str(run), "--resume", "--steps", "4", "--quiet"]) == 2
    assert "cannot read the training state" in capsys.readouterr().err


def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _data(tmp_path / "data", n=1)
    for extra, msg in [
        (["--steps", "0"], "steps must be an int >= 1"),
        (["--batch-size", "-2"], "batch_size must be an int >= 1"),
        (["--lr", "0"], "lr must be a number in (0.0"),
        (["--d-state", "7"], "d_state must be even"),
        (["--val-fraction", "1.5"], "val_fraction must be a number"),
    ]:
        assert main(_cli(tmp_path, data, tmp_path / "run", *extra)) == 2
        assert msg in capsys.readouterr().err, extra
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "--preset is required" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="preset must be one of"):
        train(TrainConfig(data=str(data), out=str(tmp_path / "run"), preset="huge"))
    with pytest.raises(ValueError,
                       match=r"invalid model settings for preset 'tiny'.*unknown SaShiMi\w*Config field.*width"):
        train(TrainConfig(data=str(data), out=str(tmp_path / "run"), model={"width": 3}))
