"""The aligned photo: what the alignment found (step 6 turns it into a Subject:
``pnerf_fast.data.photo``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ...geometry.cameras import Camera
from .. import landmarks as lm
from ..procrustes import SimilarityTransform, alignment_residual, canonical_transform


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
