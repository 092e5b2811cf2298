"""Masked parallel decoding (MAGNeT-style) of mu-law audio with a tiny MaskedSaShiMi, next to the bundled
autoregressive SaShiMiLM: plain masked decoding, decoding rescored by the AR model's exact likelihood, and
hybrid generation (an AR prefix, then masked decoding with the prefix pinned).

The masked model is trained for a few seconds on synthetic plucked strings, so its samples are rough; the
point is the API. The AR model scores every result (bits per sample, lower = more plausible to it).

Run: python examples/masked_decoding.py [--steps 40]
"""

import argparse
import time

import torch

import sashimi
from sashimi.audio import quantize
from sashimi.data import plucked_melody
from sashimi.generation import generate_hybrid
from sashimi.models.masked import MaskedSaShiMi, MaskedSaShiMiConfig, masked_training_loss

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=40, help="training steps of the masked model")
args = parser.parse_args()
torch.manual_seed(0)
sr = 16000

# the bundled AR model (8-bit mu-law, 16 kHz)
lm = sashimi.load_model("sashimi-default")  # a SaShiMiLM, in eval mode

# a tiny masked model of the same tokens, trained briefly on plucked strings
config = MaskedSaShiMiConfig(d_model=16, n_layers=1, pool=(4,), d_state=16, ff=0, card=256, span_len=4,
                             quantization="mu-law", sample_rate=sr)
masked = MaskedSaShiMi(config)
clips = torch.stack([quantize(plucked_melody(0.25, sr, seed=i), 8, "mu-law") for i in range(4)]).unsqueeze(1)
opt = torch.optim.AdamW(masked.parameters(), lr=5e-3)
g = torch.Generator().manual_seed(0)
for _ in range(args.steps):  # (the trainer runs this as task "masked")
    out = masked_training_loss(masked, clips[:, :, :2048], generator=g)
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
print(f"masked model: {args.steps} steps, last loss {float(out['bits']):.2f} bits on masked tokens")

n = sr // 4  # 0.25 s
kw = {"steps": 8, "temperature": 1.0, "generator": torch.Generator().manual_seed(1), "progress": False}
rows = []
for name, run in [
    ("masked", lambda: masked.generate(1, n, **kw)),
    ("masked + rescoring", lambda: masked.generate(1, n, rescorer=lm, rescore_weight=0.7, **kw)),
    ("hybrid (AR 0.05 s)", lambda: generate_hybrid(lm, masked, n, sr // 20, **kw)),
]:
    t0 = time.perf_counter()
    res = run()
    dt = time.perf_counter() - t0
    tokens = res.tokens[:, 0]  # (1, T)
    assert int(tokens.max()) < 256 and res.waveform.shape == tokens.shape
    rows.append((name, tokens.shape[1], dt, float(lm.log_likelihood(tokens)[0])))

print(f"{'method':<22}{'tokens':>8}{'seconds':>10}{'AR bits/sample':>16}")
for name, T, dt, bits in rows:
    print(f"{name:<22}{T:>8}{dt:>10.2f}{bits:>16.4f}")
