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
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..face import landmarks as lm
from ..render.cameras import Camera, pixel_rays
from . import format as fmt
from . import rig

BACKGROUND = (1.0, 1.0, 1.0)
GRID_SPACING = 0.022  # head-space units (a 128 px rig pixel is ~0.019 units at the head)
GRID_LO = (-1.0, -1.12, -1.2)  # head-space box (before the global shape scales) holding all but the neck
GRID_HI = (1.0, 1.36, 1.12)
NECK_BOTTOM = -2.6
# the portrait light stage's box: taller skulls, fuller and longer hair, glasses
GRID_LO_PORTRAIT = (-1.3, -1.7, -1.62)
GRID_HI_PORTRAIT = (1.3, 1.72, 1.14)
GRID_SPACING_PORTRAIT = 0.024
# the portrait light stage's scene box (head space): head, shoulders and the chest;
# outside the head box, the body is below BODY_TOP
SCENE_LO = (-2.8, -3.6, -1.9)
SCENE_HI = (2.8, 1.9, 1.7)
BODY_TOP = -1.25
# Lights fixed in world space (the light stage), (direction towards the light, weight).
LIGHTS = (
    ((0.0, 0.35, 1.0), 0.40),
    ((-0.9, 0.4, 0.5), 0.22),
    ((0.9, 0.4, 0.5), 0.22),
    ((0.0, 1.0, -0.2), 0.16),
)
AMBIENT = 0.42

# ----------------------------------------------------------------------------- params


@dataclass
class HeadShape:
    width: float = 1.0  # global scales of head space
    height: float = 1.0
    depth: float = 1.0
    jaw_width: float = 1.0
    chin: float = 0.0  # chin drop (units)
    cheeks: float = 1.0
    nose_length: float = 1.0
    nose_width: float = 1.0
    nose_projection: float = 1.0
    eye_spacing: float = 1.0
    eye_size: float = 1.0
    brow_ridge: float = 1.0
    mouth_width: float = 1.0
    lip_thickness: float = 1.0
    ears: float = 1.0
    neck: float = 1.0
    hair_volume: float = 0.09  # hair shell thickness
    hairline: float = 0.78  # height of the front hairline
    hair_back: float = 0.95  # how far the hair comes down at the sides and back (slope of the cut)
    # -- the "portrait" light stage (defaults: the classic one, whose heads are unchanged) --
    cranium_lift: float = 0.0  # raises the top of the skull (units; real skulls sit higher above the eyes)
    cranium_back: float = 0.0  # lengthens the skull backwards
    brow_lift: float = 0.0  # moves the brows (ridge and hair) up (units; < 0: down)
    mouth_lift: float = 0.0  # moves the mouth up
    hair_style: str = "cap"  # cap | short | bob | long | curly | bald
    hair_bottom: float = 0.0  # bob / long: the height where the side and back hair ends
    hair_front: float = 0.0  # bob / long: how far forward (z) the side hair reaches
    curl: float = 0.0  # curly: amplitude of the curls (units)
    body: bool = False  # neck, shoulders and clothes
    neck_radius: float = 0.36
    shoulder_width: float = 1.0
    neckline: float = 0.0  # depth of the neckline's dip at the front (0 = crew neck)
    smile: float = 0.0  # 0 neutral .. 1 broad smile (mouth corners up, cheeks raised)
    mouth_open: float = 0.0  # gap between the lips (units): teeth show
    glasses: float = 0.0  # 0: none, else the rims' radius scale
    beard: float = 0.0  # 0: none, else its thickness (units)


@dataclass
class HeadAppearance:
    skin: tuple = (0.80, 0.60, 0.48)
    lips: tuple = (0.70, 0.38, 0.38)
    iris: tuple = (0.35, 0.22, 0.12)
    hair: tuple = (0.20, 0.13, 0.08)
    brows: tuple = (0.18, 0.12, 0.08)
    brow_thickness: float = 1.0
    blush: float = 0.3
    freckles: float = 0.0
    skin_detail: float = 1.0
    detail_seed: int = 0
    # -- the "portrait" light stage --
    clothes: tuple = (0.25, 0.27, 0.32)
    clothes_pattern: int = 0  # 0 plain, 1 stripes, 2 knit
    glasses_color: tuple = (0.06, 0.05, 0.05)
    hair_part: float = 0.0  # x of a parting line (0: none)
    skin_pores: float = 0.0  # fine skin texture
    iris_detail: float = 0.0  # radial iris texture and a dark limbal ring


@dataclass
class Lighting:
    """Lights fixed in world space for one subject. The default is the classic light
    stage: even, white, no highlights."""

    ambient: tuple = (AMBIENT, AMBIENT, AMBIENT)
    lights: tuple = tuple((d, w, (1.0, 1.0, 1.0)) for d, w in LIGHTS)  # (towards the light, weight, colour)
    wrap: float = 0.25  # soft Lambertian: 0.25 + 0.75 max(n.l, 0)
    specular: float = 0.0  # skin highlight strength (the eyes and glasses get more)


@dataclass
class HeadPose:
    yaw: float = 0.0  # degrees; > 0 turns the face towards +x (the subject's left)
    pitch: float = 0.0  # degrees; > 0 tilts the face up
    roll: float = 0.0  # degrees, about the +z (face) axis
    translation: tuple = (0.0, 0.0, 0.0)
    scale: float = 1.0

    def rotation(self) -> np.ndarray:
        y, p, r = (math.radians(a) for a in (self.yaw, self.pitch, self.roll))
        ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
        rx = np.array([[1, 0, 0], [0, math.cos(-p), -math.sin(-p)], [0, math.sin(-p), math.cos(-p)]])
        rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
        return ry @ rx @ rz

    def apply(self, pts: np.ndarray) -> np.ndarray:
        """Head-space points [..., 3] -> world."""
        return self.scale * np.asarray(pts) @ self.rotation().T + np.asarray(self.translation)


@dataclass
class HeadParams:
    shape: HeadShape = field(default_factory=HeadShape)
    appearance: HeadAppearance = field(default_factory=HeadAppearance)
    pose: HeadPose = field(default_factory=HeadPose)
    lighting: Lighting = field(default_factory=Lighting)

    def to_dict(self) -> dict:
        return asdict(self)


_SKIN_LIGHT = np.array([0.96, 0.80, 0.70])
_SKIN_DARK = np.array([0.34, 0.21, 0.14])
_HAIR = {
    "black": (0.05, 0.045, 0.04),
    "dark_brown": (0.14, 0.09, 0.06),
    "brown": (0.30, 0.19, 0.10),
    "auburn": (0.45, 0.19, 0.09),
    "blonde": (0.78, 0.62, 0.38),
    "grey": (0.62, 0.61, 0.60),
}
_IRIS = {
    "dark_brown": (0.20, 0.11, 0.06),
    "brown": (0.38, 0.22, 0.10),
    "hazel": (0.45, 0.38, 0.18),
    "green": (0.28, 0.42, 0.25),
    "blue": (0.30, 0.45, 0.65),
    "grey": (0.45, 0.50, 0.55),
}


