"""Train a tiny SaShiMiLM on synthetic plucked strings, then load the run folder and generate from it.

Run: python examples/train_tiny.py [--steps 60]
(The same with the command line: sashimi train --data DIR --preset tiny --out RUN ...)
"""

import argparse
import tempfile
from pathlib import Path

import torch

from sashimi import SaShiMiLM
from sashimi.audio import save_audio
from sashimi.data import karplus_strong
from sashimi.train import TrainConfig, train

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=60)
args = parser.parse_args()

sr = 8000
with tempfile.TemporaryDirectory() as tmp:
    data = Path(tmp) / "data"
    for i, f in enumerate([196.0, 220.0, 247.0, 262.0]):  # four plucked notes, 1 s each
        save_audio(data / f"note{i}.wav", karplus_strong(f, 1.0, sr, seed=i), sr)

    result = train(TrainConfig(
        data=str(data), out=str(Path(tmp) / "run"), preset="tiny",
        model=dict(d_model=16, n_layers=1, pool=(4,), d_state=16, sample_rate=sr),  # smaller than the preset
        seq_len=512, batch_size=8, steps=args.steps, lr=1e-2, schedule="cosine", warmup_steps=5,
        eval_every=0, checkpoint_every=0, progress=False,
    ))
    print(f"trained {result.step} steps: NLL {result.eval_bits:.3f} bits/sample on the training clips "
          "(8 bits = knowing nothing)")

    model = SaShiMiLM.from_pretrained(str(result.run_dir))  # a run folder is a model folder
    out = model.generate(2, sr // 4, generator=torch.Generator().manual_seed(0), progress=False)
    print(f"generated {tuple(out.waveform.shape)} samples; their NLL under the model: "
          f"{out.bits_per_sample.tolist()} bits/sample")
    assert result.eval_bits < 8.0 and torch.isfinite(out.waveform).all()
