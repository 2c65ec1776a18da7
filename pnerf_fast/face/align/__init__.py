"""One real photo -> an ``AlignedPhoto`` framed like the rig's frontal camera.

Steps (docs/FACE.md has the details and the reasons):

1. Load: EXIF orientation applied, grayscale/palette/16-bit converted to RGB, RGBA kept
   as RGB composited onto white plus the alpha channel (stored as the view's mask).
2. Detect 468 MediaPipe Face Mesh points offline (static image mode). Huge photos are
   downscaled and tiny ones upscaled for detection only. Besides the mesh's own
   short-range detector, MediaPipe's full-range face detector proposes boxes and the
   mesh runs again on each box no mesh covers yet (smaller faces, people further back).
   Several faces: the largest wins, with a warning.
3. Frame: a scale + translation (no rotation, so the crop stays an axis-aligned box)
   maps the 24 project landmarks onto ``landmarks.TEMPLATE`` as seen by
   ``rig.frontal_camera(res)``. The photo is cropped to that box and resampled to
   ``res x res``; the view gets exactly that camera.
4. Lift to 3D: each landmark's pixel is back-projected through the frontal camera to
   the depth ``D0 + z_rel * D0 / f``, with MediaPipe's relative depth ``z_rel`` (pixels,
   smaller = nearer) and ``D0`` chosen so the mean landmark depth equals the template's
   mean depth (a template-sized head at the origin).
5. Mask: a photo without an alpha channel gets a foreground (person) mask from
   MediaPipe Selfie Segmentation, run on the crop box's neighbourhood in the photo and
   resampled with the crop (zero outside the photo). An RGBA photo keeps its own alpha.
6. Turn it into a Subject (``pnerf_fast.data.photo.photo_subject``, the one conversion
   that the API, ``pnerf finetune`` and ``pnerf align`` share), or write its folder:
   transforms.json, face.json and the image, RGBA when there is a mask
   (``pnerf_fast.data.photo.write_photo_subject``). The face layer never writes subjects.

MediaPipe is imported lazily (it takes seconds); nothing is downloaded at run time,
the tflite models ship inside the mediapipe wheel.

One module per job; this package re-exports their public names:

- ``io``: step 1, reading a photo (``load_photo``, ``MAX_PHOTO_PIXELS``);
- ``detect``: step 2, Face Mesh landmarks (``detect_landmarks``, ``FaceDetection``);
- ``framing``: steps 3 and 4, the crop and the lifted landmarks (``frame_landmarks``, ``lift_landmarks``);
- ``segment``: step 5, the foreground mask (``segment_foreground``);
- ``result``: the ``AlignedPhoto``, what steps 1-5 found;
- ``pipeline``: ``align_photo``, all the steps in order;
- ``preview``: ``draw_mask`` and ``draw_landmarks``;
- ``errors``, ``resample`` and ``_mediapipe``: what the steps share.

A tuning constant is read from its step's module (``pnerf_fast.face.align.io.MAX_PHOTO_PIXELS``);
the copy re-exported here is for reading only.
"""

from .detect import MAX_DETECT_SIDE, MAX_NUM_FACES, MIN_DETECT_SIDE, MIN_FACE_PX, FaceDetection, detect_landmarks
from .errors import FaceAlignmentError
from .framing import frame_landmarks, lift_landmarks, template_pixels
from .io import MAX_PHOTO_PIXELS, PhotoInput, composite_on_white, load_photo
from .pipeline import DEFAULT_RES, align_photo
from .preview import draw_landmarks, draw_mask
from .result import AlignedPhoto
from .segment import (
    SEGMENT_CONTEXT,
    SEGMENT_HIGH,
    SEGMENT_LOW,
    SEGMENT_MIN_FACE_ALPHA,
    SEGMENT_MODEL,
    segment_foreground,
)

__all__ = [
    "FaceAlignmentError",
    "FaceDetection",
    "AlignedPhoto",
    "PhotoInput",
    "load_photo",
    "composite_on_white",
    "detect_landmarks",
    "template_pixels",
    "frame_landmarks",
    "lift_landmarks",
    "align_photo",
    "segment_foreground",
    "draw_mask",
    "draw_landmarks",
    "DEFAULT_RES",
    "MAX_PHOTO_PIXELS",
    "MAX_DETECT_SIDE",
    "MIN_DETECT_SIDE",
    "MIN_FACE_PX",
    "MAX_NUM_FACES",
    "SEGMENT_MODEL",
    "SEGMENT_LOW",
    "SEGMENT_HIGH",
    "SEGMENT_CONTEXT",
    "SEGMENT_MIN_FACE_ALPHA",
]
