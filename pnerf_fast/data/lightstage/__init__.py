"""A synthetic light stage: many distinct parametric heads seen by the camera rig.

Each subject is a signed-distance head built from smooth primitives joined by smooth-min
unions (cranium, face, jaw, chin, cheeks, nose, brow ridges, lips, eyes in sockets,
ears, neck and a hair shell cut at a hairline). Shape and appearance parameters are
drawn per subject; a random similarity pose (yaw/pitch/roll within +-20 deg, a
translation and a scale) places the head in world space. The 24 landmarks are found on
the surface itself (anchor points that move with the shape parameters, projected onto
the zero level set), so they move with the shape.

Rendering, per subject, all views at once:

1. the exact SDF is evaluated once on a head-space grid (``GRID_SPACING``);
2. every sub-pixel ray (``spp`` per pixel, rotated-grid pattern for 4) is sphere-traced
   through the trilinear grid, inside a bounding sphere, with the active set compacted
   as rays hit or leave; the neck below the grid uses its analytic capsule;
3. hits are refined with the exact SDF, which also gives the normal; colour (skin
   detail, lips, eyes, brows, hair) is evaluated only at hit points;
4. even light-stage illumination: ambient + soft Lambertian from lights fixed in world
   space, with a little SDF ambient occlusion;
5. samples are averaged per pixel into straight RGB plus coverage alpha.

Head space (before pose) uses the units of :data:`pnerf_fast.face.landmarks.TEMPLATE`:
a head about 1.6 wide centred at the origin, y up, the face towards +z, the subject's
right towards -x. World = ``scale * R @ head + translation``.

One module per job; this package re-exports their names:

- ``params``: the parameter dataclasses and how subjects are drawn (``subject_params``);
- ``sdf``: the head's signed distance and landmarks (``HeadGeometry``);
- ``trace``: the SDF grid and sphere tracing;
- ``shading``: albedo and illumination at the hits;
- ``render``: ``render_subject``, all views of one subject;
- ``dataset``: ``generate_lightstage``, subject folders, splits and the contact sheet;
- ``noise``: texture maths shared by the SDF and the shading.
"""
from .dataset import _split_counts, contact_sheet, generate_lightstage
from .params import (
    AMBIENT,
    LIGHTS,
    STYLES,
    HeadAppearance,
    HeadParams,
    HeadPose,
    HeadShape,
    Lighting,
    sample_head,
    sample_head_portrait,
    subject_params,
)
from .render import BACKGROUND, _subpixel_offsets, render_subject
from .sdf import (
    GRID_HI,
    GRID_HI_PORTRAIT,
    GRID_LO,
    GRID_LO_PORTRAIT,
    GRID_SPACING,
    GRID_SPACING_PORTRAIT,
    NECK_BOTTOM,
    HeadGeometry,
)
from .shading import shade
from .trace import BODY_TOP, SCENE_HI, SCENE_LO

__all__ = [
    "AMBIENT",
    "BACKGROUND",
    "BODY_TOP",
    "GRID_HI",
    "GRID_HI_PORTRAIT",
    "GRID_LO",
    "GRID_LO_PORTRAIT",
    "GRID_SPACING",
    "GRID_SPACING_PORTRAIT",
    "LIGHTS",
    "NECK_BOTTOM",
    "SCENE_HI",
    "SCENE_LO",
    "STYLES",
    "HeadAppearance",
    "HeadGeometry",
    "HeadParams",
    "HeadPose",
    "HeadShape",
    "Lighting",
    "contact_sheet",
    "generate_lightstage",
    "render_subject",
    "sample_head",
    "sample_head_portrait",
    "shade",
    "subject_params",
    "_split_counts",
    "_subpixel_offsets",
]
