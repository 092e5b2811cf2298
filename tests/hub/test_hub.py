"""Hub integration: save -> load round trips, strict loading and its error messages, dtype/map_location,
Hub ids and registry names resolved offline from a Hugging Face cache layout built in a temp dir
(``HF_HUB_OFFLINE=1``; nothing is downloaded), the converted-checkpoint cache, and the CLI (``info``,
``generate --model``, ``push`` against a fake HfApi)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file, save_file

from sashimi.hub import PRETRAINED, converted_cache_root, list_pretrained
from sashimi.models.lm import SaShiMiLM, SaShiMiLMConfig

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CONFIGS = {
    "default": dict(d_model=16, n_layers=2, d_state=16),
    "release-like": dict(d_model=16, n_layers=2, d_state=16, n_ssm=1, norm="scalar", pool_weight_norm=True,
                         quantization="linear", bits=6, sample_rate=8000),
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No test here may reach the network, and the converted cache lives in the temp dir."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "default-hf-cache"))
    monkeypatch.setenv("SASHIMI_CACHE", str(tmp_path / "sashimi-cache"))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_lm(kind: str = "default", dtype=torch.float32, seed: int = 0) -> SaShiMiLM:
    torch.manual_seed(seed)
    return SaShiMiLM(SaShiMiLMConfig(**CONFIGS[kind])).to(dtype).eval()


def tokens(model: SaShiMiLM, L: int = 40) -> torch.Tensor:
    return torch.randint(0, model.config.n_classes, (2, L), generator=torch.Generator().manual_seed(7))


def assert_same_model(a: SaShiMiLM, b: SaShiMiLM) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
    assert a.config == b.config


def fake_hf_cache(cache: Path, repo_id: str, files: dict[str, Path], ref: str = "main", commit: str = COMMIT) -> Path:
    """The Hugging Face cache layout: models--owner--name/{refs/<ref>, snapshots/<commit>/<files>}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    for name, src in files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, snap / name)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snap


