"""What a latent prior can represent, against what one view makes of it, on held-out subjects.

    python benchmarks/bench_prior_span.py --data DIR --style portrait --split test --init PRIOR --json --out X.json

For each held-out subject of bench_fidelity's light stage, fits that differ in what they
see and what they may change, all scored on the subject's novel views (the views other than
the input, as in bench_fidelity; PSNR whole image and foreground, SSIM, the outline's IoU,
angle bands) and on its input view (foreground PSNR):

- ``single_view``: the prior's default finetune on the input view (the shipped method);
- ``front_code``: its code stage alone (the code fitted to the input view, no weight changed);
- ``code``: the code fitted to *all* views (``fit_oracle(train="code")``): the best head
  that the prior's code can describe, whatever the view;
- ``code_volume``: the code, then the code and its feature volume, fitted to all views
  (``fit_oracle(train="code+volume")``, latent priors with a feature volume only): how much a
  per-subject coarse volume adds to the shared weights;
- with ``--scratch-seconds S``: bench_fidelity's multi-view oracle (the same field from
  scratch, all views, S seconds).

A single-view method whose far side comes from the prior's code cannot be expected above
the ``code`` row; the rows above it say what a richer per-subject representation would buy.
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

from bench_fidelity import ensure_lightstage  # noqa: E402
from bench_twins import mean_nested  # noqa: E402

from pnerf_fast.data.format import load_dataset  # noqa: E402
from pnerf_fast.data.lightstage import STYLES  # noqa: E402
from pnerf_fast.evaluate import fit_oracle, score_subject, write_json  # noqa: E402
from pnerf_fast.train.finetune import finetune, prior_path  # noqa: E402
from pnerf_fast.train.model import PortraitModel  # noqa: E402

ROWS = ("single_view", "front_code", "code", "code_volume", "scratch")
KEYS = ("psnr", "psnr_fg", "ssim", "lpips", "silhouette_iou")


def _score(pf, subj, lpips: bool) -> dict:
    m = score_subject(pf, subj, lpips=lpips)
    inp = score_subject(pf, subj, views=[subj.frontal_index], lpips=False)
    out = {k: m[k] for k in KEYS if k in m}
    out["input_psnr_fg"] = inp.get("psnr_fg", inp["psnr"])
    out["by_angle"] = {b: v["psnr"] for b, v in m["by_angle"].items()}
    return out


def span_subject(subj, like: PortraitModel, steps: int = 300, rays: int = 1024, scratch_seconds: float = 0.0,
                 lpips: bool = False, rows=ROWS, seed: int = 0) -> dict:
    """The rows of one subject (see the module docstring); ``like``: a latent prior, left as it
    is (every fit works on its own copy)."""
    res = {}
    for row in rows:
        t0 = time.perf_counter()
        if row == "single_view":
            pf = finetune(subj, init=like, seed=seed, progress=False)
        elif row == "front_code":
            pf = finetune(subj, init=like, steps=0, seed=seed, progress=False)
        elif row == "code":
            pf = fit_oracle(subj, like, steps=steps, start="prior", train="code", rays_per_step=rays, seed=seed)
        elif row == "code_volume":
            if not like.field.volume_params():
                continue
            pf = fit_oracle(subj, like, steps=2 * steps, start="prior", train="code+volume", rays_per_step=rays,
                            seed=seed)
        elif row == "scratch":
            if not scratch_seconds:
                continue
            pf = fit_oracle(subj, like, seconds=scratch_seconds, seed=seed)
        else:
            raise ValueError(f"unknown row {row!r}")
        fit_s = time.perf_counter() - t0
        res[row] = _score(pf, subj, lpips) | {"fit_s": fit_s}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/bench", help="where bench_fidelity's light stage is (rendered if absent)")
    ap.add_argument("--style", default="portrait", help=f"light stage style: {', '.join(STYLES)} (default portrait)")
    ap.add_argument("--split", default="test", choices=("val", "test"))
    ap.add_argument("--init", required=True, help="a latent prior: a path, or a shipped prior's name (latent, portrait)")
    ap.add_argument("--steps", type=int, default=300, help="the code oracle's steps (code_volume: twice as many)")
    ap.add_argument("--rays", type=int, default=1024, help="rays per oracle step")
    ap.add_argument("--rows", nargs="+", default=list(ROWS), help=f"which fits (default all: {' '.join(ROWS)})")
    ap.add_argument("--scratch-seconds", type=float, default=0.0, help="also the multi-view oracle from scratch")
    ap.add_argument("--max-subjects", type=int, default=None)
    ap.add_argument("--lpips", action="store_true", help="also LPIPS (slower)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.style not in STYLES:
        ap.error(f"--style must be one of {', '.join(STYLES)}, got {args.style!r}")
    bad = [r for r in args.rows if r not in ROWS]
    if bad:
        ap.error(f"--rows: {bad[0]!r} is not one of {', '.join(ROWS)}")
    if args.steps < 1 or args.rays < 1:
        ap.error("--steps and --rays must be >= 1")
    if args.scratch_seconds < 0 or not np.isfinite(args.scratch_seconds):
        ap.error(f"--scratch-seconds must be a finite number >= 0, got {args.scratch_seconds}")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.init = str(prior_path(args.init))
    try:
        like = PortraitModel.load(args.init)
    except (OSError, ValueError) as e:
        ap.error(f"--init: {e}")
    if not getattr(like.field, "latent_dim", 0):
        ap.error(f"--init: {args.init} is not a latent prior (its field has no code)")
    root = ensure_lightstage(Path(args.data), args.split, progress=not args.json, style=args.style)
    ds = load_dataset(root)
    names = ds.subjects(args.split)[: args.max_subjects or None]
    from tqdm import tqdm

    per = {}
    for name in tqdm(names, desc="prior span", unit="subject", disable=args.json):
        per[name] = span_subject(ds.subject(name), like, args.steps, args.rays, args.scratch_seconds,
                                 args.lpips, args.rows)
    mean = {row: mean_nested([per[n][row] for n in per if row in per[n]])
            for row in ROWS if any(row in p for p in per.values())}
    res = {"init": str(args.init), "style": args.style, "split": args.split, "steps": args.steps, "rays": args.rays,
           "threads": torch.get_num_threads(), "subjects": list(per), "mean": mean, "per_subject": per}
    if args.out:
        write_json(res, args.out)
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print(f"{'fit':<12} {'novel':>7} {'fg':>7} {'SSIM':>6} {'IoU':>6} {'input fg':>9} {'s':>6}")
        for row, m in mean.items():
            print(f"{row:<12} {m['psnr']:7.2f} {m['psnr_fg']:7.2f} {m['ssim']:6.3f} {m.get('silhouette_iou', float('nan')):6.3f} "
                  f"{m['input_psnr_fg']:9.2f} {m['fit_s']:6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
