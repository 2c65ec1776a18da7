"""Move a hash-grid prior into another field box (for example fast_latent_tall's taller box),
keeping what it has learned (pnerf_fast/train/regrid.py says how):

    python scripts/regrid_prior.py PRIOR.pt OUT.pt --field fast_latent_tall

Then continue pretraining from OUT.pt in the new box: pnerf pretrain --init OUT.pt with a
config whose field is the new one (configs/pretrain_portrait_tall.yaml). Prints how far the
moved field is from the old one on held-out points inside the old box.
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="the prior to move (a pnerf_fast checkpoint)")
    ap.add_argument("dst", help="where to write the moved prior")
    ap.add_argument("--field", required=True, help="the new field config (a preset name or a YAML file): the "
                    "prior's MLPs and code size, another aabb or hash-grid resolution")
    ap.add_argument("--steps", type=int, default=600, help="Adam steps of the table fit (default 600)")
    ap.add_argument("--points", type=int, default=1 << 16, help="points per step (default 65536)")
    ap.add_argument("--lr", type=float, default=0.1, help="Adam learning rate of the tables, decaying 10x "
                    "over the fit (default 0.1)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from pnerf_fast.train.model import PortraitModel, derived_extra, load_checkpoint
    from pnerf_fast.train.regrid import regrid_model

    try:
        st = load_checkpoint(args.src)
        old = PortraitModel.from_state(st, args.src, "cpu")
        new, report = regrid_model(old, args.field, steps=args.steps, points=args.points, lr=args.lr,
                                   seed=args.seed, progress=True)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    new.save(args.dst, extra=derived_extra(st, regridded_from=str(args.src)))
    print(json.dumps(report))
    print("wrote", args.dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