def sample_head(rng: np.random.Generator) -> HeadParams:
    """Draw one subject: shape, appearance and pose."""

    def nrm(mean, sd, lo, hi):
        return float(np.clip(rng.normal(mean, sd), lo, hi))

    shape = HeadShape(
        width=nrm(1, 0.045, 0.9, 1.1),
        height=nrm(1, 0.04, 0.9, 1.1),
        depth=nrm(1, 0.04, 0.9, 1.1),
        jaw_width=nrm(1, 0.08, 0.82, 1.18),
        chin=nrm(0, 0.03, -0.06, 0.06),
        cheeks=nrm(1, 0.15, 0.7, 1.3),
        nose_length=nrm(1, 0.08, 0.82, 1.18),
        nose_width=nrm(1, 0.12, 0.75, 1.3),
        nose_projection=nrm(1, 0.12, 0.75, 1.25),
        eye_spacing=nrm(1, 0.05, 0.9, 1.1),
        eye_size=nrm(1, 0.07, 0.85, 1.15),
        brow_ridge=nrm(1, 0.2, 0.6, 1.4),
        mouth_width=nrm(1, 0.08, 0.84, 1.16),
        lip_thickness=nrm(1, 0.18, 0.65, 1.4),
        ears=nrm(1, 0.1, 0.8, 1.2),
        neck=nrm(1, 0.08, 0.85, 1.15),
        hair_volume=float(rng.uniform(0.05, 0.14)),
        hairline=float(rng.uniform(0.70, 0.86)),
        hair_back=float(rng.uniform(0.8, 1.1)),
    )
    t = rng.uniform(0.0, 1.0) ** 1.2
    skin = (1 - t) * _SKIN_LIGHT + t * _SKIN_DARK
    skin = skin * rng.normal(1.0, 0.03, 3)  # hue jitter
    skin = np.clip(skin, 0.05, 1.0)
    hair_name = list(_HAIR)[rng.choice(len(_HAIR), p=[0.25, 0.25, 0.2, 0.1, 0.12, 0.08])]
    hair = np.clip(np.array(_HAIR[hair_name]) * rng.normal(1.0, 0.08, 3), 0.02, 1.0)
    iris_name = list(_IRIS)[rng.integers(len(_IRIS))]
    iris = np.clip(np.array(_IRIS[iris_name]) * rng.normal(1.0, 0.08, 3), 0.02, 1.0)
    lips = np.clip(skin * np.array([0.9, 0.64, 0.64]) * rng.normal(1.0, 0.04, 3), 0.03, 1.0)
    brows = np.clip(hair * 0.6 + 0.02 if hair_name not in ("grey", "blonde") else hair * 0.5, 0.02, 1.0)
    app = HeadAppearance(
        skin=tuple(float(v) for v in skin),
        lips=tuple(float(v) for v in lips),
        iris=tuple(float(v) for v in iris),
        hair=tuple(float(v) for v in hair),
        brows=tuple(float(v) for v in brows),
        brow_thickness=nrm(1, 0.15, 0.7, 1.35),
        blush=float(rng.uniform(0.0, 0.6)),
        freckles=float(rng.uniform(0, 1) ** 3 if t < 0.4 else 0.0),
        skin_detail=float(rng.uniform(0.6, 1.4)),
        detail_seed=int(rng.integers(2**31 - 1)),
    )
    pose = HeadPose(
        yaw=float(rng.uniform(-20, 20)),
        pitch=float(rng.uniform(-20, 20)),
        roll=float(rng.uniform(-20, 20)),
        translation=tuple(float(v) for v in rng.uniform(-0.15, 0.15, 3)),
        scale=float(rng.uniform(0.9, 1.1)),
    )
    return HeadParams(shape, app, pose)


STYLES = ("classic", "portrait")
_HAIR_STYLES = ("short", "cap", "bob", "long", "curly", "bald")
_CLOTHES = ((0.12, 0.13, 0.16), (0.85, 0.85, 0.83), (0.16, 0.22, 0.40), (0.45, 0.10, 0.10),
            (0.22, 0.32, 0.22), (0.55, 0.50, 0.42), (0.30, 0.30, 0.32), (0.70, 0.55, 0.25))


def sample_head_portrait(rng: np.random.Generator) -> HeadParams:
    """The "portrait" light stage: the classic head (same draws, so subject i keeps its
    identity) with real proportions, varied hair, a body with clothes, expressions,
    accessories and per-subject lighting.

    Proportions are calibrated in units of the outer-eye-corner distance against adult
    anthropometric means (Farkas 1994) and MediaPipe's face mesh on real photos (the
    numbers: benchmarks/README.md, "Light stage proportions"): the skull rises higher
    above the eyes and reaches further back, the nose is narrower and longer, the mouth
    wider than the classic heads'."""
    p = sample_head(rng)
    sh, ap = p.shape, p.appearance

    def nrm(mean, sd, lo, hi):
        return float(np.clip(rng.normal(mean, sd), lo, hi))

    sh.cranium_lift = nrm(0.26, 0.05, 0.14, 0.38)
    sh.cranium_back = nrm(0.20, 0.05, 0.08, 0.32)
    sh.nose_width *= 0.78
    sh.nose_length *= 1.12
    sh.mouth_width *= 1.12
    sh.eye_size *= 1.12
    sh.brow_lift = nrm(-0.045, 0.015, -0.08, -0.01)
    sh.mouth_lift = nrm(0.03, 0.01, 0.0, 0.06)
    sh.lip_thickness *= 1.1
    sh.neck_radius = nrm(0.52, 0.04, 0.44, 0.6)
    style = _HAIR_STYLES[int(rng.choice(len(_HAIR_STYLES), p=[0.26, 0.12, 0.2, 0.2, 0.12, 0.1]))]
    sh.hair_style = style
    sh.hair_volume = {"short": rng.uniform(0.04, 0.12), "cap": rng.uniform(0.08, 0.18), "bob": rng.uniform(0.15, 0.32),
                      "long": rng.uniform(0.10, 0.26), "curly": rng.uniform(0.18, 0.34), "bald": 0.0}[style]
    sh.hair_volume = float(sh.hair_volume)
    sh.hairline = float(rng.uniform(0.78, 0.92) if style != "bald" else 1.2) + sh.cranium_lift * 0.5
    sh.hair_bottom = float({"bob": rng.uniform(-0.75, -0.35), "long": rng.uniform(-1.55, -1.05)}.get(style, 0.0))
    sh.hair_front = float(rng.uniform(0.15, 0.45)) if style in ("bob", "long") else 0.0
    sh.curl = float(rng.uniform(0.03, 0.06)) if style == "curly" else 0.0
    sh.body = True
    sh.shoulder_width = nrm(1.0, 0.08, 0.82, 1.18)
    sh.neckline = float(rng.uniform(0.0, 0.35))
    expr = rng.choice(3, p=[0.5, 0.3, 0.2])  # neutral, smile, open mouth (a smile with teeth)
    sh.smile = float(rng.uniform(0.5, 1.0)) if expr >= 1 else 0.0
    sh.mouth_open = float(rng.uniform(0.02, 0.05)) if expr == 2 else 0.0
    if expr >= 1:
        sh.mouth_width *= 1.0 + 0.15 * sh.smile
    sh.glasses = float(rng.uniform(0.9, 1.15)) if rng.uniform() < 0.2 else 0.0
    sh.beard = float(rng.uniform(0.015, 0.05)) if rng.uniform() < 0.15 else 0.0

    ap.clothes = tuple(float(v) for v in np.clip(np.array(_CLOTHES[rng.integers(len(_CLOTHES))]) * rng.normal(1, 0.1, 3), 0.02, 1))
    ap.clothes_pattern = int(rng.choice(3, p=[0.6, 0.25, 0.15]))
    ap.glasses_color = tuple(float(v) for v in (rng.uniform(0.02, 0.12, 3) if rng.uniform() < 0.7 else rng.uniform(0.4, 0.7, 3)))
    ap.hair_part = float(rng.choice([-1, 1]) * rng.uniform(0.15, 0.3)) if style in ("short", "bob", "long") and rng.uniform() < 0.6 else 0.0
    ap.skin_pores = float(rng.uniform(0.5, 1.5))
    ap.iris_detail = float(rng.uniform(0.6, 1.2))

    # lighting: between the even light stage (e = 1) and a single key light with
    # coloured ambient (e = 0), fixed in world space for all of the subject's views
    e = float(rng.uniform(0.0, 1.0))
    warm = float(rng.uniform(-1, 1))
    tint = lambda k: tuple(float(v) for v in np.clip(np.array([1 + 0.12 * k, 1.0, 1 - 0.15 * k]), 0.5, 1.5))  # noqa: E731
    ky, kp = np.deg2rad(rng.uniform(-75, 75)), np.deg2rad(rng.uniform(5, 55))
    key = (float(np.sin(ky) * np.cos(kp)), float(np.sin(kp)), float(np.cos(ky) * np.cos(kp)))
    base = Lighting()
    lights = [(key, float((1 - e) * rng.uniform(0.55, 0.85)), tint(warm))]
    lights += [(d, float(w * (0.35 + 0.65 * e)), (1.0, 1.0, 1.0)) for d, w, _ in base.lights]
    amb = np.array(base.ambient) * (0.75 + 0.25 * e) * np.array(tint(-0.6 * warm * (1 - e)))
    p.lighting = Lighting(ambient=tuple(float(v) for v in amb), lights=tuple(lights),
                          wrap=float(rng.uniform(0.05, 0.25)), specular=float(rng.uniform(0.04, 0.16)))
    return p


# ----------------------------------------------------------------------------- SDF


def _ellipsoid(x, y, z, c, r):
    px, py, pz = (x - c[0]) / r[0], (y - c[1]) / r[1], (z - c[2]) / r[2]
    k0 = torch.sqrt(px * px + py * py + pz * pz)
    k1 = torch.sqrt((px / r[0]) ** 2 + (py / r[1]) ** 2 + (pz / r[2]) ** 2).clamp_min(1e-6)
    return k0 * (k0 - 1.0) / k1


def _sphere(x, y, z, c, r):
    return torch.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) - r


