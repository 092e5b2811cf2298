"""SaShiMiLM: step == forward on logits, prefill, generation (reproducible, prompts, exact likelihoods),
long-run stability, the CLI, and input validation."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sashimi.audio import save_audio
from sashimi.data.synth import tone
from sashimi.models.lm import SaShiMiLM, SaShiMiLMConfig
from sashimi.testing import rel_err

REPO = Path(__file__).resolve().parents[2]


def small_lm(dtype=torch.float64, seed=0, **kw) -> SaShiMiLM:
    torch.manual_seed(seed)
    args = dict(d_model=16, n_layers=2, d_state=16)
    args.update(kw)
    return SaShiMiLM(SaShiMiLMConfig(**args)).to(dtype).eval()


@pytest.mark.parametrize("unet", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
@pytest.mark.parametrize("L", [1, 37, 4096])
def test_step_equals_forward_logits(unet, dtype, tol, L):
    # at L = 4096 one S4 + FF block per tier keeps 4096 Python-level steps affordable
    lm = small_lm(dtype, unet=unet, n_layers=1 if L == 4096 else 2)
    tokens = torch.randint(0, 256, (2, L), generator=torch.Generator().manual_seed(L))
    with torch.no_grad():
        logits = lm(tokens)
        state = lm.init_state(2)
        steps = torch.stack([lm.step(tokens[:, t], state)[0] for t in range(L)], dim=1)
    assert steps.shape == logits.shape == (2, L, 256)
    assert rel_err(steps, logits) < tol


def test_prefill_then_step_equals_stepping():
    lm = small_lm()
    tokens = torch.randint(0, 256, (2, 61), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        state = lm.init_state(2)
        stepped = torch.stack([lm.step(tokens[:, t], state)[0] for t in range(61)], dim=1)
        logits, state2 = lm.prefill(tokens[:, :27])  # 27: not a multiple of the pooling window
        rest = torch.stack([lm.step(tokens[:, t], state2)[0] for t in range(27, 61)], dim=1)
    assert rel_err(torch.cat([logits, rest], dim=1), stepped) < 1e-9


def test_state_clone_restore():
    lm = small_lm()
    tokens = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        state = lm.init_state(2)
        for t in range(13):
            lm.step(tokens[:, t], state)
        saved = state.clone()
        a = [lm.step(tokens[:, t], state)[0] for t in range(13, 40)]
        b = [lm.step(tokens[:, t], saved)[0] for t in range(13, 40)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_generate_is_reproducible_and_likelihood_exact():
    lm = small_lm(torch.float32)
    out1 = lm.generate(3, 300, generator=torch.Generator().manual_seed(0), progress=False)
    out2 = lm.generate(3, 300, generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.equal(out1.tokens, out2.tokens)
    assert out1.waveform.shape == (3, 300) and out1.waveform.abs().max() <= 1
    out3 = lm.generate(3, 300, generator=torch.Generator().manual_seed(1), progress=False)
    assert not torch.equal(out1.tokens, out3.tokens)
    # the likelihood accumulated while stepping equals a convolution-mode recomputation
    nll_conv = lm.log_likelihood(out1.tokens) * math.log(2)  # nats per sample
    nll_gen = -out1.log_likelihood / 300
    assert (nll_conv - nll_gen).abs().max() < 1e-3


def test_generate_with_prompt():
    lm = small_lm(torch.float32)
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 256, (2, 45), generator=gen)
    out = lm.generate(2, 120, prompt=prompt, generator=gen, progress=False)
    assert torch.equal(out.tokens[:, :45], prompt)
    nll_conv = lm.log_likelihood(out.tokens) * math.log(2)
    assert (nll_conv + out.log_likelihood / 120).abs().max() < 1e-3
    # a waveform prompt is quantized with the model's settings; one prompt for the whole batch
    wave = tone(440.0, 0.002, sample_rate=16000)
    out = lm.generate(3, 50, prompt=wave, generator=gen, progress=False)
    assert torch.equal(out.tokens[0, : wave.numel()], out.tokens[2, : wave.numel()])


def test_temperature_and_top_p():
    lm = small_lm(torch.float32)
    gen = torch.Generator().manual_seed(0)
    cold = lm.generate(2, 64, temperature=0.05, generator=gen, progress=False)
    greedy_like = lm.generate(2, 64, top_p=1e-6, generator=gen, progress=False)  # keeps only the argmax
    with torch.no_grad():
        logits = lm(lm.shift_right(greedy_like.tokens))
    assert torch.equal(logits.argmax(-1), greedy_like.tokens)
    assert cold.tokens.shape == (2, 64)


def test_log_likelihood_of_audio_matches_tokens():
    from sashimi.audio import quantize

    lm = small_lm(torch.float32)
    wave = tone(300.0, 0.01, sample_rate=16000).unsqueeze(0)
    assert torch.allclose(lm.log_likelihood(wave), lm.log_likelihood(quantize(wave, bits=8)))


@pytest.mark.slow
def test_200k_generation_steps_stay_finite():
    lm = small_lm(torch.float32, d_model=8, n_layers=1, d_state=8)
    out = lm.generate(4, 200_000, generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.isfinite(out.waveform).all() and torch.isfinite(out.log_likelihood).all()
    assert out.tokens.min() >= 0 and out.tokens.max() < 256


def test_bad_inputs():
    lm = small_lm(torch.float32)
    state = lm.init_state(2)
    with pytest.raises(ValueError, match="batch size"):
        lm.step(torch.zeros(3, dtype=torch.long), state)
    with pytest.raises(ValueError, match=r"out of range.*\[0, 256\)"):
        lm.step(torch.tensor([0, 256]), state)
    with pytest.raises(ValueError, match=r"out of range"):
        lm(torch.tensor([[-1, 3]]))
    with pytest.raises(TypeError, match="integer"):
        lm.step(torch.zeros(2), state)
    state64 = lm.init_state(2, dtype=torch.float64)
    with pytest.raises((TypeError, ValueError), match="dtype"):
        lm.step(torch.zeros(2, dtype=torch.long), state64)
    with pytest.raises(ValueError, match="longer than num_samples"):
        lm.generate(1, 10, prompt=torch.zeros(1, 11, dtype=torch.long), progress=False)
    with pytest.raises(ValueError, match="bits"):
        SaShiMiLMConfig(bits=0)
    with pytest.raises(ValueError, match="quantization"):
        SaShiMiLMConfig(quantization="alaw")
    with pytest.raises(ValueError, match="unknown"):
        SaShiMiLMConfig.from_dict({"d_model": 8, "colour": "red"})


# ---- CLI ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model")
    small_lm(torch.float32, d_model=8, n_layers=1, d_state=8).save_pretrained(path)
    return path


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # small ops: one thread is fastest on a small machine


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sashimi", *args], capture_output=True, text=True, cwd=REPO, env=ENV)


def test_cli_generate_and_info(saved_model, tmp_path):
    import soundfile as sf

    out = tmp_path / "out"
    r = _cli("generate", "--model", str(saved_model), "--seconds", "0.01", "--batch-size", "2", "--out", str(out),
             "--sort", "--quiet")
    assert r.returncode == 0, r.stderr
    files = sorted(out.glob("*.wav"))
    assert len(files) == 2
    data, sr = sf.read(files[0])
    assert sr == 16000 and data.shape == (160,)
    lines = [line for line in r.stdout.splitlines() if "bits/sample=" in line]
    bits = [float(line.split("bits/sample=")[1]) for line in lines]
    assert bits == sorted(bits)  # sorted by likelihood, most likely first
    r = _cli("info", str(saved_model))
    assert r.returncode == 0 and "parameters:" in r.stdout and "d_model: 8" in r.stdout
    # --threads 2 (pipelined lower tiers) writes the same samples
    out2 = tmp_path / "out2"
    r = _cli("generate", "--model", str(saved_model), "--seconds", "0.01", "--batch-size", "2", "--out", str(out2),
             "--sort", "--quiet", "--threads", "2")
    assert r.returncode == 0, r.stderr
    for a, b in zip(files, sorted(out2.glob("*.wav"))):
        assert (sf.read(a)[0] == sf.read(b)[0]).all()
    r = _cli("generate", "--model", str(saved_model), "--threads", "0", "--out", str(tmp_path / "none"), "--quiet")
    assert r.returncode != 0 and "--threads" in r.stderr and not (tmp_path / "none").exists()


def test_cli_prompt_errors_write_nothing(saved_model, tmp_path):
    prompt = tmp_path / "p.wav"
    save_audio(prompt, tone(440.0, 0.05, sample_rate=8000), 8000)
    out = tmp_path / "out"
    r = _cli("generate", "--model", str(saved_model), "--seconds", "0.2", "--prompt", str(prompt), "--out", str(out),
             "--quiet")
    assert r.returncode != 0 and "resample" in r.stderr
    assert not out.exists()
    long_prompt = tmp_path / "long.wav"
    save_audio(long_prompt, tone(440.0, 0.5, sample_rate=16000), 16000)
    r = _cli("generate", "--model", str(saved_model), "--seconds", "0.1", "--prompt", str(long_prompt), "--out",
             str(out), "--quiet")
    assert r.returncode != 0 and "longer" in r.stderr + r.stdout
    assert not out.exists()
    # with --resample the 8 kHz prompt is accepted
    r = _cli("generate", "--model", str(saved_model), "--seconds", "0.06", "--prompt", str(prompt), "--resample",
             "--out", str(out), "--quiet", "--batch-size", "1")
    assert r.returncode == 0, r.stderr
    assert len(list(out.glob("*.wav"))) == 1


def test_stream_generate_example_runs():
    r = subprocess.run([sys.executable, str(REPO / "examples" / "stream_generate.py")], capture_output=True, text=True,
                       cwd=REPO, env=ENV)
    assert r.returncode == 0, r.stderr
    assert "max |prefill+step - conv|" in r.stdout


def test_sampler_matches_the_distribution():
    """Empirical class frequencies of the block-drawn inverse-CDF sampler match softmax(logp / T), and
    nucleus filtering keeps exactly the smallest top set reaching top_p."""
    from sashimi.generation.sampling import Sampler as _Sampler

    gen = torch.Generator().manual_seed(3)
    logp = torch.log_softmax(torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0], dtype=torch.float64), -1)
    n = 40000
    for temperature in (1.0, 0.5, 2.0):
        sampler = _Sampler(n, 5, temperature, 1.0, gen, torch.device("cpu"), block=3)
        counts = torch.zeros(5, dtype=torch.float64)
        for _ in range(5):  # crosses a block refill
            counts += torch.bincount(sampler(logp.expand(n, -1)), minlength=5)
        want = torch.softmax(logp / temperature, -1)
        torch.testing.assert_close(counts / counts.sum(), want, rtol=0, atol=6e-3)
    p = logp.exp()  # 0.543, 0.200, 0.121, 0.074, 0.027 (sorted)
    nucleus = _Sampler(n, 5, 1.0, 0.7, gen, torch.device("cpu"))(logp.expand(n, -1))
    assert set(nucleus.tolist()) == {0, 1}  # 0.543 < 0.7 <= 0.543 + 0.200
    freq = torch.bincount(nucleus, minlength=5).double() / n
    torch.testing.assert_close(freq[:2], p[:2] / p[:2].sum(), rtol=0, atol=1e-2)
    # the draw is the first class whose cumulative mass exceeds u * total: torch.searchsorted's answer,
    # also for uniforms on the class boundaries and with zero-probability classes
    from sashimi.generation.sampling import sample_from as _sample_from

    lp = torch.log(torch.tensor([[0.25, 0.0, 0.25, 0.5, 0.0]], dtype=torch.float64)).expand(7, -1)
    u = torch.tensor([0.0, 0.1, 0.25, 0.3, 0.5, 0.75, 1 - 2.0**-50], dtype=torch.float64)
    cdf = lp.exp().cumsum(-1)
    want = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
    assert torch.equal(_sample_from(lp, u, 1.0, 1.0), want)
    assert _sample_from(lp, u, 1.0, 1.0).tolist() == [0, 0, 2, 2, 3, 3, 3]


def test_generate_restores_threads_and_checks_num_threads():
    lm = SaShiMiLM(SaShiMiLMConfig(d_model=8, n_layers=1, pool=(2,), d_state=8)).eval()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a = lm.generate(1, 20, generator=torch.Generator().manual_seed(1), progress=False)
        assert torch.get_num_threads() == 2
        b = lm.generate(1, 20, generator=torch.Generator().manual_seed(1), progress=False, num_threads=None)
        assert torch.equal(a.tokens, b.tokens)  # threads change speed, not samples
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="num_threads"):
        lm.generate(1, 4, progress=False, num_threads=0)


@pytest.mark.parametrize("prompt_len", [0, 37], ids=["no-prompt", "prompt"])
def test_generate_pipelined_draws_the_same_samples(prompt_len, monkeypatch):
    """num_threads=2 at PIPELINE_MIN_BATCH streams (the lower tiers in a worker thread, their state
    passes run ahead) draws exactly the samples of num_threads=1 with the same generator, with the
    same log-likelihoods, for two pooling tiers and several windows (and a prompt ending
    mid-window); the stepper's threads are gone afterwards. Below that batch it does not pipeline."""
    import threading

    from sashimi.generation import autoregressive as lm_module
    from sashimi.generation import step_program as _fast_step

    built = []
    build = _fast_step.build
    monkeypatch.setattr(_fast_step, "build", lambda *a, **k: built.append(k["pipeline"]) or build(*a, **k))
    torch.manual_seed(0)
    lm = SaShiMiLM(SaShiMiLMConfig(d_model=8, n_layers=1, pool=(2, 3), d_state=8)).eval()
    B = lm_module.PIPELINE_MIN_BATCH
    prompt = torch.randint(0, 256, (B, prompt_len)) if prompt_len else None
    out = [lm.generate(B, 150, prompt=prompt, generator=torch.Generator().manual_seed(4), progress=False,
                       num_threads=n) for n in (1, 2)]
    assert built == [False, True]
    assert torch.equal(out[0].tokens, out[1].tokens)
    torch.testing.assert_close(out[0].log_likelihood, out[1].log_likelihood, rtol=0, atol=1e-9)
    assert not [t for t in threading.enumerate() if t.name.startswith("sashimi-")]
    lm.generate(B - 1, 8, progress=False, num_threads=2)
    assert built[-1] is False


def test_prefill_and_generate_honour_mode():
    lm = small_lm()
    _, state = lm.prefill(lm.shift_right(torch.randint(0, 256, (1, 20))), mode="linear")

    assert {s.mode for s in state.s4_states()} == {"linear"}
    with pytest.raises(TypeError, match="prompt must be a tensor"):
        lm.generate(1, 8, prompt=[1, 2, 3], progress=False)
    with pytest.raises(ValueError, match="temperature"):
        lm.generate(1, 8, temperature=True, progress=False)
