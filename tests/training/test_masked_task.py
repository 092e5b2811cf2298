"""Task ``masked``: steps on audio batches, deterministic evaluation, padding refused, model folders, and a
short end-to-end run of the generic trainer."""

from __future__ import annotations

import pytest
import torch

from sashimi.audio import save_audio
from sashimi.data import karplus_strong
from sashimi.models.masked import MaskedSaShiMi
from sashimi.train import TrainConfig, train
from sashimi.training.tasks.base import get_task
from sashimi.training.tasks.masked import MaskedTask


def _task_model() -> tuple[MaskedTask, MaskedSaShiMi]:
    task = get_task("masked")
    cfg = task.model_config(task.presets()["tiny"], {"d_model": 8, "n_layers": 1, "pool": [4], "d_state": 8})
    torch.manual_seed(0)
    return task, task.build_model(cfg)


def test_steps_and_deterministic_eval():
    task, model = _task_model()
    assert isinstance(task, MaskedTask) and task.model_type == model.config.model_type
    batch = torch.randint(0, 256, (3, 64))
    out = task.train_step(model, batch)
    assert set(out) == {"loss", "bits", "accuracy", "count"}
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and int(out["count"]) > 0
    model.eval()
    with torch.no_grad():
        assert task.eval_step(model, batch) == task.eval_step(model, batch)
    padded = batch.clone()
    padded[0, -5:] = -100
    with pytest.raises(ValueError, match="--mode crop"):
        task.train_step(model, padded)


def test_model_folder_round_trip(tmp_path):
    task, model = _task_model()
    task.save_model(model, tmp_path / "m")
    loaded = task.load_model(tmp_path / "m")
    assert loaded.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_trainer_runs_the_masked_task(tmp_path):
    sr = 8000
    for i, f in enumerate([196.0, 262.0]):
        save_audio(tmp_path / "data" / f"note{i}.wav", karplus_strong(f, 0.5, sr, seed=i), sr)
    result = train(TrainConfig(
        task="masked", data=str(tmp_path / "data"), out=str(tmp_path / "run"), preset="tiny",
        model={"d_model": 8, "n_layers": 1, "pool": (4,), "d_state": 8, "sample_rate": sr},
        seq_len=512, batch_size=4, steps=3, lr=1e-2, eval_every=0, checkpoint_every=0, progress=False,
    ))
    assert result.step == 3
    model = MaskedSaShiMi.from_pretrained(str(result.run_dir))
    assert model.generate(1, 64, steps=2, progress=False).tokens.shape == (1, 1, 64)
