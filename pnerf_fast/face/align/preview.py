"""Preview images of an alignment: the mask panels and the landmarks over the crop."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import landmarks as lm
from .result import AlignedPhoto


def _write_rgb(path, rgb: np.ndarray, what: str) -> None:
    """Write uint8 RGB [H, W, 3] to ``path`` atomically, in the format its suffix names."""
    import cv2

    from ..._io import atomic_path

    p = Path(path)
    with atomic_path(p) as tmp:  # same suffix: cv2 picks the format from it
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise ValueError(f"could not write {what} {p}")


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
        _write_rgb(path, big, "mask preview")
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
        _write_rgb(path, big, "preview image")
    return big
