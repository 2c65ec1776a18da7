"""pnerf demo: the whole method on a fresh machine, in a few minutes on 2 CPU cores.

1. a held-out synthetic light-stage subject that ships with the package: finetune the
   shipped prior on its frontal view only, score the input view re-rendered and the 24
   other views against ground truth (PSNR, SSIM, LPIPS), render an orbit and a dolly zoom;
2. the astronaut portrait that scikit-image ships (a real photo): align it offline
   (MediaPipe face mesh + person mask), finetune, score the input view re-rendered over
   the person mask, render an orbit and a dolly zoom.

Each gets a picture of its input, the re-render of the input, and side views
(``synthetic_views.png``: with the ground truth of each side view; ``photo_views.png``).
"""
from ._device_arg import add_device_argument, device_from_args

NAME = "demo"
HELP = "Finetune the shipped prior on a held-out synthetic subject and on a real photo; render videos; print metrics."


def add_arguments(p):
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--seconds", type=float, default=None, help="finetune time budget per subject")
    p.add_argument("--steps", type=int, default=None, help="finetune steps (default: the prior's)")
    p.add_argument("--frames", type=int, default=24, help="frames per video")
    p.add_argument("--res", type=int, default=128, help="video resolution")
    p.add_argument("--photo", default=None, help="use this photo instead of the astronaut")
    p.add_argument("--no-lpips", action="store_true")
    add_device_argument(p)
    p.add_argument("--quiet", action="store_true")


def _strip(frames, n=6):
    import numpy as np

    from ..render.video import make_grid_image

    idx = np.linspace(0, len(frames) - 1, n).round().astype(int)
    return make_grid_image([frames[i] for i in idx], ncols=n, pad=2)


def _videos(portrait, name, out, args, log):
    from ..render.video import save_png, write_video
    from .render import cameras_for, depth_path, render_path

    for path in ("orbit", "dolly-zoom"):
        cams = cameras_for(path, args.frames, args.res)
        rgbs, depths = render_path(portrait, cams, progress=not args.quiet, desc=f"{name}: {path}")
        f = out / f"{name}_{path}.mp4"
        write_video(rgbs, f, fps=16)
        write_video(depths, depth_path(str(f)), fps=16)
        save_png(out / f"{name}_{path}_frames.png", _strip(rgbs))
        save_png(out / f"{name}_{path}_depth_frames.png", _strip(depths))
        log(f"  {f} (+ depth video and frame strips)")


def run(args):
    import time
    from pathlib import Path

    import numpy as np
    import torch

    from ..api import finetune, load_prior
    from ..data.format import load_subject
    from ..evaluate import score_subject, write_json
    from ..metrics import psnr
    from ..render import paths
    from ..render.video import make_grid_image, save_png
    from ..train.finetune import as_subject, default_prior_path

    device = device_from_args(args)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    log = print
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    assets = Path(__file__).resolve().parents[1] / "assets"
    t_all = time.perf_counter()
    prior = load_prior(device=device)
    log(f"prior for the light-stage subject: {default_prior_path()} ({prior.cfg.method}, {prior.cfg.coordinates} coordinates)")
    report = {}

    # 1. Held-out synthetic subject with ground truth.
    subj = load_subject(assets / "demo_subject")
    log(f"[1/2] synthetic subject {subj.name}: finetuning on its frontal view only")
    t0 = time.perf_counter()
    pf = finetune(subj, init=prior, steps=args.steps, seconds=args.seconds, progress=not args.quiet, device=device)
    ft = time.perf_counter() - t0
    from tqdm import tqdm

    bar = tqdm(total=len(subj.query_indices()), desc="scoring novel views", unit="view", disable=args.quiet)
    m = score_subject(pf, subj, lpips=not args.no_lpips, progress=bar)
    bar.close()
    inp = score_subject(pf, subj, views=[subj.frontal_index], lpips=False)
    keys = [k for k in ("psnr", "ssim", "lpips", "psnr_fg", "ssim_fg") if k in m]
    log(f"  finetune: {pf.info['steps']} steps in {ft:.1f} s")
    log(f"  input view, re-rendered: PSNR {inp['psnr']:.2f}, PSNR_FG {inp['psnr_fg']:.2f}")
    log("  novel views (24, never seen): " + ", ".join(f"{k.upper()} {m[k]:.4f}" for k in keys))
    log("  by angle from the input camera: " + ", ".join(f"{b}° {v['psnr']:.2f} dB" for b, v in m["by_angle"].items()))
    report["synthetic"] = {"subject": subj.name, "finetune_s": ft, "input_psnr": inp["psnr"],
                           "input_psnr_fg": inp["psnr_fg"], "by_angle": m["by_angle"], **{k: m[k] for k in keys}}
    gt = subj.composite(1.0)
    q = subj.query_indices()
    order = np.argsort(m["angles"])
    sides = [q[order[len(order) // 2]], q[order[-1]]]  # a middle and the widest angle
    tiles = [gt[subj.frontal_index], pf.render(subj.cameras[subj.frontal_index])["rgb"].cpu().numpy()]
    for v in sides:
        tiles += [gt[v], pf.render(subj.cameras[v])["rgb"].cpu().numpy()]
    save_png(out / "synthetic_views.png", make_grid_image(tiles, ncols=len(tiles), pad=2))
    _videos(pf, "synthetic", out, args, log)

    # 2. A real photo.
    if args.photo:
        photo = args.photo
    else:
        from skimage import data as skdata

        photo = np.ascontiguousarray(skdata.astronaut())
    log("[2/2] photo: aligning (offline MediaPipe), finetuning on it")
    t0 = time.perf_counter()
    psubj = as_subject(photo)
    log(f"  prior for photos: {default_prior_path(psubj)}")
    pf2 = finetune(psubj, steps=args.steps, seconds=args.seconds, progress=not args.quiet, device=device)
    ft2 = time.perf_counter() - t0
    front2 = pf2.render(psubj.cameras[0])["rgb"].cpu()
    gt2 = torch.as_tensor(psubj.composite(1.0)[0])
    p_fg = psnr(front2, gt2, torch.as_tensor(psubj.masks[0] > 0.5)) if psubj.masks is not None else float("nan")
    log(f"  align + finetune: {ft2:.1f} s ({psubj.cameras[0].width}x{psubj.cameras[0].height})")
    log(f"  input view, re-rendered: PSNR over the person mask {p_fg:.2f} dB")
    report["photo"] = {"finetune_s": ft2, "input_psnr_fg": p_fg}
    res = psubj.cameras[0].width
    side_cams = [paths.camera_on_sphere(y, 0.0, res) for y in (-30.0, 30.0)]
    tiles = [gt2.numpy(), front2.numpy()] + [pf2.render(c)["rgb"].cpu().numpy() for c in side_cams]
    save_png(out / "photo_views.png", make_grid_image(tiles, ncols=len(tiles), pad=2))
    _videos(pf2, "photo", out, args, log)
    pf2.save(out / "photo_portrait.pt")
    report["total_s"] = time.perf_counter() - t_all
    write_json(report, out / "demo.json")
    log(f"done in {report['total_s']:.0f} s; outputs in {out}/ (render more: pnerf render {out}/photo_portrait.pt --path dolly-zoom --out dz.mp4)")
    return 0