def _capsule(x, y, z, a, b, ra, rb):
    """Capsule a->b whose radius goes linearly from ra to rb (a cheap rounded cone)."""
    ba = (b[0] - a[0], b[1] - a[1], b[2] - a[2])
    bb = ba[0] ** 2 + ba[1] ** 2 + ba[2] ** 2
    px, py, pz = x - a[0], y - a[1], z - a[2]
    h = ((px * ba[0] + py * ba[1] + pz * ba[2]) / bb).clamp(0.0, 1.0)
    qx, qy, qz = px - ba[0] * h, py - ba[1] * h, pz - ba[2] * h
    return torch.sqrt(qx * qx + qy * qy + qz * qz) - (ra + (rb - ra) * h)


def _smin(a, b, k):
    h = (k - (a - b).abs()).clamp_min(0.0) / k
    return torch.minimum(a, b) - h * h * (k * 0.25)


def _smax(a, b, k):
    return -_smin(-a, -b, k)


class HeadGeometry:
    """The SDF of one subject's head in head space (no pose), with its feature layout.

    All positions are derived from :class:`HeadShape`; the landmarks anchors use the same
    numbers, so features and landmarks always agree."""

    def __init__(self, shape: HeadShape):
        s = shape
        self.shape = s
        self.g = (s.width, s.height, s.depth)
        self.gmin = min(self.g)
        es, ez = s.eye_spacing, s.eye_size
        self.eye_c = (0.30 * es, 0.15, 0.53)  # eyeball centre (mirrored in x)
        self.eye_r = 0.13 * ez
        self.eye_half_w = 0.14 * ez  # almond opening
        self.eye_half_h = 0.05 * ez
        nl, nw, npj = s.nose_length, s.nose_width, s.nose_projection
        self.nose_bridge = (0.0, 0.17, 0.70)
        self.nose_tip = (0.0, 0.17 - 0.30 * nl, 0.745 + 0.185 * npj)
        self.nose_tip_r = 0.075
        self.alae_c = (0.095 * nw, self.nose_tip[1] - 0.065, 0.78 + 0.02 * (npj - 1))
        self.alae_r = (0.07 * nw, 0.055, 0.065)
        mw, lt = s.mouth_width, s.lip_thickness
        self.mouth_y = -0.475 - 0.3 * s.chin + s.mouth_lift
        self.upper_lip = ((0.0, self.mouth_y + 0.037, 0.775), (0.2 * mw, 0.04 * lt, 0.065))
        self.lower_lip = ((0.0, self.mouth_y - 0.047, 0.765), (0.17 * mw, 0.047 * lt, 0.06))
        self.mouth_half_w = 0.235 * mw
        jw = s.jaw_width
        self.jaw = ((0.0, -0.36 - 0.5 * s.chin, 0.20), (0.63 * jw, 0.46, 0.50))
        self.chin = ((0.0, -0.69 - s.chin, 0.63), (0.18, 0.16, 0.14))
        self.cheek = ((0.34, -0.10, 0.47), (0.21 * s.cheeks ** 0.5, 0.17, 0.19 * s.cheeks))
        bl = s.brow_lift
        self.brow = ((0.10, 0.335 + bl, 0.705), (0.50, 0.305 + bl, 0.57), 0.062 * s.brow_ridge ** 0.5)
        self.ear = ((0.755, 0.03, -0.08), (0.085, 0.21 * s.ears, 0.13 * s.ears))
        self.neck = ((0.0, -0.30, -0.14), (0.0, NECK_BOTTOM, -0.14), s.neck_radius * s.neck)
        lift, back = s.cranium_lift, s.cranium_back
        self.cranium = ((0.0, 0.19 + 0.5 * lift, -0.10 - 0.5 * back), (0.76, 0.84 + 0.5 * lift, 0.84 + 0.5 * back))
        # the portrait light stage: body, expression, accessories (all off for classic heads)
        self.portrait = bool(s.body)
        self.torso = ((0.0, -2.45, -0.2), (1.9 * s.shoulder_width, 0.8, 1.0))
        if s.mouth_open > 0:
            c, r = self.lower_lip
            self.lower_lip = ((c[0], c[1] - s.mouth_open, c[2] - 0.3 * s.mouth_open), r)
        if s.smile > 0:
            c, r = self.cheek
            self.cheek = ((c[0], c[1] + 0.05 * s.smile, c[2] + 0.02 * s.smile), r)
        if s.curl > 0:
            self.curl_waves = _waves(np.random.default_rng(int(s.hair_volume * 1e6) + 7), (26.0, 41.0), 3)
        self.grid_lo = np.array(GRID_LO_PORTRAIT if self.portrait else GRID_LO)
        self.grid_hi = np.array(GRID_HI_PORTRAIT if self.portrait else GRID_HI)
        self.face = ((0.0, -0.10, 0.22), (0.60, 0.72, 0.555))
        hv = s.hair_volume
        cr = self.cranium
        self.hair = ((0.0, cr[0][1] + 0.4 * hv, cr[0][2] - 0.3 * hv), (cr[1][0] + hv, cr[1][1] + hv, cr[1][2] + hv))
        # hair region: y > hairline + slope * (z - 0.6)   (slope > 0: lower at the back)
        self.hair_cut = (s.hairline, s.hair_back)

    # -- the SDF --------------------------------------------------------------------
    def parts(self, x, y, z):
        """Head-space SDF pieces (local, before the global scale): returns dict of
        tensors: 'skin' (everything but hair and eyes), 'eyes', 'lips', 'hair', 'd'."""
        g = self.g
        x, y, z = x / g[0], y / g[1], z / g[2]
        ax = x.abs()
        d = _smin(_ellipsoid(x, y, z, *self.cranium), _ellipsoid(x, y, z, *self.face), 0.2)
        d = _smin(d, _ellipsoid(x, y, z, *self.jaw), 0.15)
        d = _smin(d, _ellipsoid(x, y, z, *self.chin), 0.12)
        d = _smin(d, _ellipsoid(ax, y, z, *self.cheek), 0.12)
        a, b, r = self.brow
        d = _smin(d, _capsule(ax, y, z, a, b, r, r * 0.8), 0.08)
        d = _smin(d, _ellipsoid(ax, y, z, *self.ear), 0.05)
        a, b, r = self.neck
        d = _smin(d, _capsule(x, y, z, a, b, r, r * 1.15), 0.22)
        if self.portrait:
            d = _smin(d, _ellipsoid(x, y, z, *self.torso), 0.45)
            if self.shape.beard > 0:
                d = d - self.shape.beard * self.beard_weight(ax, y, z)
        # eye sockets
        ec = self.eye_c
        d = _smax(d, -_sphere(ax, y, z, (ec[0], ec[1], ec[2] + 0.085), self.eye_r * 0.92), 0.05)
        nose = _capsule(x, y, z, self.nose_bridge, self.nose_tip, 0.05, self.nose_tip_r)
        nose = _smin(nose, _ellipsoid(ax, y, z, self.alae_c, self.alae_r), 0.05)
        d = _smin(d, nose, 0.07)
        yl = y - self.smile_bend(ax) if self.shape.smile > 0 else y
        lips = torch.minimum(_ellipsoid(x, yl, z, *self.upper_lip), _ellipsoid(x, yl, z, *self.lower_lip))
        skin = _smin(d, lips, 0.07)
        eyes = _sphere(ax, y, z, ec, self.eye_r)
        hair = self.hair_sdf(x, y, z)
        s = self.gmin
        total = torch.minimum(_smin(skin, eyes, 0.02), hair)
        out = {"d": total * s, "skin": skin * s, "eyes": eyes * s, "lips": lips * s, "hair": hair * s, "nose": nose * s}
        if self.shape.glasses > 0:
            gl = self.glasses_sdf(ax, y, z)
            out["glasses"] = gl * s
            out["d"] = torch.minimum(out["d"], gl * s)
        return out

    def hair_sdf(self, x, y, z):
        """The hair volume (local coordinates): a shell over the cranium cut at the
        hairline; bob and long styles add a drape down the sides and back; curls
        displace the surface; bald heads have none."""
        st = self.shape.hair_style
        if st == "bald" or self.shape.hair_volume <= 0:
            return torch.full_like(x, 10.0)
        cut = self.hair_cut_sdf(x, y, z)
        shell = _ellipsoid(x, y, z, *self.hair)
        if st in ("bob", "long"):
            hv = self.shape.hair_volume
            (cx, cy, cz), (rx, ry, rz) = self.cranium
            drop = 0.45 if st == "bob" else 0.9
            drape = _ellipsoid(x, y, z, (cx, cy - drop, cz - 0.05), (rx + hv + 0.04, ry + drop + hv, rz + hv))
            shell = _smin(shell, drape, 0.15)
            cut = torch.minimum(cut, z - self.shape.hair_front)  # the sides, behind the cheeks
            cut = _smax(cut, self.shape.hair_bottom - y, 0.05)
            # never in front of the throat: below the chin the hair falls behind or beside the neck
            nr = self.neck[2] + 0.1
            throat = torch.maximum(torch.maximum(y + 0.72, -0.05 - z), x.abs() - nr)
            cut = _smax(cut, -throat, 0.04)
        hair = _smax(shell, cut, 0.05)
        if self.shape.curl > 0:
            c = self.shape.curl
            hair = (hair + c * _noise(x, y, z, self.curl_waves)) / (1.0 + 2.0 * c * 41.0)
        return hair

    def smile_bend(self, ax):
        """How far a smile lifts the lips at |x| = ax (local units): the corners rise."""
        sm = self.shape.smile
        return sm * (0.075 * (ax / 0.25) ** 2 - 0.012)

    def beard_weight(self, ax, y, z):
        """0..1: where a beard grows (jaw, chin, lower cheeks and a moustache), local coordinates."""
        lower = _smoothstep(-0.12, -0.32, y) * _smoothstep(-0.25, 0.15, z)
        mh = self.mouth_half_w
        mous = torch.exp(-(((y - (self.mouth_y + 0.085)) / 0.035) ** 2)) * _smoothstep(mh + 0.06, mh - 0.04, ax) * _smoothstep(0.55, 0.7, z)
        lips_zone = torch.exp(-(((y - self.mouth_y) / 0.06) ** 2)) * _smoothstep(mh + 0.03, mh - 0.05, ax) * _smoothstep(0.55, 0.7, z)
        neck = _smoothstep(-1.0, -0.85, y)  # not down the neck
        return ((lower * neck + mous) * (1 - lips_zone)).clamp(0.0, 1.0)

    def glasses_sdf(self, ax, y, z):
        """Rims around both eyes, a bridge and temples back to the ears (local, mirrored |x|)."""
        ec = self.eye_c
        R = 0.19 * self.shape.glasses
        zc, tube = 0.86, 0.026
        cy = ec[1] + 0.005
        qx, qy = (ax - ec[0]) / 1.2, y - cy
        ring = torch.sqrt((torch.sqrt(qx * qx + qy * qy) - R) ** 2 + (z - zc) ** 2) - tube
        inner = ec[0] - 1.2 * R
        bridge = _capsule(ax, y, z, (max(inner, 0.0) + 0.01, cy + 0.04, zc), (0.0, cy + 0.06, zc + 0.02), 0.018, 0.018)
        outer = ec[0] + 1.2 * R
        temple = _capsule(ax, y, z, (outer - 0.01, cy + 0.03, zc - 0.02), (0.83, cy + 0.06, -0.12), 0.02, 0.02)
        return torch.minimum(torch.minimum(ring, bridge), temple)

    def hair_cut_sdf(self, x, y, z):
        """< 0 above the hairline (local coordinates): y > hairline - slope * (0.6 - z)."""
        hl, slope = self.hair_cut
        return ((hl + slope * (z - 0.6)) - y) / math.sqrt(1 + slope * slope)

    def brow_y(self, tb):
        """Height of the eyebrow's centre line at fraction tb (0 inner .. 1 outer) of the ridge."""
        a, b, _ = self.brow
        return a[1] + 0.02 + (b[1] - a[1] + 0.01) * tb + 0.14 * tb * (1 - tb)

    def sdf(self, x, y, z):
        return self.parts(x, y, z)["d"]

    def sdf_pts(self, p: torch.Tensor) -> torch.Tensor:
        return self.sdf(p[..., 0], p[..., 1], p[..., 2])

    def neck_sdf(self, x, y, z):
        """What lies outside the head box: the neck, and for portrait heads the torso."""
        g = self.g
        a, b, r = self.neck
        lx, ly, lz = x / g[0], y / g[1], z / g[2]
        d = _capsule(lx, ly, lz, a, b, r, r * 1.15)
        if self.portrait:
            d = _smin(d, _ellipsoid(lx, ly, lz, *self.torso), 0.45)
        return d * self.gmin

    def normal(self, p: torch.Tensor, eps: float = 2e-3) -> torch.Tensor:
        """Unit normals [n, 3] from a tetrahedral finite difference of the exact SDF."""
        k = torch.tensor([[1, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, 1, 1]], dtype=p.dtype)
        q = (p[None] + eps * k[:, None]).reshape(-1, 3)
        f = self.sdf_pts(q).reshape(4, -1)
        n = (k[:, None, :] * f[..., None]).sum(0)
        return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    # -- landmarks -------------------------------------------------------------------
    def landmark_anchors(self) -> np.ndarray:
        """Head-space anchor points [24, 3] near each landmark's feature, before projection."""
        g = np.array(self.g)
        ec, hw = self.eye_c, self.eye_half_w
        jw = self.shape.jaw_width
        tip, al = self.nose_tip, self.alae_c
        mh, my = self.mouth_half_w, self.mouth_y
        a, b, _ = self.brow
        chin_c, chin_r = self.chin
        smiling = self.shape.smile > 0
        bc = float(self.smile_bend(mh)) if smiling else 0.0  # a smile lifts the corners
        b0 = float(self.smile_bend(0.0)) if smiling else 0.0
        pts = {
            "jaw_right_top": (-0.74, 0.10, 0.25),
            "jaw_right_low": (-0.62 * jw, -0.50 - 0.5 * self.shape.chin, 0.45),
            "chin": (0.0, chin_c[1] - chin_r[1] * 0.75, chin_c[2] + chin_r[2] * 0.75),
            "brow_right_outer": (-(a[0] + 0.95 * (b[0] - a[0])), self.brow_y(0.95), b[2] + 0.05),
            "brow_right_mid": (-0.5 * (a[0] + b[0]), self.brow_y(0.5), 0.5 * (a[2] + b[2]) + 0.06),
            "brow_right_inner": (-a[0], self.brow_y(0.0), a[2] + 0.06),
            "nose_bridge": (0.0, self.nose_bridge[1] + 0.01, 0.85),
            "nose_tip": (0.0, tip[1], tip[2] + 0.12),
            "nose_right_ala": (-(al[0] + 0.06), al[1], al[2]),
            "subnasale": (0.0, tip[1] - 0.11, tip[2] - 0.02),
            "eye_right_outer": (-(ec[0] + hw), ec[1], ec[2] + 0.1),
            "eye_right_inner": (-(ec[0] - hw), ec[1], ec[2] + 0.2),
            "mouth_right_corner": (-mh, my + bc, 0.82),
            "upper_lip_top": (0.0, self.upper_lip[0][1] + 0.04 + b0, 0.95),
            "lower_lip_bottom": (0.0, self.lower_lip[0][1] - 0.055 + b0, 0.92),
        }
        out = np.zeros((lm.NUM_LANDMARKS, 3))
        for i, name in enumerate(lm.NAMES):
            if name in pts:
                out[i] = pts[name]
            else:  # mirror of a right-side point
                src = name.replace("left", "right")
                q = pts[src]
                out[i] = (-q[0], q[1], q[2])
        return out * g

    def skull_proportions(self, landmarks: np.ndarray | None = None) -> dict:
        """The skull's height above the eyes and the head's length (glabella to the back of
        the cranium), in units of the outer-eye-corner distance: what photos cannot show
        (hair, the frame), compared with anthropometry. ``landmarks``: head space [24, 3],
        computed when not given."""
        lms = self.landmarks() if landmarks is None else landmarks
        right, left = lms[lm.INDEX["eye_right_outer"]], lms[lm.INDEX["eye_left_outer"]]
        exex = float(left[0] - right[0])
        (_, cy, cz), (_, ry, rz) = self.cranium
        top = (cy + ry) * self.shape.height
        length = (self.face[0][2] + self.face[1][2] - (cz - rz)) * self.shape.depth
        return {"skull_above_eyes": float(top - left[1]) / exex, "head_length": float(length) / exex}

    def landmarks(self, iters: int = 8) -> np.ndarray:
        """The 24 landmarks on the surface, head space [24, 3] float64."""
        p = torch.tensor(self.landmark_anchors(), dtype=torch.float64)
        for _ in range(iters):
            f = self.sdf_pts(p)
            n = self.normal(p, eps=1e-4)
            p = p - f[:, None] * n
        return p.numpy().astype(np.float64)


