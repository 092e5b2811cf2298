"""Official state-spaces release checkpoints -> SaShiMiLM.

Golden checks on ``../shared/reference/sashimi_sc09_format_*`` (a checkpoint with the exact key layout of
the released ``sashimi_sc09.pt``, built by the official v3 code with seeded weights): the logits of the
converted float32 model against the reference's float64 logits, its NLL in bits, step mode against the
forward logits, and the v4 key layout (built from the v3 one with the README's rename rules). Then
synthetic release-layout checkpoints of every variant (exported from our own models with C stored raw,
``L = 0``), pickle safety, error messages, and ``sashimi convert``.
"""

from __future__ import annotations

import json
import math
import os
import re

import pytest
import torch
import torch.nn.functional as F

from sashimi.convert import (
    VARIANTS,
    UnsafeCheckpointError,
    convert_state_spaces_state_dict,
    detect_layout,
    read_checkpoint,
    variant_config,
)
from sashimi.models.lm import SaShiMiLM

GOLDEN_SD = "sashimi_sc09_format_state_dict.safetensors"
GOLDEN_IO = "sashimi_sc09_format_io.safetensors"
GOLDEN_META = "sashimi_sc09_format_meta.json"
N_STEPS = 300


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # small dense solves and many tiny step ops: threads only add overhead on a busy 2-core machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- helpers ----------------------------------------------------------------------------------------
def v3_to_v4(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official port's renames (README, 'Key structure'): log_dt -> inv_dt (H, 1); inv_w_real -> A_real;
    w_imag -> A_imag with the sign flipped; layer.kernel.kernel.* -> layer.layer.kernel.*; L -> l_kernel;
    layer.D -> layer.layer.D."""
    out = {}
    for k, v in sd.items():
        if k.endswith(".kernel.kernel.log_dt"):
            k, v = k[: -len("log_dt")] + "inv_dt", v.unsqueeze(-1)
        elif k.endswith(".kernel.kernel.inv_w_real"):
            k = k[: -len("inv_w_real")] + "A_real"
        elif k.endswith(".kernel.kernel.w_imag"):
            k, v = k[: -len("w_imag")] + "A_imag", -v
        elif k.endswith(".kernel.kernel.L"):
            k = k[: -len("L")] + "l_kernel"
        k = k.replace(".layer.kernel.kernel.", ".layer.layer.kernel.")
        if k.endswith(".layer.D"):
            k = k[: -len(".layer.D")] + ".layer.layer.D"
        out[k] = v
    return out


def export_v3(model: SaShiMiLM) -> dict[str, torch.Tensor]:
    """Our model's weights in the release's v3 key layout, with raw C (``L = 0`` buffers).

    Per-tier down lists are flat; up tiers are nested (SaShiMi) or flat (U-Net), deepest first."""
    cfg = model.config
    K, sd = len(cfg.pool), model.state_dict()
    out: dict[str, torch.Tensor] = {}

    def block(src: str, dst: str) -> None:
        for k, v in sd.items():
            if not k.startswith(src + "."):
                continue
            rest = k[len(src) + 1 :]
            name = {
                "norm.m": "norm.norm.m", "norm.s": "norm.norm.s", "layer.D": "layer.D",
                "layer.output_linear.weight": "layer.output_linear.0.weight",
                "layer.output_linear.bias": "layer.output_linear.0.bias",
                "layer.fc1.weight": "layer.ff.0.0.weight", "layer.fc1.bias": "layer.ff.0.0.bias",
                "layer.fc2.weight": "layer.ff.2.weight", "layer.fc2.bias": "layer.ff.2.bias",
                "layer.kernel.log_dt": "layer.kernel.kernel.log_dt",
                "layer.kernel.A_real_log": "layer.kernel.kernel.inv_w_real",
                "layer.kernel.A_imag": "layer.kernel.kernel.w_imag",
                "layer.kernel.P": "layer.kernel.kernel.P", "layer.kernel.C": "layer.kernel.kernel.C",
            }.get(rest)
            if rest == "layer.kernel.B":
                out[f"{dst}.layer.kernel.kernel.B"] = v.unsqueeze(0)
                out[f"{dst}.layer.kernel.kernel.L"] = torch.tensor(0)
                continue
            assert name is not None, k
            out[f"{dst}.{name}"] = v

    def pool(src: str, dst: str) -> None:
        for k, v in sd.items():
            if k.startswith(src + "."):
                rest = k[len(src) + 1 :]
                rest = rest.replace("parametrizations.weight.original0", "weight_g")
                out[f"{dst}.{rest.replace('parametrizations.weight.original1', 'weight_v')}"] = v

    n = 0
    for i in range(K):
        for j in range(len(model.backbone.down[i].blocks)):
            block(f"backbone.down.{i}.blocks.{j}", f"model.d_layers.{n}")
            n += 1
        pool(f"backbone.down.{i}.pool", f"model.d_layers.{n}")
        n += 1
    for j in range(len(model.backbone.center)):
        block(f"backbone.center.{j}", f"model.c_layers.{j}")
    n = 0
    for g in range(K):
        i = K - 1 - g
        blocks = len(model.backbone.up[i].blocks)
        if cfg.unet:  # flat
            pool(f"backbone.up.{i}.pool", f"model.u_layers.{n}")
            for j in range(blocks):
                block(f"backbone.up.{i}.blocks.{j}", f"model.u_layers.{n + 1 + j}")
            n += 1 + blocks
        else:
            pool(f"backbone.up.{i}.pool", f"model.u_layers.{g}.0")
            for j in range(blocks):
                block(f"backbone.up.{i}.blocks.{j}", f"model.u_layers.{g}.{j + 1}")
    out["model.norm.weight"], out["model.norm.bias"] = sd["backbone.norm.weight"], sd["backbone.norm.bias"]
    out["encoder.0.weight"] = sd["encoder.weight"]
    out["decoder.0.output_transform.weight"] = sd["decoder.weight"]
    out["decoder.0.output_transform.bias"] = sd["decoder.bias"]
    return out


def random_model(variant: str, seed: int = 0, **overrides) -> SaShiMiLM:
    torch.manual_seed(seed)
    model = SaShiMiLM(variant_config(variant, **overrides)).eval()
    with torch.no_grad():  # make every tensor distinct from the init so a mix-up cannot go unnoticed
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


# ---- golden: the release format ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def golden(reference_dir):
    from safetensors.torch import load_file

    sd = load_file(str(reference_dir / GOLDEN_SD))
    io = load_file(str(reference_dir / GOLDEN_IO))
    meta = json.loads((reference_dir / GOLDEN_META).read_text())
    model = SaShiMiLM.from_state_spaces(reference_dir / GOLDEN_SD, variant="sc09")
    with torch.no_grad():
        logits = model(io["tokens_in"])
    return {"sd": sd, "io": io, "meta": meta, "model": model, "logits": logits}


def test_golden_file_has_release_layout(golden):
    meta, sd = golden["meta"], golden["sd"]
    keys = meta["keys_released_v3_format"]
    assert {k: list(v.shape) for k, v in sd.items()} == {k: shape for k, (shape, _) in keys.items()}
    assert len(sd) == meta["info"]["n_tensors"] == 449
    assert detect_layout(sd) == "v3"
    # the README's rename rules reproduce the official port's v4 key list exactly
    v4 = v3_to_v4(sd)
    assert {k: list(v.shape) for k, v in v4.items()} == {
        k: shape for k, (shape, _) in meta["keys_v4_format_after_port"].items()
    }
    assert detect_layout(v4) == "v4"


def test_golden_config_and_parameter_count(golden):
    model = golden["model"]
    cfg = model.config
    assert model.num_parameters() == golden["meta"]["info"]["n_params"] == 4_751_072
    assert (cfg.d_model, cfg.n_layers, cfg.pool, cfg.expand, cfg.ff, cfg.d_state) == (64, 8, (4, 4), 2, 2, 64)
    assert (cfg.n_ssm, cfg.norm, cfg.pool_weight_norm, cfg.postact, cfg.unet) == (1, "scalar", True, "glu", False)
    assert (cfg.quantization, cfg.bits, cfg.sample_rate) == ("mu-law", 8, 16000)
    assert model.decoder.weight.dtype == torch.float32
    assert not model.training


def test_golden_logits_float32(golden):
    """Converted and run in float32: within 1e-4 absolute of the reference's float64 logits."""
    ref = golden["io"]["logits"]
    err = float((golden["logits"] - ref).abs().max())
    assert golden["logits"].shape == ref.shape == (1, 2048, 256)
    assert err < 1e-4, err


def test_golden_logits_float64(reference_dir, golden):
    """In float64 the only difference left is the float32 storage of the reference logits."""
    model = SaShiMiLM.from_state_spaces(reference_dir / GOLDEN_SD, variant="sc09", dtype=torch.float64)
    assert model.backbone.center[0].layer.kernel.C.dtype == torch.float64
    with torch.no_grad():  # causal: a prefix has the reference's logits (a shorter run stays fast)
        logits = model(golden["io"]["tokens_in"][:, :512])
    ref = golden["io"]["logits"][:, :512].double()
    assert float((logits - ref).abs().max()) < 5e-7  # float32 rounding of |logits| <= 2.84 is 1.2e-7


def test_golden_nll_bits(golden):
    targets = golden["io"]["targets"]
    nats = F.cross_entropy(golden["logits"][0].double(), targets[0]).item()
    bits = nats / math.log(2)
    assert abs(bits - 8.2574) < 1e-3, bits
    assert abs(bits - golden["meta"]["info"]["bpb_f64"]) < 1e-4


def test_golden_step_mode_equals_forward(golden):
    model, tokens = golden["model"], golden["io"]["tokens_in"]
    with torch.no_grad():
        state = model.init_state(1, mode="linear")
        steps = torch.stack([model.step(tokens[:, t], state)[0] for t in range(N_STEPS)], dim=1)
    assert float((steps - golden["logits"][:, :N_STEPS]).abs().max()) < 5e-5
    assert float((steps - golden["io"]["logits"][:, :N_STEPS]).abs().max()) < 1e-4


def test_golden_v4_layout_converts_to_the_same_model(golden):
    v4 = v3_to_v4(golden["sd"])
    model = SaShiMiLM.from_state_spaces(v4, variant="sc09")
    assert model._conversion_info["layout"] == "v4"
    assert_same_state(model.state_dict(), golden["model"].state_dict())


def test_golden_from_pt_file(golden, tmp_path):
    """The real files are torch.save'd state dicts: read with weights_only=True, same model."""
    path = tmp_path / "sashimi_sc09.pt"
    torch.save(golden["sd"], path)
    assert_same_state(read_checkpoint(path), golden["sd"])
    # a full Lightning checkpoint is unwrapped too
    torch.save({"state_dict": golden["sd"], "epoch": 3}, tmp_path / "full.ckpt")
    assert sorted(read_checkpoint(tmp_path / "full.ckpt")) == sorted(golden["sd"])


# ---- synthetic checkpoints of every variant ---------------------------------------------------------
@pytest.mark.parametrize(
    "variant,overrides,n_params",
    [
        ("sc09", {}, 4_751_072),
        ("sc09", {"postact": "linear"}, 4_059_360),  # trained without GLU: (H, H) output linears
        ("youtubemix", {}, 4_751_072),
        ("beethoven", {}, 4_751_072),
        ("sc09-unet", {}, 6_820_512),
    ],
)
@pytest.mark.parametrize("layout", ["v3", "v4"])
def test_synthetic_roundtrip(variant, overrides, n_params, layout):
    model = random_model(variant, **overrides)
    assert model.num_parameters() == n_params
    sd = export_v3(model)
    if layout == "v4":
        sd = v3_to_v4(sd)
    assert detect_layout(sd) == layout
    conv = SaShiMiLM.from_state_spaces(sd, variant=variant)
    assert conv.config == model.config
    assert_same_state(conv.state_dict(), model.state_dict())
    assert conv.config.quantization == ("linear" if variant == "beethoven" else "mu-law")
    assert (conv.config.bits, conv.config.sample_rate) == (8, 16000)


def test_unet_flat_layout_and_plain_pooling():
    sd = export_v3(random_model("sc09-unet"))
    assert "model.u_layers.17.linear.weight" in sd  # flat list: [UpPool, 16 blocks, UpPool, ...]
    assert "model.d_layers.16.linear.weight" in sd and not any("weight_g" in k for k in sd)
    with pytest.raises(ValueError, match="sc09-unet"):
        SaShiMiLM.from_state_spaces(sd, variant="sc09")


def test_v4_dt_transform():
    """Ported v4 files keep log dt (exp, the default); v4-native checkpoints store softplus^-1(dt)."""
    sd = v3_to_v4(export_v3(random_model("sc09")))
    native = {  # the same dt, stored the v4-native way: inv_dt = log(expm1(dt))
        k: torch.log(torch.expm1(torch.exp(v.double()))).float() if k.endswith("inv_dt") else v for k, v in sd.items()
    }
    a = SaShiMiLM.from_state_spaces(native, variant="sc09", dt_transform="softplus")
    b = SaShiMiLM.from_state_spaces(sd, variant="sc09")
    for k, v in b.state_dict().items():
        tol = 1e-5 if k.endswith(("log_dt", ".C")) else 0
        assert torch.allclose(a.state_dict()[k], v, atol=tol, rtol=tol), k
    wrong = SaShiMiLM.from_state_spaces(native, variant="sc09")  # the v4 default-transform mistake, reversed
    assert not torch.allclose(wrong.backbone.center[0].layer.kernel.log_dt, b.backbone.center[0].layer.kernel.log_dt)
    with pytest.raises(ValueError, match="dt_transform"):
        SaShiMiLM.from_state_spaces(sd, variant="sc09", dt_transform="relu")


# ---- errors ---------------------------------------------------------------------------------------
def test_unmapped_keys_are_named():
    sd = export_v3(random_model("sc09"))
    sd["model.c_layers.0.layer.kernel.kernel.mystery"] = torch.zeros(3)
    sd["task.loss_weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"could not be mapped.*model\.c_layers\.0\.layer\.kernel\.kernel\.mystery"):
        SaShiMiLM.from_state_spaces(sd, variant="sc09")


def test_neither_layout_is_a_clear_error():
    with pytest.raises(ValueError, match=r"neither the v3.*nor the v4.*first keys: \['a\.weight'"):
        convert_state_spaces_state_dict({"a.weight": torch.zeros(2), "b.bias": torch.zeros(2)}, "sc09")
    sd = export_v3(random_model("sc09"))
    mixed = {**sd, **v3_to_v4({k: v for k, v in sd.items() if k.startswith("model.c_layers.0.")})}
    with pytest.raises(ValueError, match="mixes v3"):
        convert_state_spaces_state_dict(mixed, "sc09")


def test_missing_kernel_key_and_wrong_architecture():
    sd = export_v3(random_model("sc09"))
    bad = {k: v for k, v in sd.items() if not k.endswith("c_layers.2.layer.kernel.kernel.P")}
    with pytest.raises(ValueError, match=r"c_layers\.2.*lacks.*kernel\.kernel\.P"):
        SaShiMiLM.from_state_spaces(bad, variant="sc09")
    short = {k: v for k, v in sd.items() if not re.match(r"model\.c_layers\.1[45]\.", k)}
    with pytest.raises(ValueError, match=r"missing: \['backbone\.center\.14\."):
        SaShiMiLM.from_state_spaces(short, variant="sc09")
    with pytest.raises(ValueError, match="unknown variant 'sc10'.*beethoven"):
        SaShiMiLM.from_state_spaces(sd, variant="sc10")


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.makedirs, (str(marker),))

    path = tmp_path / "sashimi_sc09.pt"
    torch.save({"model.norm.weight": torch.zeros(64), "payload": Evil()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"weights_only=True.*execute arbitrary code"):
        SaShiMiLM.from_state_spaces(path, variant="sc09")
    assert not marker.exists()
    assert issubclass(UnsafeCheckpointError, ValueError)


def test_read_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "nope.pt")
    torch.save({"x": torch.zeros(3)}, tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_checkpoint(tmp_path / "cut.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="expected a state dict"):
        read_checkpoint(tmp_path / "list.pt")
    with pytest.raises(TypeError):
        SaShiMiLM.from_state_spaces(42, variant="sc09")


def test_variants_registry():
    assert set(VARIANTS) == {"sc09", "youtubemix", "beethoven", "sc09-unet"}
    assert VARIANTS["youtubemix"].train_length == 131072
    for name, v in VARIANTS.items():
        cfg = variant_config(name)
        assert (cfg.bits, cfg.sample_rate) == (8, 16000)
        assert cfg.quantization == ("linear" if name == "beethoven" else "mu-law")


# ---- CLI ------------------------------------------------------------------------------------------
def test_cli_convert(tmp_path, capsys):
    from sashimi.cli import main

    model = random_model("sc09")
    pt = tmp_path / "sashimi_sc09.pt"
    torch.save(v3_to_v4(export_v3(model)), pt)
    out = tmp_path / "hub-ready"
    assert main(["convert", "state-spaces", str(pt), "--variant", "sc09", "--out", str(out)]) == 0
    assert "v4 layout" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (out / "README.md").read_text()
    assert "library_name: sashimi-audio" in card and "sashimi_sc09.pt" in card
    loaded = SaShiMiLM.from_pretrained(out)
    assert_same_state(loaded.state_dict(), model.state_dict())
    assert loaded.config == model.config
    with pytest.raises(SystemExit, match="not empty"):
        main(["convert", "state-spaces", str(pt), "--variant", "sc09", "--out", str(out)])
    assert main(["convert", "state-spaces", str(pt), "--variant", "sc09", "--out", str(out), "--force"]) == 0
    assert main(["convert", "state-spaces", str(pt), "--variant", "sc09-unet", "--out", str(tmp_path / "x")]) == 2
    assert "does not match variant 'sc09-unet'" in capsys.readouterr().err
