"""Build parameters for the native extension ``pnerf_fast._C``, shared by setup.py
and by CMakeLists.txt (through ``python -m pnerf_fast._build_config``).

Environment switches:
  BUILD_NO_CUDA=1          skip the CUDA launchers (CPU only; fast local iteration).
  TORCH_CUDA_ARCH_LIST     CUDA architectures, e.g. "8.0;8.6;9.0". When unset and no
                           GPU is visible, DEFAULT_CUDA_ARCHS is used, so the CUDA code
                           compiles on GPU-less machines too.
  CUDA_HOME                the CUDA toolkit (default: the folder above `nvcc`).
  PNERF_MAX_JOBS / MAX_JOBS parallel compile jobs (default 1: nvcc needs ~1 GB each).

This module imports nothing heavy at import time; torch is only touched inside the
functions that need it.
"""
from __future__ import annotations

import glob
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
DEFAULT_CUDA_ARCHS = "8.0;8.6;9.0"

# torch >= 2.10 headers need C++20. -fopenmp: at::parallel_for is an inline template
# that expands to `#pragma omp parallel` when ATen's backend is OpenMP (the pip wheels);
# without the flag the pragma is ignored and every CPU launcher runs on ONE thread.
# The extension then links libgomp.so.1, which resolves to the copy torch already loaded.
# -ffp-contract=off: no fused multiply-adds, so the AVX-512 hash-grid path
# (csrc/cpu/hashgrid_avx512.cpp, where FMA is available) rounds exactly as the scalar
# functors do; baseline x86-64 code has no FMA, so nothing else changes there.
CXX_FLAGS = ["-O3", "-std=c++20", "-fno-fast-math", "-ffp-contract=off", "-fopenmp"]
LINK_FLAGS = ["-fopenmp"]
NVCC_FLAGS = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo"]


def _rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def cpu_sources() -> list[str]:
    """bindings + torch-facing ops + CPU launchers (all plain C++)."""
    return _rel(
        [os.path.join(CSRC, "bindings.cpp")]
        + glob.glob(os.path.join(CSRC, "ops", "*.cpp"))
        + glob.glob(os.path.join(CSRC, "cpu", "*.cpp"))
    )


def cuda_sources() -> list[str]:
    """CUDA launchers. They include no torch headers (raw pointers + a stream), so each
    compiles in seconds and can be compiled stand-alone by CMake."""
    return _rel(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))


def include_dirs() -> list[str]:
    return [os.path.join(CSRC, "include")]


def want_cuda() -> bool:
    return os.environ.get("BUILD_NO_CUDA", "0") not in ("1", "true", "TRUE", "yes")


def _is_cuda_home(path: str | None) -> bool:
    """A toolkit folder with both nvcc and the runtime headers (a PATH entry such as
    /usr/local/bin may hold only a wrapper script for nvcc)."""
    return bool(path) and os.path.exists(os.path.join(path, "bin", "nvcc")) and os.path.exists(
        os.path.join(path, "include", "cuda_runtime.h"))


def find_cuda_home() -> str | None:
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
        candidates.append(os.path.dirname(os.path.dirname(nvcc)))
    candidates += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for c in candidates:
        if _is_cuda_home(c):
            return c
    return None


def wheel_cuda_include_dirs() -> list[str]:
    """CUDA headers shipped by the nvidia-* cu13 wheels (cusparse.h, cublas_v2.h, ...),
    which torch's headers expect and the bare toolkit folder may lack."""
    out = []
    for sp in sys.path:
        for sub in ("nvidia/cu13/include", "nvidia/cudnn/include", "nvidia/nccl/include"):
            p = os.path.join(sp, sub)
            if os.path.isdir(p) and p not in out:
                out.append(p)
    return out


def cuda_arch_list() -> str:
    """TORCH_CUDA_ARCH_LIST, defaulted when no GPU can be probed."""
    env = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if env:
        return env
    try:
        import torch

        if torch.cuda.is_available():
            caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
            return ";".join(f"{a}.{b}" for a, b in caps)
    except Exception:
        pass
    return DEFAULT_CUDA_ARCHS


def cuda_build_possible() -> tuple[bool, str]:
    """(possible, reason). Needs nvcc and a CUDA build of torch; no GPU needed."""
    if not want_cuda():
        return False, "BUILD_NO_CUDA=1"
    if find_cuda_home() is None:
        return False, "nvcc not found (set CUDA_HOME)"
    try:
        import torch
    except ImportError:
        return False, "torch not importable"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU-only build"
    return True, f"nvcc in {find_cuda_home()}, torch CUDA {torch.version.cuda}"


def nvcc_gencode_flags(archs: str | None = None) -> list[str]:
    flags = []
    for a in (archs or cuda_arch_list()).replace(",", ";").split(";"):
        a = a.strip()
        if not a:
            continue
        ptx = a.endswith("+PTX")
        num = a.replace("+PTX", "").replace(".", "")
        flags.append(f"-gencode=arch=compute_{num},code=sm_{num}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{num},code=compute_{num}")
    return flags


if __name__ == "__main__":  # used by CMakeLists.txt
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what == "cuda_sources":
        print(";".join(cuda_sources()))
    elif what == "include_dirs":
        print(";".join(include_dirs()))
    else:
        print("cpu_sources:", cpu_sources())
        print("cuda_sources:", cuda_sources())
        print("cuda:", cuda_build_possible(), cuda_arch_list())