# ----------------------------------------------------------------------------- colour


def _waves(rng: np.random.Generator, freqs: Sequence[float], per: int):
    w = []
    for f in freqs:
        for _ in range(per):
            v = rng.normal(size=3)
            v = v / np.linalg.norm(v) * f * rng.uniform(0.8, 1.25)
            w.append((float(v[0]), float(v[1]), float(v[2]), float(rng.uniform(0, 2 * np.pi))))
    return w


def _noise(x, y, z, waves):
    out = torch.zeros_like(x)
    for kx, ky, kz, ph in waves:
        out += torch.sin(x * kx + y * ky + z * kz + ph)
    return out / math.sqrt(len(waves) / 2)


def _smoothstep(e0, e1, v):
    den = e1 - e0
    if torch.is_tensor(den):  # edges may coincide (e.g. a zero-height eye opening)
        den = torch.where(den.abs() < 1e-9, torch.full_like(den, 1e-9), den)
    t = ((v - e0) / den).clamp(0.0, 1.0)
    return t * t * (3 - 2 * t)


def _mix(a, b, t):
    return a + (b - a) * t[:, None]


def _albedo(geo: HeadGeometry, app: HeadAppearance, p: torch.Tensor, masks: bool = False):
    """Albedo [n, 3] at head-space surface points p [n, 3]. With ``masks`` (portrait
    heads): the tuple (r, g, b, specular weight, Blinn exponent), each [n]."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    parts = geo.parts(x, y, z)
    g = geo.g
    lx, ly, lz = x / g[0], y / g[1], z / g[2]
    ax = lx.abs()
    rng = np.random.default_rng(app.detail_seed)
    low = _noise(x, y, z, _waves(rng, (3.0, 6.0), 3))
    mid = _noise(x, y, z, _waves(rng, (20.0,), 6))
    high = _noise(x, y, z, _waves(rng, (90.0,), 6))

    skin = torch.tensor(app.skin, dtype=p.dtype)
    c = skin.expand(len(p), 3).clone()
    det = app.skin_detail
    c = c * (1 + (0.04 * low + 0.01 * mid + 0.008 * high)[:, None] * det)
    # blush on the cheeks and nose tip, a little redness around the mouth
    cheek = torch.exp(-(((ax - 0.36) / 0.15) ** 2 + ((ly + 0.12) / 0.13) ** 2))
    nose_r = torch.exp(-((lx / 0.08) ** 2 + ((ly - geo.nose_tip[1]) / 0.08) ** 2))
    red = (app.blush * cheek + 0.25 * nose_r)[:, None] * torch.tensor([0.06, -0.05, -0.04])
    c = c + red * skin.max()
    if app.freckles > 0:
        fr = _smoothstep(1.1, 1.8, _noise(x, y, z, _waves(rng, (60.0,), 6))) * torch.exp(-(((ax - 0.25) / 0.25) ** 2 + ((ly + 0.05) / 0.25) ** 2))
        c = c * (1 - 0.25 * app.freckles * fr)[:, None]
    # slight darkening under the eyes and in the nostrils
    ec = geo.eye_c
    under = torch.exp(-(((ax - ec[0]) / 0.12) ** 2 + ((ly - ec[1] + 0.1) / 0.04) ** 2)) * (lz > 0.4)
    c = c * (1 - 0.08 * under)[:, None]
    nostril = torch.exp(-(((ax - 0.06 * geo.shape.nose_width) / 0.035) ** 2 + ((ly - geo.alae_c[1] + 0.035) / 0.025) ** 2 + ((lz - geo.alae_c[2] - 0.01) / 0.06) ** 2))
    c = c * (1 - 0.6 * nostril.clamp(max=1))[:, None]

    if geo.portrait:
        if app.skin_pores > 0:
            pores = _noise(x, y, z, _waves(np.random.default_rng(app.detail_seed + 1), (160.0,), 6))
            c = c * (1 + 0.025 * app.skin_pores * pores)[:, None]
        mottle = _noise(x, y, z, _waves(np.random.default_rng(app.detail_seed + 2), (9.0,), 4))
        c = c + (0.02 * det * mottle)[:, None] * torch.tensor([1.0, -0.4, -0.4]) * skin.max()
    bend = geo.smile_bend(ax) if geo.shape.smile > 0 else 0.0
    lyb = ly - bend  # the mouth's own height: a smile lifts its corners
    # lips
    lipw = _smoothstep(0.012, -0.004, parts["lips"] - parts["skin"]) * _smoothstep(geo.mouth_half_w + 0.02, geo.mouth_half_w - 0.05, ax)
    lipc = torch.tensor(app.lips, dtype=p.dtype) * (1 + 0.04 * mid)[:, None]
    c = _mix(c, lipc.expand_as(c), lipw)
    line = torch.exp(-(((lyb - geo.mouth_y) / 0.012) ** 2)) * _smoothstep(geo.mouth_half_w + 0.01, geo.mouth_half_w - 0.04, ax) * (lz > 0.6)
    c = c * (1 - 0.55 * line)[:, None]
    gap = geo.shape.mouth_open
    if gap > 0:  # an open mouth: upper teeth, the dark of the mouth below them
        inner = _smoothstep(geo.mouth_half_w * 0.9, geo.mouth_half_w * 0.6, ax) * (lz > 0.55)
        inner = inner * _smoothstep(0.004, -0.004, lyb - geo.mouth_y) * _smoothstep(-gap - 0.006, -gap + 0.004, lyb - geo.mouth_y)
        inner = inner * (1 - lipw)
        teeth = _smoothstep(-0.62 * gap, -0.5 * gap, lyb - geo.mouth_y)
        tcol = torch.tensor([0.86, 0.83, 0.76]) * (1 - 0.25 * torch.exp(-((torch.remainder(lx + 0.03, 0.06) - 0.03) / 0.004) ** 2))[:, None]
        mcol = _mix(torch.tensor([0.12, 0.04, 0.04]).expand_as(c), tcol, teeth)
        c = _mix(c, mcol, inner)

    # brows: a band over the brow ridge, thicker at the inner end
    a, b, _ = geo.brow
    tb = ((ax - a[0]) / (b[0] - a[0])).clamp(-0.3, 1.3)
    yb = geo.brow_y(tb)
    thick = (0.05 - 0.022 * tb.clamp(0, 1)) * app.brow_thickness
    band = _smoothstep(thick, thick * 0.55, (ly - yb).abs()) * _smoothstep(-0.35, -0.05, tb) * _smoothstep(1.15, 0.9, tb) * (lz > 0.3)
    band = band * (0.85 + 0.15 * _smoothstep(-0.5, 0.5, high))
    c = _mix(c, torch.tensor(app.brows, dtype=p.dtype).expand_as(c), band)

    # eyes: sclera, iris, pupil inside an almond opening; lids elsewhere
    dx, dy = ax - ec[0], ly - ec[1]
    open_h = geo.eye_half_h * (1 - (dx / geo.eye_half_w) ** 2).clamp_min(0) ** 0.75 * torch.where(dy > 0, 1.15, 0.8)
    inside = _smoothstep(0.004, -0.004, dy.abs() - open_h) * (parts["eyes"] < parts["skin"] + 0.004)
    dz = (lz - ec[2]).clamp_min(1e-6)
    rr = torch.sqrt(dx * dx + dy * dy)
    ang = torch.atan2(rr, dz)
    iris_a = 0.44
    sclera = torch.tensor([0.84, 0.80, 0.77], dtype=p.dtype) * (1 - 0.15 * _smoothstep(0.3, 0.9, rr / geo.eye_half_w))[:, None]
    iris = torch.tensor(app.iris, dtype=p.dtype) * (0.8 + 0.35 * _smoothstep(0.0, iris_a, ang) + 0.08 * high)[:, None]
    if app.iris_detail > 0:  # radial streaks and a dark limbal ring
        streak = torch.sin(torch.atan2(dy, dx) * 23.0 + 2.0 * low) * torch.sin(torch.atan2(dy, dx) * 9.0 - low)
        iris = iris * (1 + 0.18 * app.iris_detail * streak - 0.45 * app.iris_detail * _smoothstep(iris_a - 0.12, iris_a, ang))[:, None]
    eye = _mix(sclera, iris, _smoothstep(iris_a + 0.03, iris_a - 0.03, ang))
    eye = _mix(eye, torch.full_like(eye, 0.03), _smoothstep(0.19, 0.15, ang))
    eye = eye * (1 - 0.5 * _smoothstep(open_h * 0.4, open_h, dy))[:, None]  # upper lid shadow
    c = _mix(c, eye, inside)
    lash = torch.exp(-(((dy - open_h) / 0.009) ** 2)) * (dy > 0) * (dx.abs() < geo.eye_half_w) * (lz > 0.45)
    c = c * (1 - 0.75 * lash.clamp(max=1))[:, None]

    # hair: strands flowing back from the hairline, darker roots
    hairw = _smoothstep(0.006, -0.006, parts["hair"] - torch.minimum(parts["skin"], parts["eyes"]))
    phi = torch.atan2(lx, lz)
    strands = torch.sin(phi * 90 + 3.0 * low + 6 * mid) * 0.5 + torch.sin(phi * 230 + 9 * low) * 0.3
    hc = torch.tensor(app.hair, dtype=p.dtype)
    hcol = hc * (1 + 0.18 * strands + 0.08 * mid)[:, None]
    hcol = hcol + 0.06 * _smoothstep(0.6, 1.0, strands)[:, None] * (0.3 + hc)
    if geo.portrait and app.hair_part != 0:
        part = torch.exp(-(((lx - app.hair_part) / 0.018) ** 2)) * _smoothstep(0.55, 0.75, ly) * (lz > -0.2)
        hcol = hcol * (1 - 0.45 * part)[:, None] + 0.25 * part[:, None] * torch.tensor(app.skin)
    c = _mix(c, hcol, hairw)
    if not geo.portrait:
        return c.clamp(0.0, 1.0)
    sh = geo.shape
    if sh.beard > 0:
        bw = geo.beard_weight(ax, ly, lz) * (1 - lipw)
        bcol = hc * (0.9 + 0.2 * strands + 0.1 * high)[:, None]
        c = _mix(c, bcol, _smoothstep(0.15, 0.6, bw))
    # clothes below the neckline (a dip at the front for a V or scoop neck), with a pattern
    nl = -1.32 - sh.neckline * torch.exp(-((lx / 0.32) ** 2)) * (lz > 0)
    cw = _smoothstep(0.02, -0.02, ly - nl) * (1 - hairw)
    cc = torch.tensor(app.clothes, dtype=p.dtype)
    if app.clothes_pattern == 1:
        pat = 1 + 0.3 * _smoothstep(-0.3, 0.3, torch.sin(ly * 38.0))
    elif app.clothes_pattern == 2:
        pat = 1 + 0.1 * mid + 0.08 * torch.sin(lx * 110) * torch.sin(ly * 110)
    else:
        pat = 1 + 0.04 * mid
    ccol = (cc * pat[:, None]).clamp(0, 1)
    c = _mix(c, ccol, cw)
    spec_w = (1 - hairw) * (1 - cw) * (1 - 0.5 * lipw) + 0.4 * hairw + 9.0 * inside
    shiny = 18.0 + 140.0 * inside
    if "glasses" in parts:
        gw = _smoothstep(0.004, -0.004, parts["glasses"] - parts["d"])
        c = _mix(c, torch.tensor(app.glasses_color, dtype=p.dtype).expand_as(c), gw)
        spec_w = spec_w + 5.0 * gw
        shiny = shiny + 60.0 * gw
    c = c.clamp(0.0, 1.0)
    return c[:, 0], c[:, 1], c[:, 2], spec_w, shiny


# ----------------------------------------------------------------------------- render


def _subpixel_offsets(spp: int) -> np.ndarray:
    if spp < 1:
        raise ValueError(f"spp must be >= 1, got {spp}")
    if spp == 1:
        return np.array([[0.5, 0.5]])
    if spp == 4:  # rotated grid
        return np.array([[0.375, 0.125], [0.875, 0.375], [0.125, 0.625], [0.625, 0.875]])
    k = np.arange(spp)
    g = 1.32471795724474602596
    return np.stack([(0.5 + k / g) % 1.0, (0.5 + k / g**2) % 1.0], -1)


class _Grid:
    """The exact SDF sampled on a head-space grid, read back trilinearly."""

    def __init__(self, geo: HeadGeometry, spacing: float | None = None, chunk: int = 1 << 18):
        if spacing is None:
            spacing = GRID_SPACING_PORTRAIT if geo.portrait else GRID_SPACING
        lo, hi = geo.grid_lo * geo.g, geo.grid_hi * geo.g
        n = np.ceil((hi - lo) / spacing).astype(int) + 1
        self.lo, self.hi, self.n = lo, lo + (n - 1) * spacing, n
        xs, ys, zs = (torch.linspace(float(lo[i]), float(self.hi[i]), int(n[i])) for i in range(3))
        vals = torch.empty(int(n[2]), int(n[1]), int(n[0]))
        zz, yy = torch.meshgrid(zs, ys, indexing="ij")
        zz, yy = zz.reshape(-1), yy.reshape(-1)
        rows = max(1, chunk // int(n[0]))
        flat = vals.view(-1, int(n[0]))
        for s in range(0, len(zz), rows):
            z = zz[s:s + rows, None].expand(-1, int(n[0]))
            y = yy[s:s + rows, None].expand(-1, int(n[0]))
            x = xs[None].expand_as(z)
            flat[s:s + rows] = geo.sdf(x, y, z)
        self.vol = vals[None, None]
        self.geo = geo
        self.spacing = spacing
        self._scale = torch.tensor(2.0 / (self.hi - lo), dtype=torch.float32)
        self._off = torch.tensor(-1.0 - 2.0 * lo / (self.hi - lo), dtype=torch.float32)
        self._lo = torch.tensor(lo, dtype=torch.float32)
        self._hi = torch.tensor(self.hi, dtype=torch.float32)

    def inside(self, p: torch.Tensor) -> torch.Tensor:
        return ((p >= self._lo) & (p <= self._hi)).all(-1)

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        """Trilinear SDF at head-space points p [n, 3] inside the box (clamped outside)."""
        q = p * self._scale + self._off
        return torch.nn.functional.grid_sample(self.vol, q.view(1, 1, 1, -1, 3), mode="bilinear",
                                               padding_mode="border", align_corners=True).view(-1)

    def full(self, p: torch.Tensor) -> torch.Tensor:
        """SDF everywhere: the grid inside the box, the neck (all there is) outside."""
        f = self(p)
        out = ~self.inside(p)
        if bool(out.any()):
            po = p[out]
            f[out] = self.geo.neck_sdf(po[:, 0], po[:, 1], po[:, 2])
        return f

    def normal(self, p: torch.Tensor) -> torch.Tensor:
        """Unit normals [n, 3]: central differences of the trilinear grid over one cell
        (continuous, so shading shows no facets)."""
        h = self.spacing
        k = torch.cat([torch.eye(3), -torch.eye(3)]) * h
        f = self.full((p[None] + k[:, None]).reshape(-1, 3)).view(6, -1)
        n = (f[:3] - f[3:]).T
        return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def box_interval(self, o: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Slab test: entry and exit t of rays (o, d) [n, 3] with the grid box."""
        inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
        ta, tb = (self._lo - o) * inv, (self._hi - o) * inv
        return torch.minimum(ta, tb).amax(-1).clamp_min(0.0), torch.maximum(ta, tb).amin(-1)


