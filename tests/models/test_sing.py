"""SING: the frame decoder against the official decoder's golden output, length bookkeeping, parameter counts,
labels, config round trips, and a tiny model (LSTM and S4 generators) overfitting synthetic notes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from sashimi.data.nsynth import NSynth, write_synthetic_nsynth
from sashimi.losses import SpectralLoss
from sashimi.models import load_model
from sashimi.models.sing import (
    SING,
    FrameDecoder,
    FrameEncoder,
    SINGAutoencoder,
    SINGConfig,
    sequence_steps,
    sing_preset,
    train_phase,
)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_frame_decoder_reproduces_sing(reference_dir) -> None:
    tensors = load_file(str(reference_dir / "sing" / "sing_tiny_decoder.safetensors"))
    facts = json.loads((reference_dir / "sing" / "sing_arch_facts.json").read_text())["tiny_decoder"]
    cfg = facts["config"]
    decoder = FrameDecoder(dimension=cfg["dimension"], channels=cfg["channels"], kernel_size=cfg["kernel_size"],
                           stride=cfg["stride"], context_size=cfg["context_size"], rewrite_layers=cfg["rewrite_layers"])
    state = {k.removeprefix("param."): v for k, v in tensors.items() if k.startswith("param.")}
    assert sorted(state) == sorted(facts["state_dict_keys"])
    # SING stores its squared Hann window; ours is rebuilt from the kernel size and must equal it
    torch.testing.assert_close(decoder.layers[6].window, state.pop("layers.6.window"), rtol=0, atol=1e-7)
    decoder.load_state_dict(state, strict=True)
    out = decoder(tensors["input_embeddings"])
    assert tuple(out.shape) == tuple(facts["output_shape"]) == (2, decoder.wav_length(20))
    torch.testing.assert_close(out, tensors["output_wav"], rtol=0, atol=1e-5)
    assert math.isclose(out.abs().sum().item(), facts["output_abs_sum"], rel_tol=1e-5)


def test_frame_decoder_overlap_add_identity() -> None:
    """Only one frame vector active: the output is one Hann^2-tapered kernel row (plus the bias) placed at its
    frame's offset, checked against an explicit placement of the frame."""
    torch.manual_seed(0)
    dec = FrameDecoder(dimension=3, channels=5, kernel_size=64, stride=16, context_size=1, rewrite_layers=0)
    with torch.no_grad():
        dec.layers[0].weight.copy_(torch.eye(5, 3).unsqueeze(-1))
        dec.layers[0].bias.zero_()
    T = 12
    z = torch.zeros(1, 3, T)
    z[0, 1, 5] = 2.0
    out = dec(z)[0]  # (wav_length(T),)
    conv = dec.layers[2].conv_tr
    frame = 2.0 * conv.weight[1, 0] * torch.hann_window(64).square()  # (64,)
    full = torch.zeros((T - 1) * 16 + 64)
    full[5 * 16:5 * 16 + 64] += frame
    expected = full[64 - 16:len(full) - (64 - 16)] + conv.bias
    torch.testing.assert_close(out, expected.detach(), rtol=1e-6, atol=1e-6)


def test_length_bookkeeping_and_paper_parameter_count(reference_dir) -> None:
    facts = json.loads((reference_dir / "sing" / "sing_arch_facts.json").read_text())
    c = sing_preset("nsynth-sing")
    assert c.strip == facts["decoder.strip"] == 1792
    assert c.pad == facts["advised_pad = strip + 512"] == 2304
    assert c.padded_length == facts["padded_wav_len (64000 + 2*2304)"] == 68608
    assert c.num_frames == facts["embedding_length (LSTM steps)"] == 265
    assert c.decoder_length == facts["decoder_target_len (padded - 2*strip)"] == 65024
    assert c.input_size == facts["lstm_input_size"] == 30
    with torch.device("meta"):
        model, ae = SING(c), SINGAutoencoder(c)
    params = facts["params"]
    assert model.decoder.wav_length(c.num_frames) == facts["decoder.wav_length(embedding_length)"]
    assert _count(model) == params["SING (seq + decoder)"] == 63_747_929
    assert _count(model.decoder) == params["decoder"]
    assert _count(model.generator) == params["sequence_generator"]
    assert _count(model.generator.lstm) == params["lstm"]
    assert _count(model.generator.output) == params["seq_linear_out"]
    tables = [model.generator.instrument, model.generator.pitch, model.generator.velocity, model.generator.time]
    assert sum(_count(t) for t in tables) == params["lookup_tables"]
    assert _count(ae.encoder) == params["encoder"]
    assert _count(ae) == params["autoencoder"]
    # the encoder turns a padded note into exactly the generator's frames; decoding them crops to the target
    enc = FrameEncoder(dimension=4, channels=8)
    z = enc(torch.zeros(1, c.padded_length))
    assert z.shape == (1, 4, c.num_frames)
    dec = FrameDecoder(dimension=4, channels=8)
    assert dec(z).shape == (1, c.padded_length - 2 * dec.strip)


