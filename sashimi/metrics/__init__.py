"""Evaluation metrics: FID / IS / mIS / AM / NDB from classifier outputs, periodicity, NLL."""
