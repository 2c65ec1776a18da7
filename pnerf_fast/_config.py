"""One typed builder: a mapping (a YAML file's, a checkpoint's) -> a config dataclass.

``build_config(cls, data, what)`` is how the training, field and render configs are made
from dicts:

- every key must be a field of ``cls`` (else: unknown key, with the allowed ones);
- a field whose annotation is a dataclass (also ``X | None``) is built from its mapping
  the same way, its keys named with their path (``meta.alpha.grid``);
- any other value must have its default's type: true/false for a bool; an integer for an
  int (an integral float such as ``1e3`` is taken); a number for a float; a string; a
  mapping. Other defaults (tuples, lists, None) are left to the config's own checks.

Errors are a ValueError ``"<what>: <key>: <problem>"``. Ranges and choices stay with each
config (its ``validate``), which runs after the build.
"""
from __future__ import annotations

import dataclasses
import types
import typing

from ._io import short_repr


def _join(key: str, name) -> str:
    return f"{key}.{name}" if key else str(name)


def _nested(hint):
    """(the dataclass a field annotation names or None, whether None is allowed)."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint, False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        classes = [a for a in args if dataclasses.is_dataclass(a) and isinstance(a, type)]
        if len(classes) == 1:
            return classes[0], type(None) in args
    return None, False


def _typed(default, value, what: str, key: str):
    """``value`` checked against the type of ``default`` (and converted int <-> float)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{what}: {key}: must be true or false, got {short_repr(value)}")
    elif isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{what}: {key}: must be an integer, got {short_repr(value)}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{what}: {key}: must be a number, got {short_repr(value)}")
        value = float(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"{what}: {key}: must be a string, got {short_repr(value)}")
    elif isinstance(default, dict) and not isinstance(value, dict):
        raise ValueError(f"{what}: {key}: must be a mapping, got {short_repr(value)}")
    return value


def build_config(cls, data, what: str, key: str = ""):
    """An instance of the dataclass ``cls`` (every field has a default) from the mapping
    ``data``; ``what`` names the config in errors ("config", "field config"), ``key`` is
    where ``data`` sits in it ("" at the top)."""
    if not isinstance(data, dict):
        raise ValueError(f"{what}: {key or 'top level'}: must be a mapping, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    for k in data:
        if k not in names:
            raise ValueError(f"{what}: {_join(key, k)}: unknown key (allowed: {', '.join(sorted(names))})")
    hints = typing.get_type_hints(cls)
    defaults = cls()
    kwargs = {}
    for name, value in data.items():
        sub = _join(key, name)
        nested, optional = _nested(hints.get(name))
        if nested is not None:
            kwargs[name] = None if value is None and optional else build_config(nested, value, what, sub)
        else:
            kwargs[name] = _typed(getattr(defaults, name), value, what, sub)
    return cls(**kwargs)
