"""Canonical face space: landmarks, mean face, similarity transforms, photo alignment.

``landmarks`` and ``procrustes`` are numpy-only and imported eagerly. The photo
alignment names (``align_photo``, ``detect_landmarks``, ...) are loaded on first use:
they pull in OpenCV/PIL, and MediaPipe itself is imported only when a photo is aligned.
"""
from .landmarks import LANDMARKS, NAMES, NUM_LANDMARKS, TEMPLATE
from .procrustes import SimilarityTransform, canonical_transform, generalized_procrustes, umeyama

_LAZY = {
    "align_photo": "align",
    "detect_landmarks": "align",
    "draw_landmarks": "align",
    "load_photo": "align",
    "AlignedPhoto": "align",
    "FaceDetection": "align",
    "FaceAlignmentError": "align",
    "MEDIAPIPE_TO_PNERF24": "mediapipe_map",
}

__all__ = [
    "LANDMARKS",
    "NAMES",
    "NUM_LANDMARKS",
    "TEMPLATE",
    "SimilarityTransform",
    "canonical_transform",
    "generalized_procrustes",
    "umeyama",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