def _tiny(sequence_model: str = "lstm", **kw) -> SINGConfig:
    base = {"num_instruments": 3, "num_pitches": 128, "num_velocities": 5, "velocity_mapping": "dense",
            "note_length": 4096, "sequence_model": sequence_model}
    return sing_preset("tiny-sing", **{**base, **kw})


@pytest.mark.parametrize("sequence_model", ["lstm", "s4"])
def test_forward_shapes_and_generate_batches(sequence_model) -> None:
    torch.manual_seed(0)
    model = SING(_tiny(sequence_model)).eval()
    c = model.config
    wav = model([0, 1][0], 60, 3)
    assert wav.shape == (1, c.note_length)
    full = model(torch.tensor([0, 2]), torch.tensor([60, 61]), torch.tensor([1, 3]), crop=False)
    assert full.shape == (2, c.decoder_length) == (2, c.note_length + 2 * c.extra_pad)
    # generate: scalar labels broadcast; batching does not change the notes
    inst = torch.tensor([0, 1, 2, 0, 1])
    a = model.generate(inst, 60, 3, batch_size=2)
    b = model.generate(inst, torch.full((5,), 60), torch.full((5,), 3), batch_size=5)
    assert a.shape == (5, c.note_length)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a[:2], model(inst[:2], 60, 3).detach(), rtol=1e-5, atol=1e-6)


def test_lstm_chunks_equal_whole_sequence() -> None:
    """Truncated BPTT runs the LSTM chunk by chunk with its state carried: the frames equal one full pass."""
    torch.manual_seed(0)
    model = SING(_tiny("lstm"))
    labels = model.check_labels(torch.tensor([0, 1]), torch.tensor([50, 70]), torch.tensor([0, 4]))
    whole, _ = model.generator(*labels)
    parts, state = [], None
    for start in range(0, model.config.num_frames, 8):
        z, state = model.generator(*labels, start=start, length=min(8, model.config.num_frames - start), state=state)
        parts.append(z)
    torch.testing.assert_close(torch.cat(parts, dim=-1), whole, rtol=1e-5, atol=1e-6)


