"""Open a page in headless Chromium and screenshot it once it shows what we wait for,
over the Chrome DevTools Protocol (the ``websockets`` client that viser depends on;
no selenium or playwright). Used by the viewer's CI test, its benchmark and the README
screenshot.

    with HeadlessChromium(window=(1024, 768)) as browser:
        shot = browser.screenshot_when(url, lambda img: head_visible(img), timeout=60)
        shot.image, shot.seconds   # uint8 [H, W, 3]; seconds from navigation to that frame
"""
from __future__ import annotations

import base64
import io
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["find_chromium", "HeadlessChromium", "Screenshot", "head_visible", "CHROMIUM_NAMES"]

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The Chromium executable (``$CHROMIUM`` or the first of CHROMIUM_NAMES on PATH), or None."""
    env = os.environ.get("CHROMIUM")
    if env:
        return shutil.which(env) or (env if os.access(env, os.X_OK) else None)
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


@dataclass
class Screenshot:
    image: np.ndarray  # [H, W, 3] uint8
    seconds: float     # from Page.navigate to this screenshot
    shots: int         # screenshots taken until the predicate held


def head_visible(img: np.ndarray, background=(255, 255, 255), min_fraction: float = 0.2,
                 min_std: float = 8.0) -> bool:
    """Whether the central 30% x 30% of a screenshot shows a rendered image: at least
    ``min_fraction`` of its pixels differ from ``background`` by more than 24/255, and
    its brightness varies (std > ``min_std``), so a blank or flat canvas fails."""
    h, w = img.shape[:2]
    c = img[int(h * 0.35):int(h * 0.65), int(w * 0.35):int(w * 0.65), :3].astype(np.float64)
    off = np.abs(c - np.asarray(background, dtype=np.float64)).max(-1) > 24
    return bool(off.mean() >= min_fraction and c.mean(-1).std() > min_std)


class HeadlessChromium:
    """A headless Chromium with one page, driven over DevTools. A context manager; the
    browser and its profile folder are removed on exit."""

    def __init__(self, executable: str | None = None, window=(1024, 768), timeout: float = 30.0):
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise FileNotFoundError(f"no Chromium found (tried $CHROMIUM and {', '.join(CHROMIUM_NAMES)})")
        self.window, self.timeout = window, timeout
        self._ids = itertools.count(1)
        self.proc = self.ws = self.profile = None

    def __enter__(self) -> "HeadlessChromium":
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="pnerf-chromium-")
        w, h = self.window
        args = [self.executable, "--headless", "--no-sandbox", "--no-first-run", "--no-default-browser-check",
                "--disable-dev-shm-usage", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                "--hide-scrollbars", "--mute-audio", f"--window-size={w},{h}", "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}", "about:blank"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port = self._devtools_port()
            pages = self._get_json(f"http://127.0.0.1:{port}/json/list")
            page = next(p for p in pages if p.get("type") == "page")
            self.ws = connect(page["webSocketDebuggerUrl"], max_size=64 << 20, open_timeout=self.timeout)
            self.call("Page.enable")
            self.call("Emulation.setDeviceMetricsOverride", width=w, height=h, deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:
                pass
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.profile:
            shutil.rmtree(self.profile, ignore_errors=True)

    def _devtools_port(self) -> int:
        f = Path(self.profile) / "DevToolsActivePort"
        t_end = time.monotonic() + self.timeout
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.executable} exited with code {self.proc.returncode} on start")
            if f.is_file():
                first = f.read_text().split("\n", 1)[0].strip()
                if first.isdigit():
                    return int(first)
            time.sleep(0.05)
        raise TimeoutError(f"{self.executable} did not open its DevTools port in {self.timeout:.0f} s")

    def _get_json(self, url: str):
        t_end = time.monotonic() + self.timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    return json.loads(r.read())
            except OSError:
                if time.monotonic() > t_end:
                    raise
                time.sleep(0.1)

    def call(self, method: str, **params) -> dict:
        """One DevTools command -> its result (events in between are skipped)."""
        i = next(self._ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        t_end = time.monotonic() + self.timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, t_end - time.monotonic())))
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"DevTools {method}: {msg['error']}")
                return msg.get("result", {})

    def screenshot(self) -> np.ndarray:
        from PIL import Image

        data = self.call("Page.captureScreenshot", format="png")["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True).get("result", {}).get("value")

    def screenshot_when(self, url: str, predicate, timeout: float = 60.0, interval: float = 0.2) -> Screenshot:
        """Open ``url`` and take screenshots until ``predicate(image)`` holds -> the first
        one that does; TimeoutError (with the last image as ``.image``) after ``timeout``."""
        t0 = time.perf_counter()
        self.call("Page.navigate", url=url)
        img, n = None, 0
        while time.perf_counter() - t0 < timeout:
            try:
                img = self.screenshot()
            except RuntimeError:  # "Not attached to an active page" while the page loads
                time.sleep(interval)
                continue
            n += 1
            if predicate(img):
                return Screenshot(img, time.perf_counter() - t0, n)
            time.sleep(interval)
        err = TimeoutError(f"{url}: the page did not show what was awaited within {timeout:.0f} s ({n} screenshots)")
        err.image = img
        raise err
