"""The on-disk subject format and its validating loader.

A *subject folder* holds one person seen by several calibrated cameras::

    subject_000/
      transforms.json   intrinsics + one camera-to-world matrix per frame (instant-ngp /
                        nerfstudio convention, OpenGL camera axes), and "frontal_frame"
      face.json         24 world-space 3D landmarks (order: pnerf24-ibug68), optional
                        per-frame 2D landmarks, optional "meta"
      images/*.png      RGB, or RGBA with the foreground mask in (straight) alpha

A *dataset root* holds subject folders and ``splits.json`` (train / val / test subject
lists). See docs/FORMAT.md for the full specification.

Loading validates everything before it builds anything: on bad input it raises
:class:`SubjectFormatError` whose message starts with the file and the field at fault,
and it never returns a half-loaded subject. Writing goes into a temporary folder that is
renamed into place at the end, so a crash never leaves half a subject behind.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._io import atomic_path, short_repr, write_text_atomic
from ..face import landmarks as lm
from ..geometry.cameras import Camera

TRANSFORMS_FILE = "transforms.json"
FACE_FILE = "face.json"
SPLITS_FILE = "splits.json"
IMAGES_DIR = "images"
FRONTAL_KEY = "frontal_frame"
SPLIT_NAMES = ("train", "val", "test")
FORMAT_VERSION = 1

_INTRINSIC_FLOAT_KEYS = ("fl_x", "fl_y", "cx", "cy")
_INTRINSIC_INT_KEYS = ("w", "h")
_ORTHO_TOL = 1e-3  # tolerance on R^T R = I and det R = 1 for camera rotations
#: Largest image (width x height, read from the header before decoding) a subject may hold.
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
#: Plausible focal lengths, as a multiple of the image width (a 0.06 to 180 degree-ish
#: field of view would be 0.003 and 8; this only refuses nonsense like 1e300 or 1e-300).
FOCAL_RANGE = (1e-3, 1e3)
#: Plausible 3D landmark spread (RMS distance from their centroid, world units; the
#: template's is about 0.5): refuses landmarks scaled by 1e6 or 1e-9.
LANDMARK_SPREAD_RANGE = (1e-3, 1e3)
#: Largest absolute entry of a camera-to-world matrix (world units).
MAX_TRANSLATION = 1e6


class SubjectFormatError(ValueError):
    """A subject folder, dataset root or splits file is malformed.

    ``file`` is the offending file (or folder), ``field`` the JSON field / image property
    at fault (may be None when the whole file is at fault). The message starts with
    ``"<file>: <field>: "``.
    """

    def __init__(self, file, field: str | None, problem: str):
        self.file = str(file)
        self.field = field
        self.problem = problem
        where = f"{self.file}: {field}" if field else self.file
        super().__init__(f"{where}: {problem}")


# --------------------------------------------------------------------------- Subject


@dataclass
class Subject:
    name: str
    path: str
    cameras: list[Camera]
    images: np.ndarray | None  # [V, H, W, 3] float32 in [0, 1], straight rgb; None if load_images=False
    masks: np.ndarray | None  # [V, H, W] float32 alpha in [0, 1]; None when images are RGB (or not loaded)
    file_paths: list[str]  # per frame, relative to the subject folder, e.g. "images/view_00.png"
    frontal_index: int
    landmarks: np.ndarray  # [24, 3] float64, world coordinates, pnerf24-ibug68 order
    landmarks_2d: dict[str, np.ndarray] | None = None  # file_path -> [24, 2] pixel uv
    meta: dict = field(default_factory=dict)

    @property
    def num_views(self) -> int:
        return len(self.cameras)

    @property
    def has_alpha(self) -> bool:
        return self.masks is not None

    def support_indices(self) -> list[int]:
        """The view(s) a single-image method may look at: the frontal frame."""
        return [self.frontal_index]

    def query_indices(self) -> list[int]:
        """All other views (supervision / evaluation targets)."""
        return [i for i in range(self.num_views) if i != self.frontal_index]

    def composite(self, bg: float | Sequence[float] = 1.0) -> np.ndarray:
        """Images over a constant background colour: [V, H, W, 3] float32.
        RGB subjects are returned unchanged (as a copy)."""
        if self.images is None:
            raise ValueError(f"Subject {self.name!r} was loaded with load_images=False; composite() needs images")
        bg_arr = np.broadcast_to(np.asarray(bg, dtype=np.float32), (3,)) if np.ndim(bg) else np.full(3, float(bg), np.float32)
        if self.masks is None:
            return self.images.copy()
        a = self.masks[..., None]
        return (self.images * a + bg_arr * (1.0 - a)).astype(np.float32)


# --------------------------------------------------------------------------- helpers


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise SubjectFormatError(path, None, "file is missing")
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise SubjectFormatError(path, None, f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise SubjectFormatError(path, None, "not valid JSON for this format (nested too deeply)") from None
    except ValueError as e:  # e.g. an integer literal with too many digits
        raise SubjectFormatError(path, None, f"not valid JSON ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SubjectFormatError(path, None, f"cannot be read ({e})") from None


def _require(obj: dict, key: str, file: Path, where: str = ""):
    if key not in obj:
        raise SubjectFormatError(file, f"{where}{key}", "required field is missing")
    return obj[key]


def _is_number(x) -> bool:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return False
    try:
        return math.isfinite(float(x))
    except OverflowError:  # an integer beyond float range, e.g. 10**400
        return False


def _number(x, file, fld, *, positive=False) -> float:
    if not _is_number(x):
        raise SubjectFormatError(file, fld, f"must be a finite number, got {short_repr(x)}")
    if positive and x <= 0:
        raise SubjectFormatError(file, fld, f"must be positive, got {x!r}")
    return float(x)


def _posint(x, file, fld) -> int:
    if isinstance(x, bool) or not (isinstance(x, int) or (isinstance(x, float) and x.is_integer())):
        raise SubjectFormatError(file, fld, f"must be a positive integer, got {short_repr(x)}")
    if not 0 < x <= 1 << 20:
        raise SubjectFormatError(file, fld, f"must be a positive integer of at most {1 << 20}, got {short_repr(x)}")
    return int(x)


def _array(x, shape: tuple, file, fld) -> np.ndarray:
    """A nested JSON list as a float64 array of exactly ``shape``; names the field on failure."""
    try:
        a = np.array(x)
    except (TypeError, ValueError, OverflowError, RecursionError):
        raise SubjectFormatError(file, fld, f"must be a numeric array of shape {list(shape)}") from None
    if a.dtype == object and a.shape != tuple(shape):
        raise SubjectFormatError(file, fld, f"must have shape {list(shape)}, got ragged")
    numeric = a.dtype.kind in "iuf" or (a.dtype == object and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in a.flat))  # object: ints beyond int64
    if not numeric:
        raise SubjectFormatError(file, fld, f"must be a numeric array of shape {list(shape)}, got non-numeric entries")
    try:
        a = a.astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        raise SubjectFormatError(file, fld, f"must be a numeric array of shape {list(shape)} (finite numbers)") from None
    if a.dtype == object or a.shape != tuple(shape):
        got = list(a.shape) if a.dtype != object else "ragged"
        raise SubjectFormatError(file, fld, f"must have shape {list(shape)}, got {got}")
    if not np.all(np.isfinite(a)):
        raise SubjectFormatError(file, fld, "has non-finite entries")
    return a


def _check_rigid(m: np.ndarray, file, fld):
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
        raise SubjectFormatError(file, fld, f"last row must be [0, 0, 0, 1], got {m[3].tolist()}")
    if np.abs(m[:3, 3]).max() > MAX_TRANSLATION:
        raise SubjectFormatError(file, fld, f"camera position {m[:3, 3].tolist()} is implausibly far (> {MAX_TRANSLATION:g})")
    r = m[:3, :3]
    if not np.allclose(r.T @ r, np.eye(3), atol=_ORTHO_TOL) or np.linalg.det(r) < 0:
        raise SubjectFormatError(file, fld, "rotation part is not a proper rotation (orthonormal, det +1)")


def _png_info(path: Path, file_for_msg: Path, fld: str) -> tuple[int, int, str]:
    """(width, height, mode) from the PNG header, validating that it is a PNG we can use."""
    from PIL import Image

    if not path.is_file():
        raise SubjectFormatError(file_for_msg, fld, f"image file {path} is missing")
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below
            with Image.open(path) as im:
                fmt, size, mode = im.format, im.size, im.mode
    except Image.DecompressionBombError:
        raise SubjectFormatError(path, "size", f"is larger than {MAX_IMAGE_PIXELS:,} pixels") from None
    except Exception as e:  # PIL raises several types for broken files
        raise SubjectFormatError(path, None, f"cannot be read as an image ({e})") from None
    if size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise SubjectFormatError(path, "size", f"is {size[0]}x{size[1]}, more than {MAX_IMAGE_PIXELS:,} pixels "
                                 "(pnerf_fast.data.format.MAX_IMAGE_PIXELS)")
    if fmt != "PNG":
        raise SubjectFormatError(path, None, f"must be a PNG file, got {fmt}")
    if mode not in ("RGB", "RGBA"):
        raise SubjectFormatError(path, "mode", f"must be RGB or RGBA, got {mode}")
    return size[0], size[1], mode


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # _png_info checked the size
            with Image.open(path) as im:
                im.load()
                a = np.asarray(im)
    except Exception as e:
        raise SubjectFormatError(path, None, f"cannot be decoded ({e})") from None
    return a.astype(np.float32) / 255.0


def _to_jsonable(x):
    if isinstance(x, dict):
        return {str(k): _to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


# --------------------------------------------------------------------------- loading


def _parse_transforms(sdir: Path):
    tf_path = sdir / TRANSFORMS_FILE
    tf = _read_json(tf_path)
    if not isinstance(tf, dict):
        raise SubjectFormatError(tf_path, None, "top level must be a JSON object")
    shared: dict[str, float | int] = {}
    for k in _INTRINSIC_FLOAT_KEYS:
        if k in tf:
            shared[k] = _number(tf[k], tf_path, k, positive=k.startswith("fl_"))
    for k in _INTRINSIC_INT_KEYS:
        if k in tf:
            shared[k] = _posint(tf[k], tf_path, k)
    frames = _require(tf, "frames", tf_path)
    if not isinstance(frames, list) or not frames:
        raise SubjectFormatError(tf_path, "frames", "must be a non-empty list")
    cameras, file_paths = [], []
    for i, fr in enumerate(frames):
        where = f"frames[{i}]"
        if not isinstance(fr, dict):
            raise SubjectFormatError(tf_path, where, "must be an object")
        fp = _require(fr, "file_path", tf_path, f"{where}.")
        if not isinstance(fp, str) or not fp:
            raise SubjectFormatError(tf_path, f"{where}.file_path", f"must be a non-empty string, got {short_repr(fp)}")
        if os.path.isabs(fp) or ".." in Path(fp).parts:
            raise SubjectFormatError(tf_path, f"{where}.file_path", f"must be relative to the subject folder, got {fp!r}")
        if fp in file_paths:
            raise SubjectFormatError(tf_path, f"{where}.file_path", f"duplicate frame {fp!r}")
        intr = dict(shared)
        for k in _INTRINSIC_FLOAT_KEYS:
            if k in fr:
                intr[k] = _number(fr[k], tf_path, f"{where}.{k}", positive=k.startswith("fl_"))
        for k in _INTRINSIC_INT_KEYS:
            if k in fr:
                intr[k] = _posint(fr[k], tf_path, f"{where}.{k}")
        for k in _INTRINSIC_FLOAT_KEYS + _INTRINSIC_INT_KEYS:
            if k not in intr:
                raise SubjectFormatError(tf_path, k, f"required field is missing (neither top-level nor in {where})")
        for k in ("fl_x", "fl_y"):
            lo, hi = FOCAL_RANGE[0] * intr["w"], FOCAL_RANGE[1] * intr["w"]
            if not lo <= intr[k] <= hi:
                raise SubjectFormatError(tf_path, f"{where}.{k}" if k in fr else k,
                                         f"focal length {intr[k]:g} px is implausible for a {intr['w']} px wide image "
                                         f"(expected {lo:g} to {hi:g})")
        m = _array(_require(fr, "transform_matrix", tf_path, f"{where}."), (4, 4), tf_path, f"{where}.transform_matrix")
        _check_rigid(m, tf_path, f"{where}.transform_matrix")
        cameras.append(Camera(fx=intr["fl_x"], fy=intr["fl_y"], cx=intr["cx"], cy=intr["cy"],
                              width=intr["w"], height=intr["h"], c2w=m))
        file_paths.append(fp)
    frontal = _require(tf, FRONTAL_KEY, tf_path)
    if not isinstance(frontal, str) or frontal not in file_paths:
        raise SubjectFormatError(tf_path, FRONTAL_KEY, f"must be the file_path of one of the frames, got {short_repr(frontal)}")
    return tf_path, cameras, file_paths, file_paths.index(frontal)


def _parse_face(sdir: Path, file_paths: list[str], cameras: list[Camera]):
    fpath = sdir / FACE_FILE
    face = _read_json(fpath)
    if not isinstance(face, dict):
        raise SubjectFormatError(fpath, None, "top level must be a JSON object")
    order = _require(face, "landmark_order", fpath)
    if order != lm.LANDMARK_ORDER_NAME:
        raise SubjectFormatError(fpath, "landmark_order", f"must be {lm.LANDMARK_ORDER_NAME!r}, got {order!r}")
    if "names" in face and (not isinstance(face["names"], list) or face["names"] != list(lm.NAMES)):
        raise SubjectFormatError(fpath, "names", f"must list the {lm.NUM_LANDMARKS} {lm.LANDMARK_ORDER_NAME} names in order")
    if "ibug_indices" in face and (not isinstance(face["ibug_indices"], list)
                                   or face["ibug_indices"] != list(lm.IBUG_INDICES)):
        raise SubjectFormatError(fpath, "ibug_indices", f"must be the {lm.LANDMARK_ORDER_NAME} iBUG-68 indices in order")
    l3 = _array(_require(face, "landmarks_3d", fpath), (lm.NUM_LANDMARKS, 3), fpath, "landmarks_3d")
    centred = l3 - l3.mean(0)
    spread = float(np.sqrt((centred ** 2).sum(1).mean()))
    if not LANDMARK_SPREAD_RANGE[0] <= spread <= LANDMARK_SPREAD_RANGE[1]:
        raise SubjectFormatError(fpath, "landmarks_3d", f"spread {spread:.3g} (RMS distance from their centroid) is "
                                 f"implausible (expected {LANDMARK_SPREAD_RANGE[0]:g} to {LANDMARK_SPREAD_RANGE[1]:g} "
                                 "world units; the template's is about 0.5)")
    sv = np.linalg.svd(centred, compute_uv=False)
    if sv[1] < 1e-3 * sv[0]:
        raise SubjectFormatError(fpath, "landmarks_3d", "are coincident or collinear (a degenerate similarity transform)")
    l2d = None
    if face.get("landmarks_2d") is not None:
        raw = face["landmarks_2d"]
        if not isinstance(raw, dict):
            raise SubjectFormatError(fpath, "landmarks_2d", "must be an object mapping frame file_path -> [24, 2] uv")
        l2d = {}
        for k, v in raw.items():
            if k not in file_paths:
                raise SubjectFormatError(fpath, f"landmarks_2d[{k!r}]", "is not the file_path of any frame in transforms.json")
            l2d[k] = _array(v, (lm.NUM_LANDMARKS, 2), fpath, f"landmarks_2d[{k!r}]")
    meta = face.get("meta", {})
    if not isinstance(meta, dict):
        raise SubjectFormatError(fpath, "meta", "must be an object")
    return l3, l2d, meta


def load_subject(path, *, load_images: bool = True) -> Subject:
    """Load and validate one subject folder. Raises :class:`SubjectFormatError`.

    With ``load_images=False`` the image headers are still validated (existence, PNG,
    mode, size), but ``images`` and ``masks`` are None.
    """
    sdir = Path(path)
    if not sdir.is_dir():
        raise SubjectFormatError(sdir, None, "subject folder does not exist")
    tf_path, cameras, file_paths, frontal = _parse_transforms(sdir)
    l3, l2d, meta = _parse_face(sdir, file_paths, cameras)

    modes = []
    for i, (fp, cam) in enumerate(zip(file_paths, cameras)):
        w, h, mode = _png_info(sdir / fp, tf_path, f"frames[{i}].file_path")
        if (w, h) != (cam.width, cam.height):
            raise SubjectFormatError(sdir / fp, "size", f"is {w}x{h} but {TRANSFORMS_FILE} says w={cam.width}, h={cam.height}")
        modes.append(mode)
    if len(set(modes)) > 1:
        k = modes.index("RGB")
        raise SubjectFormatError(sdir / file_paths[k], "mode", "is RGB but other frames are RGBA; all frames must use the same mode")
    sizes = {(c.width, c.height) for c in cameras}

    images = masks = None
    if load_images:
        if len(sizes) > 1:
            raise SubjectFormatError(tf_path, "w/h", f"frames have different sizes {sorted(sizes)}; load_images needs one size")
        arrs = [_read_png(sdir / fp) for fp in file_paths]
        stack = np.stack(arrs).astype(np.float32)
        images = np.ascontiguousarray(stack[..., :3])
        masks = np.ascontiguousarray(stack[..., 3]) if stack.shape[-1] == 4 else None

    return Subject(
        name=sdir.name,
        path=str(sdir),
        cameras=cameras,
        images=images,
        masks=masks,
        file_paths=file_paths,
        frontal_index=frontal,
        landmarks=l3,
        landmarks_2d=l2d,
        meta=meta,
    )


# --------------------------------------------------------------------------- writing


def _as_uint8(img, i: int) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"write_subject: images[{i}] must be HxWx3 or HxWx4, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"write_subject: images[{i}] has non-finite values")
        return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise ValueError(f"write_subject: images[{i}] must be uint8 or float in [0, 1], got dtype {a.dtype}")


def _png_name(name: str, i: int) -> str:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"write_subject: file_names[{i}] must be a plain file name, got {name!r}")
    return name if name.lower().endswith(".png") else name + ".png"


def write_subject(
    path,
    *,
    cameras: Sequence[Camera],
    images: Sequence[np.ndarray],
    file_names: Sequence[str] | None = None,
    frontal_index: int = 0,
    landmarks: np.ndarray,
    landmarks_2d: dict | None = None,
    meta: dict | None = None,
    overwrite: bool = True,
) -> None:
    """Write a subject folder atomically (temp folder + rename).

    ``images``: one HxWx3 (RGB) or HxWx4 (RGBA, straight alpha = mask) array per camera,
    uint8 or float in [0, 1]; all with the same channel count. ``file_names``: image
    names without folder (".png" is added if missing); default ``view_00`` ... .
    ``landmarks``: [24, 3] world points. ``landmarks_2d``: optional dict keyed by frame
    index, file name or file_path -> [24, 2] pixel uv. ``meta``: JSON-able extras
    (numpy arrays are converted). An existing folder at ``path`` is replaced when
    ``overwrite`` (the default), else FileExistsError.
    """
    out = Path(path)
    cameras = list(cameras)
    images = list(images)
    n = len(cameras)
    if n == 0:
        raise ValueError("write_subject: cameras is empty")
    if len(images) != n:
        raise ValueError(f"write_subject: got {n} cameras but {len(images)} images")
    if file_names is None:
        width = max(2, len(str(n - 1)))
        file_names = [f"view_{i:0{width}d}" for i in range(n)]
    if len(file_names) != n:
        raise ValueError(f"write_subject: got {n} cameras but {len(file_names)} file_names")
    names = [_png_name(nm, i) for i, nm in enumerate(file_names)]
    if len(set(names)) != n:
        raise ValueError("write_subject: file_names has duplicates")
    file_paths = [f"{IMAGES_DIR}/{nm}" for nm in names]
    if not (isinstance(frontal_index, (int, np.integer)) and 0 <= frontal_index < n):
        raise ValueError(f"write_subject: frontal_index must be in [0, {n}), got {frontal_index!r}")
    u8 = [_as_uint8(im, i) for i, im in enumerate(images)]
    chans = {a.shape[2] for a in u8}
    if len(chans) > 1:
        raise ValueError("write_subject: images mix RGB and RGBA; use one channel count for all")
    for i, (a, c) in enumerate(zip(u8, cameras)):
        if not isinstance(c, Camera):
            raise ValueError(f"write_subject: cameras[{i}] must be a Camera, got {type(c).__name__}")
        if a.shape[:2] != (c.height, c.width):
            raise ValueError(f"write_subject: images[{i}] is {a.shape[1]}x{a.shape[0]} but cameras[{i}] is {c.width}x{c.height}")
        _check_rigid(c.c2w, "write_subject", f"cameras[{i}].c2w")
    l3 = np.asarray(landmarks, dtype=np.float64)
    if l3.shape != (lm.NUM_LANDMARKS, 3) or not np.all(np.isfinite(l3)):
        raise ValueError(f"write_subject: landmarks must be a finite [{lm.NUM_LANDMARKS}, 3] array, got shape {l3.shape}")
    l2d_out = None
    if landmarks_2d is not None:
        l2d_out = {}
        for k, v in landmarks_2d.items():
            if isinstance(k, (int, np.integer)):
                if not 0 <= k < n:
                    raise ValueError(f"write_subject: landmarks_2d key {k} is not a frame index")
                fp = file_paths[int(k)]
            elif k in file_paths:
                fp = k
            elif isinstance(k, str) and _png_name(k, -1) in names:
                fp = f"{IMAGES_DIR}/{_png_name(k, -1)}"
            else:
                raise ValueError(f"write_subject: landmarks_2d key {k!r} matches no frame")
            a = np.asarray(v, dtype=np.float64)
            if a.shape != (lm.NUM_LANDMARKS, 2) or not np.all(np.isfinite(a)):
                raise ValueError(f"write_subject: landmarks_2d[{k!r}] must be a finite [{lm.NUM_LANDMARKS}, 2] array, got shape {a.shape}")
            l2d_out[fp] = a.tolist()

    c0 = cameras[0]
    shared = {"fl_x": c0.fx, "fl_y": c0.fy, "cx": c0.cx, "cy": c0.cy, "w": c0.width, "h": c0.height}
    frames = []
    for fp, c in zip(file_paths, cameras):
        fr: dict[str, Any] = {"file_path": fp}
        own = {"fl_x": c.fx, "fl_y": c.fy, "cx": c.cx, "cy": c.cy, "w": c.width, "h": c.height}
        fr.update({k: v for k, v in own.items() if v != shared[k]})
        fr["transform_matrix"] = c.c2w.tolist()
        frames.append(fr)
    transforms = {
        "camera_model": "PINHOLE",
        **{k: float(v) if k in _INTRINSIC_FLOAT_KEYS else int(v) for k, v in shared.items()},
        FRONTAL_KEY: file_paths[int(frontal_index)],
        "pnerf_format_version": FORMAT_VERSION,
        "frames": frames,
    }
    face = {
        "landmark_order": lm.LANDMARK_ORDER_NAME,
        "names": list(lm.NAMES),
        "ibug_indices": list(lm.IBUG_INDICES),
        "landmarks_3d": l3.tolist(),
    }
    if l2d_out is not None:
        face["landmarks_2d"] = l2d_out
    if meta:
        face["meta"] = _to_jsonable(dict(meta))

    if out.exists() and not overwrite:
        raise FileExistsError(f"write_subject: {out} already exists (pass overwrite=True to replace it)")
    from PIL import Image

    # a whole new folder beside it, renamed over the old one once complete
    with atomic_path(out, is_dir=True) as tmp:
        (tmp / IMAGES_DIR).mkdir()
        for a, fp in zip(u8, file_paths):
            Image.fromarray(a, "RGBA" if a.shape[2] == 4 else "RGB").save(tmp / fp, compress_level=6)
        with open(tmp / TRANSFORMS_FILE, "w", encoding="utf-8") as f:
            json.dump(transforms, f, indent=2)
        with open(tmp / FACE_FILE, "w", encoding="utf-8") as f:
            json.dump(face, f, indent=2)


def save_subject(subject: Subject, path, *, overwrite: bool = True) -> Path:
    """Write ``subject`` as a folder that ``load_subject`` reads back (its masks become the
    images' alpha channel) and return the folder's path. An existing folder is replaced
    only when ``overwrite`` and it is empty or already a subject folder (has
    transforms.json): never someone's other files (FileExistsError)."""
    out = Path(path)
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"output path {out} exists and is not a folder")
        if not overwrite:
            raise FileExistsError(f"output folder {out} already exists")
        if any(out.iterdir()) and not (out / TRANSFORMS_FILE).is_file():
            raise FileExistsError(f"output folder {out} exists and is not a subject folder (no {TRANSFORMS_FILE}); "
                                  "refusing to replace it, choose another --out")
    if subject.images is None:
        raise ValueError(f"save_subject: subject {subject.name!r} was loaded with load_images=False; it has no images to write")
    images = subject.images if subject.masks is None else np.concatenate([subject.images, subject.masks[..., None]], -1)
    prefix = f"{IMAGES_DIR}/"
    names = [fp[len(prefix):] if fp.startswith(prefix) else fp for fp in subject.file_paths]
    write_subject(out, cameras=subject.cameras, images=images, file_names=names, frontal_index=subject.frontal_index,
                  landmarks=subject.landmarks, landmarks_2d=subject.landmarks_2d, meta=subject.meta)
    return out


