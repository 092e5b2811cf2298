"""Run-folder safety of ``sashimi train`` (issue 15): one writer per folder, interrupts (Ctrl-C under --quiet,
SIGTERM) save a checkpoint, bad data / divergence / a full disk never leave a folder that neither a re-run nor
``--resume`` accepts, stale temporaries are cleaned, a damaged newest checkpoint is skipped, and bad devices or
numbers are one-line errors naming the flag. Interrupt and concurrency cases run real processes."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sashimi.audio import save_audio
from sashimi.cli import main
from sashimi.data import karplus_strong
from sashimi.models.lm import SaShiMiLM
from sashimi.train import checkpoint_dirs
from sashimi.training.checkpoints import RunLock

SR = 8000
REPO = Path(__file__).resolve().parents[2]
TINY_CLI = ["--preset", "tiny", "--d-model", "8", "--n-layers", "1", "--pool", "4", "--d-state", "8",
            "--sample-rate", str(SR), "--quiet"]


def _data(root: Path, n: int = 2, seconds: float = 0.5) -> Path:
    for i in range(n):
        save_audio(root / f"clip{i}.wav", karplus_strong(200.0 + 40 * i, seconds, SR, seed=i), SR)
    return root


def _cli(data: Path, run: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(run), *TINY_CLI, "--seq-len", "256", "--batch-size", "2",
            "--steps", "2", "--eval-every", "0", *extra]


def _leftovers(run: Path) -> list[str]:
    """Temporaries anywhere under the run folder."""
    return [p.relative_to(run).as_posix() for p in run.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name]


def _accepted_again(data: Path, run: Path) -> bool:
    """The folder is either resumable or empty enough for the same new run."""
    if checkpoint_dirs(run):
        return main(["train", "--out", str(run), "--resume", "--steps", "40", "--quiet"]) == 0
    return main(_cli(data, run)) == 0


# ---- processes ------------------------------------------------------------------------------------------
def _spawn(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "sashimi", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_rows(proc: subprocess.Popen, log: Path, rows: int, timeout: float = 120.0) -> None:
    """Wait until ``log`` has ``rows`` data rows past the header (the trainer is in its loop)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early: {proc.communicate()}")
        if log.is_file() and len(log.read_text().splitlines()) > rows:
            return
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("trainer did not start in time")


@pytest.mark.slow
def test_second_writer_refused_and_sigterm_saves(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Items 1 and 24: while one trainer writes a run folder, a second one (here continuing the same run) is
    refused and writes nothing; SIGTERM makes the first save a checkpoint of its step, and the run continues."""
    data = _data(tmp_path / "data")
    run = tmp_path / "run"
    assert main(_cli(data, run)) == 0
    first = _spawn(["train", "--out", str(run), "--resume", "--steps", "100000", "--log-every", "1", "--quiet"])
    try:
        _wait_for_rows(first, run / "log.csv", rows=4)
        # the second trainer is this test's process: it validates the folder, then finds it taken
        assert main(["train", "--out", str(run), "--resume", "--steps", "100000", "--quiet"]) == 2
        assert f"is being written by another `sashimi train` (pid {first.pid} on" in capsys.readouterr().err
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 128 + signal.SIGTERM, (out, err)
    assert "interrupted: checkpoint of step" in err and "Traceback" not in err, err
    step = int(err.split("interrupted: checkpoint of step ")[1].split()[0])
    assert checkpoint_dirs(run)[-1].name == f"step_{step:08d}" and step > 2
    assert not (run / ".lock").exists() and not _leftovers(run)
    # the log holds one writer's rows: consecutive steps, no duplicates
    steps = [int(r.split(",")[0]) for r in (run / "log.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, len(steps) + 1)) or steps == sorted(set(steps))
    assert main(["train", "--out", str(run), "--resume", "--steps", str(step + 1), "--quiet"]) == 0


@pytest.mark.slow
def test_ctrl_c_under_quiet_says_checkpoint_saved(tmp_path: Path) -> None:
    """Item 23: Ctrl-C under --quiet prints the checkpoint line (no traceback), exit status 130."""
    data = _data(tmp_path / "data")
    run = tmp_path / "run"
    proc = _spawn(_cli(data, run, "--steps", "100000", "--log-every", "1", "--checkpoint-every", "0"))
    try:
        _wait_for_rows(proc, run / "log.csv", rows=2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "interrupted: checkpoint of step" in err and "continue with --resume" in err, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert checkpoint_dirs(run) and not _leftovers(run)


_KILL_MID_CHECKPOINT = """
import os, signal, sys
import torch
real_save = torch.save
calls = []


def save(obj, f, *args, **kwargs):
    calls.append(f)
    if len(calls) == 2:  # the second checkpoint's trainer state: part of it is written, then SIGKILL
        with open(f, "wb") as out:
            out.write(b"\\0" * 10)
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)


