"""One real photo -> a subject folder framed like the rig's frontal camera.

Steps (docs/FACE.md has the details and the reasons):

1. Load: EXIF orientation applied, grayscale/palette/16-bit converted to RGB, RGBA kept
   as RGB composited onto white plus the alpha channel (stored as the view's mask).
2. Detect 468 MediaPipe Face Mesh points offline (static image mode). Huge photos are
   downscaled and tiny ones upscaled for detection only. Besides the mesh's own
   short-range detector, MediaPipe's full-range face detector proposes boxes and the
   mesh runs again on each box no mesh covers yet (smaller faces, people further back).
   Several faces: the largest wins, with a warning.
3. Frame: a scale + translation (no rotation, so the crop stays an axis-aligned box)
   maps the 24 project landmarks onto ``landmarks.TEMPLATE`` as seen by
   ``rig.frontal_camera(res)``. The photo is cropped to that box and resampled to
   ``res x res``; the view gets exactly that camera.
4. Lift to 3D: each landmark's pixel is back-projected through the frontal camera to
   the depth ``D0 + z_rel * D0 / f``, with MediaPipe's relative depth ``z_rel`` (pixels,
   smaller = nearer) and ``D0`` chosen so the mean landmark depth equals the template's
   mean depth (a template-sized head at the origin).
5. Mask: a photo without an alpha channel gets a foreground (person) mask from
   MediaPipe Selfie Segmentation, run on the crop box's neighbourhood in the photo and
   resampled with the crop (zero outside the photo). An RGBA photo keeps its own alpha.
6. Write transforms.json, face.json and the image (RGBA when there is a mask) with
   ``data.format.write_subject``.

MediaPipe is imported lazily (it takes seconds); nothing is downloaded at run time,
the tflite models ship inside the mediapipe wheel.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..data import rig
from ..render.cameras import Camera
from . import landmarks as lm
from .mediapipe_map import MEDIAPIPE_TO_PNERF24, NUM_MEDIAPIPE_POINTS
from .procrustes import SimilarityTransform, alignment_residual, canonical_transform

__all__ = [
    "FaceAlignmentError",
    "FaceDetection",
    "AlignedPhoto",
    "load_photo",
    "detect_landmarks",
    "frame_landmarks",
    "lift_landmarks",
    "align_photo",
    "segment_foreground",
    "draw_mask",
    "DEFAULT_RES",
]

log = logging.getLogger(__name__)

DEFAULT_RES = 128
#: Photos larger than this (longest side, pixels) are downscaled before detection.
MAX_DETECT_SIDE = 1920
#: Photos smaller than this (longest side) are upscaled before detection.
MIN_DETECT_SIDE = 256
#: A face narrower than this many photo pixels (landmark box width) is refused.
MIN_FACE_PX = 16
#: Photos with more pixels than this (width x height, from the header) are refused before
#: they are decoded (a decompression bomb claims a huge size in a tiny file).
MAX_PHOTO_PIXELS = 100_000_000
#: MediaPipe's own limit on faces per image that we ask for.
MAX_NUM_FACES = 5
#: Selfie Segmentation model: 0 = general (256x256 input), 1 = landscape (144x256).
#: On the astronaut the general model gives the cleaner mask (docs/FACE.md).
SEGMENT_MODEL = 0
#: Segmentation confidences below LOW become 0, above HIGH 1, smoothstep in between.
SEGMENT_LOW, SEGMENT_HIGH = 0.1, 0.9
#: The segmenter sees the crop box enlarged this many times about its centre (clipped to
#: the photo): head and shoulders, the framing the selfie model is trained on. The bare
#: crop (1x) leaks onto the background; the whole photo is coarse for small faces.
SEGMENT_CONTEXT = 1.5
#: A mask whose mean over the 24 landmark pixels is below this misses the face: dropped.
SEGMENT_MIN_FACE_ALPHA = 0.5


class FaceAlignmentError(ValueError):
    """A photo could not be turned into a subject folder; the message names the file."""


PhotoInput = Union[str, os.PathLike, np.ndarray]


# ------------------------------------------------------------------------------ loading

def _source_name(photo) -> str:
    if isinstance(photo, np.ndarray):
        return "<array>"
    return os.fspath(photo)


def _to_uint8(a: np.ndarray, src: str) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise FaceAlignmentError(f"{src}: image has non-finite pixel values")
        hi = 1.0 if a.max() <= 1.0 else 255.0
        return np.clip(np.round(a * (255.0 / hi)), 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        hi = 255 if a.max() <= 255 else (65535 if a.max() <= 65535 else int(a.max()))
        return np.clip(np.round(a.astype(np.float64) * (255.0 / hi)), 0, 255).astype(np.uint8)
    raise FaceAlignmentError(f"{src}: unsupported image dtype {a.dtype}")


def _split_channels(a: np.ndarray, src: str) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """uint8 [H,W] / [H,W,1|2|3|4] -> (rgb [H,W,3], alpha [H,W] or None)."""
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise FaceAlignmentError(f"{src}: image must be HxW, HxWx3 or HxWx4, got shape {tuple(a.shape)}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise FaceAlignmentError(f"{src}: image is empty (shape {tuple(a.shape)})")
    c = a.shape[2]
    alpha = None
    if c in (2, 4):
        alpha = a[:, :, -1]
        a = a[:, :, :-1]
        if alpha.min() == 255:
            alpha = None  # fully opaque: no mask
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    rgb = np.ascontiguousarray(a)
    return rgb, (np.ascontiguousarray(alpha) if alpha is not None else None)


def composite_on_white(rgb: np.ndarray, alpha: Optional[np.ndarray]) -> np.ndarray:
    """uint8 straight RGB [H,W,3] + alpha [H,W] -> uint8 RGB over white (what detection sees)."""
    if alpha is None:
        return rgb
    w = alpha.astype(np.float32)[:, :, None] / 255.0
    return np.round(rgb.astype(np.float32) * w + 255.0 * (1.0 - w)).astype(np.uint8)


def load_photo(photo: PhotoInput) -> tuple[np.ndarray, Optional[np.ndarray], str]:
    """A photo path or array -> (straight rgb uint8 [H,W,3], alpha uint8 [H,W] or None, source name).

    Paths: EXIF orientation is applied (PIL ``ImageOps.exif_transpose``); any PIL mode is
    accepted (grayscale, palette, 16-bit, CMYK, RGBA). Arrays: uint8, float in [0, 1] or
    [0, 255], or 16-bit integers; HxW, HxWx3 or HxWx4 (RGB order). A fully opaque alpha
    channel is dropped (alpha None).
    """
    src = _source_name(photo)
    if isinstance(photo, np.ndarray):
        return (*_split_channels(_to_uint8(photo, src), src), src)
    if not isinstance(photo, (str, os.PathLike)):
        raise FaceAlignmentError(f"photo must be a file path or an image array, got {type(photo).__name__}")
    path = Path(photo)
    if not path.exists():
        raise FileNotFoundError(f"photo not found: {src}")
    if path.is_dir():
        raise FaceAlignmentError(f"{src}: is a directory, not an image file")
    if path.stat().st_size == 0:
        raise FaceAlignmentError(f"{src}: file is empty (0 bytes), not an image")
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below
            im = Image.open(path)
    except UnidentifiedImageError:
        raise FaceAlignmentError(f"{src}: not a readable image file (PIL cannot identify it)") from None
    except Image.DecompressionBombError:
        raise FaceAlignmentError(f"{src}: image is too large (more than {MAX_PHOTO_PIXELS:,} pixels)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise FaceAlignmentError(f"{src}: cannot decode image: {e}") from None
    try:
        with im:
            w, h = im.size
            if w * h > MAX_PHOTO_PIXELS:
                raise FaceAlignmentError(f"{src}: image is {w}x{h} pixels, more than the limit of "
                                         f"{MAX_PHOTO_PIXELS:,} (pnerf_fast.face.align.MAX_PHOTO_PIXELS)")
            im.load()
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(im).astype(np.float64)
                lo, hi = float(arr.min()), float(arr.max())
                arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
                arr = _to_uint8(arr, src)
            else:
                has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in im.info)
                arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    except UnidentifiedImageError:
        raise FaceAlignmentError(f"{src}: not a readable image file (PIL cannot identify it)") from None
    except FaceAlignmentError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise FaceAlignmentError(f"{src}: cannot decode image: {e}") from None
    return (*_split_channels(arr, src), src)


# ---------------------------------------------------------------------------- detection

@dataclass
class FaceDetection:
    """MediaPipe Face Mesh result in the pixel frame of the image given to detect_landmarks."""

    points: np.ndarray       # [468, 3] float64: u, v in pixels (continuous, pixel centres at +0.5);
                             # z = relative depth in the same pixel units, smaller = nearer the camera
    bbox: tuple[float, float, float, float]  # (x0, y0, x1, y1) of the 468 points, pixels
    num_faces: int           # faces MediaPipe found (the largest one is returned)
    image_size: tuple[int, int]  # (width, height)
    all_bboxes: list = field(default_factory=list)  # boxes of every face found, largest first
    method: str = "face_mesh"    # "face_mesh" or "face_detection+face_mesh" (the fallback)

    @property
    def face_width(self) -> float:
        return float(self.bbox[2] - self.bbox[0])

    @property
    def points24(self) -> np.ndarray:
        """[24, 3] in ``landmarks.NAMES`` order."""
        return self.points[list(MEDIAPIPE_TO_PNERF24)]


def _quiet_mediapipe():
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def _native_stderr_captured():
    """MediaPipe's C++ side (TFLite, absl) prints benign warnings straight to file
    descriptor 2. Capture them; if the block fails they are re-emitted so nothing that
    explains an error is lost. Set PNERF_MEDIAPIPE_VERBOSE=1 to see them always."""
    if os.environ.get("PNERF_MEDIAPIPE_VERBOSE"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (some embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if not ok:
                tmp.seek(0)
                text = tmp.read().decode("utf-8", "replace")
                if text:
                    sys.stderr.write(text)


def _mesh_faces(image: np.ndarray, max_num_faces: int, refine_landmarks: bool) -> list[np.ndarray]:
    """All meshes in ``image`` (uint8 RGB) as [468, 3] pixel arrays."""
    _quiet_mediapipe()
    import mediapipe as mp

    h, w = image.shape[:2]
    with _native_stderr_captured(), mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True,
        max_num_faces=max_num_faces,
        refine_landmarks=refine_landmarks,
        min_detection_confidence=0.5,
    ) as fm:
        res = fm.process(np.ascontiguousarray(image))
    out = []
    for face in res.multi_face_landmarks or []:
        a = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float64)[:NUM_MEDIAPIPE_POINTS]
        a *= np.array([w, h, w], dtype=np.float64)  # MediaPipe's z is in units of the image width
        out.append(a)
    return out


def _detect_boxes(image: np.ndarray) -> list[tuple[float, float, float, float]]:
    """Full-range (model_selection=1) face detector boxes, pixels (x0, y0, x1, y1)."""
    _quiet_mediapipe()
    import mediapipe as mp

    h, w = image.shape[:2]
    with _native_stderr_captured(), mp.solutions.face_detection.FaceDetection(
        model_selection=1, min_detection_confidence=0.5
    ) as fd:
        res = fd.process(np.ascontiguousarray(image))
    boxes = []
    for det in res.detections or []:
        b = det.location_data.relative_bounding_box
        boxes.append((b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h))
    return boxes


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def _box_of(points: np.ndarray) -> tuple[float, float, float, float]:
    return (float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()), float(points[:, 1].max()))


def _area(b) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _overlap(a, b) -> float:
    """Intersection area over the smaller box's area (1 = one box inside the other)."""
    inter = _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    small = min(_area(a), _area(b))
    return inter / small if small > 0 else 0.0


