"""pnerf view: render times, the first frame in a headless Chromium and the frame rate
while the camera moves.

    python benchmarks/bench_viewer.py --model demo_out/photo_portrait.pt --json
    python benchmarks/bench_viewer.py --screenshot docs/images/viewer.png   # the README's picture

The viewer runs in this process (port 0), so its clock and the browser driver's are one:
"first frame" is from Page.navigate to the viewer sending its first image, split into the
page's own start (until its websocket connects) and our part after it. The frame rate is
what the render thread sends while the server moves the client's camera along an orbit
every 50 ms (the browser echoes each camera, as when a person drags).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import time_ms  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "demo_out" / "photo_portrait.pt"))
    ap.add_argument("--window", default="1024x768")
    ap.add_argument("--move-seconds", type=float, default=6.0)
    ap.add_argument("--screenshot", default=None, help="also write a screenshot of the refined input view here")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from pnerf_fast.api import load
    from pnerf_fast.geometry.cameras import look_at
    from pnerf_fast.viewer.app import Viewer, ViewerConfig
    from pnerf_fast.viewer.camera import viser_pose
    from pnerf_fast.viewer.headless import HeadlessChromium, head_visible

    portrait = load(args.model)
    viewer = Viewer(portrait, ViewerConfig(verbose=False))
    res = {"model": args.model, "threads": torch.get_num_threads()}
    for side in (128, viewer.preview_side()):
        cam = viewer.home.scaled(side / viewer.home.height)
        res[f"render_{side}_ms"] = round(time_ms(lambda: portrait.render(cam), repeats=3), 1)
        res[f"render_{side}_preview_ms"] = round(time_ms(lambda: portrait.render(cam, cfg=viewer._preview_render),
                                                         repeats=3), 1)
    url = viewer.start("127.0.0.1", 0)
    w, h = map(int, args.window.split("x"))
    try:
        with HeadlessChromium(window=(w, h)) as browser:
            t_nav = time.perf_counter()
            shot = browser.screenshot_when(url, head_visible, timeout=120)
            v = next(iter(viewer._views.values()))
            res["page_connect_s"] = round(v.connected_at - t_nav, 2)
            res["first_frame_after_connect_s"] = round(v.first_frame_s, 2)
            res["first_frame_s"] = round(v.connected_at + v.first_frame_s - t_nav, 2)
            res["first_frame_screenshot_s"] = round(shot.seconds, 2)
            res["preview_side"] = viewer.preview_side()

            # Move: an orbit of the head, a new camera every 50 ms.
            target = viewer.target
            r = float(np.linalg.norm(viewer.home.position - target))
            before = dict(v.frames)
            echoes = []
            v.client.camera.on_update(lambda cam: echoes.append(time.perf_counter()))
            busy = []  # seconds per preview frame: render, encode, send
            step = viewer._step

            def timed_step(view):
                t = time.perf_counter()
                n = view.frames["preview"]
                out = step(view)
                if view.frames["preview"] > n:
                    busy.append(time.perf_counter() - t)
                return out

            viewer._step = timed_step
            t0 = time.perf_counter()
            k = 0
            while time.perf_counter() - t0 < args.move_seconds:
                a = math.radians(25 * math.sin(k * 0.15))
                eye = target + r * np.array([math.sin(a), 0.05, math.cos(a)])
                pose = viser_pose(replace(viewer.home, c2w=look_at(eye, target)), target)
                with v.client.atomic():
                    v.client.camera.position = pose.position
                    v.client.camera.look_at = pose.look_at
                k += 1
                time.sleep(0.05)
            dt = time.perf_counter() - t0
            res["moving_fps"] = round((v.frames["preview"] - before["preview"]) / dt, 2)
            viewer._step = step
            res["moving_camera_updates_sent"] = k
            res["moving_camera_echoes_per_s"] = round(len(echoes) / dt, 2)  # cameras the browser sent back
            res["moving_frame_ms"] = round(1000 * float(np.median(busy)), 1) if busy else None
            res["moving_fps_render_bound"] = round(1 / float(np.median(busy)), 2) if busy else None

            if args.screenshot:
                pose = viser_pose(viewer.home, target)
                with v.client.atomic():
                    v.client.camera.position, v.client.camera.look_at = pose.position, pose.look_at
                t_end = time.time() + 120
                time.sleep(1.0)
                while time.time() < t_end and v.side < viewer.cfg.res:
                    time.sleep(0.2)
                time.sleep(1.0)
                browser.evaluate("document.querySelectorAll('.mantine-Notification-root, .mantine-Notifications-root')"
                                 ".forEach(e => e.remove())")
                time.sleep(0.5)
                from PIL import Image

                Image.fromarray(browser.screenshot()).save(args.screenshot)
                res["screenshot"] = args.screenshot
    finally:
        viewer.stop()
    print(json.dumps(res, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
