"""Baseline waveform models of the SaShiMi paper, for comparisons and benchmarks."""

from sashimi.models.baselines.wavenet import WaveNet, WaveNetConfig, wavenet_paper

__all__ = ["WaveNet", "WaveNetConfig", "wavenet_paper"]
