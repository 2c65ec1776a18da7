"""MLP backends, chosen by name:

- "torch": nn.Linear layers (cuBLAS / MKL GEMMs, activations written out between layers);
- "fused": our fused kernel (pnerf_fast/ops/mlp.py): all layers in one pass per block
  of rows; widths up to 128, at most 8 layers;
- "tcnn": tiny-cuda-nn's FullyFusedMLP / CutlassMLP, only when ``import tinycudann``
  works and a CUDA GPU is present (never required);
- "auto": the fastest available. On a GPU: tcnn when available, else torch (our CUDA
  fused kernel is a correctness-first port, not tuned). On the CPU: the backend that
  benchmarks/bench_field.py measured faster on mlp_fwd_bwd, recorded with its numbers
  in pnerf_fast/field/cpu_backend.json (re-run the benchmark with --record-backend to
  update it); torch when the native extension is missing.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from .._native import native, native_error

BACKENDS = ("auto", "torch", "fused", "tcnn")
CPU_CHOICE_FILE = Path(__file__).with_name("cpu_backend.json")


@functools.lru_cache(maxsize=1)
def tcnn_available() -> bool:
    try:
        import tinycudann  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available()


def cpu_choice() -> dict:
    """The recorded CPU choice: {"backend", "fused_ms", "torch_ms", ...}."""
    try:
        data = json.loads(CPU_CHOICE_FILE.read_text())
        if data.get("backend") in ("torch", "fused"):
            return data
    except (OSError, ValueError):
        pass
    return {"backend": "torch", "note": "no benchmark record found"}


def _fused_ok(device: torch.device) -> tuple[bool, str]:
    c = native()
    if c is None:
        return False, f"the native extension is unavailable ({native_error()})"
    if device.type == "cuda" and not c.compiled_with_cuda():
        return False, "the native extension was built without CUDA kernels (BUILD_NO_CUDA=1 or no nvcc)"
    if device.type not in ("cpu", "cuda"):
        return False, f"device type {device.type!r} is not supported"
    return True, ""


def available_backends(device: str | torch.device | None = None) -> list[str]:
    """Backends usable on ``device`` (default: cuda when available, else cpu)."""
    dev = _device(device)
    out = ["torch"]
    if _fused_ok(dev)[0]:
        out.append("fused")
    if dev.type == "cuda" and tcnn_available():
        out.append("tcnn")
    return out


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_backend(name: str, device: str | torch.device | None = None) -> str:
    """The concrete backend ("torch" | "fused" | "tcnn") that ``name`` means on ``device``.
    Raises ValueError for an unknown name and RuntimeError when the named backend cannot
    run here (saying why)."""
    if name not in BACKENDS:
        raise ValueError(f"argument 'backend' must be one of {', '.join(BACKENDS)}; got {name!r}")
    dev = _device(device)
    if name == "torch":
        return "torch"
    if name == "fused":
        ok, why = _fused_ok(dev)
        if not ok:
            raise RuntimeError(f"backend 'fused' is not available: {why}")
        return "fused"
    if name == "tcnn":
        if dev.type != "cuda" or not torch.cuda.is_available():
            raise RuntimeError("backend 'tcnn' needs a CUDA GPU (tiny-cuda-nn has no CPU path); use 'auto', 'fused' or 'torch'")
        if not tcnn_available():
            raise RuntimeError("backend 'tcnn' needs tiny-cuda-nn: `import tinycudann` failed. Install it "
                               "(pip install git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch) "
                               "or use 'auto', 'fused' or 'torch'")
        return "tcnn"
    # auto
    if dev.type == "cuda":
        return "tcnn" if tcnn_available() else "torch"
    choice = cpu_choice()["backend"]
    if choice == "fused" and not _fused_ok(dev)[0]:
        return "torch"
    return choice
