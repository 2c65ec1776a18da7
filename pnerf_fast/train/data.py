"""Rays of one subject, ready for batched training: world-space rays of every view,
their target colours and masks, and the subject's world -> canonical warp.

The support set D_s is the frontal view; the query set D_q is all the other views.
With a foreground mask, targets are composited over a random background colour per
ray (the same colour the renderer composites over), so the field cannot paint the
background into density.
"""
from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.format import Subject
from ..face.procrustes import SimilarityTransform, canonical_transform

COORDINATES = ("canonical", "world")


@dataclass
class RayBatch:
    rays_o: torch.Tensor   # [n, 3]
    rays_d: torch.Tensor   # [n, 3]
    target: torch.Tensor   # [n, 3] composited over bg
    bg: torch.Tensor       # [n, 3]
    alpha: torch.Tensor    # [n]
    pixel: torch.Tensor | None = None  # [n] each ray's pixel in its view (row-major), where known


class SubjectRays:
    """A subject's rays, colours and masks (``rays_o``, ``rays_d`` [V, H*W, 3], ``rgb``
    [V, H*W, 3], ``alpha`` [V, H*W], float32).

    Given a Subject with its images loaded, they are built at once and kept. Given one
    loaded with ``load_images=False`` (its headers validated, no pixels), they are built
    from ``subject.path`` when first used, and the lazily built subjects share a cache of
    at most ``cache_bytes()`` (``set_cache_bytes``; env ``PNERF_SUBJECT_CACHE_MB``,
    default 4 GiB, about 650 subjects at 128²): a dataset of any size then costs at most that, plus a re-read
    of an evicted subject's PNGs when it comes round again. Both ways give the same
    tensors, bit for bit (the same loader, resize and rays). Subjects with equal cameras
    (a light-stage rig) share one copy of ``rays_o`` and ``rays_d``: treat them as read-only.

    Every tensor (rays, colours, masks, the warp table, batches) lives on ``device`` (a
    torch.device or a string that torch.device takes; callers resolve the user's choice
    with pnerf_fast._device.resolve_device); ``batch`` needs a generator on that device."""

    def __init__(self, subject: Subject, mean_face: np.ndarray | None, coordinates: str = "canonical",
                 scale: float = 1.0, device="cpu"):
        if coordinates not in COORDINATES:
            raise ValueError(f"coordinates must be one of {COORDINATES}, got {coordinates!r}")
        lazy = subject.images is None
        if lazy and not (subject.path and Path(subject.path).is_dir()):
            raise ValueError(f"subject {subject.name}: images were not loaded, and its path {subject.path!r} "
                             f"is not a subject folder to load them from")
        self.name = subject.name
        self.coordinates = coordinates
        if coordinates == "canonical":
            if mean_face is None:
                raise ValueError("canonical coordinates need a mean face")
            self.transform = canonical_transform(subject.landmarks, mean_face)
        else:
            self.transform = SimilarityTransform.identity()
        self.warp_table = torch.as_tensor(self.transform.to_warp_row(), dtype=torch.float32, device=device)[None]
        cams = [c.scaled(scale) if scale != 1.0 else c for c in subject.cameras]
        self.cameras = cams
        self.frontal_index = subject.frontal_index
        self._scale = scale
        self._device = device
        self._views = len(cams)
        self.hw = (cams[0].height, cams[0].width)
        self.support = [self.frontal_index]
        self.query = [i for i in range(self._views) if i != self.frontal_index]
        if lazy:
            self._path = subject.path
            self._source_hw = (subject.cameras[0].height, subject.cameras[0].width)
            self.has_mask = _png_has_alpha(Path(subject.path) / subject.file_paths[0])
            self._data = None
        else:
            self._path = None
            self._data = self._build(subject.images, subject.masks)
            self.has_mask = subject.masks is not None

    def _build(self, imgs, masks):
        """-> (rays_o, rays_d, rgb, alpha) from float images [V, H, W, 3] and masks."""
        device = self._device
        if self._scale != 1.0:
            imgs, masks = _resize(imgs, masks, self.cameras[0].height, self.cameras[0].width)
        V, H, W = imgs.shape[:3]
        if (H, W) != self.hw or V != self._views:
            raise ValueError(f"subject {self.name}: {V} images of {W}x{H} but {self._views} cameras of "
                             f"{self.hw[1]}x{self.hw[0]}")
        rays_o, rays_d, fresh = _rig_rays(self.cameras, device)
        self._rays_bytes = 2 * rays_o.numel() * rays_o.element_size() if fresh else 0
        rgb = torch.as_tensor(imgs.reshape(V, H * W, 3), dtype=torch.float32, device=device)
        if masks is None:
            alpha = torch.ones(V, H * W, device=device)
        else:
            alpha = torch.as_tensor(masks.reshape(V, H * W), dtype=torch.float32, device=device)
        return rays_o, rays_d, rgb, alpha

    def _tensors(self):
        data = self._data
        if data is not None:
            if self._path is not None:
                _CACHE.touch(self)
            return data
        from ..data.format import load_subject

        s = load_subject(self._path)
        if s.num_views != self._views or (s.cameras[0].height, s.cameras[0].width) != self._source_hw \
                or (s.masks is not None) != self.has_mask:
            raise ValueError(f"subject {self.name}: {self._path} changed on disk since it was listed "
                             f"(views, image size or alpha); reload the dataset")
        data = self._build(s.images, s.masks)
        del s
        self._data = data
        _CACHE.add(self, self._rays_bytes + sum(t.numel() * t.element_size() for t in data[2:]))
        return data

    @property
    def rays_o(self) -> torch.Tensor:
        return self._tensors()[0]

    @property
    def rays_d(self) -> torch.Tensor:
        return self._tensors()[1]

    @property
    def rgb(self) -> torch.Tensor:
        return self._tensors()[2]

    @property
    def alpha(self) -> torch.Tensor:
        return self._tensors()[3]

    @property
    def lazy(self) -> bool:
        """Whether this subject's tensors are built on demand (and may be evicted)."""
        return self._path is not None

    @property
    def num_views(self) -> int:
        return self._views

    def batch(self, views: list[int], n: int, generator: torch.Generator, random_bg: bool = True,
              bg: float = 1.0) -> RayBatch:
        """``n`` random rays from ``views``."""
        if not views:
            raise ValueError(f"subject {self.name}: no views to sample from")
        P = self.hw[0] * self.hw[1]
        dev = self._device
        v = torch.tensor(views, device=dev)[torch.randint(0, len(views), (n,), generator=generator, device=dev)]
        p = torch.randint(0, P, (n,), generator=generator, device=dev)
        return self._gather(v, p, generator, random_bg, bg)

    def view_batch(self, view: int, bg: float = 1.0) -> RayBatch:
        """Every ray of one view, on a constant background."""
        P = self.hw[0] * self.hw[1]
        v = torch.full((P,), view, dtype=torch.long, device=self._device)
        return self._gather(v, torch.arange(P, device=self._device), None, False, bg)

    def _gather(self, v, p, generator, random_bg, bg) -> RayBatch:
        rays_o, rays_d, rgb, alpha = self._tensors()
        o, d, c, a = rays_o[v, p], rays_d[v, p], rgb[v, p], alpha[v, p]
        if random_bg and self.has_mask:
            b = torch.rand(v.shape[0], 3, generator=generator, device=c.device).to(c)
        else:
            b = torch.full((v.shape[0], 3), float(bg), device=c.device)
        target = c * a[:, None] + b * (1 - a[:, None])
        return RayBatch(o, d, target, b, a, p)

    def view_image(self, view: int, bg: float = 1.0) -> torch.Tensor:
        H, W = self.hw
        _, _, rgb, alpha = self._tensors()
        a = alpha[view][:, None]
        return (rgb[view] * a + bg * (1 - a)).reshape(H, W, 3)

    def view_mask(self, view: int) -> torch.Tensor:
        return self.alpha[view].reshape(self.hw)


