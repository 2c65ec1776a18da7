"""pnerf render: videos and images of a finetuned portrait along a camera path."""
NAME = "render"
HELP = "Render a finetuned portrait along a path (orbit, dolly-zoom: the paper's perspective change, grid)."


def add_arguments(p):
    p.add_argument("model", help="finetuned portrait checkpoint (from `pnerf finetune`)")
    p.add_argument("--path", choices=["orbit", "dolly-zoom", "grid"], default="orbit")
    p.add_argument("--frames", type=int, default=48, help="frames (grid: views, rounded to a rectangle)")
    p.add_argument("--res", type=int, default=256, help="square output resolution")
    p.add_argument("--fps", type=int, default=24)
    p.add_argument("--out", required=True, help="FILE.mp4, FILE.gif, or a folder for PNG frames")
    p.add_argument("--no-depth", action="store_true", help="skip the depth video (default: OUT_depth.*)")
    p.add_argument("--chunk", type=int, default=1 << 14, help="rays per rendering chunk (memory)")
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


def render_path(portrait, cams, chunk=1 << 14, progress=True, desc="render"):
    """-> (rgb frames uint8, depth frames uint8)"""
    import numpy as np
    from tqdm import tqdm

    from ..render.video import depth_to_rgb

    rgbs, depths = [], []
    bar = tqdm(total=sum(c.width * c.height for c in cams), desc=desc, unit="ray", unit_scale=True, disable=not progress)
    for cam in cams:
        out = portrait.render(cam, chunk=chunk, progress=bar)
        rgbs.append((out["rgb"].numpy() * 255 + 0.5).astype(np.uint8))
        depths.append(depth_to_rgb(out["depth"].numpy(), out["opacity"].numpy()))
    bar.close()
    return rgbs, depths


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

    for name, v, lo in (("--fps", args.fps, 1), ("--chunk", args.chunk, 1)):
        if v < lo:
            raise ValueError(f"argument {name}: must be >= {lo}, got {v}")
    if args.frames > 10000:
        raise ValueError(f"argument --frames: must be <= 10000, got {args.frames}")
    kind = "file" if Path(args.out).suffix else "dir"
    check_output(args.out, "--out", [args.model], kind=kind)
    if not args.no_depth:
        check_output(depth_path(args.out), "--out (its depth video)", [args.model], kind=kind)
    cams = cameras_for(args.path, args.frames, args.res)
    portrait = load(args.model)
    t0 = time.perf_counter()
    rgbs, depths = render_path(portrait, cams, args.chunk, not args.quiet, desc=f"render {args.path}")
    dt = time.perf_counter() - t0
    write_video(rgbs, args.out, fps=args.fps)
    msg = f"wrote {args.out}"
    if not args.no_depth:
        write_video(depths, depth_path(args.out), fps=args.fps)
        msg += f" and {depth_path(args.out)}"
    print(f"{msg}: {len(cams)} frames at {args.res}x{args.res} in {dt:.1f} s ({len(cams) / dt:.2f} fps)")
    return 0
