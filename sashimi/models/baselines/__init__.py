"""Baseline waveform models of the SaShiMi paper, for comparisons and benchmarks."""

from sashimi.models.baselines.diffwave_wavenet import DiffWaveWaveNet, DiffWaveWaveNetConfig
from sashimi.models.baselines.wavenet import PAPER_WRAPPER_PARAMETERS, WaveNet, WaveNetConfig, wavenet_paper

__all__ = ["PAPER_WRAPPER_PARAMETERS", "WaveNet", "WaveNetConfig", "wavenet_paper"]
__all__ += ["DiffWaveWaveNet", "DiffWaveWaveNetConfig"]
