"""Grow a prior's MLPs (wider, deeper, the code in more layers) or its code (more numbers, and
as many more basis volumes for the code's feature volume) as the same function
(pnerf_fast/train/grow.py says how), to continue pretraining it with more capacity:

    python scripts/grow_prior.py PRIOR.pt OUT.pt --field fast_latent_xl
    pnerf pretrain --init OUT.pt --config configs/pretrain_latent_xl.yaml ...

Prints the largest difference between the two fields' outputs (it should be ~1e-6).
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="the prior to grow (a pnerf_fast checkpoint)")
    ap.add_argument("dst", help="where to write the grown prior")
    ap.add_argument("--field", required=True, help="the new field config (a preset name or a YAML file): the "
                    "prior's box and encodings, MLPs at least as wide and deep, a code at least as long")
    ap.add_argument("--seed", type=int, default=0, help="draws the training codes' new numbers (a longer code)")
    args = ap.parse_args(argv)

    from pnerf_fast.train.grow import grow_model, max_output_diff
    from pnerf_fast.train.model import PortraitModel, derived_extra, load_checkpoint

    try:
        st = load_checkpoint(args.src)
        old = PortraitModel.from_state(st, args.src, "cpu")
        new = grow_model(old, args.field, seed=args.seed)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    diff = max_output_diff(old, new)
    new.save(args.dst, extra=derived_extra(st, grown_from=str(args.src)))
    print(json.dumps({"max_output_diff": diff,
                      "params_before": sum(p.numel() for p in old.field.parameters()),
                      "params_after": sum(p.numel() for p in new.field.parameters())}))
    print("wrote", args.dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
