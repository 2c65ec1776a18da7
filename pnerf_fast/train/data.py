"""Rays of one subject, ready for batched training: world-space rays of every view,
their target colours and masks, and the subject's world -> canonical warp.

The support set D_s is the frontal view; the query set D_q is all the other views.
With a foreground mask, targets are composited over a random background colour per
ray (the same colour the renderer composites over), so the field cannot paint the
background into density.
"""
from __future__ import annotations

from dataclasses import dataclass

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


class SubjectRays:
    def __init__(self, subject: Subject, mean_face: np.ndarray | None, coordinates: str = "canonical",
                 scale: float = 1.0, device="cpu"):
        if coordinates not in COORDINATES:
            raise ValueError(f"coordinates must be one of {COORDINATES}, got {coordinates!r}")
        if subject.images is None:
            raise ValueError(f"subject {subject.name}: images were not loaded")
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
        imgs = subject.images
        masks = subject.masks
        if scale != 1.0:
            imgs, masks = _resize(imgs, masks, cams[0].height, cams[0].width)
        os_, ds_ = [], []
        for c in cams:
            o, d = c.rays(device=device)
            os_.append(o)
            ds_.append(d)
        V, H, W = imgs.shape[:3]
        self.hw = (H, W)
        self.rays_o = torch.stack(os_)                    # [V, H*W, 3]
        self.rays_d = torch.stack(ds_)                    # [V, H*W, 3]
        self.rgb = torch.as_tensor(imgs.reshape(V, H * W, 3), dtype=torch.float32, device=device)
        if masks is None:
            self.alpha = torch.ones(V, H * W, device=device)
            self.has_mask = False
        else:
            self.alpha = torch.as_tensor(masks.reshape(V, H * W), dtype=torch.float32, device=device)
            self.has_mask = True
        self.support = [self.frontal_index]
        self.query = [i for i in range(V) if i != self.frontal_index]

    @property
    def num_views(self) -> int:
        return self.rays_o.shape[0]

    def batch(self, views: list[int], n: int, generator: torch.Generator, random_bg: bool = True,
              bg: float = 1.0) -> RayBatch:
        """``n`` random rays from ``views``."""
        if not views:
            raise ValueError(f"subject {self.name}: no views to sample from")
        P = self.rays_o.shape[1]
        v = torch.tensor(views)[torch.randint(0, len(views), (n,), generator=generator)]
        p = torch.randint(0, P, (n,), generator=generator)
        return self._gather(v, p, generator, random_bg, bg)

    def view_batch(self, view: int, bg: float = 1.0) -> RayBatch:
        """Every ray of one view, on a constant background."""
        P = self.rays_o.shape[1]
        v = torch.full((P,), view, dtype=torch.long)
        return self._gather(v, torch.arange(P), None, False, bg)

    def _gather(self, v, p, generator, random_bg, bg) -> RayBatch:
        o, d, c, a = self.rays_o[v, p], self.rays_d[v, p], self.rgb[v, p], self.alpha[v, p]
        if random_bg and self.has_mask:
            b = torch.rand(v.shape[0], 3, generator=generator).to(c)
        else:
            b = torch.full((v.shape[0], 3), float(bg), device=c.device)
        target = c * a[:, None] + b * (1 - a[:, None])
        return RayBatch(o, d, target, b, a)

    def view_image(self, view: int, bg: float = 1.0) -> torch.Tensor:
        H, W = self.hw
        a = self.alpha[view][:, None]
        return (self.rgb[view] * a + bg * (1 - a)).reshape(H, W, 3)

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
