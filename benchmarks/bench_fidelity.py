"""Single-image fidelity, end to end: does the finetuned portrait reproduce its input, how
good are its novel views, and how far is it from the multi-view oracle?

    python benchmarks/bench_fidelity.py --json            # one JSON object on stdout
    python benchmarks/bench_fidelity.py --out results/fidelity.json

1. Renders (once, deterministically, into --data) the held-out test split of
   `pnerf lightstage --subjects 80 --seed 0`: subject_072 ... subject_079. The shipped
   prior was trained on seed 1, so none of these heads was seen in pretraining.
2. For each: the default finetune of --init (the shipped prior) on the frontal view,
   then the input view re-rendered and the 24 novel views scored (PSNR / SSIM / LPIPS,
   whole image and foreground, by angle band), and the multi-view oracle (the same
   field fitted from a random initialisation to all 25 views for --oracle-seconds, with
   a grid that holds their visual hull) scored on the same views: what the field can
   hold. --oracle-start prior finetunes the prior on all views instead.
3. The astronaut photo (scikit-image, offline): aligned, finetuned at the default photo
   resolution, and its input view scored over the person mask that `pnerf align` writes.

The printed object holds input_view_psnr_fg, novel_psnr, novel_psnr_fg, novel_ssim,
novel_lpips, the novel views' outline (novel_silhouette_iou, novel_silhouette_err_share: the share
of their squared error where the rendered and true silhouettes disagree, novel_psnr_silhouettes_agree:
PSNR over the other pixels), by_angle, oracle_psnr, oracle_gap_db, finetune_s and
photo_input_psnr_fg, plus per-subject rows. About 15 minutes on 2 CPU cores. --pictures writes the renders.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pnerf_fast.evaluate import SILHOUETTE_KEYS, evaluate_prior, write_json  # noqa: E402

LS_SUBJECTS, LS_SEED, LS_RES = 80, 0, 128
DEFAULT_STYLE = "classic"  # the light stage the shipped prior was trained on


def ensure_lightstage(root: Path, split: str = "test", progress: bool = True, style: str = DEFAULT_STYLE) -> Path:
    """The light stage's ``split`` subjects of (80 subjects, seed 0, ``style``), rendered once."""
    from pnerf_fast.data.lightstage import _split_counts, generate_lightstage

    n_train, n_val, n_test = _split_counts(LS_SUBJECTS, (0.8, 0.1, 0.1))
    first = {"train": 0, "val": n_train, "test": n_train + n_val}[split]
    count = {"train": n_train, "val": n_val, "test": n_test}[split]
    idx = list(range(first, first + count))
    root = root / (f"ls{LS_SUBJECTS}_seed{LS_SEED}_{split}" if style == "classic" else f"ls{LS_SUBJECTS}_seed{LS_SEED}_{style}_{split}")
    if not all((root / f"subject_{i:03d}" / "transforms.json").exists() for i in idx):
        generate_lightstage(root, LS_SUBJECTS, res=LS_RES, seed=LS_SEED, only=idx, progress=progress,
                            contact_sheet_path=None, style=style)
    return root


