"""Data utilities: deterministic synthetic audio (:mod:`sashimi.data.synth`), audio folders as token datasets
(:mod:`sashimi.data.audio_folder`) and the SaShiMi paper's dataset layouts and splits
(:mod:`sashimi.data.datasets`)."""

from sashimi.data.audio_folder import AUDIO_EXTENSIONS, IGNORE_INDEX, AudioFolder, find_audio_files, pad_collate
from sashimi.data.datasets import (
    DATA_PRESETS,
    LAYOUTS,
    SC09,
    Beethoven,
    YouTubeMix,
    detect_layout,
    make_dataset,
    split_files,
)
from sashimi.data.synth import DTMF_FREQUENCIES, dtmf, karplus_strong, plucked_melody, tone
from sashimi.data.token_folder import TOKEN_EXTENSIONS, TokenFolder, load_tokens

__all__ = [
    "DTMF_FREQUENCIES",
    "dtmf",
    "karplus_strong",
    "plucked_melody",
    "tone",
    "AUDIO_EXTENSIONS",
    "IGNORE_INDEX",
    "AudioFolder",
    "find_audio_files",
    "pad_collate",
    "DATA_PRESETS",
    "LAYOUTS",
    "SC09",
    "Beethoven",
    "YouTubeMix",
    "detect_layout",
    "make_dataset",
    "split_files",
]
__all__ += ["TOKEN_EXTENSIONS", "TokenFolder", "load_tokens"]