def _sphere_trace(f, o: torch.Tensor, d: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor, eps: float,
                  max_steps: int = 80, relax: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Sphere-trace rays (unit d) through the SDF bound ``f`` from t0 to t1, compacting
    the active set as rays hit (f < eps) or leave (t > t1). Returns (hit mask, t)."""
    n = len(o)
    t = t0.clone()
    hit = torch.zeros(n, dtype=torch.bool)
    idx = torch.arange(n)
    ao, ad, at, at1 = o, d, t0.clone(), t1
    for _ in range(max_steps):
        if len(idx) == 0:
            break
        v = f(ao + ad * at[:, None])
        h = v < eps
        at = at + relax * v.clamp_min(0.5 * eps)
        done = h | (at > at1)
        if bool(done.any()):
            t[idx[h]] = at[h]
            hit[idx[h]] = True
            keep = ~done
            idx, ao, ad, at, at1 = idx[keep], ao[keep], ad[keep], at[keep], at1[keep]
    return hit, t


def _pose_tensors(pose: HeadPose):
    R = torch.tensor(pose.rotation(), dtype=torch.float32)
    T = torch.tensor(pose.translation, dtype=torch.float32)
    return R, T, float(pose.scale)


def _camera_rays(cameras: Sequence[Camera], spp: int):
    """World rays of every sub-pixel sample of every camera, pixel-major per view."""
    offs = torch.tensor(_subpixel_offsets(spp), dtype=torch.float64)
    os_, ds_ = [], []
    for cam in cameras:
        v, u = torch.meshgrid(torch.arange(cam.height, dtype=torch.float64), torch.arange(cam.width, dtype=torch.float64), indexing="ij")
        pix = torch.stack([u.reshape(-1), v.reshape(-1)], -1)
        pix = (pix[:, None, :] + offs[None]).reshape(-1, 2)  # [H*W*spp, 2]
        o, d = pixel_rays(cam, pix)
        os_.append(o)
        ds_.append(d)
    return torch.cat(os_), torch.cat(ds_)


def _chunked(fn, n: int, chunk: int = 1 << 16):
    """Call fn(slice) over [0, n) in cache-sized chunks and concatenate the results."""
    outs = [fn(slice(s, min(n, s + chunk))) for s in range(0, n, chunk)]
    return torch.cat(outs) if outs else None


def render_subject(params: HeadParams, cameras: Sequence[Camera], spp: int = 4, *, background=BACKGROUND,
                   geometry: HeadGeometry | None = None):
    """Render one subject in every camera (all views batched).

    Returns (list of [H, W, 4] float32 RGBA images, straight rgb with alpha = coverage
    of the ``spp`` samples; rgb is ``background`` where alpha is 0,
    world landmarks [24, 3] float64)."""
    cameras = list(cameras)
    if not cameras:
        raise ValueError("render_subject: cameras is empty")
    geo = geometry or HeadGeometry(params.shape)
    R, T, s = _pose_tensors(params.pose)
    grid = _Grid(geo)
    ow, dw = _camera_rays(cameras, spp)
    o = (ow - T) @ R / s  # head space; head-space t = world t / s
    d = dw @ R
    n_all = len(o)
    eps = 0.3 / min(c.fx for c in cameras) * (rig.DISTANCE / s)  # ~0.3 px at the head

    if geo.portrait:
        t_hit = _trace_portrait(grid, geo, o, d, eps)
    else:
        t_hit = _trace_classic(grid, geo, o, d, eps)

    hi_idx = torch.isfinite(t_hit).nonzero().squeeze(1)
    p = o[hi_idx] + d[hi_idx] * t_hit[hi_idx, None]
    nh = len(p)
    nrm = _chunked(lambda sl: grid.normal(p[sl]), nh) if nh else torch.zeros(0, 3)
    if geo.portrait:
        parts = _chunked(lambda sl: torch.stack(_albedo(geo, params.appearance, p[sl], masks=True), 1), nh) if nh else torch.zeros(0, 5)
        albedo, spec_w, shiny = parts[:, :3], parts[:, 3], parts[:, 4]
    else:
        albedo = _chunked(lambda sl: _albedo(geo, params.appearance, p[sl]), nh) if nh else torch.zeros(0, 3)
    # a little ambient occlusion from the SDF; lights fixed in world space
    occ = 0.5 * (grid.full(p + 0.06 * nrm) / 0.06).clamp(0, 1) + 0.5 * (grid.full(p + 0.15 * nrm) / 0.15).clamp(0, 1)
    nw = nrm @ R.T
    lt = params.lighting
    light = torch.tensor(lt.ambient, dtype=torch.float32).expand(nh, 3).clone()
    spec = torch.zeros(nh, 3)
    shiny_spec = geo.portrait and lt.specular > 0
    view = -(d[hi_idx] @ R.T) if shiny_spec else None  # towards the camera, world
    for ldir, wgt, lcol in lt.lights:
        l_ = torch.tensor(ldir, dtype=torch.float32)
        l_ = l_ / l_.norm()
        ndl = (nw @ l_).clamp_min(0)
        lc = torch.tensor(lcol, dtype=torch.float32)
        light = light + wgt * lc * (lt.wrap + (1 - lt.wrap) * ndl)[:, None]  # soft Lambertian
        if shiny_spec:
            h = l_ + view
            h = h / h.norm(dim=-1, keepdim=True).clamp_min(1e-9)
            blinn = (nw * h).sum(-1).clamp_min(0) ** shiny * (ndl > 0)
            spec = spec + (wgt * lt.specular * spec_w * blinn)[:, None] * lc
    light = light * (0.55 + 0.45 * occ)[:, None]
    col = (albedo * light + spec * (0.4 + 0.6 * occ)[:, None]).clamp(0, 1)

    rgb_sum = torch.zeros(n_all, 3)
    cov = torch.zeros(n_all)
    rgb_sum[hi_idx] = col
    cov[hi_idx] = 1.0
    out, start = [], 0
    bg = torch.tensor(background, dtype=torch.float32)
    for cam in cameras:
        h, w = cam.height, cam.width
        m = h * w * spp
        cs = rgb_sum[start:start + m].view(h * w, spp, 3).sum(1)
        cv = cov[start:start + m].view(h * w, spp).sum(1)
        start += m
        rgb = torch.where(cv[:, None] > 0, cs / cv.clamp_min(1)[:, None], bg)
        out.append(torch.cat([rgb, (cv / spp)[:, None]], -1).view(h, w, 4).numpy().astype(np.float32))
    lms = params.pose.apply(geo.landmarks())
    return out, lms


def _trace_portrait(grid: "_Grid", geo: HeadGeometry, o, d, eps):
    """First hits (t, inf where none) of head-space rays with the portrait scene: the
    head box's grid (which holds the top of the body too), then the analytic body (neck,
    shoulders, chest) below it, up to the head's hit."""
    n_all = len(o)
    t_hit = torch.full((n_all,), float("inf"))
    tb0, tb1 = grid.box_interval(o, d)
    vb = (tb1 > tb0).nonzero().squeeze(1)
    hit_b, t_b = _sphere_trace(grid, o[vb], d[vb], tb0[vb], tb1[vb], eps)
    t_hit[vb[hit_b]] = t_b[hit_b]
    # the body outside the head box lies below BODY_TOP (head space, before the shape scales)
    lo = torch.tensor(SCENE_LO, dtype=torch.float32) * torch.tensor(geo.g, dtype=torch.float32)
    hi = torch.tensor(SCENE_HI, dtype=torch.float32) * torch.tensor(geo.g, dtype=torch.float32)
    hi[1] = BODY_TOP * geo.g[1]
    inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    ta, tb = (lo - o) * inv, (hi - o) * inv
    t0, t1 = torch.minimum(ta, tb).amax(-1).clamp_min(0.0), torch.minimum(torch.maximum(ta, tb).amin(-1), t_hit)
    v = (t1 > t0).nonzero().squeeze(1)
    if len(v):
        body = lambda q: geo.neck_sdf(q[:, 0], q[:, 1], q[:, 2])  # noqa: E731
        hit, t = _sphere_trace(body, o[v], d[v], t0[v], t1[v], eps, max_steps=100)
        t_hit[v[hit]] = torch.minimum(t_hit[v[hit]], t[hit])
    return t_hit