# --------------------------------------------------------------------------- datasets


@dataclass
class Dataset:
    root: str
    splits: dict[str, list[str]]

    def subjects(self, split: str) -> list[str]:
        if split not in self.splits:
            raise ValueError(f"Dataset.subjects: split must be one of {list(self.splits)}, got {split!r}")
        return list(self.splits[split])

    @property
    def names(self) -> list[str]:
        return [n for s in SPLIT_NAMES for n in self.splits[s]]

    def subject(self, name: str, load_images: bool = True) -> Subject:
        if name not in self.names:
            raise ValueError(f"Dataset.subject: {name!r} is not in {Path(self.root) / SPLITS_FILE}")
        return load_subject(Path(self.root) / name, load_images=load_images)

    def __len__(self) -> int:
        return len(self.names)


def _validate_splits(splits: dict, root: Path, file) -> dict[str, list[str]]:
    if not isinstance(splits, dict):
        raise SubjectFormatError(file, None, "top level must be a JSON object with train, val and test lists")
    for k in splits:
        if k not in SPLIT_NAMES:
            raise SubjectFormatError(file, k, f"unknown split (expected {', '.join(SPLIT_NAMES)})")
    seen: dict[str, str] = {}
    out = {}
    for s in SPLIT_NAMES:
        names = _require(splits, s, file)
        if not isinstance(names, list) or not all(isinstance(x, str) and x for x in names):
            raise SubjectFormatError(file, s, "must be a list of subject folder names")
        for x in names:
            if x in seen:
                where = "twice" if seen[x] == s else f"in both {seen[x]!r} and {s!r}"
                raise SubjectFormatError(file, s, f"subject {x!r} is listed {where}")
            if "/" in x or "\\" in x or x in (".", ".."):
                raise SubjectFormatError(file, s, f"subject {x!r} must be a plain folder name")
            if not (root / x / TRANSFORMS_FILE).is_file():
                raise SubjectFormatError(file, s, f"unknown subject {x!r}: no {root / x / TRANSFORMS_FILE}")
            seen[x] = s
        out[s] = list(names)
    return out


def load_dataset(root) -> Dataset:
    """Open a dataset root: validates ``splits.json`` (every listed subject must be a
    folder with a transforms.json; no subject in two splits). Subjects load lazily."""
    r = Path(root)
    if not r.is_dir():
        raise SubjectFormatError(r, None, "dataset root does not exist")
    splits = _validate_splits(_read_json(r / SPLITS_FILE), r, r / SPLITS_FILE)
    return Dataset(root=str(r), splits=splits)


def write_splits(root, train: Sequence[str], val: Sequence[str], test: Sequence[str]) -> None:
    """Validate and write ``root/splits.json`` (atomically)."""
    r = Path(root)
    splits = {"train": list(train), "val": list(val), "test": list(test)}
    _validate_splits(splits, r, r / SPLITS_FILE)
    write_text_atomic(r / SPLITS_FILE, json.dumps(splits, indent=2))
