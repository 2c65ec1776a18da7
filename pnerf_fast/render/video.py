"""Writing frames: videos (.mp4, .gif), PNG folders, contact sheets and depth maps.

No matplotlib: the depth colormap (Google's Turbo, polynomial fit) is computed in numpy.
The .mp4 writer uses imageio with the ffmpeg binary that imageio-ffmpeg ships (libx264,
yuv420p, so sizes must be even: odd frames are padded by repeating the last row/column).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import atomic_path

__all__ = ["to_uint8", "write_video", "save_png", "make_grid_image", "depth_to_rgb", "turbo", "VIDEO_SUFFIXES"]

VIDEO_SUFFIXES = (".mp4", ".gif")


def to_uint8(img, name: str = "img") -> np.ndarray:
    """[H, W], [H, W, 1], [H, W, 3] or [H, W, 4] (alpha dropped), uint8 or float in [0, 1]
    (numpy or torch) -> uint8 [H, W, 3]."""
    if hasattr(img, "detach"):
        img = img.detach().cpu().numpy()
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name} must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got shape {a.shape}")
    if a.shape[-1] == 4:
        a = a[..., :3]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if not np.issubdtype(a.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got dtype {a.dtype}")
    a = np.nan_to_num(a.astype(np.float64), nan=0.0)
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _frames(frames) -> list[np.ndarray]:
    out = [to_uint8(f, f"frames[{i}]") for i, f in enumerate(frames)]
    if not out:
        raise ValueError("frames is empty")
    for i, f in enumerate(out):
        if f.shape != out[0].shape:
            raise ValueError(f"frames[{i}] has shape {f.shape}, frames[0] {out[0].shape}; all frames must match")
    return out


def _pad_even(f: np.ndarray) -> np.ndarray:
    h, w = f.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return f
    return np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_video(frames, path, fps: float = 24, quality: int = 8) -> Path:
    """Write frames (each [H, W, 3] uint8 or float in [0, 1]) to ``path``:

    - ``*.mp4``: H.264 (libx264, yuv420p) via imageio-ffmpeg; odd sizes padded to even;
      ``quality`` is imageio's 0-10 scale;
    - ``*.gif``: looping GIF via Pillow, ``1000 / fps`` ms per frame (GIF stores
      hundredths of a second, so it is rounded; Pillow merges consecutive identical
      frames into one longer frame);
    - a path without a suffix: a folder of ``frame_00000.png``, ``frame_00001.png``, ...

    The parent folder is created. Any other suffix is a ValueError. -> the path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix and suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"path {str(path)!r}: unknown suffix {path.suffix!r}; use .mp4, .gif, "
                         f"or a path without a suffix for a folder of PNG frames")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    fr = _frames(frames)
    if suffix == ".mp4":
        import imageio.v2 as imageio

        with atomic_path(path) as tmp:
            w = imageio.get_writer(str(tmp), format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                   pixelformat="yuv420p", quality=quality, macro_block_size=1,
                                   ffmpeg_log_level="error")
            try:
                for f in fr:
                    w.append_data(_pad_even(f))
            finally:
                w.close()
    elif suffix == ".gif":
        from PIL import Image

        ims = [Image.fromarray(f) for f in fr]
        with atomic_path(path) as tmp:
            # optimize=False and disposal=1 keep one GIF frame per input frame.
            ims[0].save(tmp, format="GIF", save_all=True, append_images=ims[1:],
                        duration=max(20, int(round(1000 / fps))), loop=0, optimize=False, disposal=1)
    else:
        if path.exists() and not path.is_dir():
            raise ValueError(f"path {str(path)!r}: exists and is not a folder (PNG frames need a folder)")
        path.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(fr):
            save_png(path / f"frame_{i:05d}.png", f)
    return path


def save_png(path, img) -> Path:
    """Write one image ([H, W(, C)] uint8 or float in [0, 1]) as PNG; creates the folder."""
    import imageio.v2 as imageio

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path {str(path)!r} must end in .png")
    img = to_uint8(img)
    with atomic_path(path) as tmp:
        imageio.imwrite(str(tmp), img, format="PNG")
    return path


def make_grid_image(images, ncols: int | None = None, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """A contact sheet: images ([H, W(, C)], all the same size) row-major in ``ncols``
    columns (default: all in one row), ``pad`` pixels of ``pad_value`` between and around
    them. -> uint8 [rows * (H + pad) + pad, ncols * (W + pad) + pad, 3]."""
    ims = [to_uint8(im, f"images[{i}]") for i, im in enumerate(images)]
    if not ims:
        raise ValueError("images is empty")
    h, w = ims[0].shape[:2]
    for i, im in enumerate(ims):
        if im.shape[:2] != (h, w):
            raise ValueError(f"images[{i}] is {im.shape[0]}x{im.shape[1]}, images[0] {h}x{w}; all must match")
    ncols = len(ims) if ncols is None else int(ncols)
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    nrows = -(-len(ims) // ncols)
    sheet = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), pad_value, dtype=np.uint8)
    for k, im in enumerate(ims):
        r, c = divmod(k, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[y:y + h, x:x + w] = im
    return sheet


# Turbo colormap, polynomial approximation (Mikhailov 2019, Google AI blog; Apache-2.0).
_TURBO_R = (0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943)
_TURBO_G = (0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604)
_TURBO_B = (0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973)


def turbo(x) -> np.ndarray:
    """Turbo colormap: values in [0, 1] (clipped) -> float RGB in [0, 1], shape [..., 3]."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    powers = np.stack([x ** k for k in range(6)], -1)
    rgb = np.stack([powers @ np.asarray(c) for c in (_TURBO_R, _TURBO_G, _TURBO_B)], -1)
    return np.clip(rgb, 0.0, 1.0)


def depth_to_rgb(depth, opacity=None, near: float | None = None, far: float | None = None) -> np.ndarray:
    """Depth map [H, W] (or [H, W, 1]) -> uint8 [H, W, 3], Turbo colours: near is red,
    far is blue. Background (opacity < 0.5, or depth <= 0 without opacity) is black.
    ``near``/``far`` default to the 1st and 99th percentile of the foreground depths, so
    a video should pass fixed values to keep colours stable across frames."""
    if hasattr(depth, "detach"):
        depth = depth.detach().cpu().numpy()
    d = np.asarray(depth, dtype=np.float64)
    if d.ndim == 3 and d.shape[-1] == 1:
        d = d[..., 0]
    if d.ndim != 2:
        raise ValueError(f"depth must be [H, W] or [H, W, 1], got shape {d.shape}")
    if opacity is not None:
        if hasattr(opacity, "detach"):
            opacity = opacity.detach().cpu().numpy()
        o = np.asarray(opacity, dtype=np.float64)
        if o.ndim == 3 and o.shape[-1] == 1:
            o = o[..., 0]
        if o.shape != d.shape:
            raise ValueError(f"opacity shape {o.shape} does not match depth shape {d.shape}")
        fg = o >= 0.5
    else:
        fg = d > 0
    fg &= np.isfinite(d)
    out = np.zeros(d.shape + (3,), dtype=np.uint8)
    if not fg.any():
        return out
    vals = d[fg]
    lo = float(np.percentile(vals, 1)) if near is None else float(near)
    hi = float(np.percentile(vals, 99)) if far is None else float(far)
    t = (d[fg] - lo) / max(hi - lo, 1e-8)
    # near -> the red end; the colour window [0.1, 0.95] keeps the foreground clear of black
    out[fg] = to_uint8(turbo(0.95 - 0.85 * np.clip(t, 0.0, 1.0))[None])[0]
    return out
