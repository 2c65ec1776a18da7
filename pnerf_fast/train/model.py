"""The portrait model (a canonical-space radiance field + its occupancy grid + the mean
face that defines canonical space), checkpoints, and the finetuned PortraitField."""
from __future__ import annotations

import copy
import math
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._device import module_device, resolve_device
from .._io import public_mode_, short_repr
from ..face.procrustes import SimilarityTransform
from ..geometry.box import grid_box
from ..geometry.cameras import Camera
from ..ops.occgrid import OccupancyGrid
from ..render.rays import Rays
from ..render.renderer import RenderConfig, render_image, render_rays
from .config import TrainConfig, config_from_dict

CHECKPOINT_FORMAT = "pnerf_fast.checkpoint"
CHECKPOINT_VERSION = 1


def build_field(field_cfg):
    """A RadianceField from a preset name, a YAML path, a config dict or a FieldConfig."""
    from ..field import RadianceField
    from ..field.config import field_config_from_dict, load_field_config

    if isinstance(field_cfg, dict):
        cfg = field_config_from_dict(field_cfg)
    elif isinstance(field_cfg, (str, os.PathLike)):
        cfg = load_field_config(field_cfg)
    else:
        cfg = field_cfg
    return RadianceField(cfg)


def _field_cfg_dict(field) -> dict:
    """The field's config as a dict that field_config_from_dict accepts back (only the
    keys of the chosen encoding types)."""
    from ..field import config as fc

    d = field.cfg.to_dict()
    for section, table in (("encoding", fc._ENC_KEYS), ("dir_encoding", fc._DIR_KEYS)):
        allowed = table.get(d[section]["type"])
        if allowed:
            d[section] = {k: v for k, v in d[section].items() if k in allowed}
    return d


