"""End to end on one device: finetune the shipped demo subject, then render it.

    python benchmarks/bench_e2e.py --device cuda --json     # what scripts/gpu_check.sh runs
    python benchmarks/bench_e2e.py --device cpu --res 32 --steps 2 --render-res 32 --frames 1   # a smoke run

Reports the finetune's wall time (``--steps`` all-weight steps at ``--res``², the prior's
other settings), the render time of ``--frames`` views at ``--render-res``² (the first one
separately: it includes warm-up) and frames per second, and on which device the field's
tensors and the rendered image actually were (finetune and render take ``device=``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pnerf_fast.geometry.rig import camera_at  # noqa: E402
from pnerf_fast.train.finetune import finetune  # noqa: E402

DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pnerf_fast", "assets", "demo_subject")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def run(device: str = "cpu", res: int = 128, steps: int = 32, render_res: int = 512, frames: int = 5,
        code_steps: int | None = None) -> dict:
    dev = torch.device(device)
    t0 = time.perf_counter()
    portrait = finetune(DEMO, steps=steps, res=res, code_steps=code_steps, progress=False, device=str(dev))
    _sync(dev)
    t_ft = time.perf_counter() - t0
    field_dev = str(next(portrait.model.field.parameters()).device)

    times = []
    for i in range(max(1, frames)):
        cam = camera_at(-30.0 + 60.0 * i / max(1, frames - 1), 0.0, render_res)
        t0 = time.perf_counter()
        out = portrait.render(cam, device=str(dev))
        _sync(dev)
        times.append(time.perf_counter() - t0)
    steady = times[1:] or times
    return {
        "device_requested": str(dev),
        "device_of_field": field_dev,
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "finetune": {"res": res, "steps": steps, "code_steps": code_steps, "seconds": round(t_ft, 3)},
        "render": {"res": render_res, "frames": len(times), "first_s": round(times[0], 4),
                   "steady_s": round(sorted(steady)[len(steady) // 2], 4),
                   "fps": round(1.0 / max(1e-9, sorted(steady)[len(steady) // 2]), 2),
                   "rgb_device": str(out["rgb"].device)},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--res", type=int, default=128, help="finetune resolution")
    ap.add_argument("--steps", type=int, default=32, help="all-weight finetune steps")
    ap.add_argument("--render-res", type=int, default=512)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--code-steps", type=int, default=None, help="latent-code steps first (default: the prior's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print(f"error: --device {args.device}: torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    r = run(args.device, args.res, args.steps, args.render_res, args.frames, args.code_steps)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"finetune {r['finetune']['steps']} steps at {r['finetune']['res']}²: {r['finetune']['seconds']} s; "
              f"render {r['render']['res']}²: {r['render']['fps']} frames/s on {r['render']['rgb_device']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
