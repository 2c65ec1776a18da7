"""Encodings, MLP backends (torch | fused | tcnn), the radiance field and its presets."""
from .backends import available_backends, resolve_backend
from .config import FieldConfig, load_field_config
from .encoding import FrequencyEncoding, HashGridEncoding, SHEncoding
from .field import RadianceField, trunc_exp
from .mlp import MLP, make_mlp

__all__ = [
    "FieldConfig", "FrequencyEncoding", "HashGridEncoding", "MLP", "RadianceField", "SHEncoding",
    "available_backends", "load_field_config", "make_mlp", "resolve_backend", "trunc_exp",
]
