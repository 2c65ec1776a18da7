"""MediaPipe Face Mesh (468 points) -> the project's 24 landmarks (iBUG-68 order).

One MediaPipe vertex per project landmark, chosen from the commonly used
MediaPipe->iBUG-68 correspondence and checked by eye on the astronaut portrait
(docs/images/astronaut_landmarks.png, table in docs/FACE.md). "Right"/"left" are the
subject's: the subject's right eye is MediaPipe's 33/133 and lies on the image left.

The jaw points are the least exact: iBUG's jaw contour follows the visible cheek
outline, MediaPipe's face oval is a fixed mesh ring; both agree to a few percent of
the face width on frontal photos. The 3D alignment weights all points equally.
"""
from __future__ import annotations

from .landmarks import IBUG_INDICES, NAMES

#: (project name, iBUG-68 index, MediaPipe index, where the MediaPipe vertex sits)
MAPPING: tuple[tuple[str, int, int, str], ...] = (
    ("jaw_right_top", 0, 127, "face oval, subject's right, at eye height near the ear"),
    ("jaw_right_low", 4, 58, "face oval, subject's right, at mouth height (jaw angle)"),
    ("chin", 8, 152, "lowest point of the face oval (menton)"),
    ("jaw_left_low", 12, 288, "mirror of 58"),
    ("jaw_left_top", 16, 356, "mirror of 127"),
    ("brow_right_outer", 17, 70, "upper brow contour, outer end"),
    ("brow_right_mid", 19, 105, "upper brow contour, middle"),
    ("brow_right_inner", 21, 107, "upper brow contour, inner end"),
    ("brow_left_inner", 22, 336, "mirror of 107"),
    ("brow_left_mid", 24, 334, "mirror of 105"),
    ("brow_left_outer", 26, 300, "mirror of 70"),
    ("nose_bridge", 27, 168, "top of the nose bridge between the eyes"),
    ("nose_tip", 30, 4, "nose tip (pronasale)"),
    ("nose_right_ala", 31, 75, "lower edge of the right nostril wing"),
    ("subnasale", 33, 2, "below the nose tip, where the septum meets the lip"),
    ("nose_left_ala", 35, 305, "mirror of 75"),
    ("eye_right_outer", 36, 33, "right eye, outer corner"),
    ("eye_right_inner", 39, 133, "right eye, inner corner"),
    ("eye_left_inner", 42, 362, "left eye, inner corner"),
    ("eye_left_outer", 45, 263, "left eye, outer corner"),
    ("mouth_right_corner", 48, 61, "right mouth corner (outer lip contour)"),
    ("upper_lip_top", 51, 0, "top of the upper lip on the midline (outer contour)"),
    ("mouth_left_corner", 54, 291, "left mouth corner (outer lip contour)"),
    ("lower_lip_bottom", 57, 17, "bottom of the lower lip on the midline (outer contour)"),
)

#: MediaPipe Face Mesh vertex index for each project landmark, in ``landmarks.NAMES`` order.
MEDIAPIPE_TO_PNERF24: tuple[int, ...] = tuple(m for _, _, m, _ in MAPPING)

NUM_MEDIAPIPE_POINTS = 468

# The table must follow the project's landmark order exactly.
assert tuple(n for n, _, _, _ in MAPPING) == NAMES, "MAPPING is out of landmarks.NAMES order"
assert tuple(i for _, i, _, _ in MAPPING) == IBUG_INDICES, "MAPPING iBUG indices disagree with landmarks"
assert len(set(MEDIAPIPE_TO_PNERF24)) == len(MEDIAPIPE_TO_PNERF24)
