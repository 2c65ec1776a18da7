"""Step 5: a foreground (person) mask from MediaPipe Selfie Segmentation.

Run on the crop box's neighbourhood in the photo and resampled with the crop (zero
outside the photo); a mask that is empty or misses the face is dropped with a warning.
"""
from __future__ import annotations

import logging
import warnings
from typing import Optional

import numpy as np

from ._mediapipe import _native_stderr_captured, _quiet_mediapipe
from .resample import _crop_resize, _resize

log = logging.getLogger(__name__)

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
