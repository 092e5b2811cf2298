"""Evaluation metrics: FID / IS / mIS / AM / NDB from classifier outputs, periodicity, NLL."""
from sashimi.metrics.periodicity import periodicity  # noqa: F401
