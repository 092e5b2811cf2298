"""Streaming generation with a SaShiMiLM: prefill a prompt in convolution mode, continue by stepping,
save and restore states, and write the audio. Runs in a few seconds on a CPU with random weights.

Run: python examples/stream_generate.py [OUT_DIR]
"""

import sys
import tempfile
from pathlib import Path

import torch

from sashimi.audio import quantize, save_audio
from sashimi.data.synth import karplus_strong
from sashimi.models.lm import SaShiMiLM, SaShiMiLMConfig

torch.manual_seed(0)
model = SaShiMiLM(SaShiMiLMConfig(d_model=16, n_layers=2, d_state=16)).eval()  # random weights

# 1. a prompt: 50 ms of a plucked string, quantized with the model's own settings (8-bit mu-law)
prompt = quantize(karplus_strong(196.0, 0.05, sample_rate=16000), bits=8).unsqueeze(0)  # (1, 800)
inputs = model.shift_right(prompt)  # [zero token, q_0, ..., q_798]

# 2. prefill runs the prompt in convolution mode and returns the state after it ...
with torch.no_grad():
    logits, state = model.prefill(inputs[:, :500])
    # ... and stepping continues exactly where it stopped
    rest = torch.stack([model.step(inputs[:, t], state)[0] for t in range(500, 800)], dim=1)
    full = model(inputs)
err = (torch.cat([logits, rest], dim=1) - full).abs().max().item()
print(f"max |prefill+step - conv| = {err:.2e}")
assert err < 1e-4

# 3. states are plain dataclasses: clone one to branch a stream
branch = state.clone()
with torch.no_grad():
    a = model.step(prompt[:, -1], state)[0]
    b = model.step(prompt[:, -1], branch)[0]
assert torch.equal(a, b)

# 4. generate continuations of the prompt (the first 800 samples are the prompt itself)
out = model.generate(2, 1600, prompt=prompt, generator=torch.Generator().manual_seed(0), progress=False)
out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
for i in range(2):
    save_audio(out_dir / f"continuation_{i}.wav", out.waveform[i], out.sample_rate)
print(f"wrote {out_dir}/continuation_0.wav, continuation_1.wav; bits/sample {out.bits_per_sample.tolist()}")
