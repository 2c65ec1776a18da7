"""Field configuration: small dataclasses, loaded from YAML presets and validated.

``load_field_config("fast" | "fast_latent" | "paper" | path)``: a name is a preset in the
package's ``pnerf_fast/configs/``, the presets' only copy (it ships in the wheel, so it
works for installed and editable packages alike; the repository's ``configs/`` holds the
pretraining recipes, which name these presets). Unknown keys and bad values raise
ValueError naming the key (``encoding.log2_table: ...``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from .._config import build_config
from .._io import short_repr
from ..geometry.box import CANONICAL_AABB

PACKAGE_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class PosEncodingConfig:
    type: str = "hashgrid"          # "hashgrid" | "frequency"
    # hashgrid
    n_levels: int = 16
    n_features: int = 2
    log2_table: int = 17
    base_res: int = 16
    finest_res: int = 1024
    # frequency
    n_freqs: int = 10
    include_input: bool = True


@dataclass
class DirEncodingConfig:
    type: str = "sh"                # "sh" | "frequency"
    degree: int = 4                 # sh
    n_freqs: int = 4                # frequency
    include_input: bool = True


@dataclass
class DensityMLPConfig:
    width: int = 64
    n_hidden: int = 1
    geo_features: int = 16          # outputs; channel 0 is the density pre-activation
    skips: list = field(default_factory=list)  # NeRF skips: after hidden layer i (0-based) the encoded input is re-concatenated (paper: [4])


@dataclass
class ColorMLPConfig:
    width: int = 64
    n_hidden: int = 2


@dataclass
class DensityConfig:
    activation: str = "trunc_exp"   # "trunc_exp" | "softplus" | "relu"
    bias: float = -3.0              # added before the activation: low density at init


@dataclass
class FieldConfig:
    name: str = "fast"
    aabb: tuple = CANONICAL_AABB
    backend: str = "auto"           # MLP backend: auto | torch | fused | tcnn
    encoding: PosEncodingConfig = field(default_factory=PosEncodingConfig)
    dir_encoding: DirEncodingConfig = field(default_factory=DirEncodingConfig)
    density_mlp: DensityMLPConfig = field(default_factory=DensityMLPConfig)
    color_mlp: ColorMLPConfig = field(default_factory=ColorMLPConfig)
    density: DensityConfig = field(default_factory=DensityConfig)
    # Per-subject latent code (0 = none). The code shifts the first-layer bias of the
    # density and colour MLPs (the same as concatenating it to their inputs).
    latent_dim: int = 0
    # How many hidden layers of each MLP the code shifts (1: the first only; more: also the
    # next ones, as concatenating the code to every layer's input; capped at each MLP's depth).
    latent_layers: int = 1
    # A coarse feature volume decoded from the code (0 = none): V(z) = V0 + sum_k z_k V_k, a
    # [latent_volume_features, R, R, R] volume over the box (R = latent_volume_res), read
    # trilinearly at each point and fed to the density MLP beside the hash features. The code
    # then says WHERE this head has its nose and hair, which a bias shift cannot.
    latent_volume_res: int = 0
    latent_volume_features: int = 4

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["aabb"] = list(self.aabb)
        return d


_ENC_KEYS = {"hashgrid": {"type", "n_levels", "n_features", "log2_table", "base_res", "finest_res"},
             "frequency": {"type", "n_freqs", "include_input"}}
_DIR_KEYS = {"sh": {"type", "degree"}, "frequency": {"type", "n_freqs", "include_input"}}


def _fail(key: str, msg: str):
    raise ValueError(f"field config: {key}: {msg}")


def _int(key, v, lo, hi=None):
    if isinstance(v, bool) or not isinstance(v, int):
        _fail(key, f"must be an integer, got {short_repr(v)}")
    if v < lo or (hi is not None and v > hi):
        _fail(key, f"must be in [{lo}, {hi if hi is not None else 'inf'}], got {v}")
    return v


def validate(cfg: FieldConfig) -> FieldConfig:
    """Check every value; raise ValueError naming the first bad key."""
    from .backends import BACKENDS

    if not isinstance(cfg.name, str):
        _fail("name", "must be a string")
    aabb = cfg.aabb
    if not isinstance(aabb, (list, tuple)) or len(aabb) != 6 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in aabb):
        _fail("aabb", f"must be 6 numbers (min xyz, max xyz), got {short_repr(aabb)}")
    if not all(math.isfinite(v) for v in aabb) or any(aabb[i + 3] <= aabb[i] for i in range(3)):
        _fail("aabb", f"max must exceed min on every axis, got {aabb!r}")
    cfg.aabb = tuple(float(v) for v in aabb)
    if cfg.backend not in BACKENDS:
        _fail("backend", f"must be one of {', '.join(BACKENDS)}, got {cfg.backend!r}")
    e = cfg.encoding
    if e.type not in _ENC_KEYS:
        _fail("encoding.type", f"must be 'hashgrid' or 'frequency', got {e.type!r}")
    if e.type == "hashgrid":
        _int("encoding.n_levels", e.n_levels, 1, 32)
        _int("encoding.n_features", e.n_features, 1, 8)
        _int("encoding.log2_table", e.log2_table, 4, 30)
        _int("encoding.base_res", e.base_res, 1)
        _int("encoding.finest_res", e.finest_res, e.base_res)
    else:
        _int("encoding.n_freqs", e.n_freqs, 0, 32)
    if not isinstance(e.include_input, bool):
        _fail("encoding.include_input", f"must be true or false, got {e.include_input!r}")
    d = cfg.dir_encoding
    if d.type not in _DIR_KEYS:
        _fail("dir_encoding.type", f"must be 'sh' or 'frequency', got {d.type!r}")
    if d.type == "sh":
        _int("dir_encoding.degree", d.degree, 1, 4)
    else:
        _int("dir_encoding.n_freqs", d.n_freqs, 0, 32)
    if not isinstance(d.include_input, bool):
        _fail("dir_encoding.include_input", f"must be true or false, got {d.include_input!r}")
    m = cfg.density_mlp
    _int("density_mlp.width", m.width, 1, 4096)
    _int("density_mlp.n_hidden", m.n_hidden, 0, 16)
    _int("density_mlp.geo_features", m.geo_features, 1, 4096)
    if not isinstance(m.skips, (list, tuple)) or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= m.n_hidden - 2 for s in m.skips):
        _fail("density_mlp.skips", f"must be a list of hidden-layer indices in [0, n_hidden-2], got {m.skips!r}")
    c = cfg.color_mlp
    _int("color_mlp.width", c.width, 1, 4096)
    _int("color_mlp.n_hidden", c.n_hidden, 0, 16)
    if cfg.density.activation not in ("trunc_exp", "softplus", "relu"):
        _fail("density.activation", f"must be 'trunc_exp', 'softplus' or 'relu', got {cfg.density.activation!r}")
    if isinstance(cfg.density.bias, bool) or not isinstance(cfg.density.bias, (int, float)):
        _fail("density.bias", f"must be a number, got {cfg.density.bias!r}")
    cfg.density.bias = float(cfg.density.bias)
    _int("latent_dim", cfg.latent_dim, 0, 1024)
    _int("latent_layers", cfg.latent_layers, 1, 16)
    _int("latent_volume_res", cfg.latent_volume_res, 0, 128)
    _int("latent_volume_features", cfg.latent_volume_features, 1, 64)
    if cfg.latent_volume_res and (cfg.latent_volume_res < 2 or not cfg.latent_dim):
        _fail("latent_volume_res", "must be 0 or >= 2, and needs latent_dim > 0")
    return cfg


def _check_type_keys(raw: dict, section: str, table: dict, default_type: str):
    sub = raw.get(section)
    if isinstance(sub, dict):
        t = sub.get("type", default_type)
        allowed = table.get(t)
        if allowed is not None:
            for k in sub:
                if k not in allowed:
                    _fail(f"{section}.{k}", f"not a key of {section} type {t!r} (allowed: {', '.join(sorted(allowed))})")


def field_config_from_dict(raw: dict) -> FieldConfig:
    """A validated FieldConfig from a mapping (a preset's, a checkpoint's); a bad key or
    value is a ValueError naming it (``field config: encoding.log2_table: ...``)."""
    if not isinstance(raw, dict):
        raise ValueError(f"field config: must be a mapping, got {type(raw).__name__}")
    _check_type_keys(raw, "encoding", _ENC_KEYS, "hashgrid")
    _check_type_keys(raw, "dir_encoding", _DIR_KEYS, "sh")
    return validate(build_config(FieldConfig, raw, "field config"))


def config_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise FileNotFoundError(f"field config file not found: {p}")
        return p
    cand = PACKAGE_CONFIGS / f"{name_or_path}.yaml"
    if cand.exists():
        return cand
    presets = ", ".join(sorted(q.stem for q in PACKAGE_CONFIGS.glob("*.yaml")))
    raise ValueError(f"field config: unknown preset {str(name_or_path)!r}; presets: {presets} (or give a .yaml path)")


def load_field_config(name_or_path: str | Path = "fast") -> FieldConfig:
    """Load and validate a preset name ("fast", "paper") or a YAML file."""
    path = config_path(name_or_path)
    from .._io import safe_yaml_load

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"field config {path}: cannot be read ({e})") from None
    raw = safe_yaml_load(text, f"field config {path}") or {}
    try:
        return field_config_from_dict(raw)
    except ValueError as e:
        raise ValueError(f"{e} (in {path})") from None
