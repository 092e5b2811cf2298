"""Converters from the official implementation's state dicts to this package's modules."""

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