def _mesh_in_box(image: np.ndarray, box, refine_landmarks: bool, crop_size: int = 384) -> list[np.ndarray]:
    """Face Mesh on a square crop 2.5x the size of a detector ``box``, mapped back to ``image`` pixels."""
    import cv2

    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) * 1.25
    if half < 2:
        return []
    k = crop_size / (2 * half)
    m = np.array([[k, 0, crop_size / 2 - k * cx], [0, k, crop_size / 2 - k * cy]], dtype=np.float64)
    crop = cv2.warpAffine(image, m, (crop_size, crop_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out = []
    for p in _mesh_faces(crop, 1, refine_landmarks):
        q = p.copy()
        q[:, 0] = (p[:, 0] - m[0, 2]) / k
        q[:, 1] = (p[:, 1] - m[1, 2]) / k
        q[:, 2] = p[:, 2] / k
        out.append(q)
    return out


def detect_landmarks(
    image: np.ndarray,
    *,
    max_num_faces: int = MAX_NUM_FACES,
    refine_landmarks: bool = False,
    source: str = "<array>",
) -> FaceDetection:
    """MediaPipe Face Mesh on one RGB image (uint8 [H, W, 3]); the largest face is returned.

    Raises FaceAlignmentError (naming ``source``) when no face is found or the face is
    too small. Warns (``UserWarning``) when several faces are found.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise FaceAlignmentError(
            f"{source}: detect_landmarks needs a uint8 RGB image [H, W, 3], got {img.dtype} {tuple(img.shape)}"
            " (use load_photo to convert)"
        )
    h, w = img.shape[:2]
    if min(h, w) < 8:
        raise FaceAlignmentError(f"{source}: image is only {w}x{h} pixels, far too small to hold a detectable face")

    # Detection resolution: downscale huge photos, upscale tiny ones.
    long_side = max(h, w)
    scale = 1.0
    if long_side > MAX_DETECT_SIDE:
        scale = MAX_DETECT_SIDE / long_side
    elif long_side < MIN_DETECT_SIDE:
        scale = MIN_DETECT_SIDE / long_side
    det_img = _resize(img, scale) if scale != 1.0 else img

    # 1) The mesh's own (short-range) detector on the whole photo.
    meshes = [(m, "face_mesh") for m in _mesh_faces(det_img, max_num_faces, refine_landmarks)]
    # 2) MediaPipe's full-range detector finds faces the short-range one misses (small
    #    faces, a second person further back); the mesh then runs on a crop around each.
    for b in _detect_boxes(det_img):
        if len(meshes) >= max_num_faces:
            break
        if any(_overlap(b, _box_of(m)) > 0.3 for m, _ in meshes):
            continue
        for q in _mesh_in_box(det_img, b, refine_landmarks):
            if not any(_overlap(_box_of(q), _box_of(m)) > 0.3 for m, _ in meshes):
                meshes.append((q, "face_detection+face_mesh"))
    if not meshes:
        if long_side < MIN_DETECT_SIDE:
            hint = f" (the image is only {w}x{h} pixels; the face may be too small to detect)"
        else:
            hint = " (if the face is small in the frame, crop the photo closer around it)"
        raise FaceAlignmentError(
            f"{source}: no face found{hint}. Use a photo with one clearly visible, roughly frontal face."
        )
    # Back to the caller's pixel frame.
    methods = [k for _, k in meshes]
    meshes = [m / scale for m, _ in meshes]
    boxes = [_box_of(m) for m in meshes]
    order = sorted(range(len(meshes)), key=lambda i: -_area(boxes[i]))
    best = meshes[order[0]]
    method = methods[order[0]]
    det = FaceDetection(
        points=best,
        bbox=boxes[order[0]],
        num_faces=len(meshes),
        image_size=(w, h),
        all_bboxes=[boxes[i] for i in order],
        method=method,
    )
    if det.face_width < MIN_FACE_PX:
        raise FaceAlignmentError(
            f"{source}: the face is only {det.face_width:.0f} pixels wide; need at least {MIN_FACE_PX} "
            "(use a higher-resolution photo or a closer crop)"
        )
    if det.num_faces > 1:
        msg = (
            f"{source}: found {det.num_faces} faces; using the largest "
            f"({det.face_width:.0f} px wide, box {tuple(round(v) for v in det.bbox)})"
        )
        log.info(msg)
        warnings.warn(msg, stacklevel=2)
    return det


# ------------------------------------------------------------------------- segmentation

def segment_foreground(rgb: np.ndarray, *, model_selection: int = SEGMENT_MODEL) -> np.ndarray:
    """Person (foreground) mask of a uint8 RGB image [H, W, 3] with MediaPipe Selfie
    Segmentation: float32 [H, W] in [0, 1].

    The model's confidence is remapped so that values below ``SEGMENT_LOW`` (0.1) become 0
    and above ``SEGMENT_HIGH`` (0.9) become 1, with a smoothstep in between (soft edges for
    hair, a clean zero on the background). Runs offline (the model ships in the wheel).
    """
    img = np.asarray(rgb)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 1:
        raise ValueError(f"segment_foreground needs a uint8 RGB image [H, W, 3], got {img.dtype} {tuple(img.shape)}")
    _quiet_mediapipe()
    import mediapipe as mp

    with _native_stderr_captured(), mp.solutions.selfie_segmentation.SelfieSegmentation(
        model_selection=model_selection
    ) as seg:
        res = seg.process(np.ascontiguousarray(img))
    m = getattr(res, "segmentation_mask", None)
    if m is None:
        raise RuntimeError("MediaPipe Selfie Segmentation returned no mask")
    m = np.nan_to_num(np.asarray(m, dtype=np.float32), nan=0.0)
    if m.shape != img.shape[:2]:
        raise RuntimeError(f"segmentation mask has shape {m.shape}, expected {img.shape[:2]}")
    t = np.clip((m - SEGMENT_LOW) / (SEGMENT_HIGH - SEGMENT_LOW), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def _segment_crop(rgb: np.ndarray, box, res: int) -> np.ndarray:
    """Foreground mask of the crop ``box`` (photo pixels, may leave the photo) at
    [res, res], float32 in [0, 1]; zero where the box lies outside the photo."""
    h, w = rgb.shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = (box[2] - box[0]) * SEGMENT_CONTEXT / 2
    rx0, ry0 = max(0, int(np.floor(cx - half))), max(0, int(np.floor(cy - half)))
    rx1, ry1 = min(w, int(np.ceil(cx + half))), min(h, int(np.ceil(cy + half)))
    if rx1 <= rx0 or ry1 <= ry0:
        return np.zeros((res, res), np.float32)
    region = rgb[ry0:ry1, rx0:rx1]
    # Downscale huge regions first (the model's input is 256 px; this keeps it cheap).
    k = min(1.0, 1024.0 / max(region.shape[:2]))
    mask = segment_foreground(_resize(region, k) if k < 1.0 else region)
    if k < 1.0:
        import cv2

        mask = cv2.resize(mask, (rx1 - rx0, ry1 - ry0), interpolation=cv2.INTER_LINEAR)
    # One zero pixel around the region: outside the photo (and outside the segmented
    # neighbourhood, which holds the whole part of the box inside the photo) alpha is 0.
    padded = np.pad(mask, 1, mode="constant")
    rel = (box[0] - rx0 + 1, box[1] - ry0 + 1, box[2] - rx0 + 1, box[3] - ry0 + 1)
    return np.clip(_crop_resize(padded, rel, res), 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------- framing and lifting

def template_pixels(camera: Camera) -> np.ndarray:
    """Where ``landmarks.TEMPLATE`` at the origin projects in ``camera``: [24, 2] pixels."""
    uv, _ = camera.project(lm.TEMPLATE)
    return uv


def frame_landmarks(points_2d: np.ndarray, res: int) -> tuple[float, np.ndarray]:
    """Scale ``a`` and translation ``b`` [2] (photo pixels -> crop pixels, ``a * p + b``)
    that best put the 24 photo landmarks [24, 2] onto the template as seen by
    ``rig.frontal_camera(res)`` (least squares, no rotation)."""
    p = np.asarray(points_2d, dtype=np.float64)
    q = template_pixels(rig.frontal_camera(res))
    pm, qm = p.mean(0), q.mean(0)
    pc, qc = p - pm, q - qm
    a = float((pc * qc).sum() / (pc * pc).sum())
    if not a > 0:
        raise FaceAlignmentError("landmarks are degenerate (zero spread or mirrored); cannot frame the face")
    return a, qm - a * pm


def lift_landmarks(uv: np.ndarray, z_rel_px: np.ndarray, camera: Camera) -> np.ndarray:
    """Back-project pixels ``uv`` [N, 2] with relative depths ``z_rel_px`` [N] (pixels at the
    camera's focal length, smaller = nearer) to world points [N, 3].

    The absolute depth is fixed by requiring that the mean landmark depth equals ``D0``,
    the mean depth of ``landmarks.TEMPLATE`` at the origin seen by ``camera``; relative
    depths (centred on the landmarks' mean) become world units at ``D0``
    (``dz = z_rel * D0 / f``), the weak-perspective scale MediaPipe uses for x and y.
    With 468 points, the mean is taken over the 24 landmarks' vertices.
    """
    uv = np.asarray(uv, dtype=np.float64)
    z = np.asarray(z_rel_px, dtype=np.float64)
    _, tmpl_depth = camera.project(lm.TEMPLATE)
    target = float(tmpl_depth.mean())
    f = 0.5 * (camera.fx + camera.fy)
    # Use the mean over the 24 landmarks as the reference when given all 468 points.
    z_ref = z[list(MEDIAPIPE_TO_PNERF24)] if z.shape[0] == NUM_MEDIAPIPE_POINTS else z
    depth = target + (z - z_ref.mean()) * target / f  # mean landmark depth == target
    xc = (uv[:, 0] - camera.cx) / camera.fx * depth
    yc = -(uv[:, 1] - camera.cy) / camera.fy * depth
    pc = np.stack([xc, yc, -depth, np.ones_like(depth)], -1)
    return (pc @ camera.c2w.T)[:, :3]


def _crop_resize(arr: np.ndarray, box: tuple[float, float, float, float], res: int) -> np.ndarray:
    """Resample the square ``box`` (x0, y0, x1, y1; photo pixels, may leave the photo) of a
    uint8 image [H, W] or [H, W, C] (or a float32 [H, W]) to [res, res(, C)], replicating
    edge pixels outside."""
    from PIL import Image

    h, w = arr.shape[:2]
    x0, y0, x1, y1 = box
    # Work on the integer region around the box only (huge photos stay cheap).
    ix0, iy0 = int(np.floor(x0)) - 2, int(np.floor(y0)) - 2
    ix1, iy1 = int(np.ceil(x1)) + 2, int(np.ceil(y1)) + 2
    sx0, sy0 = min(max(ix0, 0), w - 1), min(max(iy0, 0), h - 1)
    sx1, sy1 = max(min(ix1, w), sx0 + 1), max(min(iy1, h), sy0 + 1)
    region = arr[sy0:sy1, sx0:sx1]
    pad = [(sy0 - iy0, iy1 - sy1), (sx0 - ix0, ix1 - sx1)] + [(0, 0)] * (arr.ndim - 2)
    pad = [(max(0, a), max(0, b)) for a, b in pad]
    region = np.pad(region, pad, mode="edge")
    rel = (x0 - ix0, y0 - iy0, x1 - ix0, y1 - iy0)
    channels = [region] if region.ndim == 2 else [region[:, :, c] for c in range(region.shape[2])]
    out = [
        np.asarray(Image.fromarray(np.ascontiguousarray(ch)).resize((res, res), Image.Resampling.BICUBIC, box=rel))
        for ch in channels
    ]
    return out[0] if region.ndim == 2 else np.stack(out, -1)


# ----------------------------------------------------------------------------- results

@dataclass
class AlignedPhoto:
    image: np.ndarray              # [res, res, 3] float32 in [0, 1]; straight (not premultiplied) RGB
    alpha: Optional[np.ndarray]    # [res, res] float32 in [0, 1], the view's mask (see mask_source), or None
    camera: Camera                 # == rig.frontal_camera(res)
    landmarks_world: np.ndarray    # [24, 3] float64, landmarks.NAMES order
    landmarks_2d: np.ndarray       # [24, 2] float64, crop pixels
    mediapipe_2d: np.ndarray       # [468, 2] float64, crop pixels
    mediapipe_world: np.ndarray    # [468, 3] float64, lifted like the landmarks
    crop_box: tuple[float, float, float, float]  # (x0, y0, x1, y1) in photo pixels (after EXIF rotation)
    photo_size: tuple[int, int]    # (width, height) of the photo after EXIF rotation
    num_faces: int
    source: str
    detection_method: str = "face_mesh"
    outside_fraction: float = 0.0  # share of the crop that lies outside the photo (edge-replicated)
    mask_source: Optional[str] = None  # "photo" (its alpha channel), "segmentation" or None (no mask)

    @property
    def res(self) -> int:
        return self.camera.width

    def composite(self, bg: float = 1.0) -> np.ndarray:
        """The crop over a constant background using ``alpha``, else ``image``: [res, res, 3]."""
        if self.alpha is None:
            return self.image
        a = self.alpha[..., None]
        return (self.image * a + bg * (1.0 - a)).astype(np.float32)

    @property
    def crop_scale(self) -> float:
        """Crop pixels per photo pixel (< 1: downsampled; > 1: the face was upsampled)."""
        return self.res / (self.crop_box[2] - self.crop_box[0])

    def canonical_transform(self, mean_face: Optional[np.ndarray] = None) -> SimilarityTransform:
        """World -> canonical similarity; ``mean_face`` defaults to ``landmarks.TEMPLATE``
        (use the pretrained model's mean face for finetuning)."""
        return canonical_transform(self.landmarks_world, lm.TEMPLATE if mean_face is None else mean_face)

    def template_fit_rms(self) -> float:
        """RMS distance (canonical units) of the landmarks to TEMPLATE after the best similarity."""
        t = self.canonical_transform()
        return alignment_residual(t, self.landmarks_world, lm.TEMPLATE)

    def meta(self) -> dict:
        t = self.canonical_transform()
        return {
            "source": "photo",
            "photo": self.source,
            "photo_size": [int(v) for v in self.photo_size],
            "crop_box": [float(v) for v in self.crop_box],
            "crop_scale": float(self.crop_scale),
            "outside_fraction": float(self.outside_fraction),
            "num_faces": int(self.num_faces),
            "detector": f"mediapipe {self.detection_method}",
            "landmark_map": "pnerf_fast.face.mediapipe_map.MEDIAPIPE_TO_PNERF24",
            "template_fit_rms": self.template_fit_rms(),
            "template_transform": t.to_dict(),
            "alpha_mask": self.alpha is not None,
            "mask_source": self.mask_source,
        }

    def save(self, out_dir, *, overwrite: bool = True) -> Path:
        """Write the subject folder (transforms.json, face.json, images/frontal.png) and
        return its path. An existing folder is replaced only when ``overwrite`` and it is
        empty or already a subject folder (has transforms.json): never someone's other files."""
        from ..data.format import TRANSFORMS_FILE, write_subject

        out = Path(out_dir)
        if out.exists():
            if not out.is_dir():
                raise FileExistsError(f"output path {out} exists and is not a folder")
            if not overwrite:
                raise FileExistsError(f"output folder {out} already exists")
            if any(out.iterdir()) and not (out / TRANSFORMS_FILE).is_file():
                raise FileExistsError(
                    f"output folder {out} exists and is not a subject folder (no {TRANSFORMS_FILE}); "
                    "refusing to replace it, choose another --out"
                )
        image = self.image if self.alpha is None else np.concatenate([self.image, self.alpha[..., None]], -1)
        write_subject(
            out,
            cameras=[self.camera],
            images=image[None],
            file_names=["frontal.png"],
            frontal_index=0,
            landmarks=self.landmarks_world,
            landmarks_2d={0: self.landmarks_2d},
            meta=self.meta(),
        )
        return out


def align_photo(
    photo: PhotoInput,
    out_dir=None,
    *,
    res: int = DEFAULT_RES,
    refine_landmarks: bool = False,
    max_num_faces: int = MAX_NUM_FACES,
    segment: bool = True,
) -> AlignedPhoto:
    """A photo (path or array) -> AlignedPhoto framed like ``rig.frontal_camera(res)``;
    writes the subject folder to ``out_dir`` when given.

    The view's mask (``alpha``): an RGBA photo's own alpha channel; otherwise, with
    ``segment`` (default), a person mask from MediaPipe Selfie Segmentation. When the
    segmentation fails, is empty or misses the face, ``alpha`` is None and a
    ``UserWarning`` says why."""
    if not (isinstance(res, (int, np.integer)) and res >= 16):
        raise ValueError(f"res must be an integer >= 16, got {res!r}")
    res = int(res)
    rgb, alpha, src = load_photo(photo)
    det = detect_landmarks(composite_on_white(rgb, alpha), max_num_faces=max_num_faces, refine_landmarks=refine_landmarks, source=src)
    h, w = rgb.shape[:2]

    a, b = frame_landmarks(det.points24[:, :2], res)
    x0, y0 = -b / a
    size = res / a
    box = (float(x0), float(y0), float(x0 + size), float(y0 + size))

    mp_2d = det.points[:, :2] * a + b
    camera = rig.frontal_camera(res)
    mp_world = lift_landmarks(mp_2d, det.points[:, 2] * a, camera)
    idx = list(MEDIAPIPE_TO_PNERF24)

    image = _crop_resize(rgb, box, res).astype(np.float32) / 255.0
    alpha_c, mask_source = None, None
    if alpha is not None:
        # Outside the photo the alpha is zero (nothing there), not edge-replicated.
        padded = np.pad(alpha, 1, mode="constant")
        box_p = (box[0] + 1, box[1] + 1, box[2] + 1, box[3] + 1)
        alpha_c = _crop_resize(padded, box_p, res).astype(np.float32) / 255.0
        mask_source = "photo"
    elif segment:
        alpha_c = _segmentation_or_none(rgb, box, res, mp_2d[idx], src)
        mask_source = "segmentation" if alpha_c is not None else None
    inside = np.clip([min(box[2], w) - max(box[0], 0), min(box[3], h) - max(box[1], 0)], 0, None)
    outside = 1.0 - float(inside[0] * inside[1]) / (size * size)

    if size < res:
        log.info("%s: the face region (%.0f px) is upsampled to %d px", src, size, res)

    result = AlignedPhoto(
        image=image,
        alpha=alpha_c,
        camera=camera,
        landmarks_world=mp_world[idx],
        landmarks_2d=mp_2d[idx],
        mediapipe_2d=mp_2d,
        mediapipe_world=mp_world,
        crop_box=box,
        photo_size=(w, h),
        num_faces=det.num_faces,
        source=src,
        detection_method=det.method,
        outside_fraction=max(0.0, outside),
        mask_source=mask_source,
    )
    if out_dir is not None:
        result.save(out_dir)
    return result


def _segmentation_or_none(rgb, box, res, landmarks_2d, src) -> Optional[np.ndarray]:
    """The crop's segmentation mask, or None with a warning when it cannot be trusted."""
    try:
        mask = _segment_crop(rgb, box, res)
    except Exception as e:  # noqa: BLE001 - any segmentation failure falls back to "no mask"
        reason = f"segmentation failed ({type(e).__name__}: {e})"
    else:
        uv = np.clip(np.round(landmarks_2d - 0.5).astype(int), 0, res - 1)
        face = float(mask[uv[:, 1], uv[:, 0]].mean())
        if not np.isfinite(mask).all() or mask.max() < 0.5:
            reason = "the segmentation mask is empty"
        elif face < SEGMENT_MIN_FACE_ALPHA:
            reason = f"the segmentation mask misses the face (mean alpha {face:.2f} on the landmarks)"
        else:
            return mask
    msg = f"{src}: {reason}; no foreground mask, the whole crop is used as foreground"
    log.info(msg)
    warnings.warn(msg, stacklevel=3)
    return None


def draw_mask(aligned: AlignedPhoto, path=None, *, scale: int = 2, checker: int = 8) -> np.ndarray:
    """A preview of the view's mask: the crop, the mask, and the crop composited with the
    mask over a grey checkerboard, side by side, each ``scale`` times larger. Returns uint8
    [res*scale, 3*res*scale, 3]; also writes a PNG when ``path`` is given."""
    import cv2

    res = aligned.res
    a = np.ones((res, res), np.float32) if aligned.alpha is None else aligned.alpha
    yy, xx = np.mgrid[:res, :res]
    board = np.where(((yy // checker + xx // checker) % 2)[..., None] == 0, 0.55, 0.75).astype(np.float32)
    comp = aligned.image * a[..., None] + board * (1.0 - a[..., None])
    panels = [aligned.image, np.repeat(a[..., None], 3, -1), comp]
    img = np.clip(np.round(np.concatenate(panels, 1) * 255), 0, 255).astype(np.uint8)
    big = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    if path is not None:
        from .._io import atomic_path

        p = Path(path)
        with atomic_path(p) as tmp:  # same suffix: cv2 picks the format from it
            if not cv2.imwrite(str(tmp), cv2.cvtColor(big, cv2.COLOR_RGB2BGR)):
                raise ValueError(f"could not write mask preview {p}")
    return big


def draw_landmarks(aligned: AlignedPhoto, path=None, *, scale: int = 4, show_mesh: bool = True) -> np.ndarray:
    """A preview: the crop upscaled ``scale`` times, the 468 mesh points faint, the 24
    project landmarks as coloured dots (subject's right red, left blue, midline green)
    with their iBUG index. An RGBA photo is shown over white; a segmentation mask is not
    applied (``draw_mask`` shows it). Returns uint8 [H, W, 3]; also writes a PNG when
    ``path`` is given."""
    import cv2

    shown = aligned.composite(1.0) if aligned.mask_source == "photo" else aligned.image
    img = np.clip(np.round(shown * 255), 0, 255).astype(np.uint8)
    big = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    canvas = big.copy()
    if show_mesh:
        for u, v in aligned.mediapipe_2d * scale:
            cv2.circle(canvas, (int(round(u)), int(round(v))), 1, (255, 255, 255), -1, lineType=cv2.LINE_AA)
        big = cv2.addWeighted(canvas, 0.35, big, 0.65, 0)
    r = max(2, scale)
    font = max(0.3, 0.09 * scale)
    for (ibug, name), (u, v) in zip(lm.LANDMARKS, aligned.landmarks_2d * scale):
        col = (230, 40, 40) if "right" in name else (40, 90, 255) if "left" in name else (40, 200, 40)
        c = (int(round(u)), int(round(v)))
        cv2.circle(big, c, r + 1, (0, 0, 0), -1, lineType=cv2.LINE_AA)
        cv2.circle(big, c, r, col, -1, lineType=cv2.LINE_AA)
        cv2.putText(big, str(ibug), (c[0] + r + 1, c[1] - r), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(big, str(ibug), (c[0] + r + 1, c[1] - r), cv2.FONT_HERSHEY_SIMPLEX, font, (255, 255, 255), 1, cv2.LINE_AA)
    if path is not None:
        from .._io import atomic_path

        p = Path(path)
        with atomic_path(p) as tmp:  # same suffix: cv2 picks the format from it
            if not cv2.imwrite(str(tmp), cv2.cvtColor(big, cv2.COLOR_RGB2BGR)):
                raise ValueError(f"could not write preview image {p}")
    return big
