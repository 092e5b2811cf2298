"""Iterative masked decoding with stand-in models: the official per-step schedule (golden), the
re-masking rule, pinned prompts, argmax fill, rescoring, and input validation."""

from __future__ import annotations

import itertools
import json
import math
from types import SimpleNamespace

import pytest
import torch

from sashimi.generation import masked_decode, sample_top_p

CARD = 16


def positional_model(K: int, T: int, card: int = CARD, seed: int = 0):
    """A stand-in whose logits depend only on position and stream (as the golden's)."""
    table = torch.randn(K, T, card, generator=torch.Generator().manual_seed(seed)) * 2  # (K, T, card)

    def model(tokens, labels, stage):
        return table[:, : tokens.shape[2]].unsqueeze(0).expand(tokens.shape[0], -1, -1, -1)

    model.table = table
    return model


class PrefersToken:
    """A stand-in autoregressive rescorer (SaShiMiLM's public surface) that prefers one token."""

    def __init__(self, card: int, token: int, quantization: str = "mu-law") -> None:
        self.config = SimpleNamespace(bits=int(math.log2(card)), quantization=quantization)
        self.logits = torch.zeros(card)
        self.logits[token] = 3.0
        self.calls = 0

    def shift_right(self, targets):
        return torch.cat([torch.full_like(targets[:, :1], 2 ** (self.config.bits - 1)), targets[:, :-1]], 1)

    def __call__(self, inputs):
        self.calls += 1
        return self.logits.expand(*inputs.shape, -1).clone()

    def probs(self, tokens):
        return torch.softmax(self.logits, -1)[tokens]


@pytest.fixture(scope="module")
def golden(reference_dir):
    path = reference_dir / "magnet" / "magnet_visible.json"
    if not path.is_file():
        pytest.skip(f"MAGNeT golden data not found at {path}")
    return json.loads(path.read_text())


def test_decoding_trace_schedule_equals_golden(golden):
    g0, g1 = golden["decode_stage_nonoverlap_T30_steps6"], golden["decode_stage1_nonoverlap_T30_steps4"]
    trace = []
    out = masked_decode(positional_model(2, 30), 1, 30, n_codebooks=2, card=CARD, span_len=3, steps=(6, 4),
                        temperature=3.0, top_p=0.9, cfg=(10.0, 1.0), labels=torch.zeros(1, dtype=torch.long),
                        generator=torch.Generator().manual_seed(0), progress=False, trace=trace)
    assert out.shape == (1, 2, 30)
    for stage, g in ((0, g0), (1, g1)):
        mine = [t for t in trace if t["stage"] == stage]
        assert [t["mask_rate"] for t in mine] == [e["mask_p"] for e in g["schedule"]]
        assert [t["cfg_coef"] for t in mine] == [e["cfg_coef"] for e in g["schedule"]]
        assert [t["temperature"] for t in mine] == [e["temperature"] for e in g["schedule"]]
        assert [t["n_masked"] for t in mine] == [e["masked_tokens_seen_by_model"] for e in g["schedule"]]
        # the golden rows and ours share the structure: whole aligned spans, shrinking monotonically
        for rows in ([torch.tensor(r, dtype=torch.bool) for r in g["mask_rows_seen_by_model"]],
                     [t["mask"][0] for t in mine]):
            for a, b in itertools.pairwise(rows):
                assert not bool((b & ~a).any())
            for r in rows:
                spans = r.reshape(-1, 3)
                assert bool((spans.all(1) | ~spans.any(1)).all())


def test_remasking_picks_the_least_confident_spans_and_never_a_kept_one():
    trace = []
    masked_decode(positional_model(1, 60, seed=3), 2, 60, n_codebooks=1, card=CARD, span_len=3, steps=(8,),
                  generator=torch.Generator().manual_seed(1), progress=False, trace=trace)
    for prev, cur in itertools.pairwise(trace):
        for b in range(2):
            score = 1 - prev["probs"][b].reshape(-1, 3).amax(-1)  # (spans,) 'max' scoring
            was = prev["mask"][b].reshape(-1, 3)[:, 0]
            now = cur["mask"][b].reshape(-1, 3)[:, 0]
            assert not bool((now & ~was).any())
            # every re-masked span scores at least as high as every span that was candidate and kept
            kept = was & ~now
            if now.any() and kept.any():
                assert score[now].min() >= score[kept].max()


