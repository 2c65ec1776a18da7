"""Camera paths as nerfstudio's ``camera_path.json`` (what its viewer records and
``ns-render camera-path`` plays), so a path made in one tool renders in the other.

The fields used (the rest of a nerfstudio file, e.g. its viewer ``keyframes``, is
ignored on reading):

.. code-block:: json

    {"camera_type": "perspective", "render_width": 256, "render_height": 256, "fps": 24,
     "seconds": 2.0, "is_cycle": false, "smoothness_value": 0.0,
     "camera_path": [{"camera_to_world": [16 floats, row-major 4x4], "fov": 30.0, "aspect": 1.0}, ...]}

``camera_to_world`` uses OpenGL camera axes (x right, y up, looking down -z), the same
as :class:`~pnerf_fast.geometry.cameras.Camera.c2w`, so matrices are copied as they are.
``fov`` is the vertical field of view in degrees: ``fy = (H / 2) / tan(fov / 2)``, with
square pixels (fx = fy) and the principal point at the image centre, as in nerfstudio.
Positions are in this project's world units (the rig's: the head near the origin, the
frontal camera at z = 4.5); a path recorded in another scene's units needs rescaling.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .._io import short_repr, write_text_atomic
from ..geometry.cameras import Camera

__all__ = ["cameras_to_camera_path", "cameras_from_camera_path", "read_camera_path", "write_camera_path",
           "MAX_CAMERAS", "MAX_SIDE"]

MAX_CAMERAS = 10000          # frames in one file
MAX_SIDE = 4096              # render_width / render_height
MAX_FILE_BYTES = 64 << 20    # a 10000-frame path is ~5 MB


def _fov_deg(cam: Camera) -> float:
    return math.degrees(2.0 * math.atan(0.5 * cam.height / cam.fy))


def cameras_to_camera_path(cams, fps: float = 24.0) -> dict:
    """Cameras -> a nerfstudio camera_path dict.

    Args:
        cams: a non-empty list of :class:`Camera`, all of one resolution, with square
            pixels (fx == fy) and the principal point at the image centre (what every
            path in :mod:`pnerf_fast.render.paths` makes).
        fps: frames per second stored in the file (``seconds`` = len(cams) / fps).
    Returns:
        A JSON-ready dict (see the module docstring).
    """
    cams = list(cams)
    if not cams:
        raise ValueError("camera path: no cameras")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"camera path: fps must be a positive number, got {short_repr(fps)}")
    w, h = cams[0].width, cams[0].height
    frames = []
    for i, c in enumerate(cams):
        if (c.width, c.height) != (w, h):
            raise ValueError(f"camera path: camera {i} is {c.width}x{c.height}, camera 0 {w}x{h}; "
                             "nerfstudio's format has one resolution")
        tol = 1e-9 * max(c.fx, 1.0)
        if abs(c.fx - c.fy) > tol or abs(c.cx - w / 2) > 1e-9 * w or abs(c.cy - h / 2) > 1e-9 * h:
            raise ValueError(f"camera path: camera {i} has fx != fy or an off-centre principal point, "
                             "which nerfstudio's camera_path.json (one vertical fov) cannot store")
        frames.append({"camera_to_world": [float(v) for v in c.c2w.reshape(-1)],
                       "fov": _fov_deg(c), "aspect": w / h})
    return {"camera_type": "perspective", "render_width": int(w), "render_height": int(h),
            "fps": float(fps), "seconds": len(cams) / float(fps), "is_cycle": False,
            "smoothness_value": 0.0, "camera_path": frames}


def _number(x, where: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"{where}: must be a number, got {short_repr(x)}")
    try:
        v = float(x)
    except OverflowError:
        raise ValueError(f"{where}: must be a finite number, got {short_repr(x)}") from None
    if not math.isfinite(v):
        raise ValueError(f"{where}: must be a finite number, got {short_repr(x)}")
    return v


def _side(d: dict, key: str, source: str) -> int:
    if key not in d:
        raise ValueError(f"{source}: '{key}' is missing")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)) \
            or float(v) != int(v) or not 1 <= int(v) <= MAX_SIDE:
        raise ValueError(f"{source}: '{key}' must be an integer in [1, {MAX_SIDE}], got {short_repr(v)}")
    return int(v)


def _c2w(m, where: str) -> np.ndarray:
    if isinstance(m, list) and len(m) == 4 and all(isinstance(r, list) for r in m):
        m = [v for r in m for v in r]  # also accept a nested 4x4
    if not isinstance(m, list) or len(m) != 16:
        raise ValueError(f"{where}: must be a list of 16 numbers (a row-major 4x4 matrix), got {short_repr(m)}")
    a = np.array([_number(v, where) for v in m], dtype=np.float64).reshape(4, 4)
    if np.abs(a[3] - [0, 0, 0, 1]).max() > 1e-6:
        raise ValueError(f"{where}: the last row must be [0, 0, 0, 1], got {a[3].tolist()}")
    r = a[:3, :3]
    if np.abs(r.T @ r - np.eye(3)).max() > 1e-3 or np.linalg.det(r) < 0:  # 4-decimal files pass
        raise ValueError(f"{where}: the 3x3 block must be a rotation (orthonormal, det +1); "
                         "scaled or mirrored camera matrices are not supported")
    return a


def cameras_from_camera_path(d, source: str = "camera path") -> tuple[list[Camera], float | None]:
    """A nerfstudio camera_path dict -> (cameras, fps or None).

    Args:
        d: the parsed JSON (see the module docstring); ``camera_type`` must be
            "perspective" when given.
        source: names the file in error messages.
    Returns:
        ``(cams, fps)``: one :class:`Camera` per entry of ``camera_path``, in order, at
        ``render_width`` x ``render_height``; ``fps`` from the file, or None.
    Raises:
        ValueError naming the file and field for anything malformed.
    """
    if not isinstance(d, dict):
        raise ValueError(f"{source}: must be a JSON object, got {type(d).__name__}")
    ctype = d.get("camera_type", "perspective")
    if ctype != "perspective":
        raise ValueError(f"{source}: camera_type {short_repr(ctype)} is not supported (only 'perspective')")
    w, h = _side(d, "render_width", source), _side(d, "render_height", source)
    path = d.get("camera_path")
    if not isinstance(path, list) or not path:
        raise ValueError(f"{source}: 'camera_path' must be a non-empty list of cameras")
    if len(path) > MAX_CAMERAS:
        raise ValueError(f"{source}: 'camera_path' has {len(path)} cameras, at most {MAX_CAMERAS} are allowed")
    fps = None
    if d.get("fps") is not None:
        fps = _number(d["fps"], f"{source}: fps")
        if not 0 < fps <= 1000:
            raise ValueError(f"{source}: fps must be in (0, 1000], got {fps}")
    cams = []
    for i, c in enumerate(path):
        where = f"{source}: camera_path[{i}]"
        if not isinstance(c, dict):
            raise ValueError(f"{where}: must be an object, got {type(c).__name__}")
        for k in ("camera_to_world", "fov"):
            if k not in c:
                raise ValueError(f"{where}: '{k}' is missing")
        c2w = _c2w(c["camera_to_world"], f"{where}.camera_to_world")
        fov = _number(c["fov"], f"{where}.fov")
        if not 0.01 <= fov < 179:
            raise ValueError(f"{where}.fov: must be a vertical field of view in degrees in [0.01, 179), got {fov}")
        f = 0.5 * h / math.tan(math.radians(fov) / 2)
        cams.append(Camera(fx=f, fy=f, cx=w / 2, cy=h / 2, width=w, height=h, c2w=c2w))
    return cams, fps


def read_camera_path(path) -> tuple[list[Camera], float | None]:
    """Read a camera_path.json -> (cameras, fps or None). FileNotFoundError or
    ValueError naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"camera path not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path}: is not a file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB; not a camera path")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise ValueError(f"{path}: not valid JSON for a camera path (nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot be read as JSON ({' '.join(str(e).split())[:200]})") from None
    return cameras_from_camera_path(d, str(path))


def write_camera_path(cams, path, fps: float = 24.0) -> Path:
    """Write cameras as a nerfstudio camera_path.json (atomically) -> the path."""
    return write_text_atomic(path, json.dumps(cameras_to_camera_path(cams, fps), indent=1) + "\n")
