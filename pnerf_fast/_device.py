"""The one place a user's ``device`` argument becomes a torch.device.

``"auto"`` (or None) is CUDA when torch sees a GPU and ``pnerf_fast._C`` was compiled
with its CUDA kernels, else the CPU; ``"cpu"``, ``"cuda"`` and ``"cuda:N"`` are taken as
asked, once checked. Every public entry point (finetune, load, load_prior,
PortraitField.render, pretrain, evaluate) and every ``pnerf`` command calls
``resolve_device`` once and passes the result down; nothing below hard-codes "cpu".
"""
from __future__ import annotations

import re
import warnings

import torch

DEVICE_CHOICES = "'auto', 'cpu', 'cuda' or 'cuda:N'"
_PATTERN = re.compile(r"(auto|cpu|cuda(:[0-9]+)?)")
_warned_reference = False


def _name(arg: str) -> str:
    return arg if arg.startswith("-") else repr(arg)


def auto_device() -> torch.device:
    """The device ``"auto"`` means on this machine. On a machine without a GPU this
    never loads the extension (so it never warns)."""
    if torch.cuda.is_available():
        from ._native import has_cuda_kernels

        if has_cuda_kernels():
            return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def resolve_device(device="auto", arg: str = "device") -> torch.device:
    """``device`` ("auto" | "cpu" | "cuda" | "cuda:N" | a torch.device | None = "auto")
    -> the torch.device to put every tensor on.

    Raises ValueError naming ``arg`` ("device" in the API, "--device" in the CLI) for a
    string of another form, a CUDA device on a machine where torch sees none, or a GPU
    index past the last. Asking for CUDA where ``_C`` has no CUDA kernels works, on the
    PyTorch reference kernels, and warns once."""
    where = _name(arg)
    if device is None:
        return auto_device()
    if isinstance(device, torch.device):
        dev = device
        text = str(device)
    elif isinstance(device, str):
        text = device
        if text == "auto":
            return auto_device()
        if not _PATTERN.fullmatch(text):
            raise ValueError(f"argument {where}: must be {DEVICE_CHOICES}, got {text!r:.60}")
        dev = torch.device(text)
    else:
        raise ValueError(f"argument {where}: must be {DEVICE_CHOICES} or a torch.device, "
                         f"got {type(device).__name__}")
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise ValueError(f"argument {where}: must be {DEVICE_CHOICES}, got {text!r:.60}")
    if not torch.cuda.is_available():
        raise ValueError(f"argument {where}: {text!r} was asked for, but torch sees no CUDA device on this machine "
                         f"({'torch was built without CUDA' if torch.version.cuda is None else 'no GPU or driver'}); "
                         f"use 'cpu' or 'auto'")
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if index >= count:
        raise ValueError(f"argument {where}: {text!r}: this machine has {count} CUDA device(s), "
                         f"cuda:0..cuda:{count - 1}")
    _warn_reference_once()
    return torch.device("cuda", index)


def _warn_reference_once() -> None:
    global _warned_reference
    from ._native import has_cuda_kernels

    if not _warned_reference and not has_cuda_kernels():
        _warned_reference = True
        warnings.warn("pnerf_fast: _C was built without CUDA kernels; on the GPU the PyTorch reference kernels run "
                      "(rebuild with nvcc for the fast path)", RuntimeWarning, stacklevel=3)


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a module's tensors live (its first parameter or buffer; CPU when it has none)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")
