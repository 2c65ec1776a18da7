"""Colour at hit points: albedo (skin detail, lips, eyes, brows, hair, clothes, glasses) and the
light stage's illumination (ambient + soft Lambertian from lights fixed in world space,
highlights for portrait heads, a little SDF ambient occlusion)."""
from __future__ import annotations

import numpy as np
import torch

from .noise import _mix, _noise, _smoothstep, _waves
from .params import HeadAppearance, HeadParams
from .sdf import HeadGeometry
from .trace import _Grid


def _chunked(fn, n: int, chunk: int = 1 << 16):
    """Call fn(slice) over [0, n) in cache-sized chunks and concatenate the results."""
    outs = [fn(slice(s, min(n, s + chunk))) for s in range(0, n, chunk)]
    return torch.cat(outs) if outs else None


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


def shade(geo: HeadGeometry, params: HeadParams, grid: _Grid, p: torch.Tensor, d: torch.Tensor,
          R: torch.Tensor) -> torch.Tensor:
    """Colour of the hit points: albedo (with highlights for portrait heads) under lights
    fixed in world space, with a little ambient occlusion from the SDF.

    Args:
        geo: the subject's geometry.
        params: its parameters (appearance and lighting are used).
        grid: the subject's SDF grid (normals and ambient occlusion).
        p: [n, 3] float32 head-space hit points.
        d: [n, 3] float32 head-space unit directions of the rays that hit them.
        R: [3, 3] float32 head -> world rotation.

    Returns:
        [n, 3] float32 straight RGB in [0, 1].
    """
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
    view = -(d @ R.T) if shiny_spec else None  # towards the camera, world
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
    return col
