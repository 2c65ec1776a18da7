"""One photo -> one Subject: the only conversion of an aligned photo into the subject format.

``pnerf align`` writes it (``write_photo_subject``), ``finetune`` / ``pnerf finetune`` /
``pnerf demo`` fit it in memory (``photo_subject``); both go through ``photo_subject``, so
a photo finetuned directly and the same photo aligned to a folder and loaded back are the
same Subject (up to the folder's 8-bit PNG).

The alignment itself (detection, framing, the mask) is :func:`pnerf_fast.face.align.align_photo`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .format import IMAGES_DIR, Subject, save_subject

#: The single view's file inside a photo's subject folder.
FRONTAL_FILE = f"{IMAGES_DIR}/frontal.png"


def photo_subject(aligned, name: str | None = None) -> Subject:
    """A one-view Subject of an aligned photo (``face.align.AlignedPhoto``): its crop and
    mask, the rig's frontal camera, its landmarks (3D and in the crop) and its alignment
    record (``AlignedPhoto.meta()``) as ``meta``.

    Args:
        aligned: the AlignedPhoto of ``align_photo``.
        name: the subject's name (default: the photo file's stem, "array" for an array).
    Returns:
        Subject with images [1, res, res, 3] float32, masks [1, res, res] float32 or None."""
    source = aligned.source
    if name is None:
        name = "array" if source == "<array>" else Path(source).stem
    masks = None if aligned.alpha is None else np.asarray(aligned.alpha, dtype=np.float32)[None]
    return Subject(name=name, path=source, cameras=[aligned.camera],
                   images=np.asarray(aligned.image, dtype=np.float32)[None], masks=masks,
                   file_paths=[FRONTAL_FILE], frontal_index=0,
                   landmarks=np.asarray(aligned.landmarks_world, dtype=np.float64),
                   landmarks_2d={FRONTAL_FILE: np.asarray(aligned.landmarks_2d, dtype=np.float64)},
                   meta=aligned.meta())


def write_photo_subject(aligned, out_dir: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write ``photo_subject(aligned)`` as a subject folder (transforms.json, face.json,
    images/frontal.png, RGBA when the photo has a mask) and return its path; an existing
    folder is replaced only as ``save_subject`` allows."""
    return save_subject(photo_subject(aligned), out_dir, overwrite=overwrite)
