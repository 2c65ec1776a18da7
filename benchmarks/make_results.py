"""Paper-style ablation tables on the synthetic light stage, by one command:

    python benchmarks/make_results.py --data DIR --meta P --joint P --random-from P --meta-world P --out results/

Each prior is finetuned on the frontal view of every held-out test subject and scored on
all 24 other views (`pnerf_fast.evaluate.evaluate_prior`, the same protocol as `pnerf eval`),
with the same finetune settings for every prior. Writes results/ablation.md, .json and
ablation.png, with the paper's own numbers beside ours (different data: their real light
stage vs our synthetic heads; only the ordering is comparable).
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pnerf_fast.evaluate import evaluate_prior, write_json  # noqa: E402
from pnerf_fast.train.model import PortraitModel  # noqa: E402

PAPER = {  # Gao et al. 2020, real light-stage data: PSNR, SSIM, LPIPS
    "random": (14.99, 0.5763, 0.491),
    "joint": (22.87, 0.7824, 0.215),
    "meta": (23.70, 0.8051, 0.178),
    "ours (paper, full)": (23.92, 0.7688, 0.161),
}


def refreshed(path: str, out_dir: Path, name: str) -> str:
    """Re-mark the prior's grid from its own density with the current threshold rule, so
    every prior is rendered the same way."""
    m = PortraitModel.load(path)
    m.grid.mark_from_density(m.density_fn())
    p = out_dir / f"_{name}.pt"
    m.save(p)
    return str(p)


def random_prior(like: str, out_dir: Path) -> str:
    """Fresh weights with the same config, grid and mean face as ``like``."""
    m = PortraitModel.load(like)
    fresh = PortraitModel(m.cfg, m.mean_face)
    fresh.grid.load_state_dict(m.grid.state_dict())
    p = out_dir / "_random.pt"
    fresh.save(p)
    return str(p)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--meta", required=True, help="meta prior, canonical coordinates")
    ap.add_argument("--joint", default=None, help="joint prior, canonical coordinates")
    ap.add_argument("--meta-world", default=None, help="meta prior, world coordinates")
    ap.add_argument("--paper", default=None,
                    help="meta prior of the paper-faithful field (paper.yaml), finetuned for the same seconds "
                         "as the fast meta prior took")
    ap.add_argument("--reuse", action="store_true",
                    help="keep rows already in OUT/ablation.json for the same prior file (adds new rows only)")
    ap.add_argument("--steps", type=int, default=None, help="finetune steps (default: each prior's)")
    ap.add_argument("--max-subjects", type=int, default=None)
    ap.add_argument("--out", default="results")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "_priors"
    tmp.mkdir(exist_ok=True)

    rows = {}
    old = {}
    if args.reuse and (out / "ablation.json").exists():
        old = json.loads((out / "ablation.json").read_text()).get("details", {})
    meta_prepared = functools.lru_cache(None)(lambda: refreshed(args.meta, tmp, "meta"))
    # Row -> (the prior file it comes from, how to prepare it for evaluation). Preparing
    # re-marks a grid from the field's density, so it runs only for rows not reused.
    specs = {"meta": (args.meta, meta_prepared),
             "joint": (args.joint, lambda: refreshed(args.joint, tmp, "joint")),
             "random": (args.meta, lambda: random_prior(meta_prepared(), tmp)),
             "meta (world coords)": (args.meta_world, lambda: refreshed(args.meta_world, tmp, "meta_world")),
             "meta, paper field": (args.paper, lambda: refreshed(args.paper, tmp, "paper"))}
    for name, (src, prepare) in specs.items():
        if src is None:
            continue
        source = str(Path(src).resolve())
        if old.get(name, {}).get("source") == source:
            rows[name] = old[name]
            print(f"{name:>20}: reused from {out / 'ablation.json'}")
            continue
        p = prepare()
        if name == "meta, paper field":
            # Equal finetune time: the seconds the fast meta prior's finetune took.
            secs = rows["meta"]["mean"]["finetune_s"]
            r = evaluate_prior(args.data, p, "test", steps=100000, seconds=secs, max_subjects=args.max_subjects,
                               progress=True)
        else:
            r = evaluate_prior(args.data, p, "test", steps=args.steps, max_subjects=args.max_subjects, progress=True)
        r["source"] = source
        rows[name] = r
        m = r["mean"]
        print(f"{name:>20}: PSNR {m['psnr']:.2f}  SSIM {m['ssim']:.4f}  LPIPS {m['lpips']:.3f}  "
              f"PSNR_fg {m['psnr_fg']:.2f}  finetune {m['finetune_s']:.1f} s", flush=True)
    for p in tmp.glob("*.pt"):
        p.unlink()
    tmp.rmdir()

    summary = {k: v["mean"] for k, v in rows.items()}
    write_json({"summary": summary, "paper": PAPER, "details": rows}, out / "ablation.json")
    lines = ["# Ablation on the synthetic light stage", "",
             "Held-out test subjects; input: the frontal view only; targets: the 24 other views. "
             "Whole image on a white background (psnr, ssim, lpips: AlexNet) and foreground only (psnr_fg, ssim_fg). "
             "Same finetune for every prior (the prior's SGD settings). The paper's numbers are on their real "
             "light-stage data, so only the ordering is comparable.", "",
             "| initialization | coordinates | PSNR ↑ | SSIM ↑ | LPIPS ↓ | PSNR fg ↑ | SSIM fg ↑ | finetune s | paper PSNR / SSIM / LPIPS |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, m in summary.items():
        coords = "world" if "world" in name else "canonical"
        init = name.replace(" (world coords)", "")
        if init == "meta, paper field":
            init = "meta, paper field (8x256 MLP), equal finetune time"
        pp = PAPER.get(init)
        paper = f"{pp[0]} / {pp[1]} / {pp[2]}" if pp and coords == "canonical" else "-"
        lines.append(f"| {init} | {coords} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['lpips']:.3f} | "
                     f"{m['psnr_fg']:.2f} | {m['ssim_fg']:.4f} | {m['finetune_s']:.1f} | {paper} |")
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    try:
        _plot(summary, out / "ablation.png")
    except Exception as e:  # plotting is a convenience
        print(f"plot skipped: {e}", file=sys.stderr)
    print(f"wrote {out}/ablation.md, ablation.json, ablation.png")
    return 0


def _plot(summary, path):
    """A bar chart drawn with numpy + Pillow (no matplotlib dependency)."""
    from PIL import Image, ImageDraw

    names = list(summary)
    metrics = [("psnr", 0, 30, "PSNR (higher is better)"), ("ssim", 0, 1, "SSIM (higher is better)"),
               ("lpips", 0, 0.6, "LPIPS (lower is better)")]
    panel = 40 + 45 * len(names)
    W, H = panel * len(metrics), 260 + 16 * len(names)
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    colors = [(66, 133, 244), (219, 68, 55), (244, 160, 0), (15, 157, 88), (150, 80, 190)]
    for j, (key, lo, hi, title) in enumerate(metrics):
        hi = max(hi, 1.1 * max(summary[n][key] for n in names))  # no bar runs off the panel
        x0 = j * panel + 20
        d.text((x0, 5), title, fill="black")
        for i, n in enumerate(names):
            v = summary[n][key]
            h = int(180 * (v - lo) / (hi - lo))
            bx = x0 + 10 + i * 45
            d.rectangle([bx, 220 - h, bx + 35, 220], fill=colors[i % len(colors)])
            d.text((bx, 222 - h - 14), f"{v:.2f}" if key == "psnr" else f"{v:.3f}", fill="black")
    for i, n in enumerate(names):
        y = 240 + 16 * i
        d.rectangle([10, y, 20, y + 10], fill=colors[i % len(colors)])
        d.text((24, y - 2), n, fill="black")
    img.save(path)


if __name__ == "__main__":
    sys.exit(main())
