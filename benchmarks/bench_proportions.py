"""How far the synthetic light stage's heads are from real ones, in numbers.

    python benchmarks/bench_proportions.py --json

Everything is measured in units of the outer-eye-corner distance (ex-ex), so the framing does
not matter:
- **2D ratios** on frontal renders (the head unposed, 256², 12 subjects per style) and on the
  real photos (aligned by `pnerf align`'s code path: MediaPipe's landmarks and person mask):
  mouth width, nose width, inner-eye distance, eyes to subnasale, eyes to mouth, eyes to chin,
  brows above the eyes, lower-jaw width, and the width of the head (with its hair) at eye height;
- **3D skull ratios** from the synthetic SDF (height of the skull above the eyes, length of the
  head), against adult anthropometric means (Farkas 1994: head height above the pupils ~11.5 cm,
  head length g-op ~19.2 cm, ex-ex ~9.0 cm, mouth ch-ch ~5.0 cm, nose al-al ~3.3 cm, en-en
  ~3.2 cm), which photos cannot give (the skull top is outside the rig's frame, hair hides it);
- **Procrustes distance** of the 24 landmarks (similarity-aligned, in ex-ex units) of each real
  photo to each style's mean synthetic layout, in 2D (frontal xy) and 3D (MediaPipe's depth is an
  estimate), beside the spread among the synthetic subjects themselves.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pnerf_fast.face import landmarks as lm  # noqa: E402

I = lm.INDEX
#: Adult means (Farkas 1994, male and female averaged), over ex-ex = 9.0 cm.
ANTHRO = {"mouth_w": 5.0 / 9.0, "nose_w": 3.3 / 9.0, "inner_eye": 3.2 / 9.0,
          "skull_above_eyes": 11.5 / 9.0, "head_length": 19.2 / 9.0}


def ratios_2d(l2: np.ndarray, alpha: np.ndarray) -> dict:
    """Frontal-view ratios from 24 landmarks [24, 2] (pixels) and a coverage mask."""
    exr, exl = l2[I["eye_right_outer"]], l2[I["eye_left_outer"]]
    iod = float(np.linalg.norm(exl - exr))
    eye_y = 0.5 * (exr[1] + exl[1])
    d = lambda a, b: float(np.linalg.norm(l2[I[a]] - l2[I[b]])) / iod  # noqa: E731
    mouth_y = 0.5 * (l2[I["mouth_right_corner"], 1] + l2[I["mouth_left_corner"], 1])
    brow_y = 0.5 * (l2[I["brow_right_mid"], 1] + l2[I["brow_left_mid"], 1])
    row = np.clip(int(round(eye_y)), 0, alpha.shape[0] - 1)
    return {"mouth_w": d("mouth_right_corner", "mouth_left_corner"), "nose_w": d("nose_right_ala", "nose_left_ala"),
            "inner_eye": d("eye_right_inner", "eye_left_inner"),
            "eyes_to_subnasale": (l2[I["subnasale"], 1] - eye_y) / iod, "eyes_to_mouth": (mouth_y - eye_y) / iod,
            "eyes_to_chin": (l2[I["chin"], 1] - eye_y) / iod, "brows_above_eyes": (eye_y - brow_y) / iod,
            "jaw_low_w": d("jaw_right_low", "jaw_left_low"),
            "head_w_at_eyes": float((alpha[row] > 0.5).sum()) / iod}


def layout(l3: np.ndarray) -> np.ndarray:
    c = l3 - l3.mean(0)
    return c / np.linalg.norm(l3[I["eye_right_outer"]] - l3[I["eye_left_outer"]])


def procrustes(a: np.ndarray, b: np.ndarray) -> float:
    """RMS residual of the best similarity taking a onto b (both centred layouts)."""
    a, b = a - a.mean(0), b - b.mean(0)
    u, s, vt = np.linalg.svd(a.T @ b)
    dd = np.ones(len(s))
    dd[-1] = np.sign(np.linalg.det(u @ vt))
    r = (u * dd) @ vt
    k = (s * dd).sum() / (a ** 2).sum()
    return float(np.sqrt(((k * a @ r - b) ** 2).sum(1).mean()))


def synthetic(style: str, n: int, res: int, seed: int) -> dict:
    from pnerf_fast.data import lightstage as ls
    from pnerf_fast.geometry import rig

    cam = rig.frontal_camera(res)
    rows, lays, skull = [], [], []
    for i in range(n):
        p = ls.subject_params(seed, i, style)
        p.pose = ls.HeadPose()  # proportions only
        geo = ls.HeadGeometry(p.shape)
        with torch.no_grad():
            (img,), lms = ls.render_subject(p, [cam], spp=1, geometry=geo)
        rows.append(ratios_2d(cam.project(lms)[0], img[..., 3]))
        lays.append(layout(lms))
        skull.append(geo.skull_proportions(lms))  # unposed: world == head space
    mean = lambda rs: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]}  # noqa: E731
    m = np.mean(lays, 0)
    return {"ratios": {**mean(rows), **mean(skull)}, "layout": m,
            "spread_3d": float(np.mean([procrustes(x, m) for x in lays])),
            "spread_2d": float(np.mean([procrustes(x[:, :2], m[:, :2]) for x in lays]))}


def real_photos(res: int) -> dict:
    from pnerf_fast.face.align import align_photo

    photos = {}
    from skimage import data

    photos["astronaut"] = data.astronaut()
    try:
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            from PIL import Image

            photos["grace_hopper"] = np.asarray(Image.open(f).convert("RGB"))
    except Exception:  # matplotlib's sample data is optional
        pass
    out = {}
    for name, img in photos.items():
        a = align_photo(img, res=res)
        out[name] = {"ratios": ratios_2d(a.landmarks_2d, a.alpha if a.alpha is not None else np.ones((res, res))),
                     "layout": layout(a.landmarks_world)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    ap.add_argument("--subjects", type=int, default=12, help="synthetic subjects per style (default 12)")
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.subjects < 1:
        raise SystemExit(f"error: argument --subjects: must be >= 1, got {args.subjects}")
    if args.res < 32:
        raise SystemExit(f"error: argument --res: must be >= 32, got {args.res}")
    torch.set_num_threads(args.threads)
    real = real_photos(args.res)
    obj = {"units": "outer-eye-corner distance (ex-ex)", "anthropometric": ANTHRO, "real": {}, "synthetic": {}}
    for name, r in real.items():
        obj["real"][name] = r["ratios"]
    for style in ("classic", "portrait"):
        s = synthetic(style, args.subjects, args.res, args.seed)
        obj["synthetic"][style] = {
            "ratios": s["ratios"], "spread_procrustes_3d": s["spread_3d"], "spread_procrustes_2d": s["spread_2d"],
            "procrustes_to_real_3d": {n: procrustes(r["layout"], s["layout"]) for n, r in real.items()},
            "procrustes_to_real_2d": {n: procrustes(r["layout"][:, :2], s["layout"][:, :2]) for n, r in real.items()},
        }
    print(json.dumps(obj, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