class PortraitModel(nn.Module):
    """What pretraining produces and finetuning starts from."""

    def __init__(self, cfg: TrainConfig, mean_face: np.ndarray | None, field=None):
        super().__init__()
        self.cfg = cfg
        self.field = field if field is not None else build_field(cfg.field)
        g = cfg.grid
        self.render_cfg = cfg.render_config()
        # grid.threshold is an opacity per render step (nerfacc's convention): a cell is
        # occupied when sigma * step > threshold.
        # The grid covers the field's own box (its config's aabb), its floor lowered by
        # grid.floor_drop: the visual cone, the hull and the render bounds follow from it.
        self.grid = OccupancyGrid(self.grid_box(), levels=g.levels, res=g.res, decay=g.decay,
                                  threshold=g.threshold / self.render_cfg.step)
        self.mean_face = None if mean_face is None else np.asarray(mean_face, dtype=np.float64)
        # Latent priors: the training subjects' codes [n, latent_dim] (their mean and
        # spread guide the code fit at finetune); None otherwise. A buffer, so that
        # .to(device) moves it with the field and grid (not in state_dict: state() writes it).
        self.register_buffer("codes", None, persistent=False)

    @torch.no_grad()
    def lower_grid_floor_(self, drop: float) -> None:
        """Lower the grid's floor by ``drop`` more canonical units (same cells per axis, so
        they grow along y). Every new cell takes the state (occupied, allowed, density) of
        the old cell at its centre, clamped into the old box, as the field does: below the
        old floor the grid goes on as the floor's cross-section."""
        if not drop > 0:
            return
        old = self.grid
        g = self.cfg.grid
        if old.geometry.levels != 1:
            raise ValueError("lowering the grid's floor needs a one-level grid (grid.levels: 1)")
        new = OccupancyGrid(self.grid_box(g.floor_drop + drop), levels=1, res=old.geometry.res, decay=old.decay,
                            threshold=old.threshold).to(old.bits.device)
        self.grid = new.copy_cells_from_(old)  # same x and z: each new row is the old row at its height
        g.floor_drop += float(drop)

    def grid_box(self, floor_drop: float | None = None) -> tuple:
        """The occupancy grid's box: the field's box (``field.cfg.aabb``) with its floor
        (y) lowered by ``floor_drop`` (default: the config's ``grid.floor_drop``)."""
        return grid_box(self.field.cfg.aabb, self.cfg.grid.floor_drop if floor_drop is None else floor_drop)

    @property
    def device(self) -> torch.device:
        """Where the field, grid and codes live."""
        return module_device(self)

    def density_fn(self, field=None):
        f = field if field is not None else self.field

        def fn(x):
            with torch.no_grad():
                return f.density(x)

        return fn

    def param_groups(self, field=None) -> dict[str, list[nn.Parameter]]:
        return (field or self.field).param_groups()

    # ------------------------------------------------------------------ checkpoints
    def state(self, extra: dict | None = None, half: bool = False) -> dict:
        fs = {k: v.detach().cpu() for k, v in self.field.state_dict().items()}
        if half:
            fs = {k: (v.half() if v.is_floating_point() and v.numel() > 4096 else v) for k, v in fs.items()}
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "train_config": self.cfg.to_dict(),
            "field_config": _field_cfg_dict(self.field),
            "field_state": fs,
            "grid_state": {k: v.cpu() for k, v in self.grid.state_dict().items()},
            "mean_face": None if self.mean_face is None else self.mean_face.tolist(),
            "latent_codes": None if self.codes is None else self.codes.detach().cpu().float(),
            "extra": extra or {},
        }

    def save(self, path, extra: dict | None = None, half: bool = False) -> None:
        save_atomic(self.state(extra, half), path)

    @classmethod
    def from_state(cls, st: dict, source: str = "<checkpoint>", device="auto") -> "PortraitModel":
        """The model of a checkpoint's state (read on the CPU: checkpoints hold no device),
        moved to ``device`` ("auto" | "cpu" | "cuda" | "cuda:N")."""
        dev = resolve_device(device)
        check_checkpoint(st, source)
        try:
            cfg = config_from_dict(st["train_config"])
        except (ValueError, TypeError) as e:
            raise ValueError(f"{source}: train_config: {e}") from None
        try:
            field = build_field(st["field_config"])
        except (ValueError, TypeError, FileNotFoundError) as e:
            raise ValueError(f"{source}: field_config: {e}") from None
        mean_face = st.get("mean_face")
        if mean_face is not None:
            try:
                mf = np.asarray(mean_face, dtype=np.float64)
            except (TypeError, ValueError, OverflowError):
                mf = None
            if mf is None or mf.ndim != 2 or mf.shape[1] != 3 or not np.all(np.isfinite(mf)):
                raise ValueError(f"{source}: mean_face must be a finite [n, 3] list of points")
            mean_face = mf
        model = cls(cfg, mean_face, field=field)
        fs = _tensor_dict(st["field_state"], source, "field_state")
        gs = _tensor_dict(st["grid_state"], source, "grid_state")
        for name, t in fs.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ValueError(f"{source}: field_state[{name!r}] has NaN or infinite weights")
        fs = {k: v.float() if v.is_floating_point() else v for k, v in fs.items()}
        expected = model.field.state_dict()
        for name, t in fs.items():
            if name in expected and t.dtype != expected[name].dtype:
                raise ValueError(f"{source}: field_state[{name!r}] has dtype {t.dtype}, expected {expected[name].dtype}")
        try:
            model.field.load_state_dict(fs)
            if "allowed" not in gs and "bits" in gs:  # written before grids had an allowed mask
                gs["allowed"] = torch.ones_like(gs["bits"])
            model.grid.load_state_dict(gs)
        except (RuntimeError, KeyError, TypeError) as e:
            msg = " ".join(str(e).split())[:300]
            raise ValueError(f"{source}: the weights do not match the stored field config: {msg}") from None
        for name, t in model.grid.state_dict().items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ValueError(f"{source}: grid_state[{name!r}] has NaN or infinite values")
        codes = st.get("latent_codes")
        if codes is not None:
            if not isinstance(codes, torch.Tensor) or codes.ndim != 2 or codes.shape[1] != model.field.latent_dim:
                raise ValueError(f"{source}: latent_codes must be a [n, {model.field.latent_dim}] tensor")
            model.codes = codes.float()
        return model.to(dev)

    @classmethod
    def load(cls, path, device="auto") -> "PortraitModel":
        """A prior or portrait's model from ``path``, on ``device`` (see from_state)."""
        dev = resolve_device(device)  # a bad device fails before the file is read
        return cls.from_state(load_checkpoint(path), str(path), dev)


# What only a run's resume needs (pnerf_fast/train/pretrain.py writes it): a prior derived
# from a checkpoint (grown, regridded, shipped) starts its own history without it.
RESUME_ONLY = ("rng", "rng_device", "optimizer", "code_optimizer")


def derived_extra(st: dict, drop=(), **add) -> dict:
    """The ``extra`` of checkpoint dict ``st`` for a prior derived from it: without the
    resume-only state (and the keys ``drop``), with the entries ``add``."""
    extra = {k: v for k, v in st.get("extra", {}).items() if k not in RESUME_ONLY and k not in drop}
    extra.update(add)
    return extra


def check_checkpoint(st, source: str) -> None:
    if not isinstance(st, dict) or st.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{source}: not a pnerf_fast checkpoint (missing format={CHECKPOINT_FORMAT!r})")
    if st.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{source}: checkpoint version {short_repr(st.get('version'))} is not supported "
                         f"(expected {CHECKPOINT_VERSION})")
    for k in ("train_config", "field_config", "field_state", "grid_state"):
        if k not in st:
            raise ValueError(f"{source}: checkpoint lacks '{k}'")
    for k in ("train_config", "field_state", "grid_state"):
        if not isinstance(st[k], dict):
            raise ValueError(f"{source}: {k} must be a mapping, got {type(st[k]).__name__}")
    if not isinstance(st.get("extra", {}), dict):
        raise ValueError(f"{source}: extra must be a mapping, got {type(st['extra']).__name__}")


