"""The whole alignment: photo -> detection -> framing -> lifting -> mask -> AlignedPhoto."""
from __future__ import annotations

import logging

import numpy as np

from ...geometry import rig
from ..mediapipe_map import MEDIAPIPE_TO_PNERF24
from .detect import MAX_NUM_FACES, detect_landmarks
from .framing import frame_landmarks, lift_landmarks
from .io import PhotoInput, composite_on_white, load_photo
from .resample import _crop_resize
from .result import AlignedPhoto
from .segment import _segmentation_or_none

log = logging.getLogger(__name__)

DEFAULT_RES = 128


def align_photo(
    photo: PhotoInput,
    *,
    res: int = DEFAULT_RES,
    refine_landmarks: bool = False,
    max_num_faces: int = MAX_NUM_FACES,
    segment: bool = True,
) -> AlignedPhoto:
    """A photo (path or array) -> AlignedPhoto framed like ``rig.frontal_camera(res)``.
    ``pnerf_fast.data.photo`` turns it into a Subject (``photo_subject``) or writes its
    subject folder (``write_photo_subject``).

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

    return AlignedPhoto(
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
