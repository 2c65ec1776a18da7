"""Image resampling helpers: a plain rescale and a box crop resampled to a square."""
from __future__ import annotations

import numpy as np


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


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
