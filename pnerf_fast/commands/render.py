"""pnerf render: videos and images of a finetuned portrait along a camera path."""
from ._device_arg import add_device_argument, device_from_args

NAME = "render"
HELP = ("Render a finetuned portrait along a path (orbit, dolly-zoom: the paper's perspective change, grid, "
        "or a nerfstudio camera_path.json).")


def add_arguments(p):
    p.add_argument("model", help="finetuned portrait checkpoint (from `pnerf finetune`)")
    p.add_argument("--path", choices=["orbit", "dolly-zoom", "grid"], default=None, help="default: orbit")
    p.add_argument("--camera-path", default=None, metavar="PATH.json",
                   help="render the cameras of a nerfstudio camera_path.json instead of --path")
    p.add_argument("--save-camera-path", default=None, metavar="PATH.json",
                   help="write the path's cameras as a nerfstudio camera_path.json (without --out: only that)")
    p.add_argument("--frames", type=int, default=None, help="frames (grid: views, rounded to a rectangle; default 48)")
    p.add_argument("--res", type=int, default=None,
                   help="square output resolution (default 256); with --camera-path the output height "
                        "(default: the file's render_height)")
    p.add_argument("--fps", type=int, default=None, help="default: the camera path's, else 24")
    p.add_argument("--out", default=None, help="FILE.mp4, FILE.gif, or a folder for PNG frames")
    p.add_argument("--no-depth", action="store_true", help="skip the depth video (default: OUT_depth.*)")
    p.add_argument("--chunk", type=int, default=None,
                   help="rays per rendering chunk (memory; default: the whole frame up to 256x256, else 16384)")
    add_device_argument(p)
    p.add_argument("--colors", choices=["input", "ray"], default=None,
                   help="input: every point coloured as the input photo's camera saw it (what a portrait "
                        "fitted to one photo does by default); ray: the colour network's own view "
                        "dependence along each ray. Default: as the portrait was saved")
    p.add_argument("--quiet", action="store_true")


def cameras_for(path: str, frames: int, res: int):
    from ..render import paths

    if frames < 1:
        raise ValueError(f"argument --frames: must be >= 1, got {frames}")
    if res < 8 or res > 4096:
        raise ValueError(f"argument --res: must be in [8, 4096], got {res}")
    if path == "orbit":
        return paths.orbit(frames, res)
    if path == "dolly-zoom":
        return paths.dolly_zoom(frames, res)
    import math

    n_yaw = max(1, int(round(math.sqrt(frames * 2))))
    n_pitch = max(1, frames // n_yaw)
    return paths.grid(n_yaw, n_pitch, res)


def render_path(portrait, cams, chunk=None, progress=True, desc="render"):
    """-> (rgb frames uint8, depth frames uint8)"""
    import numpy as np
    from tqdm import tqdm

    from ..render.video import depth_to_rgb

    rgbs, depths = [], []
    bar = tqdm(total=sum(c.width * c.height for c in cams), desc=desc, unit="ray", unit_scale=True, disable=not progress)
    for cam in cams:
        out = portrait.render(cam, chunk=chunk, progress=bar)
        rgbs.append((out["rgb"].cpu().numpy() * 255 + 0.5).astype(np.uint8))
        depths.append(depth_to_rgb(out["depth"].cpu().numpy(), out["opacity"].cpu().numpy()))
    bar.close()
    return rgbs, depths


def set_colors(portrait, colors: str | None, model_path) -> None:
    """--colors: "ray" renders along each ray; "input" as the input camera saw (a portrait
    saved before color_from existed takes its frontal camera's centre); None: as saved."""
    if colors == "ray":
        portrait.color_from = None
    elif colors == "input" and portrait.color_from is None:
        if portrait.frontal_camera is None:
            raise ValueError(f"argument --colors: {model_path} records no input camera; use --colors ray")
        portrait.color_from = portrait.transform.apply(portrait.frontal_camera.position)


def depth_path(out: str) -> str:
    from pathlib import Path

    p = Path(out)
    if p.suffix.lower() in (".mp4", ".gif"):
        return str(p.with_name(p.stem + "_depth" + p.suffix))
    return str(p) + "_depth"


def run(args):
    import time

    from ..api import load
    from ..render.video import write_video

    from pathlib import Path

    from .._io import check_output

    device = device_from_args(args)
    for name, v, lo in (("--fps", args.fps, 1), ("--chunk", args.chunk, 1)):
        if v is not None and v < lo:
            raise ValueError(f"argument {name}: must be >= {lo}, got {v}")
    if args.frames is not None and args.frames > 10000:
        raise ValueError(f"argument --frames: must be <= 10000, got {args.frames}")
    if args.out is None and args.save_camera_path is None:
        raise ValueError("argument --out: is required (or give --save-camera-path to write only the path)")
    inputs = [args.model, args.camera_path]
    if args.out is not None:
        kind = "file" if Path(args.out).suffix else "dir"
        check_output(args.out, "--out", inputs, kind=kind)
        if not args.no_depth:
            check_output(depth_path(args.out), "--out (its depth video)", inputs, kind=kind)
    if args.save_camera_path is not None:
        check_output(args.save_camera_path, "--save-camera-path", inputs, kind="file")
        if args.out is not None and _same(args.save_camera_path, args.out):
            raise ValueError("argument --save-camera-path: must differ from --out")
    cams, fps, what = cameras_from_args(args)
    if args.save_camera_path is not None:
        from ..render.camera_path import write_camera_path

        write_camera_path(cams, args.save_camera_path, fps)
        print(f"wrote {args.save_camera_path}: {len(cams)} cameras at {cams[0].width}x{cams[0].height}")
        if args.out is None:
            return 0
    portrait = load(args.model, device=device)
    set_colors(portrait, args.colors, args.model)
    t0 = time.perf_counter()
    rgbs, depths = render_path(portrait, cams, args.chunk, not args.quiet, desc=f"render {what}")
    dt = time.perf_counter() - t0
    write_video(rgbs, args.out, fps=fps)
    msg = f"wrote {args.out}"
    if not args.no_depth:
        write_video(depths, depth_path(args.out), fps=fps)
        msg += f" and {depth_path(args.out)}"
    print(f"{msg}: {len(cams)} frames at {cams[0].width}x{cams[0].height} in {dt:.1f} s ({len(cams) / dt:.2f} fps)")
    return 0


def _same(a, b) -> bool:
    import os

    return os.path.realpath(os.path.abspath(a)) == os.path.realpath(os.path.abspath(b))


def cameras_from_args(args):
    """-> (cameras, fps, a name for the progress bar) from --path/--frames/--res or --camera-path."""
    if args.camera_path is None:
        path = args.path or "orbit"
        cams = cameras_for(path, 48 if args.frames is None else args.frames, 256 if args.res is None else args.res)
        return cams, 24 if args.fps is None else args.fps, path
    from ..render.camera_path import read_camera_path

    for name, v in (("--path", args.path), ("--frames", args.frames)):
        if v is not None:
            raise ValueError(f"argument {name}: does not apply with --camera-path (the file lists the cameras)")
    cams, file_fps = read_camera_path(args.camera_path)
    if args.res is not None:
        if args.res < 8 or args.res > 4096:
            raise ValueError(f"argument --res: must be in [8, 4096], got {args.res}")
        cams = [c.scaled(args.res / c.height) for c in cams]
    fps = args.fps if args.fps is not None else (file_fps or 24)
    return cams, fps, "camera path"