def test_labels_out_of_range_and_bad_config() -> None:
    model = SING(_tiny())
    with pytest.raises(ValueError, match=r"instrument ids must lie in \[0, 3\)"):
        model(3, 60, 0)
    with pytest.raises(ValueError, match=r"pitch ids must lie in \[0, 128\), got values in \[-1, 60\]"):
        model(torch.tensor([0, 0]), torch.tensor([-1, 60]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="velocity"):
        model(0, 60, 5)
    with pytest.raises(TypeError, match="pitch must be an int, a list of ints or an integer tensor"):
        model(0, 60.0, 0)
    with pytest.raises(ValueError, match="same batch size"):
        model(torch.tensor([0, 1]), torch.tensor([60, 61, 62]), torch.tensor([0, 1]))
    assert SING(sing_preset("tiny-sing", velocity_mapping="sing", num_velocities=6)).velocity_id(100) == 4  # no id 3
    assert model.velocity_id(100) == 3
    with pytest.raises(ValueError, match="velocity must be one of"):
        model.velocity_id(64)
    with pytest.raises(ValueError, match="note_length"):
        SINGConfig(note_length=64001)
    with pytest.raises(ValueError, match="sequence_model"):
        SINGConfig(sequence_model="gru")
    with pytest.raises(ValueError, match="num_pitches"):
        SINGConfig(num_pitches=0)
    with pytest.raises(ValueError, match="unknown SING preset"):
        sing_preset("huge")


def test_config_round_trip() -> None:
    c = _tiny("s4", s4_pool=[2, 2])
    d = json.loads(json.dumps(c.to_dict()))
    assert d["model_type"] == "sing"
    assert SINGConfig.from_dict(d) == c
    with pytest.raises(ValueError, match="unknown SINGConfig field"):
        SINGConfig.from_dict({**d, "hidden": 3})
    with pytest.raises(ValueError, match="model type 'lm'"):
        SINGConfig.from_dict({**d, "model_type": "lm"})
    # an s4 backbone with pooling pads the 31 frames to a multiple of 4 and crops them again
    model = SING(c)
    assert model(0, 60, 0).shape == (1, c.note_length)


def _fundamental(wav: torch.Tensor, sample_rate: int) -> float:
    """Frequency of the strongest spectral peak in 50..2000 Hz (zero-padded FFT, parabolic interpolation)."""
    x = wav.double().numpy()
    x = (x - x.mean()) * np.hanning(len(x))
    n = 1 << 16
    spec = np.abs(np.fft.rfft(x, n=n))
    lo, hi = int(50 * n / sample_rate), int(2000 * n / sample_rate)
    k = lo + int(np.argmax(spec[lo:hi]))
    a, b, c = np.log(spec[k - 1:k + 2])
    k = k + 0.5 * (a - c) / (a - 2 * b + c)
    return k * sample_rate / n


@pytest.mark.parametrize("sequence_model", ["lstm", pytest.param("s4", marks=pytest.mark.slow)])
def test_tiny_sing_overfits_synthetic_notes(tmp_path, sequence_model) -> None:
    """SING's three phases on four synthetic notes: the spectral loss of the generated notes falls far below
    the untrained model's, and each generated note has its fundamental at the labelled pitch."""
    torch.manual_seed(0)
    c = _tiny(sequence_model, num_instruments=2)
    write_synthetic_nsynth(tmp_path, instruments=(0, 1), pitches=(57, 64), velocities=(100,),
                           num_samples=c.note_length)
    data = NSynth(tmp_path, pad=c.pad, num_samples=c.note_length)
    batch = next(iter(DataLoader(data, batch_size=len(data))))
    labels = (batch["instrument"], batch["pitch"], batch["velocity"])
    target = batch["wav"][:, c.strip:-c.strip]  # (4, decoder_length)
    loss = SpectralLoss()

    model = SING(c)
    with torch.no_grad():
        initial = loss(model(*labels, crop=False), target).item()
    ae = SINGAutoencoder(c)
    ae_losses = train_phase("autoencoder", ae, [batch], steps=250, lr=1e-3)
    assert ae_losses[-1] < 0.5 * ae_losses[0]
    model.decoder.load_state_dict(ae.decoder.state_dict())
    seq_losses = train_phase("sequence", model, [batch], steps=100, lr=1e-3, encoder=ae.encoder, truncation=8)
    assert seq_losses[-1] < 0.3 * seq_losses[0]
    train_phase("end2end", model, [batch], steps=80, lr=3e-3)
    model.eval()
    notes = model.generate(*labels)
    final = loss(model(*labels, crop=False), target).item()
    assert final < 0.3 * initial, (initial, final)
    for wav, pitch in zip(notes, batch["pitch"].tolist()):
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)
        cents = 1200 * math.log2(_fundamental(wav, c.sample_rate) / f0)
        assert abs(cents) < 50, (pitch, cents)