torch.save = save
from sashimi.cli import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigkill_mid_checkpoint_then_resume(tmp_path: Path) -> None:
    """Items 21 and 1: a trainer SIGKILLed while writing a checkpoint leaves its temporary folder and its lock
    file; the next --resume takes the (released) lock, removes the temporaries, continues from the last
    complete checkpoint and reaches the weights of an uninterrupted run."""
    data = _data(tmp_path / "data")
    run, ref = tmp_path / "run", tmp_path / "ref"
    script = tmp_path / "kill_mid_checkpoint.py"
    script.write_text(_KILL_MID_CHECKPOINT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(script), *_cli(data, run, "--steps", "6", "--checkpoint-every", "2")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [d.name for d in checkpoint_dirs(run)] == ["step_00000002"]
    assert any(p.name.startswith(".tmp-step_00000004-") for p in (run / "checkpoints").iterdir())
    assert (run / ".lock").exists()  # left behind, but no longer locked
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    assert not _leftovers(run) and not (run / ".lock").exists()
    assert main(_cli(data, ref, "--steps", "6", "--checkpoint-every", "2")) == 0
    a, b = SaShiMiLM.from_pretrained(str(ref)).state_dict(), SaShiMiLM.from_pretrained(str(run)).state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_held_folder_refuses_a_new_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Item 1 for two new runs started together: whoever holds the lock owns the folder; the other is refused
    even though the folder still looks empty to it, and writes nothing."""
    data = _data(tmp_path / "data")
    run = tmp_path / "run"
    run.mkdir()
    holder = RunLock(run)
    holder.acquire()
    try:
        assert main(_cli(data, run)) == 2
        assert "is being written by another `sashimi train`" in capsys.readouterr().err
        assert sorted(p.name for p in run.iterdir()) == [".lock"]
    finally:
        holder.release()
    assert main(_cli(data, run)) == 0  # free again: the lock is released with the file
    assert not (run / ".lock").exists()


# ---- bad data, divergence, full disk --------------------------------------------------------------------
def test_nan_sample_names_the_file_and_leaves_a_usable_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Item 8: a float WAV with one NaN sample stops the run with the file named; the folder is accepted by the
    same command once the file is fixed."""
    data = _data(tmp_path / "data")
    x = np.full(256, 0.1, dtype=np.float32)
    x[100] = np.nan  # every 256-sample crop of this clip holds it
    sf.write(str(data / "bad.wav"), x, SR, subtype="FLOAT")
    run = tmp_path / "run"
    assert main(_cli(data, run, "--steps", "6")) == 2
    err = capsys.readouterr().err
    assert "bad.wav" in err, err
    (data / "bad.wav").unlink()
    assert _accepted_again(data, run)


def test_divergence_is_reported_and_the_folder_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Item 9: a diverging run stops with the step, the value, the learning rate and the last good checkpoint
    (whose weights are finite); --resume with a lower --lr continues from it."""
    data = _data(tmp_path / "data")
    run = tmp_path / "run"
    rc = main(_cli(data, run, "--steps", "40", "--lr", "1e6", "--warmup-steps", "1000", "--grad-clip", "0",
                   "--checkpoint-every", "1"))
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "training diverged at step" in err and "not finite (learning rate" in err, err
    assert "the last good checkpoint is" in err and len(err.strip().splitlines()) == 1
    step = int(err.split("diverged at step ")[1].split(":")[0])
    good = checkpoint_dirs(run)[-1]
    assert str(good) in err and int(good.name[5:]) == step - 2
    model = SaShiMiLM.from_pretrained(str(good))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.warns(UserWarning, match="changed settings"):
        assert main(["train", "--out", str(run), "--resume", "--lr", "1e-3", "--grad-clip", "1", "--steps",
                     str(step + 2), "--quiet"]) == 0
    assert checkpoint_dirs(run)[-1].name == f"step_{step + 2:08d}"


def test_divergence_before_any_checkpoint_clears_the_new_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _data(tmp_path / "data")
    run = tmp_path / "run"
    assert main(_cli(data, run, "--steps", "40", "--lr", "1e6", "--warmup-steps", "1000", "--grad-clip", "0",
                     "--checkpoint-every", "0")) == 1
    assert "no checkpoint was written" in capsys.readouterr().err
    assert not run.exists()
    assert main(_cli(data, run)) == 0


def _enospc(path: object) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_full_disk_on_the_first_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 20: the disk fills while the trainer state is written: one error line, no temporary left, and the
    same command runs again once there is space."""
    real_save = torch.save

    def full_disk(obj: object, f: object, *a: object, **k: object) -> None:
        Path(f).write_bytes(b"\0" * 10)  # part of the file made it
        raise _enospc(f)

    data = _data(tmp_path / "data")
    run = tmp_path / "run"
    monkeypatch.setattr(torch, "save", full_disk)
    assert main(_cli(data, run)) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and len(err.strip().splitlines()) == 1, err
    assert not run.exists() or not _leftovers(run)
    monkeypatch.setattr(torch, "save", real_save)
    assert _accepted_again(data, run)


def test_full_disk_while_publishing_the_model(tmp_path: Path, capsys: pytest.CaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 20: the disk fills while the second checkpoint's weights are copied into the run folder: no
    ``.model.safetensors.*.tmp`` is left, the run folder's model is still a complete one, and --resume works."""
    real_copy = shutil.copyfile
    calls = []

    def copy(src: object, dst: object, *a: object, **k: object) -> object:
        if Path(src).name == "model.safetensors":
            calls.append(dst)
            if len(calls) == 2:
                Path(dst).write_bytes(Path(src).read_bytes()[:50])
                raise _enospc(dst)
        return real_copy(src, dst, *a, **k)

    data = _data(tmp_path / "data")
    run = tmp_path / "run"
    monkeypatch.setattr(shutil, "copyfile", copy)
    assert main(_cli(data, run, "--steps", "4", "--checkpoint-every", "2")) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and len(err.strip().splitlines()) == 1, err
    assert not _leftovers(run), _leftovers(run)
    SaShiMiLM.from_pretrained(str(run))  # complete model files
    assert "the last complete checkpoint is" in err and "step_00000004" in err  # only its copy failed
    monkeypatch.setattr(shutil, "copyfile", real_copy)
    assert main(["train", "--out", str(run), "--resume", "--steps", "6", "--quiet"]) == 0


# ---- stale temporaries, damaged checkpoints -------------------------------------------------------------
def test_stale_temporaries_of_the_run_are_cleaned(tmp_path: Path) -> None:
    """Item 21: what a SIGKILLed writer leaves (a half-written checkpoint folder, partial files) goes on start."""
    data = _data(tmp_path / "data")
    run = tmp_path / "run"
    assert main(_cli(data, run)) == 0
    stale = run / "checkpoints" / ".tmp-step_00000003-0badc0de"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    (run / ".model.safetensors.0123abcd.tmp").write_bytes(b"half")
    (run / ".log.csv.tmp").write_text("step\n")
    assert main(["train", "--out", str(run), "--resume", "--steps", "3", "--quiet"]) == 0
    assert not _leftovers(run), _leftovers(run)
    assert [d.name for d in checkpoint_dirs(run)] == ["step_00000002", "step_00000003"]


@pytest.mark.parametrize("damaged", ["model.safetensors", "trainer_state.pt"])
def test_truncated_newest_checkpoint_falls_back(tmp_path: Path, damaged: str) -> None:
    """Item 25: --resume skips a truncated newest checkpoint, says which and why, and continues from the
    previous one, reaching the weights of an uninterrupted run."""
    data = _data(tmp_path / "data")
    run, ref = tmp_path / "run", tmp_path / "ref"
    assert main(_cli(data, ref, "--steps", "6")) == 0
    assert main(_cli(data, run, "--steps", "4", "--checkpoint-every", "2")) == 0
    newest = checkpoint_dirs(run)[-1]
    assert newest.name == "step_00000004"
    f = newest / damaged
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.warns(UserWarning, match=rf"skipped the damaged checkpoint step_00000004 \(.*{damaged}.*\); "
                                         r"resuming from step_00000002"):
        assert main(["train", "--out", str(run), "--resume", "--steps", "6", "--quiet"]) == 0
    a, b = SaShiMiLM.from_pretrained(str(ref)).state_dict(), SaShiMiLM.from_pretrained(str(run)).state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---- bad options --------------------------------------------------------------------------------------
def test_bad_device_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Item 22 for train: --device banana, and --device cuda without CUDA, are one-line errors."""
    data = _data(tmp_path / "data", n=1)
    devices = ["banana"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:1"])
    for device in devices:
        assert main(_cli(data, tmp_path / "run", "--device", device)) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --device") and device in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag, value", [
    ("--lr", "nan"), ("--lr", "inf"), ("--lr", "-1"), ("--ssm-lr", "nan"), ("--weight-decay", "-0.1"),
    ("--grad-clip", "inf"), ("--val-fraction", "nan"), ("--dropout", "nan"), ("--min-lr-ratio", "inf"),
    ("--plateau-factor", "0"), ("--steps", "0"), ("--stop-at", "0"), ("--batch-size", "0"), ("--seq-len", "-5"),
])
def test_bad_numbers_name_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture, flag: str, value: str) -> None:
    """Item 11 for train: non-finite or out-of-range numbers are a clear error naming the flag."""
    data = tmp_path / "data"
    data.mkdir()
    assert main(_cli(data, tmp_path / "run", flag, value)) == 2
    err = capsys.readouterr().err
    assert flag in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