def _trace_classic(grid: "_Grid", geo: HeadGeometry, o, d, eps):
    """First hits of the classic light stage: the head box's grid, then the neck's
    exact capsule below it."""
    n_all = len(o)
    # 1) the box holding everything but the lower neck: trace the trilinear grid
    tb0, tb1 = grid.box_interval(o, d)
    vb = (tb1 > tb0).nonzero().squeeze(1)
    hit_b, t_b = _sphere_trace(grid, o[vb], d[vb], tb0[vb], tb1[vb], eps)
    t_hit = torch.full((n_all,), float("inf"))
    t_hit[vb[hit_b]] = t_b[hit_b]
    # 2) the neck below the box: its exact capsule SDF; keep hits below the box that
    #    come before any hit in the box
    ylo = float(grid._lo[1])
    a, _, r = geo.neck
    rad = 1.3 * r * max(geo.g)
    oc = o[:, [0, 2]] - torch.tensor([a[0] * geo.g[0], a[2] * geo.g[2]])
    dd = d[:, [0, 2]]
    qa = (dd * dd).sum(-1).clamp_min(1e-12)
    qb = (oc * dd).sum(-1)
    disc = qb * qb - qa * ((oc * oc).sum(-1) - rad * rad)  # infinite bounding cylinder
    cand = (disc > 0).nonzero().squeeze(1)
    if len(cand):
        sq = disc[cand].sqrt()
        tn0 = ((-qb[cand] - sq) / qa[cand]).clamp_min(0)
        tn1 = torch.minimum((-qb[cand] + sq) / qa[cand], t_hit[cand])
        keep = tn1 > tn0
        cand, tn0, tn1 = cand[keep], tn0[keep], tn1[keep]
        # the part of the ray below the box
        oy, dy = o[cand, 1], d[cand, 1]
        ty = (ylo - oy) / torch.where(dy.abs() < 1e-9, torch.full_like(dy, 1e-9), dy)
        below0 = oy < ylo
        tn0 = torch.where(below0, tn0, torch.maximum(tn0, torch.where(dy < 0, ty, torch.full_like(ty, float("inf")))))
        tn1 = torch.where(below0, torch.minimum(tn1, torch.where(dy > 0, ty, torch.full_like(ty, float("inf")))), tn1)
        keep = tn1 > tn0
        cand, tn0, tn1 = cand[keep], tn0[keep], tn1[keep]
        if len(cand):
            neck = lambda p: geo.neck_sdf(p[:, 0], p[:, 1], p[:, 2])  # noqa: E731
            hit_n, t_n = _sphere_trace(neck, o[cand], d[cand], tn0, tn1, eps)
            t_hit[cand[hit_n]] = torch.minimum(t_hit[cand[hit_n]], t_n[hit_n])
    return t_hit


