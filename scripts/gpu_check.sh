#!/usr/bin/env bash
# The GPU check that fits a short lease (issue 14): build (or reuse the build), the CUDA
# parity tests, the kernel benchmarks on the GPU, and a finetune + render timing, all
# written under one output folder. Designed to finish within 8 minutes on an H200.
#
#   bash scripts/gpu_check.sh [--cpu-dry-run] [OUT_DIR]
#
# OUT_DIR defaults to $OUT when set, else gpu_check_out/. It receives:
#   info.txt       GPU, torch, nvcc, the extension's CUDA status
#   build.log      the build (when one was needed)
#   tests.log, tests.xml   pytest -m cuda (tests/test_cuda.py), JUnit XML
#   kernels.json   benchmarks/bench_kernels.py --device cuda --json
#   field.json     benchmarks/bench_field.py --device cuda --json (hash grid, MLP backends, field)
#   e2e.json       benchmarks/bench_e2e.py --device cuda --json (finetune 128², render fps at 512²)
#   summary.txt    one line per step: status, seconds
# Exit status: 0 when every step passed, 1 otherwise (every step runs regardless).
#
# --cpu-dry-run runs the same steps on the CPU with tiny sizes (the CUDA tests then skip,
# with their reason), so a CPU-only machine (CI) can test the script itself. Without it, a
# machine with no usable GPU stops after info.txt with exit status 2.
#
# Environment: PYTHON (default .venv/bin/python, else python3); PNERF_MAX_JOBS (compile
# jobs, default min(nproc, 8)); TORCH_CUDA_ARCH_LIST (default: the visible GPU's).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DRY=0
OUT_DIR=""
for a in "$@"; do
  case "$a" in
    --cpu-dry-run) DRY=1 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    -*) echo "gpu_check: unknown option $a" >&2; exit 2 ;;
    *) OUT_DIR=$a ;;
  esac
done
OUT_DIR=${OUT_DIR:-${OUT:-gpu_check_out}}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)

if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python3
fi
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's pnerf_fast, not an installed copy
export PYTHONUNBUFFERED=1

if [[ $DRY == 1 ]]; then
  DEV=cpu
  KERNEL_ARGS=(--device cpu --rays 4096 --repeats 1 --only kernels --threads 1)
  FIELD_ARGS=(--device cpu --repeats 1 --threads 1 --scale 0.01)
  E2E_ARGS=(--device cpu --res 32 --steps 2 --code-steps 1 --render-res 32 --frames 2 --threads 1)
else
  DEV=cuda
  KERNEL_ARGS=(--device cuda --rays 262144 --repeats 10 --only kernels)
  FIELD_ARGS=(--device cuda --repeats 10)
  E2E_ARGS=(--device cuda --res 128 --steps 32 --render-res 512 --frames 6)
fi

declare -a NAMES=() RESULTS=() TIMES=()
FAILED=0
SUMMARY="$OUT_DIR/summary.txt"
: > "$SUMMARY"

# step NAME TIMEOUT_S CMD...: run one step with a time limit, record status and seconds.
step() {
  local name=$1 limit=$2
  shift 2
  printf '\n== gpu_check: %s (limit %ss)\n' "$name" "$limit"
  local t0 rc
  t0=$(date +%s)
  # timeout signals its whole process group, so a step's python children stop with it.
  timeout --kill-after=10 "$limit" bash -c '"$@"' step "$@"
  rc=$?
  local dt=$(( $(date +%s) - t0 ))
  local res=ok
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then res="TIMED OUT after ${limit}s"; FAILED=1
  elif [[ $rc -ne 0 ]]; then res="FAILED (exit $rc)"; FAILED=1
  fi
  printf '%-8s %5ss  %s\n' "$name" "$dt" "$res" | tee -a "$SUMMARY"
  return 0
}