def test_decoding_fills_everything_and_pins_the_prompt():
    prompt = torch.randint(0, CARD, (2, 2, 7), generator=torch.Generator().manual_seed(5))
    out = masked_decode(positional_model(2, 32), 2, 32, n_codebooks=2, card=CARD, span_len=3, steps=(5, 3),
                        prompt=prompt, generator=torch.Generator().manual_seed(2), progress=False)
    assert out.shape == (2, 2, 30)  # trimmed to a multiple of the span
    assert int(out.min()) >= 0 and int(out.max()) < CARD  # no mask id left
    assert torch.equal(out[..., :7], prompt)
    out = masked_decode(positional_model(1, 31), 1, 31, n_codebooks=1, card=CARD, span_len=3, steps=4,
                        span_arrangement="stride1", prompt=prompt[:1, :1], progress=False)
    assert out.shape == (1, 1, 31) and int(out.max()) < CARD and torch.equal(out[..., :7], prompt[:1, :1])


def test_one_step_at_low_temperature_is_the_argmax_fill():
    model = positional_model(2, 30, seed=7)
    # the last step's temperature is the official floor 0.01: give every argmax a margin of >= 0.5 (odds e^-50)
    top = model.table.argmax(-1, keepdim=True)
    model.table.scatter_add_(-1, top, torch.full_like(top, 0.5, dtype=model.table.dtype))
    out = masked_decode(model, 3, 30, n_codebooks=2, card=CARD, span_len=3, steps=(1, 1), temperature=1e-4,
                        generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.equal(out, model.table.argmax(-1).unsqueeze(0).expand(3, -1, -1))


def test_rescoring_weight_one_follows_the_rescorer():
    T = 90
    rescorer = PrefersToken(CARD, 7)
    trace = []
    out = masked_decode(positional_model(1, T, seed=9), 4, T, n_codebooks=1, card=CARD, span_len=3, steps=(10,),
                        rescorer=rescorer, rescore_weight=1.0, quantization="mu-law",
                        generator=torch.Generator().manual_seed(3), progress=False, trace=trace)
    assert rescorer.calls == 10  # one teacher-forced pass per step
    for prev, cur in itertools.pairwise(trace):
        for b in range(4):
            score = 1 - rescorer.probs(prev["tokens"][b]).reshape(-1, 3).amax(-1)  # from the AR model alone
            was, now = prev["mask"][b].reshape(-1, 3)[:, 0], cur["mask"][b].reshape(-1, 3)[:, 0]
            kept = was & ~now
            if now.any() and kept.any():
                assert score[now].min() >= score[kept].max()
    with_7 = (out[:, 0].reshape(4, -1, 3) == 7).any(-1).float().mean()
    plain = masked_decode(positional_model(1, T, seed=9), 4, T, n_codebooks=1, card=CARD, span_len=3, steps=(10,),
                          generator=torch.Generator().manual_seed(3), progress=False)
    plain_7 = (plain[:, 0].reshape(4, -1, 3) == 7).any(-1).float().mean()
    assert with_7 > plain_7 + 0.2


def test_sample_top_p_keeps_the_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).expand(4000, -1)
    draws = sample_top_p(probs, 0.7, torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=4).double() / 4000
    assert counts[2] == 0 and counts[3] == 0
    assert abs(counts[0].item() - 0.5 / 0.8) < 0.03


def test_bad_input_errors():
    m = positional_model(2, 30)
    kw = {"n_codebooks": 2, "card": CARD, "span_len": 3, "progress": False}
    with pytest.raises(ValueError, match="n_codebooks=2"):
        masked_decode(m, 1, 30, steps=(4,), **kw)
    with pytest.raises(ValueError, match="shorter than one span"):
        masked_decode(m, 1, 2, steps=(4, 4), **kw)
    with pytest.raises(ValueError, match="mask id"):
        masked_decode(m, 1, 30, steps=(4, 4), prompt=torch.full((1, 2, 4), CARD), **kw)
    with pytest.raises(ValueError, match="nothing to decode"):
        masked_decode(m, 1, 30, steps=(4, 4), prompt=torch.zeros(1, 2, 30, dtype=torch.long), **kw)
    with pytest.raises(ValueError, match="single token stream"):
        masked_decode(m, 1, 30, steps=(4, 4), rescorer=PrefersToken(CARD, 1), quantization="mu-law", **kw)
    m1 = positional_model(1, 30)
    kw1 = {"n_codebooks": 1, "card": CARD, "span_len": 3, "steps": (4,), "progress": False}
    with pytest.raises(ValueError, match="same quantization"):
        masked_decode(m1, 1, 30, rescorer=PrefersToken(CARD, 1, "linear"), quantization="mu-law", **kw1)
    with pytest.raises(ValueError, match="same quantization"):
        masked_decode(m1, 1, 30, rescorer=PrefersToken(2 * CARD, 1), quantization="mu-law", **kw1)
    with pytest.raises(ValueError, match="codec tokens"):
        masked_decode(m1, 1, 30, rescorer=PrefersToken(CARD, 1), quantization=None, **kw1)
    with pytest.raises(ValueError, match="span_scoring"):
        masked_decode(m1, 1, 30, span_scoring="mean", **kw1)