# ----------------------------------------------------------------------------- dataset


def contact_sheet(images: Sequence[Sequence[np.ndarray]], background=(0.5, 0.5, 0.5), pad: int = 2) -> np.ndarray:
    """A grid: one row per subject, one column per view. ``images[r][c]`` are [H, W, 3|4]
    float in [0, 1] or uint8 (RGBA is composited over ``background``). Returns uint8 RGB."""
    rows = [list(r) for r in images]
    if not rows or not rows[0]:
        raise ValueError("contact_sheet: images is empty")
    h, w = np.asarray(rows[0][0]).shape[:2]
    ncol = max(len(r) for r in rows)
    sheet = np.ones((len(rows) * (h + pad) + pad, ncol * (w + pad) + pad, 3), np.float32) * np.asarray(background, np.float32)
    for i, r in enumerate(rows):
        for j, im in enumerate(r):
            a = np.asarray(im)
            a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
            if a.shape[:2] != (h, w):
                raise ValueError(f"contact_sheet: images[{i}][{j}] is {a.shape[:2]}, expected {(h, w)}")
            if a.shape[2] == 4:
                a = a[..., :3] * a[..., 3:] + np.asarray(background, np.float32) * (1 - a[..., 3:])
            y0, x0 = pad + i * (h + pad), pad + j * (w + pad)
            sheet[y0:y0 + h, x0:x0 + w] = a[..., :3]
    return (np.clip(sheet, 0, 1) * 255 + 0.5).astype(np.uint8)