def _resize(imgs, masks, H, W):
    t = torch.as_tensor(imgs).permute(0, 3, 1, 2)
    if masks is not None:
        m = torch.as_tensor(masks)[:, None]
        # Resize premultiplied colour so edges do not pick up the (undefined) colour outside.
        t = t * m
        m2 = torch.nn.functional.interpolate(m, size=(H, W), mode="area")
        t2 = torch.nn.functional.interpolate(t, size=(H, W), mode="area")
        t2 = torch.where(m2 > 1e-6, t2 / m2.clamp_min(1e-6), torch.zeros_like(t2))
        return t2.permute(0, 2, 3, 1).numpy(), m2[:, 0].numpy()
    t2 = torch.nn.functional.interpolate(t, size=(H, W), mode="area")
    return t2.permute(0, 2, 3, 1).numpy(), None


# Rays depend on the cameras alone, and a light stage films every subject with the same
# rig: subjects with equal cameras share one (read-only) copy, held while any uses it.
_RIG_RAYS: "weakref.WeakValueDictionary[tuple, torch.Tensor]" = weakref.WeakValueDictionary()
_RIG_LOCK = threading.Lock()


def _camera_key(c) -> tuple:
    return (c.fx, c.fy, c.cx, c.cy, c.width, c.height, np.asarray(c.c2w, dtype=np.float64).tobytes())


