"""Step 2: MediaPipe Face Mesh landmarks of the largest face in an RGB image.

Huge photos are downscaled and tiny ones upscaled for detection only. Besides the mesh's
own short-range detector, MediaPipe's full-range face detector proposes boxes and the
mesh runs again on each box no mesh covers yet (smaller faces, people further back).
Several faces: the largest wins, with a warning.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..mediapipe_map import MEDIAPIPE_TO_PNERF24, NUM_MEDIAPIPE_POINTS
from ._mediapipe import _native_stderr_captured, _quiet_mediapipe
from .errors import FaceAlignmentError
from .resample import _resize

log = logging.getLogger(__name__)

#: Photos larger than this (longest side, pixels) are downscaled before detection.
MAX_DETECT_SIDE = 1920
#: Photos smaller than this (longest side) are upscaled before detection.
MIN_DETECT_SIDE = 256
#: A face narrower than this many photo pixels (landmark box width) is refused.
MIN_FACE_PX = 16
#: MediaPipe's own limit on faces per image that we ask for.
MAX_NUM_FACES = 5


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
