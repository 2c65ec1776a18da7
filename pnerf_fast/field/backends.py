"""MLP backends, chosen by name and resolved per device:

- "torch": nn.Linear math (cuBLAS / MKL GEMMs, activations written out between layers);
- "fused": our fused kernel (pnerf_fast/ops/mlp.py): all layers in one pass per block
  of rows; widths up to 128, at most 8 layers; CPU and (when built with nvcc) CUDA;
- "tcnn": tiny-cuda-nn's FullyFusedMLP / CutlassMLP, only when ``import tinycudann``
  works and the tensors are on a CUDA GPU (never required);
- "auto": the fastest backend for the device the input tensors are on:
  - CPU: ``CPU_AUTO`` ("fused": measured faster on mlp_fwd_bwd, 59.5 ms against
    154 ms for torch on 2 threads; benchmarks/bench_field.py re-measures it and
    ``--record-backend`` writes the result to benchmarks/results/, never into the
    package); torch when the extension is missing or the shape is past the fused limits;
  - CUDA: tcnn when tinycudann imports, else torch (cuBLAS). Our CUDA fused MLP is a
    one-thread-per-rows port of the CPU block code, with scalar FMAs and no tensor cores:
    at the fast preset's widths (32-64 wide, 4 rows a thread) it re-reads every weight
    from L1 for 4 rows' worth of work, while cuBLAS (TF32 tensor cores) and tcnn (fp16
    tensor cores, activations in shared memory) do 8-16x the math per byte. It stays
    available as backend "fused" on CUDA, for parity tests and for measuring, and
    benchmarks/bench_field.py --device cuda times it against torch.

Every backend runs the same parameters: an MLP module holds nn.Linear-layout weights
(``layers.{l}.weight [out, in]``, ``layers.{l}.bias [out]``), which is what checkpoints
store; the tcnn backend packs them into tiny-cuda-nn's layout on the fly
(field/tcnn_layout.py), so a checkpoint written on one device loads on any other.

The "auto" choice depends only on the device and on what is installed, and is cached
per device: nothing is read from disk on a forward pass.
"""
from __future__ import annotations

import functools

import torch

from .._native import native, native_error

BACKENDS = ("auto", "torch", "fused", "tcnn")
# "auto" on the CPU (see the module docstring for the measurement behind it).
CPU_AUTO = "fused"


@functools.lru_cache(maxsize=1)
def tcnn_available() -> bool:
    """True when tiny-cuda-nn's torch bindings import and a CUDA GPU is present."""
    try:
        import tinycudann  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available()


def _fused_ok(device: torch.device) -> tuple[bool, str]:
    c = native()
    if c is None:
        return False, f"the native extension is unavailable ({native_error()})"
    if device.type == "cuda" and not c.compiled_with_cuda():
        return False, "the native extension was built without CUDA kernels (BUILD_NO_CUDA=1 or no nvcc)"
    if device.type not in ("cpu", "cuda"):
        return False, f"device type {device.type!r} is not supported"
    return True, ""


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def available_backends(device: str | torch.device | None = None) -> list[str]:
    """Backends usable on ``device`` (default: cuda when available, else cpu)."""
    dev = _device(device)
    out = ["torch"]
    if _fused_ok(dev)[0]:
        out.append("fused")
    if dev.type == "cuda" and tcnn_available():
        out.append("tcnn")
    return out


@functools.lru_cache(maxsize=None)
def _auto(device_type: str) -> str:
    if device_type == "cuda":
        return "tcnn" if tcnn_available() else "torch"
    if device_type == "cpu" and CPU_AUTO == "fused" and _fused_ok(torch.device("cpu"))[0]:
        return "fused"
    return "torch"


def resolve_backend(name: str, device: str | torch.device | None = None) -> str:
    """The concrete backend ("torch" | "fused" | "tcnn") that ``name`` means for tensors
    on ``device``. Raises ValueError for an unknown name and RuntimeError when the named
    backend cannot run there (saying why). "auto" is cached per device type."""
    if name not in BACKENDS:
        raise ValueError(f"argument 'backend' must be one of {', '.join(BACKENDS)}; got {name!r}")
    dev = _device(device)
    if name == "auto":
        return _auto(dev.type)
    if name == "torch":
        return "torch"
    if name == "fused":
        ok, why = _fused_ok(dev)
        if not ok:
            raise RuntimeError(f"backend 'fused' is not available: {why}")
        return "fused"
    # tcnn
    if dev.type != "cuda" or not torch.cuda.is_available():
        raise RuntimeError("backend 'tcnn' needs a CUDA GPU (tiny-cuda-nn has no CPU path); use 'auto', 'fused' or 'torch'")
    if not tcnn_available():
        raise RuntimeError("backend 'tcnn' needs tiny-cuda-nn: `import tinycudann` failed. Install it "
                           "(pip install git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch) "
                           "or use 'auto', 'fused' or 'torch'")
    return "tcnn"


def clear_cache() -> None:
    """Forget the cached choices (tests that fake tinycudann or the extension)."""
    tcnn_available.cache_clear()
    _auto.cache_clear()
