"""``sashimi train --task diffwave``: DiffWaveSaShiMi (and the DiffWave-WaveNet baseline) trained through the generic
trainer, resumed exactly, loaded with ``sashimi.load_model`` and sampled; the EMA, the items, the optimizer
groups, the presets and the refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import soundfile as sf
import torch

import sashimi
from sashimi.audio import save_audio
from sashimi.audio.features import log_mel_spectrogram
from sashimi.cli import main
from sashimi.losses.denoising import denoising_loss
from sashimi.models.baselines import DiffWaveWaveNet
from sashimi.models.baselines.diffwave_wavenet import DiffWaveWaveNetConfig
from sashimi.models.diffwave import DiffWaveSaShiMi, DiffWaveSaShiMiConfig
from sashimi.optim import param_groups
from sashimi.training import TrainConfig, get_task, train
from sashimi.training.checkpoints import checkpoint_dirs
from sashimi.training.config import resolve_config
from sashimi.training.tasks.diffwave import EVAL_SEED, diffwave_presets, vocoder_mel

SR = 16000
L = 1024


def _tone(f0: float, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / SR
    x = sum(0.3 / k * torch.sin(2 * math.pi * k * f0 * t + float(torch.rand(1, generator=g)) * 6) for k in (1, 2, 3))
    return x.float()  # (n,)


def _data(root: Path, n: int = 3, length: int = 2 * L) -> Path:
    for i in range(n):
        save_audio(root / f"clip{i}.wav", _tone(220.0 * 1.25**i, length, i), SR)
    return root


def _cli(data: Path, run: Path, *extra: str) -> list[str]:
    return ["train", "--task", "diffwave", "--preset", "tiny-diffwave", "--data", str(data), "--out", str(run),
            "--seq-len", str(L), "--batch-size", "2", "--eval-every", "0", "--quiet", *extra]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return sashimi.load_model(str(folder)).state_dict()


def test_cli_trains_resumes_exactly_loads_and_generates(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _data(tmp_path / "data")
    full, split = tmp_path / "full", tmp_path / "split"
    common = ("--steps", "5", "--lr", "3e-3", "--schedule", "cosine", "--warmup-steps", "1", "--ema-decay", "0.8")
    assert main(_cli(data, full, *common)) == 0
    out = capsys.readouterr().out
    assert "finished at step 5" in out and "sashimi.load_model" in out
    # stopped after 2 steps (mid-epoch: 6 items, batch 2), then resumed from the CLI with only --out/--resume
    assert main(_cli(data, split, *common, "--stop-at", "2")) == 0
    assert "stopped at step 2" in capsys.readouterr().out
    assert main(["train", "--out", str(split), "--resume", "--quiet"]) == 0
    a, b = _weights(full), _weights(split)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit-identical on one machine (the EMA weights)
    sa = torch.load(checkpoint_dirs(full)[-1] / "trainer_state.pt", weights_only=True)["task_state"]
    sb = torch.load(checkpoint_dirs(split)[-1] / "trainer_state.pt", weights_only=True)["task_state"]
    for k in sa["weights"]:
        assert torch.equal(sa["weights"][k], sb["weights"][k]), k  # the raw weights too
    # the run folder records the task and the settings; its model folder is a DiffWaveSaShiMi
    saved = json.loads((full / "train_config.json").read_text())
    assert saved["task"] == "diffwave" and saved["model"]["ema_decay"] == 0.8
    assert json.loads((full / "config.json").read_text())["model_type"] == "diffwave-sashimi"
    summary = json.loads((full / "train_summary.json").read_text())
    assert summary["step"] == 5 and math.isfinite(summary["eval_eps_loss"])
    # the folder loads with sashimi.load_model and samples finite audio, in [-1, 1] with lmnt's clamping (a
    # model trained 5 steps has not learned the data's range; tests/models covers unclamped samples of a
    # model trained longer)
    model = sashimi.load_model(str(full))
    assert isinstance(model, DiffWaveSaShiMi) and model.config.segment_length == 4096
    audio = model.generate(batch_size=2, num_samples=L, steps=10, progress=False, clip=True,
                           generator=torch.Generator().manual_seed(0))
    assert audio.shape == (2, L) and torch.isfinite(audio).all() and audio.abs().max() <= 1.0
    assert float(audio.std()) > 0.05
    # the evaluation number is the denoising loss of the eval items with the task's seeded draws
    items = torch.stack([torch.from_numpy(sf.read(str(data / f"clip{i}.wav"), dtype="float32")[0][j * L:(j + 1) * L])
                         for i in range(3) for j in range(2)])  # (6, L): the evaluation tiles
    raw = DiffWaveSaShiMi(model.config)
    raw.load_state_dict(sa["weights"])  # evaluation runs on the raw weights
    per_batch = []  # batches of 2 items, each with the draws of a generator seeded with EVAL_SEED
    for s in (0, 2, 4):
        g = torch.Generator().manual_seed(EVAL_SEED)
        with torch.no_grad():
            per_batch.append(float(denoising_loss(raw, items[s:s + 2], raw.scheduler(), generator=g)))
    assert sum(per_batch) / 3 == pytest.approx(summary["eval_eps_loss"], rel=1e-5)


def test_ema_follows_its_recurrence_and_does_not_change_training(tmp_path: Path) -> None:
    data = _data(tmp_path / "data", n=1)

    def run(name: str, ema: float) -> Path:
        cfg = TrainConfig(data=str(data), out=str(tmp_path / name), task="diffwave", preset="tiny-diffwave",
                          seq_len=L, batch_size=2, steps=3, lr=3e-3, eval_every=0, checkpoint_every=1,
                          keep_checkpoints=3, progress=False, model={"ema_decay": ema} if ema else {})
        train(cfg)
        return tmp_path / name

    ema, plain = run("ema", 0.75), run("plain", 0.0)
    states = [torch.load(c / "trainer_state.pt", weights_only=True)["task_state"] for c in checkpoint_dirs(ema)]
    assert torch.load(checkpoint_dirs(plain)[-1] / "trainer_state.pt", weights_only=True)["task_state"] == {}
    raw = [s["weights"] for s in states]  # after steps 1, 2, 3
    # the EMA does not change the training: the raw weights are those of the run without it
    for k, v in _weights(plain).items():
        assert torch.equal(raw[-1][k], v), k
    # the average starts at the weights after the first step, then ema += (1 - d) (w - ema)
    expect = {k: v.clone() for k, v in raw[0].items()}
    for w in raw[1:]:
        expect = {k: v + 0.25 * (w[k] - v) if v.is_floating_point() else w[k] for k, v in expect.items()}
    got = _weights(ema)  # the model folder holds the EMA
    changed = 0
    for k, v in expect.items():
        torch.testing.assert_close(got[k], v, rtol=1e-6, atol=1e-7)
        changed += int(not torch.equal(got[k], raw[-1][k]))
    assert changed > 0  # the averaged weights differ from the raw ones


def test_vocoder_items_and_mel(tmp_path: Path) -> None:
    """Vocoder runs crop segments (shorter clips zero-padded) and condition on their log-mel."""
    data = tmp_path / "data"
    save_audio(data / "long.wav", _tone(330.0, 3 * L, 0), SR)
    save_audio(data / "short.wav", _tone(440.0, L // 2, 1), SR)
    task = get_task("diffwave")
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), task="diffwave", preset="tiny-vocoder", seq_len=L)
    cfg = resolve_config(cfg)
    run_cfg = task.model_config(task.presets()["tiny-vocoder"], {})
    splits = task.datasets(cfg, run_cfg, progress=False)
    long_wav = torch.from_numpy(sf.read(str(data / "long.wav"), dtype="float32")[0])
    short_wav = torch.from_numpy(sf.read(str(data / "short.wav"), dtype="float32")[0])
    for i in range(len(splits.eval)):
        item = splits.eval[i]
        assert item.shape == (L,) and item.dtype == torch.float32
    # evaluation tiles of the long clip are its consecutive segments; the short clip is zero-padded
    items = [splits.eval[i] for i in range(len(splits.eval))]
    assert any(torch.equal(x, long_wav[:L]) for x in items) and any(torch.equal(x, long_wav[L:2 * L]) for x in items)
    padded = torch.cat([short_wav, torch.zeros(L - short_wav.numel())])
    assert any(torch.equal(x, padded) for x in items)
    # random training crops are segments of the file
    splits.train.set_epoch(3)
    crop = next(splits.train[i] for i in range(len(splits.train)) if splits.train.folder.locate(i)[0] == 0)
    starts = [s for s in range(0, 2 * L + 1) if torch.equal(long_wav[s:s + L], crop)]
    assert starts
    # the conditioning mel is the official log-mel with the model's hop: 1 + L // 256 frames
    mel = vocoder_mel(crop[None], run_cfg.model)
    assert mel.shape == (1, 80, 1 + L // 256)
    torch.testing.assert_close(mel, log_mel_spectrogram(crop[None], sample_rate=SR))


def test_sc09_items_are_clips_padded_or_truncated(tmp_path: Path) -> None:
    data = tmp_path / "data"
    save_audio(data / "a.wav", _tone(300.0, 1500, 0), SR)
    save_audio(data / "b.wav", _tone(500.0, 900, 1), SR)
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "r"), task="diffwave", preset="sc09-diffwave",
                      layout="folder", seq_len=L)
    task = get_task("diffwave")
    cfg = resolve_config(cfg)
    assert cfg.mode == "pad" and cfg.lr == 2e-4 and cfg.batch_size == 4
    splits = task.datasets(cfg, task.model_config(task.presets()["sc09-diffwave"], {}), progress=False)
    a = torch.from_numpy(sf.read(str(data / "a.wav"), dtype="float32")[0])
    b = torch.from_numpy(sf.read(str(data / "b.wav"), dtype="float32")[0])
    items = sorted((splits.train[i] for i in range(len(splits.train))), key=lambda x: -int((x != 0).sum()))
    assert torch.equal(items[0], a[:L])  # truncated
    assert torch.equal(items[1], torch.cat([b, torch.zeros(L - 900)]))  # zero-padded


def test_paper_optimizer_and_presets() -> None:
    task = get_task("diffwave")
    presets = diffwave_presets()
    assert set(presets) == set(task.preset_names)
    # the paper's models with Adam 2e-4
    for name, kind, official in (("sc09-diffwave", "sc09", "sashimi"),
                                 ("sc09-diffwave-small", "sc09-small", "sashimi"),
                                 ("ljspeech-vocoder", "vocoder", "sashimi"),
                                 ("sc09-diffwave-wavenet", "sc09", "wavenet"),
                                 ("sc09-diffwave-wavenet-small", "sc09-small", "wavenet"),
                                 ("ljspeech-vocoder-wavenet", "ljspeech", "wavenet")):
        cls = DiffWaveSaShiMiConfig if official == "sashimi" else DiffWaveWaveNetConfig
        assert task.model_config(presets[name], {}).model == cls.preset(kind), name
        assert presets[name].lr == 2e-4
    # a single learning rate: no SSM group, every parameter at --lr
    run = task.model_config(presets["tiny-diffwave"], {"d_state": 8})
    model = task.build_model(run)
    groups = param_groups(model, lr=2e-4, ssm_lr=1e-3)
    assert {g["lr"] for g in groups} == {2e-4} and "ssm" not in {g["name"] for g in groups}
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())
    assert isinstance(task.build_model(task.model_config(presets["tiny-diffwave-wavenet"], {})), DiffWaveWaveNet)
    # bad settings name the field
    with pytest.raises(ValueError, match="loss must be one of"):
        task.model_config(presets["tiny-diffwave"], {"loss": "huber"})
    with pytest.raises(ValueError, match="ema_decay"):
        task.model_config(presets["tiny-diffwave"], {"ema_decay": 1.0})


def test_l1_loss_and_wavenet_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _data(tmp_path / "data", n=1)
    run = tmp_path / "wn"
    argv = _cli(data, run, "--steps", "2", "--loss", "l1")
    argv[argv.index("tiny-diffwave")] = "tiny-diffwave-wavenet"
    assert main(argv) == 0
    model = sashimi.load_model(str(run))
    assert isinstance(model, DiffWaveWaveNet)
    # the eval loss is the L1 denoising loss of the evaluation tiles with the task's seeded draws
    wav = torch.from_numpy(sf.read(str(data / "clip0.wav"), dtype="float32")[0]).reshape(2, L)
    g = torch.Generator().manual_seed(EVAL_SEED)
    with torch.no_grad():
        expect = float(denoising_loss(model, wav, model.scheduler(), loss="l1", generator=g))
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["eval_eps_loss"] == pytest.approx(expect, rel=1e-5)


def test_refusals(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _data(tmp_path / "data", n=1)
    assert main(_cli(data, tmp_path / "r1", "--steps", "1", "--seq-len", "1000")) == 2
    assert "--seq-len 1000 must be divisible by the model's pooling product 16" in capsys.readouterr().err
    assert main(_cli(data, tmp_path / "r2", "--steps", "1", "--bits", "8")) == 2
    assert "--bits do(es) not apply to --task diffwave" in capsys.readouterr().err
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()
