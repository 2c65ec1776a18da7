"""The classic prior's lowered floor (configs/pretrain_latent_floor.yaml), before and after
its pretraining run:

    python scripts/floor_prior.py init PRIOR.pt OUT.pt --subjects 398 --drop 1.0
    python scripts/floor_prior.py merge TRAINED.pt PRIOR.pt OUT.pt

- init: PRIOR's occupancy grid with its floor lowered by --drop canonical units (the cells
  below copy the old floor's, as finetune.grid_down does) and only its first --subjects
  training codes, so that `pnerf pretrain --init OUT.pt` continues them on a light stage
  that holds those first subjects (subject i depends only on (seed, i));
- merge: TRAINED's weights and grid, its codes for its subjects and PRIOR's for the rest
  (their mean and spread guide the finetune's code stage), the field's code at their mean.

Both write atomically.
"""
import argparse
import sys

import torch

from pnerf_fast.train.model import PortraitModel


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("init")
    a.add_argument("prior")
    a.add_argument("out")
    a.add_argument("--subjects", type=int, required=True, help="keep this many of the prior's codes (the first)")
    a.add_argument("--drop", type=float, default=1.0, help="lower the grid's floor by this much (canonical units)")
    b = sub.add_parser("merge")
    b.add_argument("trained")
    b.add_argument("prior")
    b.add_argument("out")
    args = ap.parse_args(argv)

    def load(path):
        try:
            return PortraitModel.load(path, "cpu")
        except (OSError, ValueError, KeyError) as e:
            ap.error(f"{path}: not a readable prior ({e})")

    if args.cmd == "init":
        m = load(args.prior)
        if m.codes is None:
            ap.error(f"{args.prior}: not a latent prior (no training codes)")
        if not 0 < args.subjects <= len(m.codes):
            ap.error(f"--subjects must be in [1, {len(m.codes)}], got {args.subjects}")
        if not args.drop > 0:
            ap.error(f"--drop must be > 0, got {args.drop}")
        m.codes = m.codes[: args.subjects].clone()
        m.lower_grid_floor_(args.drop)
        m.save(args.out)
        print(f"wrote {args.out}: {args.subjects} codes, grid box {m.grid_box()}")
        return 0
    m = load(args.trained)
    src = load(args.prior)
    if m.codes is None or src.codes is None or m.codes.shape[1] != src.codes.shape[1]:
        ap.error("merge needs two latent priors with codes of the same size")
    if len(m.codes) > len(src.codes):
        ap.error(f"{args.trained} has more codes ({len(m.codes)}) than {args.prior} ({len(src.codes)})")
    trained = len(m.codes)
    codes = src.codes.clone()
    codes[:trained] = m.codes
    m.codes = codes
    with torch.no_grad():
        m.field.latent.copy_(codes.mean(0))
    m.save(args.out)
    print(f"wrote {args.out}: {trained} trained codes of {len(codes)}, grid box {m.grid_box()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
