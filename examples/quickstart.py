"""Quickstart: an S4 block in convolution mode and in streaming step mode, which agree to float precision.

Run: python examples/quickstart.py
"""

import torch

from sashimi import S4Block
from sashimi.data.synth import karplus_strong

torch.manual_seed(0)
block = S4Block(d_model=8, d_state=64).double()  # HiPPO-LegS S4 (stable DPLR), GELU, GLU output

# a plucked string as an 8-channel input, (B, L, H)
audio = karplus_strong(220.0, seconds=0.05, sample_rate=16000).double()  # (800,)
x = audio[None, :, None].repeat(1, 1, 8) * torch.linspace(0.5, 1.5, 8, dtype=torch.float64)

y_conv = block(x)  # convolution mode: the whole sequence at once, (1, 800, 8)

state = block.init_state(batch_size=1)  # caller-owned state; constants discretized once
y_step = torch.stack([block.step(x[:, t], state)[0] for t in range(x.shape[1])], dim=1)

# streaming in chunks continues from a state too
state = block.init_state(batch_size=1)
chunks = [block(x[:, a:b], state)[0] for a, b in [(0, 300), (300, 301), (301, 800)]]

err_step = (y_step - y_conv).abs().max().item()
err_chunk = (torch.cat(chunks, dim=1) - y_conv).abs().max().item()
print(f"step mode: {state.mode}; max |step - conv| = {err_step:.2e}; max |chunked - conv| = {err_chunk:.2e}")
assert err_step < 1e-10 and err_chunk < 1e-10