def _tensor_dict(d, source: str, key: str) -> dict:
    if not isinstance(d, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items()):
        raise ValueError(f"{source}: {key} must be a mapping from names to tensors")
    return dict(d)


def save_atomic(obj, path) -> None:
    """torch.save to a temporary file in the same folder, then rename over ``path``: a
    crash never leaves a truncated checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        public_mode_(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class UnsafeCheckpointError(ValueError):
    """A checkpoint that holds objects other than tensors, numbers, strings and plain
    containers (what pnerf_fast writes): refused, never unpickled."""


def load_checkpoint(path) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``: only tensors, numbers,
    strings, None and plain containers are reconstructed, so a crafted file can never run
    code. Raises FileNotFoundError, or ValueError (UnsafeCheckpointError for a file that
    holds other objects) naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a pnerf_fast checkpoint (.pt)")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: is empty, not a pnerf_fast checkpoint")
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = str(e).strip().splitlines()
        why = next((ln.strip() for ln in lines if "global" in ln.lower()), "")
        if not why:  # not a pickle at all (random bytes, text): a plain read error
            msg = " ".join(str(e).split())[:200]
            raise ValueError(f"{path}: cannot read checkpoint (not a pnerf_fast checkpoint?): {msg}") from None
        raise UnsafeCheckpointError(
            f"{path}: refused: not a pnerf_fast checkpoint, it holds objects that are not allowed "
            f"(only tensors, numbers, strings and plain containers are loaded){': ' + why if why else ''}") from None
    except Exception as e:  # truncated zip, random bytes, ...
        msg = " ".join(str(e).split())[:300]
        raise ValueError(f"{path}: cannot read checkpoint (not a pnerf_fast checkpoint?): {type(e).__name__}: {msg}") from None
    return st


class PortraitField:
    """A subject's finetuned field: render it from any world-space camera."""

    def __init__(self, model: PortraitModel, transform: SimilarityTransform, frontal_camera: Camera | None = None,
                 background: float = 1.0, info: dict | None = None, color_from=None):
        self.model = model
        self.transform = transform
        self.frontal_camera = frontal_camera
        self.background = float(background)
        self.info = info or {}
        self.color_from = color_from

    @property
    def color_from(self) -> tuple[float, float, float] | None:
        """The canonical point that every sample is coloured as seen from (Rays.view_from):
        a portrait fitted to one view has its camera's centre here (finetune sets it), so
        its novel views take the colours that camera saw, not what the colour network
        makes of directions that it never saw (8 validation subjects: novel views +0.14 dB,
        every angle band better; README.md, "Results", session 24). None: colours along
        each ray, as a multi-view fit (the oracle) renders. Settable, saved."""
        return self._color_from

    @color_from.setter
    def color_from(self, value) -> None:
        self._color_from = _color_point(value, "PortraitField.color_from")

    def _view_from(self) -> torch.Tensor | None:
        """color_from as a float32 tensor on the portrait's device (Rays.view_from), or None."""
        if self._color_from is None:
            return None
        return torch.tensor(self._color_from, dtype=torch.float32, device=self.device)

    @property
    def device(self) -> torch.device:
        """Where the portrait's field and grid live (where it renders)."""
        return self.model.device

    def to(self, device) -> "PortraitField":
        """Move the portrait to ``device`` ("auto" | "cpu" | "cuda" | "cuda:N"), in place."""
        self.model.to(resolve_device(device))
        return self

    @property
    def warp_table(self) -> torch.Tensor:
        """[1, 12] float32 world -> canonical, on the portrait's device."""
        return torch.as_tensor(self.transform.to_warp_row(), dtype=torch.float32, device=self.device)[None]

    @torch.no_grad()
    def render(self, camera: Camera, chunk: int | None = None, cfg: RenderConfig | None = None, progress=None,
               device=None):
        """Render ``camera``'s every pixel.

        Args:
            camera: a world-space Camera.
            chunk: rays per batch (memory); None: the whole frame up to 256x256 (65,536
                rays), else 16,384 (render.renderer.default_chunk).
            cfg: the RenderConfig (default: the model's).
            progress: a tqdm-like bar, updated by rays.
            device: where to render ("auto" | "cpu" | "cuda" | "cuda:N"); the portrait
                moves there and stays. None (the default): where it is.
        Returns:
            dict(rgb [H, W, 3], depth [H, W] world distance, opacity [H, W]): float32
            tensors on the portrait's device (``.cpu()`` before ``.numpy()``)."""
        if device is not None:
            self.to(device)
        self.model.field.eval()
        rgb, depth, opa = render_image(self.model.field, self.model.grid, camera, self.warp_table,
                                       cfg or self.model.render_cfg, self.background, chunk, progress,
                                       view_from=self._view_from())
        return {"rgb": rgb, "depth": depth, "opacity": opa}

    def render_rays(self, rays_o, rays_d, cfg: RenderConfig | None = None):
        return render_rays(self.model.field, self.model.grid,
                           Rays(rays_o, rays_d, self.warp_table, view_from=self._view_from()),
                           cfg or self.model.render_cfg, bg=self.background)

    def save(self, path) -> None:
        st = self.model.state(extra={"portrait": {
            "transform": self.transform.to_dict(),
            "background": self.background,
            "frontal_camera": None if self.frontal_camera is None else _cam_dict(self.frontal_camera),
            "info": self.info,
            "color_from": None if self.color_from is None else list(self.color_from),
        }})
        save_atomic(st, path)

    @classmethod
    def load(cls, path, device="auto") -> "PortraitField":
        """A finetuned portrait from ``path``, on ``device`` ("auto" | "cpu" | "cuda" | "cuda:N")."""
        dev = resolve_device(device)
        st = load_checkpoint(path)
        model = PortraitModel.from_state(st, str(path), dev)
        p = (st.get("extra") or {}).get("portrait")
        if p is None:
            raise ValueError(f"{path}: this is a pretrained prior, not a finetuned portrait (run `pnerf finetune` first)")
        if not isinstance(p, dict):
            raise ValueError(f"{path}: extra.portrait must be a mapping, got {type(p).__name__}")
        try:
            if "transform" not in p:
                raise ValueError("the transform is missing")
            transform = SimilarityTransform.from_dict(p["transform"])
            if not (np.isfinite(transform.scale) and transform.scale > 0 and np.all(np.isfinite(transform.rotation))
                    and np.all(np.isfinite(transform.translation))):
                raise ValueError("the transform has non-finite or non-positive entries")
            cam = None if p.get("frontal_camera") is None else _cam_from_dict(p["frontal_camera"])
            bg = p.get("background", 1.0)
            if isinstance(bg, bool) or not isinstance(bg, (int, float)) or not 0 <= bg <= 1:
                raise ValueError(f"background must be a number in [0, 1], got {short_repr(bg)}")
            info = p.get("info")
            if info is not None and not isinstance(info, dict):
                raise ValueError("info must be a mapping")
            # absent (portraits saved before session 24): along the rays
            color_from = _color_point(p.get("color_from"), "color_from")
        except (ValueError, TypeError, KeyError, OverflowError) as e:
            raise ValueError(f"{path}: extra.portrait: {e}") from None
        return cls(model, transform, cam, bg, info, color_from)


