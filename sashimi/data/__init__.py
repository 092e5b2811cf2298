"""Data utilities: deterministic synthetic audio (:mod:`sashimi.data.synth`), audio folders as token datasets
(:mod:`sashimi.data.audio_folder`) and the SaShiMi paper's dataset layouts and splits
(:mod:`sashimi.data.datasets`) and NSynth notes for SING (:mod:`sashimi.data.nsynth`)."""

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
from sashimi.data.nsynth import (
    NSYNTH_VELOCITIES,
    VELOCITY_MAPPINGS,
    NSynth,
    harmonic_note,
    map_velocity,
    nsynth_split,
    write_synthetic_nsynth,
)
from sashimi.data.synth import DTMF_FREQUENCIES, dtmf, karplus_strong, plucked_melody, tone
from sashimi.data.token_folder import TOKEN_EXTENSIONS, TokenFolder, load_tokens

__all__ = [
    "AUDIO_EXTENSIONS",
    "DATA_PRESETS",
    "DTMF_FREQUENCIES",
    "IGNORE_INDEX",
    "LAYOUTS",
    "NSYNTH_VELOCITIES",
    "SC09",
    "VELOCITY_MAPPINGS",
    "AudioFolder",
    "Beethoven",
    "NSynth",
    "YouTubeMix",
    "detect_layout",
    "dtmf",
    "find_audio_files",
    "harmonic_note",
    "karplus_strong",
    "make_dataset",
    "map_velocity",
    "nsynth_split",
    "pad_collate",
    "plucked_melody",
    "split_files",
    "tone",
    "write_synthetic_nsynth",
]
__all__ += ["TOKEN_EXTENSIONS", "TokenFolder", "load_tokens"]
