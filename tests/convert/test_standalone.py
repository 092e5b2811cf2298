"""Reference standalone Sashimi -> SaShiMi / BiSaShiMi: the golden outputs of the official implementation
(causal, U-Net, bidirectional), loaded from C~ (after a forward) and from the raw C, in float64 and
float32; the C~ -> C inversion; and the converter's errors."""

from __future__ import annotations

import json

import pytest
import torch

from sashimi.convert import convert_standalone_state_dict, detilde, standalone_config
from sashimi.kernels import c_tilde
from sashimi.models import BiSaShiMi, SaShiMi
from sashimi.testing import rel_err

CASES = ["sashimi_standalone_d16_nl2", "sashimi_standalone_d16_nl2_unet", "sashimi_standalone_d16_nl2_bidirectional"]


def load_raw(reference_dir, case: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The case's tensors with the reference's own keys (no complex merging: A_real/A_imag stay apart)."""
    from safetensors.torch import load_file

    tensors = load_file(str(reference_dir / f"{case}.safetensors"))
    meta = json.loads((reference_dir / f"{case}.json").read_text())
    return tensors, meta


def state_dicts(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """'after': the state after the reference forward (C = C~ at l_kernel > 0); 'init': the same with the
    raw C from before the first forward and l_kernel = 0."""
    after = {k[len("state_dict.") :]: v for k, v in tensors.items() if k.startswith("state_dict.")}
    init = dict(after)
    for k, v in tensors.items():
        if k.startswith("state_dict_init."):
            init[k[len("state_dict_init.") :]] = v
    for k in init:
        if k.endswith("l_kernel"):
            init[k] = torch.zeros((), dtype=torch.int64)
    return {"after": after, "init": init}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("source", ["after", "init"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-8), (torch.float32, 1e-4)])
@torch.no_grad()
def test_golden_standalone(reference_dir, case, source, dtype, tol):
    tensors, meta = load_raw(reference_dir, case)
    sd = state_dicts(tensors)[source]
    if source == "after":
        assert sorted({int(v) for k, v in sd.items() if k.endswith("l_kernel")}) == [4, 16, 64]
    cfg = standalone_config(meta["sashimi_args"])
    model = (BiSaShiMi if cfg.bidirectional else SaShiMi)(cfg).to(dtype).eval()
    model.load_state_dict(convert_standalone_state_dict(sd), strict=True)
    assert sum(p.numel() for p in model.parameters()) == meta["n_params"]
    x = tensors["x"].to(dtype)  # (B, L, H)
    assert rel_err(model(x), tensors["y_forward"]) < tol
    if "y_step" in tensors:
        # the default 'auto' mode runs a costly self-check per layer: exercise it once, 'linear' elsewhere
        mode = "auto" if source == "after" and dtype == torch.float64 else "linear"
        state = model.init_state(x.shape[0], mode=mode)
        ys = torch.stack([model.step(x[:, t], state)[0] for t in range(x.shape[1])], dim=1)
        assert rel_err(ys, tensors["y_step"]) < tol


def test_detilde_from_after_forward_recovers_the_raw_c(reference_dir):
    tensors, _ = load_raw(reference_dir, CASES[0])
    sds = state_dicts(tensors)
    after, init = convert_standalone_state_dict(sds["after"]), convert_standalone_state_dict(sds["init"])
    keys = [k for k in after if k.endswith("kernel.C")]
    assert len(keys) == 6
    for k in keys:
        assert after[k].dtype == torch.float64
        assert rel_err(after[k], init[k]) < 1e-9


def test_detilde_inverts_c_tilde():
    torch.manual_seed(0)
    H, n2, r, c = 3, 8, 2, 2
    cd = torch.complex128
    A = torch.complex(-torch.rand(H, n2, dtype=torch.float64) - 0.1, torch.randn(H, n2, dtype=torch.float64))
    P = 0.3 * torch.randn(r, H, n2, dtype=cd)
    C = torch.randn(c, H, n2, dtype=cd)
    dt = torch.rand(H, dtype=torch.float64) * 0.1 + 0.01
    for L in (1, 4, 100):
        assert rel_err(torch.view_as_real(detilde(dt, A, P, c_tilde(dt, A, P, C, L), L)), torch.view_as_real(C)) < 1e-10
    assert detilde(dt, A, P, C, 0) is C
    with pytest.raises(ValueError, match="L must be"):
        detilde(dt, A, P, C, -1)
    with pytest.raises(ValueError, match="C_tilde"):
        detilde(dt, A, P, C[:, :2], 4)


def test_converter_errors(reference_dir):
    tensors, _ = load_raw(reference_dir, CASES[0])
    sd = state_dicts(tensors)["after"]
    with pytest.raises(ValueError, match=r"unmapped key\(s\): \['c_layers.0.extra', 'mystery.weight'\]"):
        convert_standalone_state_dict({**sd, "mystery.weight": torch.zeros(1), "c_layers.0.extra": torch.zeros(1)})
    bad = {k: v for k, v in sd.items() if not k.endswith("c_layers.0.layer.layer.kernel.inv_dt")}
    with pytest.raises(ValueError, match="inv_dt"):
        convert_standalone_state_dict(bad)
    with pytest.raises(TypeError, match="state_dict"):
        convert_standalone_state_dict([1, 2])
    with pytest.raises(ValueError, match="unknown standalone Sashimi argument"):
        standalone_config({"d_model": 16, "layers": 2})
