"""What one subject is: shape, appearance, pose and lighting parameters, and how they are drawn.

``subject_params(seed, index, style)`` draws subject ``index`` of a light stage; the
"portrait" style makes the same draws as the classic one first (subject i keeps its
identity), then adds its own.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

# Lights fixed in world space (the light stage), (direction towards the light, weight).
LIGHTS = (
    ((0.0, 0.35, 1.0), 0.40),
    ((-0.9, 0.4, 0.5), 0.22),
    ((0.9, 0.4, 0.5), 0.22),
    ((0.0, 1.0, -0.2), 0.16),
)
AMBIENT = 0.42


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


def subject_params(seed: int, index: int, style: str = "classic") -> HeadParams:
    """Subject ``index`` of the light stage with ``seed`` and ``style`` (see :data:`STYLES`);
    independent of the subject count."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    if style == "classic":
        return sample_head(rng)
    if style == "portrait":
        return sample_head_portrait(rng)
    raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
