"""A light-stage dataset on disk: subject folders, splits.json and a contact sheet, rendered in
worker processes; subject i depends only on (seed, i)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ...geometry import rig
from .. import format as fmt
from .params import STYLES, subject_params
from .render import BACKGROUND, _subpixel_offsets, render_subject


def contact_sheet(images: Sequence[Sequence[np.ndarray]], background=(0.5, 0.5, 0.5), pad: int = 2) -> np.ndarray:
    """A grid: one row per subject, one column per view. ``images[r][c]`` are [H, W, 3|4]
    float in [0, 1] or uint8 (RGBA is composited over ``background``). Returns uint8 RGB."""
    rows = [list(r) for r in images]
    if not rows or not rows[0]:
        raise ValueError("contact_sheet: images is empty")
    h, w = np.asarray(rows[0][0]).shape[:2]
    ncol = max(len(r) for r in rows)
    sheet = np.ones((len(rows) * (h + pad) + pad, ncol * (w + pad) + pad, 3), np.float32) * np.asarray(background, np.float32)
    for i, r in enumerate(rows):
        for j, im in enumerate(r):
            a = np.asarray(im)
            a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
            if a.shape[:2] != (h, w):
                raise ValueError(f"contact_sheet: images[{i}][{j}] is {a.shape[:2]}, expected {(h, w)}")
            if a.shape[2] == 4:
                a = a[..., :3] * a[..., 3:] + np.asarray(background, np.float32) * (1 - a[..., 3:])
            y0, x0 = pad + i * (h + pad), pad + j * (w + pad)
            sheet[y0:y0 + h, x0:x0 + w] = a[..., :3]
    return (np.clip(sheet, 0, 1) * 255 + 0.5).astype(np.uint8)


def _split_counts(n: int, splits: Sequence[float]) -> tuple[int, int, int]:
    if len(splits) != 3 or any(f < 0 for f in splits) or sum(splits) <= 0:
        raise ValueError(f"splits must be three non-negative fractions (train, val, test), got {splits}")
    fr = np.asarray(splits, dtype=np.float64) / sum(splits)
    n_val = int(round(n * fr[1]))
    n_test = int(round(n * fr[2]))
    if n >= 3:
        n_val, n_test = max(1, n_val), max(1, n_test)
    n_val = min(n_val, n)
    n_test = min(n_test, n - n_val)
    return n - n_val - n_test, n_val, n_test


def _make_subject(out: str, name: str, seed: int, index: int, res: int, views: int, spp: int,
                  sheet_views: Sequence[int] | None, style: str = "classic") -> dict:
    """Render and write one subject (runs in a worker process or in-process)."""
    params = subject_params(seed, index, style)
    cams = rig.rig_cameras(res, views)
    t0 = time.perf_counter()
    with torch.no_grad():
        imgs, lms = render_subject(params, cams, spp=spp)
    t1 = time.perf_counter()
    meta = {
        "generator": "pnerf_fast.data.lightstage",
        "seed": int(seed),
        "index": int(index),
        "style": style,
        "spp": int(spp),
        "background": list(BACKGROUND),
        "head_params": params.to_dict(),
        "head_to_world": {"scale": params.pose.scale, "rotation": params.pose.rotation(),
                          "translation": list(params.pose.translation)},
    }
    l2d = {k: cam.project(lms)[0] for k, cam in enumerate(cams)}
    fmt.write_subject(Path(out) / name, cameras=cams, images=imgs, frontal_index=0, landmarks=lms,
                      landmarks_2d=l2d, meta=meta)
    t2 = time.perf_counter()
    sheet = [(np.clip(imgs[k], 0, 1) * 255 + 0.5).astype(np.uint8) for k in sheet_views] if sheet_views else None
    return {"index": index, "render_s": t1 - t0, "write_s": t2 - t1, "sheet": sheet}


def _worker_init():
    torch.set_num_threads(1)


def generate_lightstage(out, subjects: int, res: int = 128, seed: int = 0, views: int = 25, spp: int = 4,
                        splits=(0.8, 0.1, 0.1), progress: bool = True,
                        contact_sheet_path: str | None = "contact_sheet.png", workers: int = 2,
                        only: Sequence[int] | None = None, style: str = "classic") -> dict:
    """Render ``subjects`` heads into ``out``/subject_000 ... and write ``out``/splits.json.

    Deterministic given ``seed``: subject i depends only on (seed, i), not on the subject
    count or the number of worker processes. ``workers`` > 1 renders subjects in parallel
    processes with one torch thread each (robust on a shared machine, where OpenMP
    threads that wait for each other are slow); ``workers=1`` runs in this process with
    one thread. The first ``val`` and ``test`` fractions of ``splits`` go to the last
    subjects (at least one each when subjects >= 3). ``contact_sheet_path`` (relative
    to ``out``; None to skip) gets up to 6 subjects x 6 views. ``only``: render just these
    subject indices (the same heads and splits as the full set; splits.json lists those
    rendered), e.g. a benchmark's test split alone. ``style``: "classic" (the first light
    stage: cartoon heads, even light) or "portrait" (real proportions, varied hair, body
    and clothes, expressions, glasses and beards, per-subject lighting; see
    :func:`sample_head_portrait`).

    Returns timings: total_s, render_s and write_s (summed over subjects; CPU-side work
    per process), per_subject_s (wall), subjects, views, res, spp, workers."""
    if int(subjects) < 1:
        raise ValueError(f"subjects must be >= 1, got {subjects}")
    if int(res) < 8:
        raise ValueError(f"res must be >= 8, got {res}")
    if int(views) < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    _subpixel_offsets(spp)  # validates spp
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    n_train, n_val, n_test = _split_counts(subjects, splits)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = [f"subject_{i:03d}" for i in range(subjects)]
    sheet_views = [0, *list(np.linspace(1, views - 1, min(5, views - 1)).round().astype(int))] if views > 1 else [0]
    n_sheet = 6 if contact_sheet_path else 0
    if only is not None:
        bad = [i for i in only if not 0 <= int(i) < subjects]
        if bad:
            raise ValueError(f"only: subject index {bad[0]} is outside [0, {subjects})")
        todo = sorted({int(i) for i in only})
    else:
        todo = list(range(subjects))
    jobs = [(str(out), names[i], int(seed), i, int(res), int(views), int(spp), sheet_views if k < n_sheet else None, style)
            for k, i in enumerate(todo)]
    t_start = time.perf_counter()
    results = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="subject", desc="lightstage")
    try:
        if workers == 1 or len(jobs) == 1:
            prev = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                for job in jobs:
                    results.append(_make_subject(*job))
                    if bar is not None:
                        bar.update(1)
            finally:
                torch.set_num_threads(prev)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn"),
                                     initializer=_worker_init) as ex:
                futs = [ex.submit(_make_subject, *job) for job in jobs]
                try:
                    for fut in as_completed(futs):
                        results.append(fut.result())
                        if bar is not None:
                            bar.update(1)
                except BaseException:
                    for f in futs:  # fail fast: do not render the rest
                        f.cancel()
                    raise
        done = {names[i] for i in todo}
        keep = lambda ns: [n for n in ns if n in done]  # noqa: E731
        fmt.write_splits(out, keep(names[:n_train]), keep(names[n_train:n_train + n_val]),
                         keep(names[n_train + n_val:]))
        rows = [r["sheet"] for r in sorted(results, key=lambda r: r["index"]) if r["sheet"]]
        if contact_sheet_path and rows:
            from PIL import Image

            Image.fromarray(contact_sheet(rows)).save(out / contact_sheet_path, optimize=True)
    finally:
        if bar is not None:
            bar.close()
    total = time.perf_counter() - t_start
    return {"total_s": total, "render_s": sum(r["render_s"] for r in results),
            "write_s": sum(r["write_s"] for r in results), "per_subject_s": total / len(jobs),
            "subjects": len(jobs), "views": views, "res": res, "spp": spp, "workers": workers, "style": style}
