"""A photo's default finetune, then and now, timed in one run:

    python benchmarks/bench_photo_finetune.py --json [--reps 2] [--threads 2]

The astronaut (scikit-image) is aligned once at 256x256, then whole default finetunes run
interleaved (A B C A B C ...):
- A: session 8's default for a photo: the classic latent prior (same weights), no stop cache,
  no carve, the spread over all of stage 2, 200 stage-2 steps (steps_res 128);
- B: today's default for a photo: the portrait prior with its stored finetune;
- C: B without the carve.
Prints one JSON object: seconds per run and stage-2 steps of each, and mean B / mean A.
Speed is a ratio within one run (the machine is shared); never a test.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_photos import PHOTOS  # noqa: E402

from pnerf_fast.train.finetune import SHIPPED_PRIORS, as_subject, finetune  # noqa: E402
from pnerf_fast.train.model import PortraitModel  # noqa: E402


def _prior(name: str, **finetune_cfg) -> PortraitModel:
    m = PortraitModel.load(SHIPPED_PRIORS[name], "cpu")
    for k, v in finetune_cfg.items():
        setattr(m.cfg.finetune, k, v)
    return m


VARIANTS = {
    "A_session8_default": lambda: _prior("latent", stop_cache=False, carve=False, spread_stop=1.0, steps_res=128),
    "B_photo_default": lambda: _prior("portrait"),
    "C_photo_default_no_carve": lambda: _prior("portrait", carve=False),
}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    ap.add_argument("--reps", type=int, default=2, help="rounds of A B C (default 2)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.reps < 1:
        raise SystemExit("argument --reps: must be >= 1")
    if args.threads < 1:
        raise SystemExit("argument --threads: must be >= 1")
    torch.set_num_threads(args.threads)
    subj = as_subject(PHOTOS["astronaut"][0](), res=256)
    out = {name: {"seconds": [], "steps": None} for name in VARIANTS}
    for _ in range(args.reps):
        for name, make in VARIANTS.items():
            model = make()
            t0 = time.perf_counter()
            pf = finetune(subj, init=model, progress=False, device="cpu")
            out[name]["seconds"].append(round(time.perf_counter() - t0, 2))
            out[name]["steps"] = pf.info["steps"] - pf.info["code_steps"]
            if not args.json:
                print(name, out[name]["steps"], "stage-2 steps", out[name]["seconds"][-1], "s", file=sys.stderr)
    mean = {k: sum(v["seconds"]) / len(v["seconds"]) for k, v in out.items()}
    obj = {"threads": args.threads, "res": 256, "variants": out,
           "b_over_a": round(mean["B_photo_default"] / mean["A_session8_default"], 3)}
    print(json.dumps(obj))
    return obj


if __name__ == "__main__":
    main()