def _color_point(value, name: str) -> tuple[float, float, float] | None:
    """``value`` (None, or 3 finite plain numbers: a list, a tuple or an array; no bools or
    strings, no ints too large for a float) as a tuple of floats; else a ValueError that
    names ``name``."""
    if value is None:
        return None
    v = value.tolist() if isinstance(value, (np.ndarray, torch.Tensor)) else value
    ok = (isinstance(v, (list, tuple)) and len(v) == 3
          and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v))
    try:
        out = tuple(float(x) for x in v) if ok else ()
    except OverflowError:
        ok = False
    if not ok or not all(math.isfinite(x) for x in out):
        raise ValueError(f"{name} must be 3 finite numbers or None, got {short_repr(value)}")
    return out


def _cam_dict(c: Camera) -> dict:
    return {"fx": c.fx, "fy": c.fy, "cx": c.cx, "cy": c.cy, "width": c.width, "height": c.height, "c2w": c.c2w.tolist()}


def _cam_from_dict(d: dict) -> Camera:
    if not isinstance(d, dict):
        raise ValueError(f"frontal_camera must be a mapping, got {type(d).__name__}")
    missing = [k for k in ("fx", "fy", "cx", "cy", "width", "height", "c2w") if k not in d]
    if missing:
        raise ValueError(f"frontal_camera is missing {missing}")
    for k in ("fx", "fy", "cx", "cy", "width", "height"):
        v = d[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise ValueError(f"frontal_camera.{k} must be a finite number, got {short_repr(v)}")
    if not (0 < d["width"] <= 1 << 16 and 0 < d["height"] <= 1 << 16):
        raise ValueError("frontal_camera: width and height must be in [1, 65536]")
    return Camera(d["fx"], d["fy"], d["cx"], d["cy"], d["width"], d["height"], np.array(d["c2w"], dtype=np.float64))


def clone_field(field):
    return copy.deepcopy(field)
