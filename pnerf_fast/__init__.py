"""pnerf_fast: fast single-image portrait neural radiance fields.

A fast and faithful implementation of "Portrait Neural Radiance Fields from a Single
Image" (Gao, Shih, Lai, Liang and Huang, 2020).
"""
from __future__ import annotations

__version__ = "0.1.0"


def backend_info() -> dict:
    """What the native extension was compiled with, and what this process can use;
    ``device`` is the one ``device="auto"`` (and ``--device auto``) picks here."""
    import torch

    from ._device import auto_device
    from ._native import native, native_error

    c = native()
    info = {
        "version": __version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "native": c is not None,
        "cpu": "yes" if c is not None else "no (PyTorch reference fallback)",
        "cuda": "no",
        "cuda_archs": None,
        "gpu_available": torch.cuda.is_available(),
        "device": str(auto_device()),
        "threads": torch.get_num_threads(),
    }
    if c is None:
        info["native_error"] = native_error()
    elif c.compiled_with_cuda():
        info["cuda"] = "yes"
        info["cuda_archs"] = c.cuda_archs()
    else:
        info["cuda"] = "no (built without CUDA)"
    try:
        from .field.backends import available_backends  # optional, added by the field

        info["mlp_backends"] = available_backends()
    except ImportError:
        pass
    return info


def __getattr__(name):
    # The high-level API is imported lazily so that `import pnerf_fast` stays light.
    if name in ("finetune", "PortraitField", "PortraitModel", "load", "load_prior"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'pnerf_fast' has no attribute {name!r}")
