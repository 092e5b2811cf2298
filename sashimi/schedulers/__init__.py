"""Schedules as tensors in, tensors out: diffusion noise schedules and samplers, masking schedules."""

from sashimi.schedulers.noise import LMNT_FAST_BETAS, DDPMScheduler, InferenceSchedule

__all__ = ["LMNT_FAST_BETAS", "DDPMScheduler", "InferenceSchedule"]
