"""Schedules as tensors in, tensors out: diffusion noise schedules and samplers, masking schedules."""

from sashimi.schedulers.masking import DecodingStep as DecodingStep
from sashimi.schedulers.masking import cosine_mask_rate as cosine_mask_rate
from sashimi.schedulers.masking import decoding_schedule as decoding_schedule
from sashimi.schedulers.masking import decoding_steps as decoding_steps
from sashimi.schedulers.masking import least_probable_spans as least_probable_spans
from sashimi.schedulers.masking import span_expected_rate as span_expected_rate
from sashimi.schedulers.masking import span_mask as span_mask
from sashimi.schedulers.masking import span_starts_lut as span_starts_lut
from sashimi.schedulers.noise import LMNT_FAST_BETAS, DDPMScheduler, InferenceSchedule

__all__ = [
    "LMNT_FAST_BETAS",
    "DDPMScheduler",
    "DecodingStep",
    "InferenceSchedule",
    "cosine_mask_rate",
    "decoding_schedule",
    "decoding_steps",
    "least_probable_spans",
    "span_expected_rate",
    "span_mask",
    "span_starts_lut",
]
