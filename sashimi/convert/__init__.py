"""Converters from the official implementation's state dicts to this package's modules."""

from sashimi.convert.diffwave_sashimi import (
    OFFICIAL_CONFIGS,
    convert_diffwave_sashimi_state_dict,
    load_diffwave_sashimi,
)
from sashimi.convert.standalone import convert_standalone_state_dict, detilde, standalone_config
from sashimi.convert.state_spaces import (
    VARIANTS,
    UnsafeCheckpointError,
    convert_state_spaces_state_dict,
    detect_layout,
    read_checkpoint,
    variant_config,
)

__all__ = [
    "OFFICIAL_CONFIGS",
    "convert_diffwave_sashimi_state_dict",
    "load_diffwave_sashimi",
    "VARIANTS",
    "UnsafeCheckpointError",
    "convert_standalone_state_dict",
    "convert_state_spaces_state_dict",
    "detect_layout",
    "detilde",
    "read_checkpoint",
    "standalone_config",
    "variant_config",
]
