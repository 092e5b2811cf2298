"""Schedules as tensors in, tensors out: diffusion noise schedules and samplers, masking schedules."""
