"""The signed distance of one head in head space: smooth primitives, smooth-min unions, landmarks.

Head space (before pose) uses the units of :data:`pnerf_fast.face.landmarks.TEMPLATE`:
a head about 1.6 wide centred at the origin, y up, the face towards +z, the subject's
right towards -x. The 24 landmarks are found on the surface itself (anchor points that
move with the shape parameters, projected onto the zero level set).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ...face import landmarks as lm
from .noise import _noise, _smoothstep, _waves
from .params import HeadShape

GRID_SPACING = 0.022  # head-space units (a 128 px rig pixel is ~0.019 units at the head)
GRID_LO = (-1.0, -1.12, -1.2)  # head-space box (before the global shape scales) holding all but the neck
GRID_HI = (1.0, 1.36, 1.12)
NECK_BOTTOM = -2.6
# the portrait light stage's box: taller skulls, fuller and longer hair, glasses
GRID_LO_PORTRAIT = (-1.3, -1.7, -1.62)
GRID_HI_PORTRAIT = (1.3, 1.72, 1.14)
GRID_SPACING_PORTRAIT = 0.024


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