# ---- save -> load -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_save_load_roundtrip(tmp_path, kind, dtype):
    model = small_lm(kind, dtype)
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg == model.config.to_dict()
    for field in ("config_version", "quantization", "bits", "sample_rate"):
        assert cfg[field] == getattr(model.config, field)
    card = (tmp_path / "m" / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: sashimi-audio" in card and "sashimi" in card

    loaded = SaShiMiLM.from_pretrained(tmp_path / "m")
    assert_same_model(loaded, model)
    assert not loaded.training
    x = tokens(model)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # the loaded model saves the same files again
    loaded.save_pretrained(tmp_path / "m2")
    assert (tmp_path / "m2" / "config.json").read_text() == (tmp_path / "m" / "config.json").read_text()
    again = load_file(str(tmp_path / "m2" / "model.safetensors"))
    assert all(torch.equal(again[k], v) for k, v in model.state_dict().items())


def test_dtype_and_map_location(tmp_path):
    model = small_lm()
    model.save_pretrained(tmp_path / "m")
    m64 = SaShiMiLM.from_pretrained(tmp_path / "m", dtype=torch.float64, map_location="cpu")
    assert all(p.dtype == torch.float64 for p in m64.parameters())
    assert all(p.device.type == "cpu" for p in m64.parameters())
    assert SaShiMiLM.from_pretrained(str(tmp_path / "m"), dtype="float64").decoder.weight.dtype == torch.float64
    with pytest.raises(ValueError, match="dtype"):
        SaShiMiLM.from_pretrained(tmp_path / "m", dtype=torch.int32)


# ---- broken folders: each a clear error -------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    small_lm("release-like").save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def _edit_weights(folder: Path, fn) -> None:
    t = load_file(str(folder / "model.safetensors"))
    fn(t)
    save_file(t, str(folder / "model.safetensors"))


def test_missing_tensor(saved):
    _edit_weights(saved, lambda t: t.pop("backbone.center.0.layer.kernel.C"))
    with pytest.raises(ValueError, match=r"1 missing: \['backbone\.center\.0\.layer\.kernel\.C'\]"):
        SaShiMiLM.from_pretrained(saved)
    with pytest.warns(UserWarning, match="non-strictly"):
        SaShiMiLM.from_pretrained(saved, strict=False)


def test_unexpected_tensor(saved):
    _edit_weights(saved, lambda t: t.__setitem__("backbone.extra.weight", torch.zeros(3)))
    with pytest.raises(ValueError, match=r"1 unexpected: \['backbone\.extra\.weight'\]"):
        SaShiMiLM.from_pretrained(saved)


def test_wrong_shape(saved):
    _edit_weights(saved, lambda t: t.__setitem__("decoder.bias", torch.zeros(7)))
    with pytest.raises(ValueError, match=r"wrong shape: \['decoder\.bias: file \(7,\) vs model \(64,\)'\]"):
        SaShiMiLM.from_pretrained(saved)
    with pytest.raises(ValueError, match="wrong shape"):  # not even non-strictly
        SaShiMiLM.from_pretrained(saved, strict=False)


def test_truncated_safetensors(saved):
    data = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        SaShiMiLM.from_pretrained(saved)
    (saved / "model.safetensors").write_bytes(data[:5])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        SaShiMiLM.from_pretrained(saved)


def test_unknown_config_field(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["n_heads"] = 4
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"invalid model config .*config\.json.*unknown .*\['n_heads'\]"):
        SaShiMiLM.from_pretrained(saved)


def test_bad_config_values(saved):
    cfg = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**cfg, "config_version": 99}))
    with pytest.raises(ValueError, match="config_version"):
        SaShiMiLM.from_pretrained(saved)
    (saved / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        SaShiMiLM.from_pretrained(saved)


def test_pickled_weights_are_never_loaded(saved):
    model = SaShiMiLM.from_pretrained(saved)
    (saved / "model.safetensors").unlink()
    torch.save(model.state_dict(), saved / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors.*pytorch_model\.bin.*never unpickles"):
        SaShiMiLM.from_pretrained(saved)
    (saved / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        SaShiMiLM.from_pretrained(saved)


def test_unresolvable_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an existing folder"):
        SaShiMiLM.from_pretrained(str(tmp_path / "no" / "such" / "dir"))
    (tmp_path / "f.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="from_state_spaces"):
        SaShiMiLM.from_pretrained(tmp_path / "f.pt")


# ---- Hub ids, offline ---------------------------------------------------------------------------
def test_hub_id_from_offline_cache(tmp_path):
    model = small_lm("release-like")
    model.save_pretrained(tmp_path / "src")
    files = {n: tmp_path / "src" / n for n in ("config.json", "model.safetensors", "README.md")}
    cache = tmp_path / "hf-cache"
    fake_hf_cache(cache, "someone/tiny-sashimi", files)
    loaded = SaShiMiLM.from_pretrained("someone/tiny-sashimi", cache_dir=cache)
    assert_same_model(loaded, model)
    # a pinned revision, a named ref, local_files_only
    assert_same_model(SaShiMiLM.from_pretrained("someone/tiny-sashimi", cache_dir=cache, revision=COMMIT), model)
    other = small_lm("release-like", seed=1)
    other.save_pretrained(tmp_path / "src2")
    files2 = {n: tmp_path / "src2" / n for n in ("config.json", "model.safetensors")}
    fake_hf_cache(cache, "someone/tiny-sashimi", files2, ref="v2", commit="f" * 40)
    assert_same_model(SaShiMiLM.from_pretrained("someone/tiny-sashimi", cache_dir=cache, revision="v2"), other)
    assert_same_model(
        SaShiMiLM.from_pretrained("someone/tiny-sashimi", cache_dir=cache, local_files_only=True), model
    )
    with pytest.raises(FileNotFoundError, match=r"someone/absent.*not in the local Hugging Face cache"):
        SaShiMiLM.from_pretrained("someone/absent", cache_dir=cache)
    with pytest.raises(FileNotFoundError, match="revision nope"):
        SaShiMiLM.from_pretrained("someone/tiny-sashimi", cache_dir=cache, revision="nope")


def test_hub_repo_with_only_a_pickle_is_refused(tmp_path):
    model = small_lm()
    model.save_pretrained(tmp_path / "src")
    torch.save(model.state_dict(), tmp_path / "src" / "pytorch_model.bin")
    cache = tmp_path / "hf-cache"
    fake_hf_cache(cache, "someone/pickled", {n: tmp_path / "src" / n for n in ("config.json", "pytorch_model.bin")})
    with pytest.raises(FileNotFoundError, match="never unpickles"):
        SaShiMiLM.from_pretrained("someone/pickled", cache_dir=cache)


# ---- registry: release file in the cache -> converted, cached folder ------------------------------
def test_registry_entries():
    assert {"sashimi-sc09", "sashimi-youtubemix", "sashimi-sc09-unet", "sashimi-sc09-v4"} <= set(list_pretrained())
    e = PRETRAINED["sashimi-sc09"]
    assert (e.repo_id, e.filename, e.variant) == ("krandiash/sashimi-release", "checkpoints/sashimi_sc09.pt", "sc09")
    assert PRETRAINED["sashimi-youtubemix"].variant == "youtubemix"
    assert PRETRAINED["sashimi-sc09-unet"].variant == "sc09-unet"


def test_registry_name_resolves_converts_and_caches(tmp_path, reference_dir, monkeypatch, capsys):
    import sashimi.convert.state_spaces as ss
    from sashimi.cli import main

    golden = load_file(str(reference_dir / "sashimi_sc09_format_state_dict.safetensors"))
    io = load_file(str(reference_dir / "sashimi_sc09_format_io.safetensors"))
    pt = tmp_path / "sashimi_sc09.pt"
    torch.save(golden, pt)
    cache = tmp_path / "hf-cache"
    fake_hf_cache(cache, "krandiash/sashimi-release", {"checkpoints/sashimi_sc09.pt": pt})

    model = SaShiMiLM.from_pretrained("sashimi-sc09", cache_dir=cache)
    assert model.num_parameters() == 4_751_072 and model.config.quantization == "mu-law"
    with torch.no_grad():  # causal: the first 256 logits of a prefix are the reference's
        logits = model(io["tokens_in"][:, :256])
    assert float((logits - io["logits"][:, :256]).abs().max()) < 1e-4

    folders = list((converted_cache_root() / "sashimi-sc09").iterdir())
    assert len(folders) == 1 and folders[0].name.endswith("-c1")
    assert sorted(p.name for p in folders[0].iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert "krandiash/sashimi-release/checkpoints/sashimi_sc09.pt" in (folders[0] / "README.md").read_text()

    # the second time the converted folder is used: no conversion at all
    def boom(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(ss, "load_state_spaces", boom)
    assert_same_model(SaShiMiLM.from_pretrained("sashimi-sc09", cache_dir=cache), model)
    # the CLI resolves the same name (default Hub cache location)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert main(["info", "sashimi-sc09"]) == 0
    assert "parameters: 4,751,072" in capsys.readouterr().out
    # a registry file that is not in the cache (offline): clear error
    with pytest.raises(FileNotFoundError, match=r"pretrained 'sashimi-youtubemix'.*sashimi_youtubemix\.pt"):
        SaShiMiLM.from_pretrained("sashimi-youtubemix", cache_dir=cache)


# ---- CLI ------------------------------------------------------------------------------------------
def test_cli_generate_with_folder_and_hub_id(tmp_path, monkeypatch, capsys):
    from sashimi.cli import main

    model = small_lm("release-like")
    model.save_pretrained(tmp_path / "m")
    assert main(["generate", "--model", str(tmp_path / "m"), "--seconds", "0.005", "--batch-size", "2",
                 "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert len(list((tmp_path / "a").glob("*.wav"))) == 2
    cache = tmp_path / "hf-cache"
    fake_hf_cache(cache, "someone/tiny", {n: tmp_path / "m" / n for n in ("config.json", "model.safetensors")})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert main(["generate", "--model", "someone/tiny", "--seconds", "0.005", "--batch-size", "1",
                 "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert len(list((tmp_path / "b").glob("*.wav"))) == 1
    capsys.readouterr()
    assert main(["info", "someone/missing"]) == 2
    assert "not in the local Hugging Face cache" in capsys.readouterr().err


class FakeApi:
    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, repo_type="model", private=None, exist_ok=False):
        FakeApi.calls.append(("create_repo", repo_id, private))
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def create_branch(self, repo_id, branch, exist_ok=False):
        FakeApi.calls.append(("create_branch", repo_id, branch))

    def create_commit(self, repo_id, repo_type, operations, revision, create_pr, commit_message):
        FakeApi.calls.append(("create_commit", repo_id, sorted(op.path_in_repo for op in operations), revision))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc", "pr_url": None})()


def test_cli_push(tmp_path, monkeypatch, capsys):
    from sashimi.cli import main

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    FakeApi.calls = []
    small_lm().save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "README.md").unlink()  # a card is generated for the upload
    assert main(["push", str(tmp_path / "m"), "me/tiny", "--private", "--branch", "dev"]) == 0
    assert capsys.readouterr().out.strip() == "https://huggingface.co/me/tiny/commit/abc"
    assert FakeApi.calls == [
        ("create_repo", "me/tiny", True),
        ("create_branch", "me/tiny", "dev"),
        ("create_commit", "me/tiny", ["README.md", "config.json", "model.safetensors"], "dev"),
    ]
    assert not (tmp_path / "m" / "README.md").exists()  # the folder itself is left untouched

    # a broken folder is refused before anything is uploaded
    FakeApi.calls = []
    _edit_weights(tmp_path / "m", lambda t: t.pop("decoder.bias"))
    assert main(["push", str(tmp_path / "m"), "me/tiny"]) == 2
    assert "missing" in capsys.readouterr().err and FakeApi.calls == []
    assert main(["push", str(tmp_path / "nowhere"), "me/tiny"]) == 2