def view_strip(subj, pf, m) -> np.ndarray:
    """One row: input | its re-render | a middle novel view (gt | ours) | the widest (gt | ours)."""
    from pnerf_fast.render.video import make_grid_image

    gt = subj.composite(1.0)
    order = np.argsort(m["angles"])
    views = [subj.frontal_index, m["views"][order[len(order) // 2]], m["views"][order[-1]]]
    tiles = []
    for v in views:
        tiles += [gt[v], pf.render(subj.cameras[v])["rgb"].cpu().numpy()]
    return make_grid_image(tiles, ncols=len(tiles), pad=2)


def photo_input_psnr(init, seconds=None, progress: bool = True, pictures: list | None = None) -> dict:
    """Finetune on the astronaut; PSNR of its input view over the person mask."""
    from skimage.data import astronaut

    from pnerf_fast.metrics import psnr
    from pnerf_fast.train.finetune import as_subject, finetune

    subj = as_subject(astronaut())
    t0 = time.perf_counter()
    pf = finetune(subj, init=init, seconds=seconds, progress=progress)
    ft_s = time.perf_counter() - t0
    out = pf.render(subj.cameras[0])["rgb"]
    gt = torch.as_tensor(subj.composite(1.0)[0])
    mask = torch.as_tensor(subj.masks[0] > 0.5)
    if pictures is not None:
        from pnerf_fast.render import paths
        from pnerf_fast.render.video import make_grid_image

        res = subj.cameras[0].width
        sides = [pf.render(paths.camera_on_sphere(y, 0.0, res))["rgb"].cpu().numpy() for y in (-30.0, 30.0)]
        tiles = [gt.numpy(), out.numpy()] + sides
        strip = make_grid_image(tiles, ncols=len(tiles), pad=2)
        h = pictures[0].shape[0] if pictures else strip.shape[0]  # the synthetic rows' height
        if strip.shape[0] != h:
            from PIL import Image

            strip = np.asarray(Image.fromarray(strip).resize((round(strip.shape[1] * h / strip.shape[0]), h)))
        pictures.append(strip)
    return {"psnr_fg": float(psnr(out, gt, mask)), "psnr": float(psnr(out, gt)), "finetune_s": ft_s,
            "res": int(subj.cameras[0].width), "steps": pf.info["steps"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    ap.add_argument("--out", default=None, help="also write the object (with per-view detail) here")
    ap.add_argument("--init", default=None, help="prior checkpoint or shipped name (default: the shipped prior for the data, latent or for --style portrait portrait; the astronaut gets the photo prior, portrait)")
    ap.add_argument("--data", default="data/bench_fidelity", help="where the light-stage subjects are rendered")
    ap.add_argument("--split", default="test", choices=["val", "test"], help="val for tuning, test to report")
    ap.add_argument("--style", default=DEFAULT_STYLE, choices=["portrait", "classic"],
                    help=f"which light stage to render the subjects from (default {DEFAULT_STYLE}: the shipped prior's)")
    ap.add_argument("--oracle-seconds", type=float, default=60.0, help="oracle fit per subject (0: skip)")
    ap.add_argument("--oracle-start", choices=["scratch", "prior"], default="scratch",
                    help="the oracle: a random field fitted to all views (default), or the prior finetuned on them")
    ap.add_argument("--max-subjects", type=int, default=None)
    ap.add_argument("--no-photo", action="store_true", help="skip the astronaut")
    ap.add_argument("--pictures", default=None,
                    help="write a PNG here: per subject (first 4) the input, its re-render, and two novel views "
                         "(ground truth | ours), the astronaut's input, re-render and two side views below")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from pnerf_fast.train.finetune import PHOTO_PRIOR, dataset_prior_path, prior_path

    progress = not args.json
    t0 = time.perf_counter()
    root = ensure_lightstage(Path(args.data), args.split, progress, args.style)
    # the shipped prior for the data (the portrait light stage's for --style portrait) and the photo's
    init = str(dataset_prior_path(args.init, root, args.split))
    photo_init = str(prior_path(args.init or PHOTO_PRIOR))
    rows = []

    def keep_pictures(subj, pf, m):
        if args.pictures and len(rows) < 4:
            rows.append(view_strip(subj, pf, m))

    res = evaluate_prior(root, init, args.split, max_subjects=args.max_subjects, progress=progress,
                         oracle_seconds=args.oracle_seconds or None, on_subject=keep_pictures,
                         oracle_start=args.oracle_start)
    m = res["mean"]
    obj = {
        "init": str(init),
        "photo_init": None if args.no_photo else photo_init,
        "data": f"pnerf lightstage --subjects {LS_SUBJECTS} --seed {LS_SEED} --res {LS_RES} --style {args.style}, {args.split} split "
                f"({len(res['subjects'])} subjects)",
        "input_view_psnr_fg": m["input"]["psnr_fg"],
        "input_view_psnr": m["input"]["psnr"],
        "novel_psnr": m["psnr"],
        "novel_psnr_fg": m["psnr_fg"],
        "novel_ssim": m["ssim"],
        "novel_lpips": m.get("lpips"),
        # how much of it is the outline (evaluate.SILHOUETTE_KEYS; metrics.silhouette_scores)
        **{f"novel_{k}": m.get(k) for k in SILHOUETTE_KEYS},
        "by_angle": {b: {k: v[k] for k in ("psnr", "psnr_fg", "ssim", "lpips", "silhouette_iou", "n_views") if k in v}
                     for b, v in m["by_angle"].items()},
        "oracle_psnr": m.get("oracle", {}).get("psnr"),
        "oracle_gap_db": m.get("oracle_gap_db"),
        "oracle_start": args.oracle_start if args.oracle_seconds else None,
        "finetune_s": m["finetune_s"],
        "subjects": [{"subject": r["subject"], "input_psnr_fg": r["input"]["psnr_fg"], "novel_psnr": r["psnr"],
                      "novel_psnr_fg": r["psnr_fg"], "novel_silhouette_iou": r.get("silhouette_iou"),
                      "novel_silhouette_err_share": r.get("silhouette_err_share"),
                      "oracle_psnr": r.get("oracle", {}).get("psnr"),
                      "finetune_s": r["finetune_s"]} for r in res["subjects"]],
    }
    if not args.no_photo:
        ph = photo_input_psnr(photo_init, progress=progress, pictures=rows if args.pictures else None)
        obj["photo_input_psnr_fg"] = ph["psnr_fg"]
        obj["photo"] = ph
    if args.pictures and rows:
        from pnerf_fast.render.video import save_png

        w = max(r.shape[1] for r in rows)
        rows = [np.pad(r, ((0, 0), (0, w - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
        save_png(args.pictures, np.concatenate(rows, 0))
    obj["bench_s"] = time.perf_counter() - t0
    obj["threads"] = torch.get_num_threads()
    if args.out:
        write_json({**obj, "detail": res}, args.out)
    print(json.dumps(obj, indent=None if args.json else 2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