info() {
  {
    echo "date:    $(date -u +%FT%TZ)"
    echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --porcelain 2>/dev/null | grep -q . && echo '(dirty)')"
    echo "mode:    $([[ $DRY == 1 ]] && echo 'cpu dry run' || echo gpu)"
    echo "host:    $(uname -srm), $(nproc) cores"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    command -v nvcc >/dev/null && nvcc --version | tail -2 | head -1
    "$PY" - <<'EOF'
import torch
print("torch:  ", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu:    ", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
try:
    import pnerf_fast._C as C
    print("_C:     ", C.__file__, "compiled_with_cuda", C.compiled_with_cuda(), "archs", C.cuda_archs())
except ImportError as e:
    print("_C:      not built (", e, ")")
EOF
  } 2>&1 | tee "$OUT_DIR/info.txt"
}

have_gpu() { "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }

# The extension is reused when it loads and has what this mode needs (CUDA kernels on a
# GPU run); otherwise it is built in place, CUDA launchers included when nvcc is present.
build() {
  local need_cuda=$(( DRY == 1 ? 0 : 1 ))
  if "$PY" -c "
import sys, torch, pnerf_fast._C as C
sys.exit(0 if (C.compiled_with_cuda() or not $need_cuda) else 1)" 2>/dev/null; then
    echo "reusing the built extension" | tee "$OUT_DIR/build.log"
    return 0
  fi
  local jobs=${PNERF_MAX_JOBS:-$(( $(nproc) < 8 ? $(nproc) : 8 ))}
  echo "building pnerf_fast._C in place ($jobs jobs)"
  [[ $DRY == 1 ]] && export BUILD_NO_CUDA=1  # a dry run tests the script, not nvcc
  PNERF_MAX_JOBS=$jobs MAX_JOBS=$jobs "$PY" setup.py build_ext --inplace > "$OUT_DIR/build.log" 2>&1
  local rc=$?
  tail -5 "$OUT_DIR/build.log"
  return $rc
}

tests() {
  "$PY" -m pytest -q -m cuda tests/test_cuda.py -rs --junitxml="$OUT_DIR/tests.xml" 2>&1 | tee "$OUT_DIR/tests.log"
  return "${PIPESTATUS[0]}"
}

json_step() {  # json_step FILE CMD...: stdout to FILE (must be JSON), stderr to FILE.err
  local file=$1
  shift
  "$@" > "$OUT_DIR/$file" 2> "$OUT_DIR/$file.err"
  local rc=$?
  tail -3 "$OUT_DIR/$file.err" >&2
  [[ $rc -eq 0 ]] && "$PY" -c "import json, sys; json.load(open(sys.argv[1]))" "$OUT_DIR/$file" || return 1
  "$PY" -c "import json, sys; print(json.dumps(json.load(open(sys.argv[1])))[:600])" "$OUT_DIR/$file"
}

export -f build tests json_step
export PY OUT_DIR DRY
T0=$(date +%s)
info
if [[ $DRY == 0 ]] && ! have_gpu; then
  echo "gpu_check: torch.cuda.is_available() is False here; nothing to check (use --cpu-dry-run to exercise the script on the CPU)" | tee -a "$SUMMARY"
  exit 2
fi
[[ $DRY == 1 ]] && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# Limits (seconds) add up to 460, under 8 minutes even with a fresh build (one arch, 8+ jobs).
step build   180 build
step tests   100 tests
step kernels  45 json_step kernels.json "$PY" benchmarks/bench_kernels.py --json "${KERNEL_ARGS[@]}"
step field    45 json_step field.json "$PY" benchmarks/bench_field.py --json "${FIELD_ARGS[@]}"
step e2e      90 json_step e2e.json "$PY" benchmarks/bench_e2e.py --json "${E2E_ARGS[@]}"

printf '%-8s %5ss  %s\n' total "$(( $(date +%s) - T0 ))" "$([[ $FAILED == 0 ]] && echo passed || echo FAILED)" | tee -a "$SUMMARY"
echo "outputs in $OUT_DIR (device $DEV)"
exit $FAILED