def _split_counts(n: int, splits: Sequence[float]) -> tuple[int, int, int]:
    if len(splits) != 3 or any(f < 0 for f in splits) or sum(splits) <= 0:
        raise ValueError(f"splits must be three non-negative fractions (train, val, test), got {splits}")
    fr = np.asarray(splits, dtype=np.float64) / sum(splits)
    n_val = int(round(n * fr[1]))
    n_test = int(round(n * fr[2]))
    if n >= 3:
        n_val, n_test = max(1, n_val), max(1, n_test)
    n_val = min(n_val, n)
    n_test = min(n_test, n - n_val)
    return n - n_val - n_test, n_val, n_test


def subject_params(seed: int, index: int, style: str = "classic") -> HeadParams:
    """Subject ``index`` of the light stage with ``seed`` and ``style`` (see :data:`STYLES`);
    independent of the subject count."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    if style == "classic":
        return sample_head(rng)
    if style == "portrait":
        return sample_head_portrait(rng)
    raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")


def _make_subject(out: str, name: str, seed: int, index: int, res: int, views: int, spp: int,
                  sheet_views: Sequence[int] | None, style: str = "classic") -> dict:
    """Render and write one subject (runs in a worker process or in-process)."""
    params = subject_params(seed, index, style)
    cams = rig.rig_cameras(res, views)
    t0 = time.perf_counter()
    with torch.no_grad():
        imgs, lms = render_subject(params, cams, spp=spp)
    t1 = time.perf_counter()
    meta = {
        "generator": "pnerf_fast.data.lightstage",
        "seed": int(seed),
        "index": int(index),
        "style": style,
        "spp": int(spp),
        "background": list(BACKGROUND),
        "head_params": params.to_dict(),
        "head_to_world": {"scale": params.pose.scale, "rotation": params.pose.rotation(),
                          "translation": list(params.pose.translation)},
    }
    l2d = {k: cam.project(lms)[0] for k, cam in enumerate(cams)}
    fmt.write_subject(Path(out) / name, cameras=cams, images=imgs, frontal_index=0, landmarks=lms,
                      landmarks_2d=l2d, meta=meta)
    t2 = time.perf_counter()
    sheet = [(np.clip(imgs[k], 0, 1) * 255 + 0.5).astype(np.uint8) for k in sheet_views] if sheet_views else None
    return {"index": index, "render_s": t1 - t0, "write_s": t2 - t1, "sheet": sheet}


def _worker_init():
    torch.set_num_threads(1)


def generate_lightstage(out, subjects: int, res: int = 128, seed: int = 0, views: int = 25, spp: int = 4,
                        splits=(0.8, 0.1, 0.1), progress: bool = True,
                        contact_sheet_path: str | None = "contact_sheet.png", workers: int = 2,
                        only: Sequence[int] | None = None, style: str = "classic") -> dict:
    """Render ``subjects`` heads into ``out``/subject_000 ... and write ``out``/splits.json.

    Deterministic given ``seed``: subject i depends only on (seed, i), not on the subject
    count or the number of worker processes. ``workers`` > 1 renders subjects in parallel
    processes with one torch thread each (robust on a shared machine, where OpenMP
    threads that wait for each other are slow); ``workers=1`` runs in this process with
    one thread. The first ``val`` and ``test`` fractions of ``splits`` go to the last
    subjects (at least one each when subjects >= 3). ``contact_sheet_path`` (relative
    to ``out``; None to skip) gets up to 6 subjects x 6 views. ``only``: render just these
    subject indices (the same heads and splits as the full set; splits.json lists those
    rendered), e.g. a benchmark's test split alone. ``style``: "classic" (the first light
    stage: cartoon heads, even light) or "portrait" (real proportions, varied hair, body
    and clothes, expressions, glasses and beards, per-subject lighting; see
    :func:`sample_head_portrait`).

    Returns timings: total_s, render_s and write_s (summed over subjects; CPU-side work
    per process), per_subject_s (wall), subjects, views, res, spp, workers."""
    if int(subjects) < 1:
        raise ValueError(f"subjects must be >= 1, got {subjects}")
    if int(res) < 8:
        raise ValueError(f"res must be >= 8, got {res}")
    if int(views) < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    _subpixel_offsets(spp)  # validates spp
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    n_train, n_val, n_test = _split_counts(subjects, splits)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = [f"subject_{i:03d}" for i in range(subjects)]
    sheet_views = [0, *list(np.linspace(1, views - 1, min(5, views - 1)).round().astype(int))] if views > 1 else [0]
    n_sheet = 6 if contact_sheet_path else 0
    if only is not None:
        bad = [i for i in only if not 0 <= int(i) < subjects]
        if bad:
            raise ValueError(f"only: subject index {bad[0]} is outside [0, {subjects})")
        todo = sorted({int(i) for i in only})
    else:
        todo = list(range(subjects))
    jobs = [(str(out), names[i], int(seed), i, int(res), int(views), int(spp), sheet_views if k < n_sheet else None, style)
            for k, i in enumerate(todo)]
    t_start = time.perf_counter()
    results = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="subject", desc="lightstage")
    try:
        if workers == 1 or len(jobs) == 1:
            prev = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                for job in jobs:
                    results.append(_make_subject(*job))
                    if bar is not None:
                        bar.update(1)
            finally:
                torch.set_num_threads(prev)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn"),
                                     initializer=_worker_init) as ex:
                futs = [ex.submit(_make_subject, *job) for job in jobs]
                try:
                    for fut in as_completed(futs):
                        results.append(fut.result())
                        if bar is not None:
                            bar.update(1)
                except BaseException:
                    for f in futs:  # fail fast: do not render the rest
                        f.cancel()
                    raise
        done = {names[i] for i in todo}
        keep = lambda ns: [n for n in ns if n in done]  # noqa: E731
        fmt.write_splits(out, keep(names[:n_train]), keep(names[n_train:n_train + n_val]),
                         keep(names[n_train + n_val:]))
        rows = [r["sheet"] for r in sorted(results, key=lambda r: r["index"]) if r["sheet"]]
        if contact_sheet_path and rows:
            from PIL import Image

            Image.fromarray(contact_sheet(rows)).save(out / contact_sheet_path, optimize=True)
    finally:
        if bar is not None:
            bar.close()
    total = time.perf_counter() - t_start
    return {"total_s": total, "render_s": sum(r["render_s"] for r in results),
            "write_s": sum(r["write_s"] for r in results), "per_subject_s": total / len(jobs),
            "subjects": len(jobs), "views": views, "res": res, "spp": spp, "workers": workers, "style": style}
