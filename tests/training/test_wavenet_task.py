"""``sashimi train --task wavenet``: the paper's WaveNet baselines trained from the CLI, resumed exactly, loaded
back and scored; the task's presets and options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sashimi.audio import save_audio
from sashimi import load_model
from sashimi.cli import main
from sashimi.data import AudioFolder, karplus_strong
from sashimi.models.baselines import WaveNet, wavenet_paper
from sashimi.models.lm import SaShiMiLM
from sashimi.training import TrainConfig, get_task, train
from sashimi.training.checkpoints import checkpoint_dirs
from sashimi.training.tasks.wavenet import wavenet_presets

SR = 16000
L = 512


def _data(root: Path, n: int = 3) -> Path:
    for i in range(n):  # 2 * L samples each: evaluation tiles cover every clip exactly, no padding
        save_audio(root / f"clip{i}.wav", karplus_strong(300.0 + 50 * i, 2 * L / SR, SR, seed=i), SR)
    return root


def _cli(data: Path, run: Path, *extra: str) -> list[str]:
    return ["train", "--task", "wavenet", "--preset", "tiny", "--data", str(data), "--out", str(run), "--seq-len",
            str(L), "--batch-size", "2", "--eval-every", "0", "--quiet", *extra]


def test_cli_trains_resumes_exactly_loads_and_scores(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _data(tmp_path / "data")
    full, split = tmp_path / "full", tmp_path / "split"
    common = ("--steps", "12", "--lr", "1e-2", "--schedule", "cosine", "--warmup-steps", "2")
    assert main(_cli(data, full, *common)) == 0
    out = capsys.readouterr().out
    assert "finished at step 12" in out and f"sashimi.load_model({str(full)!r})" in out
    # stopped after 2 steps (mid-epoch: 6 items, batch 2), then resumed from the CLI with only --out/--resume
    assert main(_cli(data, split, *common, "--stop-at", "2")) == 0
    assert "stopped at step 2" in capsys.readouterr().out
    assert main(["train", "--out", str(split), "--resume", "--quiet"]) == 0
    a, b = load_model(str(full)), load_model(str(split))  # the registry picks the class from config.json
    assert isinstance(a, WaveNet) and a.config == b.config and a.config.skip_channels == 32
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k  # bit-identical on one machine
    # the run folder records the task; its model folder says which family it holds
    assert json.loads((full / "train_config.json").read_text())["task"] == "wavenet"
    assert json.loads((full / "config.json").read_text())["model_type"] == "wavenet"
    summary = json.loads((full / "train_summary.json").read_text())
    assert summary["task"] == "wavenet" and summary["step"] == 12
    # it scores NLL: the evaluation's number is model.log_likelihood over the same tiles
    ds = AudioFolder(data, sample_rate=SR, bits=8, quantization="mu-law", seq_len=L, mode="crop", minmax=False,
                     random_crop=False)
    tokens = torch.stack([ds[i] for i in range(len(ds))])  # (6, L): two tiles per clip
    assert tokens.shape == (6, L)
    nll = a.log_likelihood(tokens)
    assert float(nll.mean()) == pytest.approx(summary["eval_bits"], rel=1e-5)
    # it learned: the trainer's initialization (seed 0) scores worse on the same tiles
    torch.manual_seed(0)
    init = WaveNet(a.config)
    assert float(nll.mean()) < float(init.log_likelihood(tokens).mean()) - 0.5


def test_run_folder_is_a_wavenet_model_folder(tmp_path: Path) -> None:
    data = _data(tmp_path / "data", n=1)
    run = tmp_path / "run"
    assert main(_cli(data, run, "--steps", "1")) == 0
    model = WaveNet.from_pretrained(str(run))
    assert isinstance(model, WaveNet)
    assert model.config == get_task("wavenet").model_config(wavenet_presets()["tiny"], {})
    with pytest.raises(ValueError, match="wavenet"):
        SaShiMiLM.from_pretrained(str(run))  # a folder of another family is refused, naming its type


def test_presets_match_the_paper() -> None:
    presets = wavenet_presets()
    assert set(presets) == set(get_task("wavenet").preset_names)
    for name, skip in (("sc09-512", 512), ("youtubemix-1024", 1024)):
        cfg = get_task("wavenet").model_config(presets[name], {})
        assert cfg == wavenet_paper(skip, quantization=cfg.quantization)
    assert presets["beethoven-1024"].model["quantization"] == "linear"
    # parameter counts of the paper's table, less the official wrapper (see sashimi.models.baselines.wavenet)
    assert sum(p.numel() for p in WaveNet(wavenet_paper(512)).parameters()) == 2_540_288


def test_options_of_another_task_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _data(tmp_path / "data", n=1)
    assert main(_cli(data, tmp_path / "run", "--steps", "1", "--d-state", "8")) == 2
    err = capsys.readouterr().err
    assert "--d-state do(es) not apply to --task wavenet" in err and "--skip-channels" in err
    assert not (tmp_path / "run").exists()
    assert main(_cli(data, tmp_path / "run", "--steps", "1", "--preset", "sc09")) == 2
    assert "preset must be one of" in capsys.readouterr().err and not (tmp_path / "run").exists()
    # the task's own model options apply
    assert main(_cli(data, tmp_path / "run", "--steps", "1", "--skip-channels", "8", "--n-layers", "3")) == 0
    cfg = load_model(str(tmp_path / "run")).config
    assert (cfg.skip_channels, cfg.n_layers) == (8, 3)
    # --resume under another task is refused
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--task", "lm", "--steps", "2", "--quiet"]) == 2
    assert "is a run of --task wavenet, not lm" in capsys.readouterr().err


def test_python_api_defaults_to_lm(tmp_path: Path) -> None:
    data = _data(tmp_path / "data", n=1)
    model = {"d_model": 8, "n_layers": 1, "pool": (4,), "d_state": 8}
    result = train(TrainConfig(data=str(data), out=str(tmp_path / "run"), model=model, seq_len=L, batch_size=2,
                               steps=1, eval_every=0, progress=False))
    assert result.task == "lm" and np.isfinite(result.eval_bits)
    assert checkpoint_dirs(tmp_path / "run")[-1].name == "step_00000001"
    assert SaShiMiLM.from_pretrained(str(tmp_path / "run")).config.d_model == 8


def test_run_folder_written_before_tasks_resumes_as_lm(tmp_path: Path) -> None:
    """A train_config.json without "task" (runs written before tasks existed) continues as an lm run."""
    data = _data(tmp_path / "data", n=1)
    run = tmp_path / "run"
    model = {"d_model": 8, "n_layers": 1, "pool": (4,), "d_state": 8}
    train(TrainConfig(data=str(data), out=str(run), model=model, seq_len=L, batch_size=2, steps=1, eval_every=0,
                      progress=False))
    saved = json.loads((run / "train_config.json").read_text())
    del saved["task"]
    (run / "train_config.json").write_text(json.dumps(saved))
    assert main(["train", "--out", str(run), "--resume", "--steps", "2", "--quiet"]) == 0
    assert json.loads((run / "train_config.json").read_text())["task"] == "lm"