def _rig_rays(cams, device):
    """-> (rays_o [V, H*W, 3], rays_d [V, H*W, 3], whether they were made now)."""
    key = (str(torch.device(device)),) + tuple(_camera_key(c) for c in cams)
    with _RIG_LOCK:
        o, d = _RIG_RAYS.get(key + ("o",)), _RIG_RAYS.get(key + ("d",))
        if o is not None and d is not None:
            return o, d, False
    os_, ds_ = [], []
    for c in cams:
        oc, dc = c.rays(device=device)
        os_.append(oc)
        ds_.append(dc)
    o, d = torch.stack(os_), torch.stack(ds_)
    with _RIG_LOCK:
        _RIG_RAYS[key + ("o",)] = o
        _RIG_RAYS[key + ("d",)] = d
    return o, d, True


def _png_has_alpha(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as im:  # the header only
        return im.mode == "RGBA"


def _default_cache_bytes() -> int:
    v = os.environ.get("PNERF_SUBJECT_CACHE_MB")
    if v is None or v == "":
        return 4096 << 20
    try:
        mb = float(v)
    except ValueError:
        mb = float("nan")
    if not (mb >= 0 and mb < float("inf")):
        raise ValueError(f"PNERF_SUBJECT_CACHE_MB: must be a number of MiB >= 0, got {v!r:.60}")
    return int(mb * (1 << 20))


class _SubjectCache:
    """Least recently used lazily built subjects, up to a byte budget (the most recent
    one is always kept, whatever its size)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._items: OrderedDict[int, tuple[weakref.ref, int]] = OrderedDict()
        self._budget = None
        self.loads = 0      # subjects built from disk so far (for benchmarks)

    def budget(self) -> int:
        if self._budget is None:
            self._budget = _default_cache_bytes()
        return self._budget

    def set_budget(self, nbytes) -> None:
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError(f"cache size: must be an integer number of bytes >= 0, got {nbytes!r:.60}")
        with self._lock:
            self._budget = nbytes
            self._evict()

    def add(self, sr, nbytes: int) -> None:
        with self._lock:
            self.loads += 1
            self._items[id(sr)] = (weakref.ref(sr), nbytes)
            self._items.move_to_end(id(sr))
            self._evict()

    def touch(self, sr) -> None:
        with self._lock:
            if id(sr) in self._items:
                self._items.move_to_end(id(sr))

    def nbytes(self) -> int:
        with self._lock:
            return sum(n for ref, n in self._items.values() if ref() is not None)

    def _evict(self) -> None:
        budget = self.budget()
        total, full = 0, False
        for key in reversed(list(self._items)):      # newest first
            ref, n = self._items[key]
            sr = ref()
            if sr is None or sr._data is None:
                del self._items[key]
            elif full or (total > 0 and total + n > budget):
                full = True                           # this one and all older ones go
                sr._data = None
                del self._items[key]
            else:
                total += n


_CACHE = _SubjectCache()


def cache_bytes() -> int:
    """The byte budget of lazily loaded subjects' tensors (see SubjectRays)."""
    return _CACHE.budget()


def set_cache_bytes(nbytes: int) -> None:
    """Set that budget; 0 keeps only the subject in use."""
    _CACHE.set_budget(nbytes)
