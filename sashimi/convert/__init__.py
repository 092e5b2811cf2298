"""Converters from the official implementation's state dicts to this package's modules."""

from sashimi.convert.standalone import convert_standalone_state_dict, detilde, standalone_config

__all__ = ["convert_standalone_state_dict", "detilde", "standalone_config"]
