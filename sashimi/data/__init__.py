"""Data utilities: deterministic synthetic audio (:mod:`sashimi.data.synth`)."""

from sashimi.data.synth import DTMF_FREQUENCIES, dtmf, karplus_strong, plucked_melody, tone

__all__ = ["DTMF_FREQUENCIES", "dtmf", "karplus_strong", "plucked_melody", "tone"]
