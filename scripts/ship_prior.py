"""Turn a pretrained prior into the shipped one:

    python scripts/ship_prior.py PRIOR.pt pnerf_fast/assets/prior_meta_fast.pt

- re-marks the occupancy grid from the prior's own density (current threshold rule),
- sets the finetune defaults stored in it (32 SGD steps of 2048 rays: novel views
  plateau there on the validation subjects),
- drops resume-only state (RNG, optimizer) and stores large tensors in fp16 (< 10 MB),
- checks that the fp16 copy gives the same field outputs.
"""
import sys, torch
from pnerf_fast.train.model import PortraitModel, load_checkpoint, save_atomic
src, dst = sys.argv[1], sys.argv[2]
st = load_checkpoint(src)
m = PortraitModel.from_state(st, src)
m.grid.mark_from_density(m.density_fn())
print("occupancy after refresh", m.grid.occupancy)
m.cfg.finetune.steps = 32
m.cfg.finetune.rays_per_step = 2048
extra = st.get("extra", {})
extra.pop("rng", None); extra.pop("optimizer", None)
m.save(dst, extra=extra, half=True)
import os; print(os.path.getsize(dst)/1e6, "MB")
m2 = PortraitModel.load(dst)
x = torch.rand(1000,3)*1.6-0.8; d = torch.nn.functional.normalize(torch.randn(1000,3),dim=1)
with torch.no_grad():
    a = m.field(x,d); b = m2.field(x,d)
print("max rgb diff after fp16 storage", (a[1]-b[1]).abs().max().item(), "sigma rel", ((a[0]-b[0]).abs()/(a[0].abs()+1e-3)).max().item())
