"""A portrait you can take elsewhere: meshes and point clouds from a finetuned portrait.

- :func:`extract_mesh`: marching cubes (scikit-image) over the field's density in
  canonical space, evaluated only inside the occupancy grid's occupied cells (zero
  elsewhere, exactly what the renderer sees), chunked; the largest connected component
  (unless ``keep_all``); vertices mapped back to the photo's world space with the
  inverse of the subject's similarity transform; vertex colours from the field seen
  along the outward normal (a short ray composited through the surface).
- :func:`point_cloud`: coloured points from the rendered depth of a set of views.
- :func:`export_mesh` / :func:`export_points`: the above for a :class:`PortraitField`,
  written with trimesh (.ply, .obj, .glb).

    from pnerf_fast import load
    from pnerf_fast.export import export_mesh, MeshConfig
    mesh = export_mesh(load("me.pt"), "me.glb", MeshConfig(res=256))
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ._io import atomic_path
from .face.procrustes import SimilarityTransform
from .ops.occgrid import OccupancyGrid
from .render.rays import view_dirs

__all__ = ["MeshConfig", "extract_mesh", "portrait_mesh", "export_mesh", "point_cloud", "export_points",
           "occupied_mask", "mesh_preview", "MESH_SUFFIXES", "POINT_SUFFIXES", "DEFAULT_THRESHOLD"]

MESH_SUFFIXES = (".ply", ".obj", ".glb")
POINT_SUFFIXES = (".ply",)
#: Default iso-level on sigma (per canonical unit): where a 0.1-unit-thick shell (a few
#: render steps) is ~60% opaque. Heads are solid, so the surface barely moves with it.
DEFAULT_THRESHOLD = 10.0


@dataclass(frozen=True)
class MeshConfig:
    res: int = 256                 # lattice points along the longest side of the occupied box
    threshold: float = DEFAULT_THRESHOLD  # iso-level on the canonical density sigma
    keep_all: bool = False         # keep every connected component (default: the largest)
    chunk: int = 1 << 18           # points per field call
    color_samples: int = 8         # samples on each vertex's colour ray (0: no colours)
    texture: bool = False          # UV atlas (xatlas) + PNG texture instead of vertex colours
    texture_size: int = 1024       # texture side in pixels

    def check(self) -> "MeshConfig":
        if isinstance(self.res, bool) or not isinstance(self.res, int) or not 8 <= self.res <= 1024:
            raise ValueError(f"argument --res: must be an integer in [8, 1024], got {self.res!r}")
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError(f"argument --threshold: must be a finite number > 0, got {self.threshold!r}")
        if not isinstance(self.chunk, int) or self.chunk < 1:
            raise ValueError(f"argument --chunk: must be an integer >= 1, got {self.chunk!r}")
        if not isinstance(self.color_samples, int) or not 0 <= self.color_samples <= 64:
            raise ValueError(f"color_samples must be an integer in [0, 64], got {self.color_samples!r}")
        if not isinstance(self.texture_size, int) or not 64 <= self.texture_size <= 8192:
            raise ValueError(f"argument --texture-size: must be an integer in [64, 8192], got {self.texture_size!r}")
        return self


def _trimesh():
    try:
        import trimesh
    except ImportError:  # pragma: no cover - a dependency since mesh export exists
        raise ValueError("mesh export needs trimesh: pip install trimesh") from None
    return trimesh


def occupied_mask(grid: OccupancyGrid, points: torch.Tensor) -> torch.Tensor:
    """Which canonical ``points`` [n, 3] fall in an occupied cell of ``grid`` -> bool [n].

    A point takes the finest level whose box holds it (instant-ngp's cascades); points
    outside the outermost box are unoccupied."""
    g = grid.geometry
    lo = torch.tensor(g.aabb[:3], dtype=points.dtype, device=points.device)
    hi = torch.tensor(g.aabb[3:], dtype=points.dtype, device=points.device)
    c, h = (lo + hi) / 2, (hi - lo) / 2
    m = ((points - c).abs() / h).amax(-1)
    lvl = torch.where(m < 1, torch.zeros_like(m), torch.floor(torch.log2(m.clamp_min(1))) + 1).long()
    inside = lvl < g.levels
    lvl = lvl.clamp(max=g.levels - 1)
    scale = torch.pow(2.0, lvl.to(points.dtype))[:, None]
    u = (points - (c - h * scale)) / (2 * h * scale) * g.res
    ijk = torch.floor(u).long().clamp(0, g.res - 1)
    idx = ((lvl * g.res + ijk[:, 0]) * g.res + ijk[:, 1]) * g.res + ijk[:, 2]
    bits = grid.bits.to(points.device)
    return inside & (bits[idx] > 0)


@torch.no_grad()
def _density_volume(density_fn, grid, res, chunk, device):
    """Sample sigma on a cubic lattice over the occupied box -> (volume [X, Y, Z] float32
    padded with a zero layer, origin [3] of the padded lattice, spacing)."""
    box = grid.occupied_box()
    lo = np.array(box[:3], dtype=np.float64)
    hi = np.array(box[3:], dtype=np.float64)
    ext = hi - lo
    h = float(ext.max()) / (res - 1)
    counts = [max(2, int(math.ceil(e / h - 1e-9)) + 1) for e in ext]
    # Centre the lattice on the box.
    lo = lo - (np.array([(n - 1) * h for n in counts]) - ext) / 2
    axes = [torch.as_tensor(lo[i] + h * np.arange(counts[i]), dtype=torch.float32, device=device) for i in range(3)]
    vol = np.zeros(counts, dtype=np.float32)
    ny, nz = counts[1], counts[2]
    yz = torch.stack(torch.meshgrid(axes[1], axes[2], indexing="ij"), -1).reshape(-1, 2)
    slab = max(1, chunk // (ny * nz))
    for x0 in range(0, counts[0], slab):
        xs = axes[0][x0:x0 + slab]
        pts = torch.cat([xs.repeat_interleave(yz.shape[0])[:, None], yz.repeat(xs.shape[0], 1)], 1)
        mask = occupied_mask(grid, pts)
        sig = torch.zeros(pts.shape[0], dtype=torch.float32, device=device)
        sel = torch.nonzero(mask).reshape(-1)
        for i in range(0, sel.numel(), chunk):
            j = sel[i:i + chunk]
            sig[j] = density_fn(pts[j]).reshape(-1).float()
        vol[x0:x0 + xs.shape[0]] = sig.reshape(xs.shape[0], ny, nz).cpu().numpy()
    vol = np.nan_to_num(vol, nan=0.0, posinf=1e6, neginf=0.0)
    return np.pad(vol, 1), lo - h, h


@torch.no_grad()
def _surface_colors(color_fn, points, normals, step, samples, chunk, device):
    """Colour seen looking at each canonical point along -normal: ``samples`` points on
    a ray from ``point + 2 step n`` to ``point - 2 step n``, alpha-composited, the
    weights normalised (the surface's own colour, no background) -> [n, 3] float in [0, 1]."""
    n = points.shape[0]
    out = np.zeros((n, 3), dtype=np.float32)
    if n == 0:
        return out
    K = samples
    dt = 4.0 * step / K
    t = (torch.arange(K, dtype=torch.float32, device=device) + 0.5) * dt - 2.0 * step  # along -n, from outside
    per = max(1, chunk // K)
    for i in range(0, n, per):
        p = torch.as_tensor(points[i:i + per], dtype=torch.float32, device=device)
        nn_ = torch.as_tensor(normals[i:i + per], dtype=torch.float32, device=device)
        m = p.shape[0]
        x = (p[:, None, :] - t[None, :, None] * nn_[:, None, :]).reshape(-1, 3)
        d = (-nn_)[:, None, :].expand(m, K, 3).reshape(-1, 3).contiguous()
        sigma, rgb = color_fn(x, d)
        sigma = sigma.reshape(m, K).float().clamp_min(0)
        rgb = rgb.reshape(m, K, 3).float()
        alpha = 1 - torch.exp(-sigma * dt)
        trans = torch.cumprod(torch.cat([torch.ones(m, 1, device=device), 1 - alpha[:, :-1]], 1), 1)
        w = alpha * trans
        ws = w.sum(1, keepdim=True)
        col = torch.where(ws > 1e-6, (w[..., None] * rgb).sum(1) / ws.clamp_min(1e-6), rgb.mean(1))
        out[i:i + m] = col.clamp(0, 1).cpu().numpy()
    return out


def extract_mesh(density_fn: Callable[[torch.Tensor], torch.Tensor], grid: OccupancyGrid,
                 transform: SimilarityTransform | None = None, cfg: MeshConfig = MeshConfig(),
                 color_fn: Callable | None = None, device="cpu"):
    """Marching cubes over a canonical-space density -> a world-space ``trimesh.Trimesh``.

    Args:
        density_fn: canonical points [n, 3] float32 -> sigma [n] (per canonical unit).
        grid: the occupancy grid; sigma is evaluated only in its occupied cells (zero
            elsewhere) and the lattice spans its occupied box.
        transform: world -> canonical similarity (``PortraitField.transform``); vertices
            are mapped back with its inverse. None: the identity.
        cfg: resolution, iso-level, components, colours (see :class:`MeshConfig`).
        color_fn: ``(x [n, 3], d [n, 3] unit) -> (sigma [n], rgb [n, 3])`` in canonical
            space (the field's forward); None: no vertex colours.
        device: where the field runs.
    Returns:
        ``trimesh.Trimesh`` in world space with outward normals (counter-clockwise faces
        seen from outside) and, with ``color_fn``, RGBA vertex colours (or, with
        ``cfg.texture``, a UV atlas and texture image).
    Raises:
        ValueError when the density never reaches ``cfg.threshold`` inside the grid.
    """
    from skimage.measure import marching_cubes

    trimesh = _trimesh()
    cfg = cfg.check()
    if cfg.texture:
        _xatlas()  # fail before the work
    transform = transform or SimilarityTransform.identity()
    if not bool(grid.bits.any()):
        raise ValueError("the occupancy grid has no occupied cell: nothing to mesh")
    vol, origin, h = _density_volume(density_fn, grid, cfg.res, cfg.chunk, device)
    vmax = float(vol.max())
    if not vmax > cfg.threshold:
        raise ValueError(f"no surface: the density never exceeds --threshold {cfg.threshold:g} inside the occupancy "
                         f"grid (its maximum is {vmax:.3g}); give a lower --threshold")
    # Density is higher inside: "ascent" orients the faces outward.
    verts, faces, _, _ = marching_cubes(vol, level=cfg.threshold, spacing=(h, h, h), gradient_direction="ascent")
    verts = verts.astype(np.float64) + origin
    mesh = trimesh.Trimesh(verts, faces.astype(np.int64), process=False)
    mesh.merge_vertices()
    if not cfg.keep_all and len(mesh.faces):
        labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
        biggest = np.bincount(labels).argmax()
        mesh.update_faces(labels == biggest)
        mesh.remove_unreferenced_vertices()
    canon_v = np.asarray(mesh.vertices).copy()
    canon_n = np.asarray(mesh.vertex_normals).copy()
    inv = transform.inverse()
    world = trimesh.Trimesh(inv.apply(canon_v), np.asarray(mesh.faces), process=False)
    if color_fn is not None and cfg.texture:
        _bake_texture(world, canon_v, canon_n, color_fn, h, cfg, device)
    elif color_fn is not None and cfg.color_samples > 0:
        rgb = _surface_colors(color_fn, canon_v, canon_n, h, cfg.color_samples, cfg.chunk, device)
        rgba = np.concatenate([(rgb * 255 + 0.5).astype(np.uint8), np.full((len(rgb), 1), 255, np.uint8)], 1)
        world.visual.vertex_colors = rgba
    return world


def _xatlas():
    try:
        import xatlas
    except ImportError:
        raise ValueError("--texture needs xatlas (pip install xatlas); without it, export vertex colours "
                         "(the default)") from None
    return xatlas


def _bake_texture(world, canon_v, canon_n, color_fn, step, cfg, device):
    """UV-unwrap ``world`` with xatlas and bake the field's colour into a texture."""
    import trimesh
    from PIL import Image
    from scipy import ndimage

    xatlas = _xatlas()
    vmap, faces, uvs = xatlas.parametrize(np.asarray(world.vertices, np.float32), np.asarray(world.faces, np.uint32))
    S = cfg.texture_size
    pv = canon_v[vmap]
    pn = canon_n[vmap]
    # Rasterise every triangle into texel centres (vectorised over triangles, looping over
    # the offsets inside the largest bounding box).
    tri = uvs[faces] * S  # [F, 3, 2] texel units, v up
    tri[..., 1] = S - tri[..., 1]
    lo = np.floor(tri.min(1)).astype(np.int64)
    hi = np.ceil(tri.max(1)).astype(np.int64)
    size = hi - lo
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    den = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
    ok = np.abs(den) > 1e-12
    tex_face = np.full((S, S), -1, np.int64)
    tex_bary = np.zeros((S, S, 3), np.float32)
    for dx in range(int(size[:, 0].max()) + 1):
        for dy in range(int(size[:, 1].max()) + 1):
            f = np.nonzero(ok & (size[:, 0] >= dx) & (size[:, 1] >= dy))[0]
            px = lo[f, 0] + dx
            py = lo[f, 1] + dy
            inb = (px >= 0) & (px < S) & (py >= 0) & (py < S)
            f, px, py = f[inb], px[inb], py[inb]
            qx, qy = px + 0.5, py + 0.5
            l0 = ((b[f, 1] - c[f, 1]) * (qx - c[f, 0]) + (c[f, 0] - b[f, 0]) * (qy - c[f, 1])) / den[f]
            l1 = ((c[f, 1] - a[f, 1]) * (qx - c[f, 0]) + (a[f, 0] - c[f, 0]) * (qy - c[f, 1])) / den[f]
            l2 = 1 - l0 - l1
            inside = (l0 >= -1e-6) & (l1 >= -1e-6) & (l2 >= -1e-6)
            f, px, py = f[inside], px[inside], py[inside]
            tex_face[py, px] = f
            tex_bary[py, px] = np.stack([l0[inside], l1[inside], l2[inside]], 1)
    ys, xs = np.nonzero(tex_face >= 0)
    fi = tex_face[ys, xs]
    bw = tex_bary[ys, xs][..., None]
    corners = faces[fi]
    p = (pv[corners] * bw).sum(1)
    nrm = (pn[corners] * bw).sum(1)
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    col = _surface_colors(color_fn, p, nrm, step, max(1, cfg.color_samples), cfg.chunk, device)
    img = np.zeros((S, S, 3), np.float32)
    img[ys, xs] = col
    # Bleed the colours a few texels past each chart so filtering shows no seams.
    empty = tex_face < 0
    if empty.any() and (~empty).any():
        _, (iy, ix) = ndimage.distance_transform_edt(empty, return_indices=True)
        img = img[iy, ix]
    image = Image.fromarray((img * 255 + 0.5).astype(np.uint8))
    mat = trimesh.visual.material.SimpleMaterial(image=image)
    world.vertices = np.asarray(world.vertices)[vmap]
    world.faces = faces.astype(np.int64)
    world.visual = trimesh.visual.TextureVisuals(uv=uvs, image=image, material=mat)


def portrait_mesh(portrait, cfg: MeshConfig = MeshConfig()):
    """A finetuned :class:`~pnerf_fast.train.model.PortraitField` -> its world-space
    ``trimesh.Trimesh`` (see :func:`extract_mesh`)."""
    field, grid = portrait.model.field, portrait.model.grid
    field.eval()
    dev = next((t.device for t in field.parameters()), torch.device("cpu"))

    def density(x):
        return field.density(x)

    eye = portrait._view_from()  # a single-view portrait's colours as its camera saw them

    def color(x, d):
        return field(x, d if eye is None else view_dirs(x, eye))

    return extract_mesh(density, grid, portrait.transform, cfg, color, device=dev)


def _check_suffix(path, allowed, arg) -> str:
    suf = Path(path).suffix.lower()
    if suf not in allowed:
        raise ValueError(f"argument {arg}: {path}: unknown suffix {suf or '(none)'!r}; use one of {', '.join(allowed)}")
    return suf


def write_mesh(mesh, path) -> Path:
    """Write a trimesh mesh (format from the suffix) atomically. A textured OBJ also
    writes its material (.mtl) and texture (.png) beside it."""
    path = Path(path)
    suf = _check_suffix(path, MESH_SUFFIXES, "--mesh")
    if suf == ".obj" and isinstance(mesh.visual, _trimesh().visual.TextureVisuals):
        from trimesh.exchange.obj import export_obj

        mesh.visual.material.name = path.stem  # its texture becomes STEM.png beside the .obj
        text, files = export_obj(mesh, return_texture=True, mtl_name=path.stem + ".mtl")
        for name, data in files.items():
            with atomic_path(path.parent / name) as tmp:
                tmp.write_bytes(data)
        with atomic_path(path) as tmp:
            tmp.write_text(text)
        return path
    if suf == ".ply" and isinstance(mesh.visual, _trimesh().visual.TextureVisuals):
        raise ValueError("argument --mesh: a PLY cannot hold a texture image; use .glb or .obj with --texture")
    with atomic_path(path) as tmp:
        mesh.export(tmp)
    return path


def export_mesh(portrait, path, cfg: MeshConfig = MeshConfig()):
    """Mesh a portrait and write it to ``path`` (.ply, .obj or .glb) -> the mesh."""
    _check_suffix(path, MESH_SUFFIXES, "--mesh")
    if cfg.texture and Path(path).suffix.lower() == ".ply":
        raise ValueError("argument --texture: a PLY cannot hold a texture image; use .glb or .obj")
    mesh = portrait_mesh(portrait, cfg)
    write_mesh(mesh, path)
    return mesh


def point_cloud(portrait, cams=None, min_opacity: float = 0.5, chunk: int = 1 << 14):
    """Coloured points from rendered depth -> (points [n, 3] world, colours [n, 3] uint8).

    Args:
        portrait: a finetuned PortraitField.
        cams: cameras to render; default: a 5 x 3 grid of 128² views inside the rig's
            cap (yaw ±60°, pitch ±30°), around the head.
        min_opacity: pixels at least this opaque become points, at their expected depth
            (depth / opacity) along the pixel's ray, with the background removed from
            their colour.
    """
    from .render import paths

    if cams is None:
        cams = paths.grid(5, 3, 128)
    if not 0 < min_opacity <= 1:
        raise ValueError(f"min_opacity must be in (0, 1], got {min_opacity}")
    pts, cols = [], []
    bg = portrait.background
    for cam in cams:
        out = portrait.render(cam, chunk=chunk)
        opa = out["opacity"].reshape(-1).cpu().numpy().astype(np.float64)
        keep = opa >= min_opacity
        if not keep.any():
            continue
        o, d = cam.rays(dtype=torch.float64)
        t = out["depth"].reshape(-1).cpu().numpy()[keep] / opa[keep]
        pts.append(o.numpy()[keep] + d.numpy()[keep] * t[:, None])
        rgb = out["rgb"].reshape(-1, 3).cpu().numpy()[keep].astype(np.float64)
        rgb = (rgb - (1 - opa[keep, None]) * bg) / opa[keep, None]
        cols.append((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8))
    if not pts:
        raise ValueError(f"no pixel of the {len(cams)} views is {min_opacity:g} opaque: the point cloud is empty")
    return np.concatenate(pts), np.concatenate(cols)


def export_points(portrait, path, cams=None, min_opacity: float = 0.5):
    """Write the coloured point cloud (:func:`point_cloud`) to a .ply -> (points, colours)."""
    trimesh = _trimesh()
    _check_suffix(path, POINT_SUFFIXES, "--points")
    p, c = point_cloud(portrait, cams, min_opacity)
    pc = trimesh.PointCloud(p, colors=np.concatenate([c, np.full((len(c), 1), 255, np.uint8)], 1))
    with atomic_path(path) as tmp:
        pc.export(tmp)
    return p, c


def mesh_preview(mesh, camera, shaded_only: bool = False, supersample: int = 2) -> np.ndarray:
    """Draw a mesh as a camera sees it -> [H, W, 3] uint8 (white background).

    A small offscreen rasteriser (no OpenGL needed): back faces culled, faces sorted far
    to near and filled with Pillow at ``supersample`` times the resolution, then
    downsampled; flat Lambert shading from a light above the camera's right shoulder,
    times the faces' mean vertex colour (grey with ``shaded_only`` or without colours).

    Args:
        mesh: a ``trimesh.Trimesh`` in world space.
        camera: a :class:`~pnerf_fast.geometry.cameras.Camera` (world space, OpenGL axes).
    """
    from PIL import Image, ImageDraw

    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces, dtype=np.int64)
    W, H = camera.width * supersample, camera.height * supersample
    img = Image.new("RGB", (W, H), (255, 255, 255))
    if len(f):
        uv, depth = camera.project(v)
        uv = uv * supersample
        fn = np.asarray(mesh.face_normals, dtype=np.float64)
        centres = v[f].mean(1)
        front = (np.sum(fn * (camera.position - centres), 1) > 0) & np.all(depth[f] > 1e-6, 1)
        light = camera.c2w[:3, :3] @ (np.array([0.4, 0.6, 1.0]) / np.linalg.norm([0.4, 0.6, 1.0]))
        shade = 0.3 + 0.7 * np.clip(fn @ light, 0, 1)
        colors = None
        if not shaded_only and getattr(mesh.visual, "kind", None) == "vertex":
            colors = np.asarray(mesh.visual.vertex_colors, dtype=np.float64)[:, :3][f].mean(1)
        base = np.full((len(f), 3), 205.0) if colors is None else colors
        rgb = np.clip(base * shade[:, None], 0, 255).astype(np.uint8)
        idx = np.nonzero(front)[0]
        idx = idx[np.argsort(-depth[f[idx]].mean(1))]  # far first
        draw = ImageDraw.Draw(img)
        tri = uv[f[idx]]
        for k, t in zip(idx, tri):
            c = tuple(int(x) for x in rgb[k])
            draw.polygon([(t[0, 0], t[0, 1]), (t[1, 0], t[1, 1]), (t[2, 0], t[2, 1])], fill=c)
    if supersample > 1:
        img = img.resize((camera.width, camera.height), Image.LANCZOS)
    return np.asarray(img)