def test_train_phase_checks() -> None:
    c = _tiny()
    with pytest.raises(TypeError, match="SINGAutoencoder"):
        train_phase("autoencoder", SING(c), [], steps=1)
    with pytest.raises(ValueError, match="encoder"):
        train_phase("sequence", SING(c), [], steps=1)
    with pytest.raises(ValueError, match="phase"):
        train_phase("finetune", SING(c), [], steps=1)
    bad = {"wav": torch.zeros(2, 100), "instrument": torch.zeros(2, dtype=torch.long),
           "pitch": torch.zeros(2, dtype=torch.long), "velocity": torch.zeros(2, dtype=torch.long)}
    with pytest.raises(ValueError, match=r"batch\['wav'\] must have shape"):
        train_phase("end2end", SING(c), [bad], steps=1)
    with pytest.raises(ValueError, match="batches is empty"):
        train_phase("end2end", SING(c), [], steps=1)


def test_sequence_phase_truncated_backpropagation() -> None:
    """One optimizer step per chunk of ``truncation`` frames for the LSTM; one per batch for the S4 generator;
    without an optimizer the loss is the whole-note MSE."""
    torch.manual_seed(0)
    for seq, expected_steps in (("lstm", 4), ("s4", 1)):  # 31 frames: chunks of 8 -> 4
        model = SING(_tiny(seq))
        c = model.config
        labels = {"instrument": torch.tensor([0, 1]), "pitch": torch.tensor([60, 64]), "velocity": torch.tensor([1, 2])}
        target = torch.randn(2, c.dimension, c.num_frames)
        whole = sequence_steps(model.generator, labels, target, None, truncation=8)["loss"]
        z, _ = model.generator(labels["instrument"], labels["pitch"], labels["velocity"])
        torch.testing.assert_close(whole, torch.nn.functional.mse_loss(z, target))
        opt = torch.optim.SGD(model.generator.parameters(), lr=0.0)
        calls = []
        opt.register_step_post_hook(lambda *_, calls=calls: calls.append(1))
        sequence_steps(model.generator, labels, target, opt, truncation=8)
        assert len(calls) == expected_steps
    with pytest.raises(ValueError, match="embeddings must have shape"):
        sequence_steps(model.generator, labels, target[..., :5], None)


@pytest.mark.parametrize("sequence_model", ["lstm", "s4"])
def test_save_and_load_round_trip(tmp_path, sequence_model) -> None:
    """save_pretrained writes model_type "sing"; SING.from_pretrained and sashimi.load_model give the same notes."""
    torch.manual_seed(0)
    model = SING(_tiny(sequence_model)).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "sing" and saved["sequence_model"] == sequence_model
    assert "SING" in (tmp_path / "README.md").read_text()
    for loaded in (SING.from_pretrained(tmp_path), load_model(tmp_path)):
        assert type(loaded) is SING and loaded.config == model.config
        torch.testing.assert_close(loaded.generate([0, 2], 60, 1), model.generate([0, 2], 60, 1), rtol=0, atol=0)
    # the decoder's window is rebuilt, not saved
    assert not any(k.endswith("window") for k in model.state_dict())
    saved["hidden"] = 3
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="unknown SINGConfig field"):
        SING.from_pretrained(tmp_path)


def test_label_vocabularies_and_instrument_names(tmp_path) -> None:
    write_synthetic_nsynth(tmp_path, instruments=(0, 2), pitches=(60,), velocities=(50,), num_samples=2048)
    data = NSynth(tmp_path, pad=0, num_samples=2048)
    assert data.instrument_names == ("synth_000", "", "synth_002")
    c = _tiny(num_instruments=3, instrument_names=data.instrument_names)
    model = SING(c)
    assert model.instrument_id("synth_002") == 2 and model.instrument_id(1) == 1
    with pytest.raises(ValueError, match="unknown instrument name 'piano'"):
        model.instrument_id("piano")
    with pytest.raises(ValueError, match=r"instrument ids must lie in \[0, 3\)"):
        model.instrument_id(3)
    vocab = model.label_vocabularies()
    assert vocab["instrument"] == {0: "synth_000", 2: "synth_002"}
    assert vocab["velocity"] == {25: 0, 50: 1, 75: 2, 100: 3, 127: 4}
    assert SINGConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match="instrument_names has 2 names"):
        _tiny(num_instruments=3, instrument_names=["a", "b"])
