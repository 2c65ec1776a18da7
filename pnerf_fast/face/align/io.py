"""Step 1: read a photo (path or array) into straight RGB uint8 plus an optional alpha.

EXIF orientation is applied, grayscale/palette/16-bit are converted to RGB, and an
RGBA photo keeps its alpha channel (stored as the view's mask later).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .errors import FaceAlignmentError

#: Photos with more pixels than this (width x height, from the header) are refused before
#: they are decoded (a decompression bomb claims a huge size in a tiny file).
MAX_PHOTO_PIXELS = 100_000_000

PhotoInput = Union[str, os.PathLike, np.ndarray]


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
                                         f"{MAX_PHOTO_PIXELS:,} (pnerf_fast.face.align.io.MAX_PHOTO_PIXELS)")
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
