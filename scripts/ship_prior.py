"""Turn a pretrained prior into a shipped one:

    python scripts/ship_prior.py PRIOR.pt pnerf_fast/assets/prior_latent_fast.pt
    python scripts/ship_prior.py META.pt pnerf_fast/assets/prior_meta_fast.pt --meta-defaults

- meta/joint priors: re-marks the occupancy grid from the prior's own density (current
  threshold rule); latent priors keep their grid, the union of the training subjects'
  visual hulls (the mean code's density would only hold the mean head);
- with --finetune-from CONFIG, takes the finetune defaults from that config (tuned on the
  validation subjects after pretraining);
- with --meta-defaults, sets the finetune defaults of the meta prior (32 SGD steps of
  2048 rays: novel views plateau there on the validation subjects); a latent prior keeps
  the finetune section of its pretraining config;
- drops resume-only state (RNG, optimizer) and stores large tensors in fp16 (< 10 MB),
- checks that the fp16 copy gives the same field outputs.
"""
import argparse
import os

import torch

from pnerf_fast.train.model import PortraitModel, derived_extra, load_checkpoint

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("src")
ap.add_argument("dst")
ap.add_argument("--meta-defaults", action="store_true")
ap.add_argument("--finetune-from", default=None,
                help="a training config whose finetune section replaces the prior's (defaults tuned after pretraining)")
args = ap.parse_args()
st = load_checkpoint(args.src)
m = PortraitModel.from_state(st, args.src)
if m.cfg.method != "latent":
    m.grid.mark_from_density(m.density_fn())
print("grid occupancy", m.grid.occupancy)
if args.finetune_from:
    from pnerf_fast.train.config import load_train_config

    m.cfg.finetune = load_train_config(args.finetune_from).finetune
    print("finetune defaults from", args.finetune_from, m.cfg.finetune)
if args.meta_defaults:
    m.cfg.finetune.steps = 32
    m.cfg.finetune.rays_per_step = 2048
m.save(args.dst, extra=derived_extra(st, drop=("codes",)), half=True)
print(os.path.getsize(args.dst) / 1e6, "MB")
m2 = PortraitModel.load(args.dst)
x = torch.rand(1000, 3) * 1.6 - 0.8
d = torch.nn.functional.normalize(torch.randn(1000, 3), dim=1)
with torch.no_grad():
    a = m.field(x, d)
    b = m2.field(x, d)
print("max rgb diff after fp16 storage", (a[1] - b[1]).abs().max().item(),
      "sigma rel", ((a[0] - b[0]).abs() / (a[0].abs() + 1e-3)).max().item())
