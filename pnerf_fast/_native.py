"""Lazy access to the compiled extension ``pnerf_fast._C``.

Importing pnerf_fast never compiles anything. When _C is missing (not built, or
built against another torch), ``native()`` returns None, one warning says so, and
every op falls back to its pure-PyTorch reference.
"""
from __future__ import annotations

import os
import warnings

_C = None
_tried = False
_error: str | None = None


def native():
    """The extension module, or None when it cannot be loaded."""
    global _C, _tried, _error
    if not _tried:
        _tried = True
        if os.environ.get("PNERF_DISABLE_NATIVE", "0") == "1":
            _error = "disabled by PNERF_DISABLE_NATIVE=1"
        else:
            try:
                import torch  # noqa: F401  (loads libtorch first)

                from . import _C as mod

                _C = mod
            except ImportError as e:  # not built / ABI mismatch
                _error = str(e)
        if _C is None:
            warnings.warn(
                f"pnerf_fast: native extension unavailable ({_error}); using the slower "
                "PyTorch reference kernels. Build it with `pip install -e . --no-build-isolation`.",
                RuntimeWarning,
                stacklevel=3,
            )
    return _C


def has_cuda_kernels() -> bool:
    c = native()
    return bool(c is not None and c.compiled_with_cuda())


def use_native(*tensors) -> bool:
    """True when the native kernels can take these tensors (CPU always; CUDA when compiled)."""
    c = native()
    if c is None:
        return False
    for t in tensors:
        if t is not None and t.is_cuda and not c.compiled_with_cuda():
            return False
    return True


def native_error() -> str | None:
    native()
    return _error
