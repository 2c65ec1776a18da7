#!/usr/bin/env bash
# The ablation's three short priors (results/README.md, "Ablation"): one small budget each,
# 600 steps from the shipped meta prior on the same 60 training heads (the first 60 of the
# classic light stage's seed 1, as the shipped priors'; disjoint from the seed-0 test subjects),
# each isolating one choice: latent codes in canonical coordinates, the same in world
# coordinates, and joint pretraining (Eq. 5: one field, no codes).
#
#   bash scripts/ablation_priors.sh OUT_DIR        # writes OUT_DIR/abl_{latent,world,joint}.pt
#   python benchmarks/make_results.py --ours pnerf_fast/assets/prior_latent_fast.pt \
#       --meta pnerf_fast/assets/prior_meta_fast.pt --short-latent OUT_DIR/abl_latent.pt \
#       --short-world OUT_DIR/abl_world.pt --short-joint OUT_DIR/abl_joint.pt --out results
#
# Session 18, 2 idle cores: the 62 heads rendered in 69 s; latent and world side by side at one
# thread each, 150 s; joint at 2 threads, 20 s (its field has no code: a step costs far less).
set -euo pipefail
out=${1:?usage: bash scripts/ablation_priors.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)    # OUT_DIR is relative to where the script was called from
cd "$(dirname "$0")/.."
PNERF=${PNERF:-.venv/bin/pnerf}
[[ -x "$PNERF" ]] || PNERF=pnerf
data="$out/ls_abl"
[[ -f "$data/splits.json" ]] || "$PNERF" lightstage --out "$data" --subjects 62 --res 128 --seed 1 --splits 60,1,1
common=(pretrain --data "$data" --config configs/pretrain_latent.yaml --init meta --steps 600)
OMP_NUM_THREADS=1 "$PNERF" "${common[@]}" --out "$out/abl_latent.pt" & p1=$!
OMP_NUM_THREADS=1 "$PNERF" "${common[@]}" --coordinates world --out "$out/abl_world.pt" & p2=$!
wait "$p1"; wait "$p2"    # each fails the script if its run failed
"$PNERF" "${common[@]}" --method joint --set field=fast --out "$out/abl_joint.pt"
echo "wrote $out/abl_latent.pt, abl_world.pt, abl_joint.pt"
