#!/usr/bin/env bash
# The ablation's two equal-budget priors (results/ablation.md, "equal budget" rows): ours' whole
# recipe and joint pretraining (Eq. 5: one field, no codes) given the same training heads and the
# same number of pretraining steps, 1,024 rays each.
#
# - ours' recipe: session 15's shipped classic prior (commit f05ecec), which saw the first 398
#   heads of the classic light stage's seed 1 in 26,000 steps from the meta prior: 10,000
#   all-view code steps on 151 heads (configs/pretrain_latent.yaml), 4,000 with the code's
#   volume (pretrain_latent_vol.yaml), 2 x 4,000 frontal-code steps (pretrain_latent_front.yaml),
#   then 4,000 on 398 heads (pretrain_latent_front400.yaml). Its codes' refits (scripts/refit_codes.py)
#   are not counted as steps.
# - joint: the same 398 heads for all of its 26,000 steps, from the same meta prior, at the rates
#   and decay of pretrain_latent.yaml (grid 1e-2, MLPs 2e-3, decaying tenfold).
#
#   bash scripts/ablation_equal.sh OUT_DIR      # writes OUT_DIR/ours398.pt, OUT_DIR/joint398.pt
#   python benchmarks/make_results.py ... --equal-latent OUT_DIR/ours398.pt \
#       --equal-joint OUT_DIR/joint398.pt --equal-label "398 heads, 26k steps" --out results
#
# Session 25 (2 cores shared with other jobs): 400 heads rendered in ~20 min beside other work;
# the joint run, one thread, 3,364 s (56 minutes). Needs a git checkout (the 398-head prior is read from
# the history).
set -euo pipefail
out=${1:?usage: bash scripts/ablation_equal.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)    # OUT_DIR is relative to where the script was called from
cd "$(dirname "$0")/.."
PNERF=${PNERF:-.venv/bin/pnerf}
[[ -x "$PNERF" ]] || PNERF=pnerf
git show f05ecec:pnerf_fast/assets/prior_latent_fast.pt > "$out/ours398.pt.tmp" && mv "$out/ours398.pt.tmp" "$out/ours398.pt"
data="$out/ls_train400"
[[ -f "$data/splits.json" ]] || "$PNERF" lightstage --out "$data" --subjects 400 --res 128 --seed 1 --splits 398,1,1
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$PNERF" pretrain --data "$data" --config configs/pretrain_latent.yaml \
    --init meta --method joint --set field=fast --steps 26000 --out "$out/joint398.pt"
echo "wrote $out/ours398.pt, $out/joint398.pt"
