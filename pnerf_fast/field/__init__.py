"""Encodings, MLP backends, the radiance field and its presets."""
