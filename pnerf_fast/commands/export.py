"""pnerf export: a finetuned portrait as a mesh (.ply, .obj, .glb) or a coloured point cloud (.ply)."""
from ._device_arg import add_device_argument, device_from_args

NAME = "export"
HELP = "Export a finetuned portrait as a mesh (marching cubes, .ply/.obj/.glb) or a coloured point cloud (.ply)."


def add_arguments(p):
    from ..export import DEFAULT_THRESHOLD

    p.add_argument("model", help="finetuned portrait checkpoint (from `pnerf finetune`)")
    p.add_argument("--mesh", default=None, metavar="OUT.ply|.obj|.glb", help="write a mesh (world space)")
    p.add_argument("--points", default=None, metavar="OUT.ply", help="write a coloured point cloud from rendered depth")
    p.add_argument("--res", type=int, default=256, help="marching-cubes lattice points along the longest side (8-1024)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"iso-level on the density sigma, per canonical unit (default {DEFAULT_THRESHOLD:g})")
    p.add_argument("--keep-all", action="store_true", help="keep every connected component (default: the largest)")
    p.add_argument("--texture", action="store_true",
                   help="a UV atlas (xatlas) and a baked texture instead of vertex colours (.glb or .obj)")
    p.add_argument("--texture-size", type=int, default=1024, help="texture side in pixels")
    p.add_argument("--preview", default=None, metavar="OUT.png",
                   help="--mesh: also draw the mesh (frontal and 30° views, colour and shading) to this PNG")
    p.add_argument("--views", type=int, default=15, help="--points: views rendered around the head (a yaw x pitch grid)")
    p.add_argument("--view-res", type=int, default=128, help="--points: resolution of each view")
    add_device_argument(p)
    p.add_argument("--quiet", action="store_true")


def run(args):
    import math
    import time
    from pathlib import Path

    from .._io import check_output
    from ..export import MESH_SUFFIXES, POINT_SUFFIXES, MeshConfig, _xatlas, export_mesh, export_points

    device = device_from_args(args)
    if args.mesh is None and args.points is None:
        raise ValueError("nothing to export: give --mesh OUT.ply|.obj|.glb and/or --points OUT.ply")
    cfg = MeshConfig(res=args.res, threshold=args.threshold, keep_all=args.keep_all, texture=args.texture,
                     texture_size=args.texture_size).check()
    if not 1 <= args.views <= 1000:
        raise ValueError(f"argument --views: must be in [1, 1000], got {args.views}")
    if not 8 <= args.view_res <= 4096:
        raise ValueError(f"argument --view-res: must be in [8, 4096], got {args.view_res}")
    for arg, out, allowed in (("--mesh", args.mesh, MESH_SUFFIXES), ("--points", args.points, POINT_SUFFIXES)):
        if out is None:
            continue
        check_output(out, arg, [args.model], kind="file")
        suf = Path(out).suffix.lower()
        if suf not in allowed:
            raise ValueError(f"argument {arg}: {out}: unknown suffix {suf or '(none)'!r}; use one of {', '.join(allowed)}")
    if args.mesh and args.points and Path(args.mesh).resolve() == Path(args.points).resolve():
        raise ValueError("argument --points: must differ from --mesh")
    if args.preview is not None:
        if args.mesh is None:
            raise ValueError("argument --preview: applies to --mesh")
        check_output(args.preview, "--preview", [args.model], kind="file")
        if Path(args.preview).suffix.lower() != ".png":
            raise ValueError(f"argument --preview: {args.preview}: must end in .png")
        if any(o and Path(o).resolve() == Path(args.preview).resolve() for o in (args.mesh, args.points)):
            raise ValueError("argument --preview: must differ from --mesh and --points")
    if args.texture:
        if args.mesh is None:
            raise ValueError("argument --texture: applies to --mesh")
        if Path(args.mesh).suffix.lower() == ".ply":
            raise ValueError("argument --texture: a PLY cannot hold a texture image; use --mesh OUT.glb or OUT.obj")
        _xatlas()

    from ..api import load
    from ..render import paths

    portrait = load(args.model, device=device)
    if args.texture and args.res > 96 and not args.quiet:
        import sys

        print(f"pnerf export: note: xatlas unwraps a --res {args.res} mesh slowly (minutes above --res 128); "
              "--res 64-96 is quick", file=sys.stderr)
    if args.mesh:
        t0 = time.perf_counter()
        mesh = export_mesh(portrait, args.mesh, cfg)
        dt = time.perf_counter() - t0
        print(f"wrote {args.mesh}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces "
              f"({cfg.res} lattice, threshold {cfg.threshold:g}) in {dt:.1f} s")
        if args.preview:
            write_preview(mesh, args.preview)
            print(f"wrote {args.preview}")
    if args.points:
        t0 = time.perf_counter()
        n_yaw = max(1, int(round(math.sqrt(args.views * 5 / 3))))
        n_pitch = max(1, int(round(args.views / n_yaw)))
        cams = paths.grid(n_yaw, n_pitch, args.view_res)
        p, _ = export_points(portrait, args.points, cams)
        dt = time.perf_counter() - t0
        print(f"wrote {args.points}: {len(p)} points from {len(cams)} views at {args.view_res}² in {dt:.1f} s")
    return 0


def write_preview(mesh, path, res: int = 320):
    """Three panels: the mesh's colours from the front and from 30° to the side, then its
    shading alone from 30°; cameras a little farther than the rig's, so the head fits."""
    import numpy as np
    from PIL import Image

    from .._io import atomic_path
    from ..geometry.rig import DISTANCE
    from ..export import mesh_preview
    from ..render import paths

    panels = [mesh_preview(mesh, paths.camera_on_sphere(yaw, 8, res, radius=DISTANCE * 1.4), shaded_only=shaded)
              for yaw, shaded in ((0, False), (30, False), (30, True))]
    with atomic_path(path) as tmp:
        Image.fromarray(np.concatenate(panels, 1)).save(tmp)
