"""The domain gap, as a table: a prior trained on the classic light stage against one
trained on the portrait light stage, both scored on held-out portrait subjects and on the
real photos.

    python benchmarks/bench_fidelity.py --style portrait --init PRIOR_A --out A_synth.json ...
    python benchmarks/bench_photos.py --init PRIOR_A --out DIR_A ...            # (and B)
    python benchmarks/make_domain_gap.py --row "classic prior" A_synth.json DIR_A/photos.json \\
        --row "portrait prior" B_synth.json DIR_B/photos.json --out results/domain_gap

Writes OUT.md (the table) and OUT.json (the numbers it was made from).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _read(path: str, what: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"error: {what} file {p} does not exist")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {what} file {p} is not JSON ({e})") from None


def _f(v, nd=2):
    return "–" if v is None else f"{v:.{nd}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--row", nargs=3, action="append", default=[], metavar=("NAME", "SYNTH_JSON", "PHOTOS_JSON"),
                    help="one prior: its name, its bench_fidelity --out JSON and its bench_photos photos.json")
    ap.add_argument("--keep", default=None, metavar="OUT_JSON",
                    help="start from the rows of an earlier OUT.json (their runs are not repeated); --row adds rows")
    ap.add_argument("--out", required=True, help="output path without suffix (writes .md and .json)")
    args = ap.parse_args(argv)
    rows = list(_read(args.keep, "--keep")["rows"]) if args.keep else []
    if not rows and not args.row:
        ap.error("give at least one --row (or --keep an earlier table)")
    for name, synth, photos in args.row:
        s, p = _read(synth, "bench_fidelity"), _read(photos, "bench_photos")
        pm = p["mean"]
        rows.append({
            "prior": name, "init": s.get("init"), "data": s.get("data"),
            "input_fg": s["input_view_psnr_fg"], "novel": s["novel_psnr"], "novel_fg": s["novel_psnr_fg"],
            "ssim": s["novel_ssim"], "lpips": s.get("novel_lpips"),
            "bands": {b: v["psnr"] for b, v in s["by_angle"].items()},
            "oracle": s.get("oracle_psnr"), "finetune_s": s["finetune_s"],
            "photo_input_fg": pm["input_psnr_fg"], "photo_detect": pm["detect_rate"], "photo_nme": pm["nme"],
            "photos": sorted(p["photos"]),
        })
    bands = list(rows[0]["bands"])
    lines = [
        "# The domain gap: which light stage the prior learned from",
        "",
        f"Synthetic: {rows[0]['data']}; input the frontal view, targets the 24 others. "
        f"Real photos: {', '.join(rows[0]['photos'])} (no ground truth: input view fg PSNR, and MediaPipe's "
        "landmarks on renders at yaw ±10/20/30° against the photo's own 3D landmarks, NME over the outer-eye distance).",
        "",
        "| prior | input fg | novel | novel fg | SSIM | LPIPS | " + " | ".join(f"{b}°" for b in bands)
        + " | photo input fg | photo detect ±10/20/30° | photo NME ±10/20/30° |",
        "|---|" + "---|" * (5 + len(bands) + 3),
    ]
    for r in rows:
        det = " / ".join(f"{100 * r['photo_detect'][k]:.0f}%" for k in sorted(r["photo_detect"], key=int))
        nme = " / ".join(f"{r['photo_nme'][k]:.3f}" for k in sorted(r["photo_nme"], key=int))
        lines.append(f"| {r['prior']} | {_f(r['input_fg'])} | {_f(r['novel'])} | {_f(r['novel_fg'])} | {_f(r['ssim'], 3)} | "
                     f"{_f(r['lpips'], 3)} | " + " | ".join(_f(r["bands"][b]) for b in bands)
                     + f" | {_f(r['photo_input_fg'])} | {det} | {nme} |")
    # The oracle is the prior's field (its box and encoding) fitted to all 25 views: one per row
    # that measured it, since priors with other field boxes hold different amounts.
    orc = [f"{r['prior']}: {r['oracle']:.2f} dB" for r in rows if r["oracle"] is not None]
    if orc:
        lines += ["", "Multi-view oracle on the same synthetic subjects (the prior's field fitted to all 25 views): "
                  + "; ".join(orc) + "."]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from pnerf_fast._io import write_text_atomic

    write_text_atomic(out.with_suffix(".md"), "\n".join(lines) + "\n")
    write_text_atomic(out.with_suffix(".json"), json.dumps({"rows": rows}, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
