"""Procedural texture maths shared by the SDF (curls) and the shading: sine-wave noise, smoothstep, mix."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch


def _waves(rng: np.random.Generator, freqs: Sequence[float], per: int):
    w = []
    for f in freqs:
        for _ in range(per):
            v = rng.normal(size=3)
            v = v / np.linalg.norm(v) * f * rng.uniform(0.8, 1.25)
            w.append((float(v[0]), float(v[1]), float(v[2]), float(rng.uniform(0, 2 * np.pi))))
    return w


def _noise(x, y, z, waves):
    out = torch.zeros_like(x)
    for kx, ky, kz, ph in waves:
        out += torch.sin(x * kx + y * ky + z * kz + ph)
    return out / math.sqrt(len(waves) / 2)


def _smoothstep(e0, e1, v):
    den = e1 - e0
    if torch.is_tensor(den):  # edges may coincide (e.g. a zero-height eye opening)
        den = torch.where(den.abs() < 1e-9, torch.full_like(den, 1e-9), den)
    t = ((v - e0) / den).clamp(0.0, 1.0)
    return t * t * (3 - 2 * t)


def _mix(a, b, t):
    return a + (b - a) * t[:, None]
