"""The viewer: a viser server whose background image is the portrait rendered from each
client's camera.

Progressive rendering, per client, in one render thread:

1. when the camera moves, a *preview* is rendered at once: at most ``preview_res``²
   pixels, fewer when this machine cannot make ``fps`` of those a second (the side is
   picked from the measured time per ray), with a coarser marching step; the browser
   stretches it to the canvas;
2. once the camera has been still for ``still_after_s``, the view is refined, doubling
   the side up to ``res``² pixels; a refinement stops between chunks of rays as soon as
   the camera moves again.

Images keep the canvas's aspect (a "128²" image of a 16:9 canvas is 171 x 96).
"""
from __future__ import annotations

import math
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..geometry.box import half_extent
from ..geometry.cameras import Camera
from ..geometry.rig import DISTANCE
from ..render import paths
from ..render.video import depth_to_rgb
from .camera import camera_from_viser, viser_pose
from .keyframes import KeyframeRecorder, save_png

__all__ = ["ViewerConfig", "Viewer", "MODES", "dolly_client", "focal_mm", "fov_from_focal_mm", "viser_module"]

MODES = ("RGB", "Depth", "Opacity")
FILM_HEIGHT_MM = 24.0  # focal lengths are 35 mm-equivalent (full-frame film height)
FOCAL_MM_RANGE = (20.0, 200.0)


def focal_mm(fov_rad: float) -> float:
    """Vertical fov (radians) -> 35 mm-equivalent focal length (mm)."""
    return 0.5 * FILM_HEIGHT_MM / math.tan(fov_rad / 2)


def fov_from_focal_mm(f_mm: float) -> float:
    return 2 * math.atan(0.5 * FILM_HEIGHT_MM / f_mm)


def viser_module():
    """``import viser``, or a one-line error that says how to install it."""
    try:
        import viser
    except ImportError:
        raise ValueError("pnerf view needs viser: pip install viser (see scripts/setup_env.sh)") from None
    return viser


def dolly_client(client, fov: float) -> float:
    """The focal-length slider: set a viser ``client``'s vertical fov to ``fov`` (radians)
    and move its camera along the view axis so the face keeps its size
    (:func:`pnerf_fast.render.paths.dolly`, around the orbit centre) -> the fov set
    (larger than asked where the camera would come closer than ``paths.DOLLY_NEAR``)."""
    cam = client.camera
    look_at = np.array(cam.look_at, dtype=np.float64)
    now = camera_from_viser(cam.wxyz, cam.position, cam.fov, 1.0, 64 * 64)
    pose = viser_pose(paths.dolly(now, math.degrees(fov), target=look_at), look_at)
    with client.atomic():
        cam.fov = pose.fov
        cam.position = pose.position  # viser moves look_at along with position ...
        cam.look_at = look_at         # ... so put it back
    return pose.fov


@dataclass
class ViewerConfig:
    res: int = 256              # refined views: about res² pixels
    preview_res: int = 128      # while moving: at most preview_res² pixels ...
    min_preview_res: int = 32   # ... and at least this
    fps: float = 5.0            # ... sized so that a preview takes 1 / fps
    still_after_s: float = 0.3  # refine once the camera has been still this long
    preview_step: float = 2.0   # preview marching step, times the portrait's
    out_dir: Path = Path(".")   # where Save PNG and Save camera path write
    name: str = "portrait"      # their file names' prefix
    verbose: bool = True

    def check(self) -> "ViewerConfig":
        for arg, v, lo, hi in (("--res", self.res, 16, 2048), ("--preview-res", self.preview_res, 16, 2048)):
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"argument {arg}: must be an integer in [{lo}, {hi}], got {v!r:.40}")
        if self.preview_res > self.res:
            raise ValueError(f"argument --preview-res: must be <= --res ({self.res}), got {self.preview_res}")
        if not (isinstance(self.fps, (int, float)) and 0.1 <= self.fps <= 120):
            raise ValueError(f"argument --fps: must be in [0.1, 120], got {self.fps!r:.40}")
        self.min_preview_res = min(self.min_preview_res, self.preview_res)
        self.out_dir = Path(self.out_dir)
        return self


class _CameraMoved(Exception):
    pass


class _StopIfMoved:
    """A progress object for PortraitField.render that stops a refinement between
    chunks of rays when the client's view has changed."""

    def __init__(self, changed):
        self.changed = changed

    def update(self, n):
        if self.changed():
            raise _CameraMoved


@dataclass
class _View:
    """One client's state."""

    client: object
    mode: str = "RGB"
    key: tuple | None = None     # the view last seen (camera and mode)
    moved_at: float = 0.0
    side: int = 0                # sqrt(pixels) of what is shown for ``key``; 0: nothing yet
    image: np.ndarray | None = None
    connected_at: float = field(default_factory=time.perf_counter)
    first_frame_s: float | None = None
    frames: dict = field(default_factory=lambda: {"preview": 0, "refined": 0})  # images sent
    recorder: KeyframeRecorder = field(default_factory=KeyframeRecorder)
    gui: dict = field(default_factory=dict)


class Viewer:
    """Serve ``portrait`` (a :class:`~pnerf_fast.train.model.PortraitField`, or anything
    with its ``render(camera, chunk, cfg, progress)``, ``frontal_camera``, ``transform``
    and ``model.render_cfg``) to browsers with viser."""

    def __init__(self, portrait, cfg: ViewerConfig | None = None):
        self.portrait = portrait
        self.cfg = (cfg or ViewerConfig()).check()
        self.home, self.target = self.start_camera(portrait)
        base = portrait.model.render_cfg
        self._preview_render = replace(base, step=base.step * self.cfg.preview_step)
        self._views: dict[int, _View] = {}
        self._views_lock = threading.Lock()
        self._render_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.server = None
        self.s_per_ray = self._calibrate()
        # Depth colours over a fixed range around the head (half the field's box, in world
        # units), so they do not flicker.
        scale = float(getattr(portrait.transform, "scale", 1.0) or 1.0)
        self._depth_half_range = half_extent(portrait.model.field.cfg.aabb) / scale

    # -- set-up ----------------------------------------------------------------------

    @staticmethod
    def start_camera(portrait) -> tuple[Camera, np.ndarray]:
        """(the input's frontal camera, the orbit centre: the point of its view axis
        nearest the world origin, where the head is)."""
        cam = portrait.frontal_camera or paths.camera_on_sphere(0.0, 0.0, 256)
        fwd = -cam.c2w[:3, 2]
        depth = float(np.dot(-cam.position, fwd))
        if not depth > 0:
            depth = DISTANCE
        return cam, cam.position + depth * fwd

    def _calibrate(self) -> float:
        """Seconds per preview ray, from one small render of the start view (also the
        warm-up)."""
        side = self.cfg.min_preview_res
        cam = self.home.scaled(side / self.home.height)
        t0 = time.perf_counter()
        self.portrait.render(cam, cfg=self._preview_render)
        return (time.perf_counter() - t0) / (cam.width * cam.height)

    def start(self, host: str = "127.0.0.1", port: int = 8080) -> str:
        """Start the server and the render thread -> the URL."""
        viser = viser_module()
        # A frame for a client that has just closed its tab is dropped; that is expected.
        warnings.filterwarnings("ignore", message=r"Queued a \w+ on a closed connection")
        server = viser.ViserServer(host=host, port=port, label="pnerf view", verbose=False)
        if port and server.get_port() != port:  # viser moves to the next port when one is taken
            server.stop()
            raise ValueError(f"argument --port: {host}:{port} is in use; pick another (or --port 0 for any free one)")
        self.server = server
        server.scene.set_up_direction("+y")
        pose = viser_pose(self.home, self.target)
        ic = server.initial_camera
        ic.position, ic.look_at, ic.up, ic.fov = pose.position, pose.look_at, pose.up, pose.fov
        ic.near, ic.far = 0.05, 100.0
        server.on_client_connect(self._connect)
        server.on_client_disconnect(self._disconnect)
        self._thread = threading.Thread(target=self._loop, name="pnerf-view-render", daemon=True)
        self._thread.start()
        return f"http://{host}:{server.get_port()}"

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.server is not None:
            self.server.stop()

    def _log(self, msg: str) -> None:
        if self.cfg.verbose:
            print(f"pnerf view: {msg}", flush=True)

    # -- clients and their GUI -------------------------------------------------------

    def _connect(self, client) -> None:
        v = _View(client)
        gui = client.gui
        with gui.add_folder("Portrait"):
            mode = gui.add_dropdown("Show", MODES, initial_value="RGB")
            f0 = round(focal_mm(viser_pose(self.home, self.target).fov), 1)
            focal = gui.add_slider("Focal length (mm)", min=FOCAL_MM_RANGE[0], max=FOCAL_MM_RANGE[1], step=0.5,
                                   initial_value=f0,
                                   hint="Dolly zoom: the camera moves along its view axis so the face keeps its size")
            home = gui.add_button("Back to the input view")
        with gui.add_folder("Save"):
            png = gui.add_button("Save PNG")
            key = gui.add_button("Add keyframe")
            per = gui.add_number("Frames per keyframe", initial_value=24, min=1, max=480, step=1)
            save = gui.add_button("Save camera path")
            clear = gui.add_button("Clear keyframes")
            status = gui.add_markdown("No keyframes.")
        v.gui = {"mode": mode, "focal": focal, "per": per, "status": status}

        @mode.on_update
        def _(event):
            v.mode = mode.value
            self._wake.set()

        @focal.on_update
        def _(event):
            if event.client is not None:  # not our own correction below
                got = dolly_client(client, fov_from_focal_mm(focal.value))
                if abs(focal_mm(got) - focal.value) > 0.25:  # stopped at the closest distance
                    focal.value = round(focal_mm(got), 1)

        @home.on_click
        def _(event):
            pose = viser_pose(self.home, self.target)
            with client.atomic():
                client.camera.fov = pose.fov
                client.camera.position = pose.position
                client.camera.look_at = pose.look_at
                client.camera.up_direction = pose.up
            focal.value = round(focal_mm(pose.fov), 1)

        png.on_click(lambda event: self._guarded(client, "Save PNG", lambda: self.save_png(v)))
        key.on_click(lambda event: self._guarded(client, "Add keyframe", lambda: self.add_keyframe(v)))
        save.on_click(lambda event: self._guarded(client, "Save camera path", lambda: self.save_camera_path(v)))

        @clear.on_click
        def _(event):
            v.recorder.clear()
            status.content = "No keyframes."

        with self._views_lock:
            self._views[client.client_id] = v
        self._wake.set()

    def _disconnect(self, client) -> None:
        with self._views_lock:
            self._views.pop(client.client_id, None)

    def _guarded(self, client, what: str, fn) -> None:
        try:
            msg = fn()
        except (OSError, ValueError) as e:
            client.add_notification(f"{what} failed", " ".join(str(e).split()), color="red", auto_close_seconds=8)
            return
        client.add_notification(what, msg, auto_close_seconds=4)
        self._log(msg)

    # -- what the buttons and the slider do ------------------------------------------

    def current_camera(self, v: _View, pixels: int) -> Camera:
        cam = v.client.camera
        return camera_from_viser(cam.wxyz, cam.position, cam.fov, cam.aspect, pixels)

    def save_png(self, v: _View) -> str:
        """Write the current view at ``res``² pixels (the shown image when it is refined)."""
        key = self._key(v)
        img = v.image if (key is not None and key == v.key and v.side >= self.cfg.res) else None
        if img is None:
            with self._render_lock:
                img = self._image(self.current_camera(v, self.cfg.res ** 2), v.mode, None, key)
        path = _next_free(self.cfg.out_dir / f"{self.cfg.name}_view_{{:03d}}.png")
        save_png(img, path)
        return f"wrote {path} ({img.shape[1]}x{img.shape[0]}, {v.mode.lower()})"

    def add_keyframe(self, v: _View) -> str:
        n = v.recorder.add(self.current_camera(v, self.cfg.res ** 2))
        msg = f"{n} keyframe{'s' if n > 1 else ''}"
        v.gui["status"].content = msg + "."
        return msg

    def save_camera_path(self, v: _View) -> str:
        path = self.cfg.out_dir / f"{self.cfg.name}_camera_path.json"
        per = int(v.gui["per"].value)
        v.recorder.save(path, frames_per_segment=per)
        frames = v.recorder.frames(per)
        return (f"wrote {path}: {len(v.recorder)} keyframes, {len(frames)} frames at "
                f"{frames[0].width}x{frames[0].height} (play it: pnerf render PORTRAIT.pt --camera-path {path})")

    # -- the render loop -------------------------------------------------------------

    def _key(self, v: _View) -> tuple | None:
        cam = v.client.camera
        try:
            if cam.image_height <= 0 or cam.image_width <= 0:
                return None
            return (tuple(np.round(cam.wxyz, 7)), tuple(np.round(cam.position, 6)), round(float(cam.fov), 7),
                    round(float(cam.aspect), 4), tuple(np.round(cam.look_at, 6)), v.mode)
        except AssertionError:  # viser: no camera message from this client yet
            return None

    def preview_side(self) -> int:
        """The preview's sqrt(pixels): as large as ``fps`` allows on this machine."""
        c = self.cfg
        side = int(math.sqrt(1.0 / (c.fps * max(self.s_per_ray, 1e-9))))
        return max(c.min_preview_res, min(c.preview_res, side))

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._views_lock:
                views = list(self._views.values())
            busy = False
            for v in views:
                try:
                    busy |= self._step(v)
                except _CameraMoved:
                    busy = True
                except Exception as e:  # a client that went away mid-frame, ...
                    self._log(f"client {getattr(v.client, 'client_id', '?')}: {type(e).__name__}: {e}")
            if not busy:
                self._wake.wait(0.02)
                self._wake.clear()

    def _step(self, v: _View) -> bool:
        """Render what ``v`` needs next, if anything -> whether it rendered."""
        key = self._key(v)
        if key is None:
            return False
        now = time.perf_counter()
        if key != v.key:
            v.key, v.moved_at, v.side = key, now, 0
        if v.side == 0:
            side, preview = self.preview_side(), True
        elif v.side < self.cfg.res and now - v.moved_at >= self.cfg.still_after_s:
            side, preview = min(self.cfg.res, 2 * v.side), False
        else:
            return False
        wxyz, position, fov, aspect, _, mode = key
        cam = camera_from_viser(wxyz, position, fov, aspect, side * side)
        stop = None if preview else _StopIfMoved(lambda: self._key(v) != key)
        t0 = time.perf_counter()
        with self._render_lock:
            img = self._image(cam, mode, stop, key)
        v.client.scene.set_background_image(img, format="jpeg" if preview else "png", jpeg_quality=90)
        v.client.flush()
        dt = time.perf_counter() - t0
        if preview:  # keep the preview size tracking this machine's speed (encoding included)
            self.s_per_ray = 0.7 * self.s_per_ray + 0.3 * dt / (cam.width * cam.height)
        v.side, v.image = side, img
        v.frames["preview" if preview else "refined"] += 1
        if v.first_frame_s is None:
            v.first_frame_s = time.perf_counter() - v.connected_at
            self._log(f"client {v.client.client_id}: first frame ({cam.width}x{cam.height}, {dt * 1000:.0f} ms) "
                      f"{v.first_frame_s:.2f} s after connecting")
        return True

    def _image(self, cam: Camera, mode: str, stop, key) -> np.ndarray:
        """Render ``cam`` -> uint8 [H, W, 3] in ``mode`` (preview settings when ``stop`` is None
        and the camera is below ``res``)."""
        preview = stop is None and cam.width * cam.height < self.cfg.res ** 2
        out = self.portrait.render(cam, chunk=1 << 12 if stop else 1 << 14,
                                   cfg=self._preview_render if preview else None, progress=stop)
        if mode == "Depth":
            d = float(np.linalg.norm(np.asarray(key[4]) - cam.position)) if key else DISTANCE
            h = self._depth_half_range
            return depth_to_rgb(out["depth"], out["opacity"], near=max(1e-3, d - h), far=d + h)
        if mode == "Opacity":
            return np.repeat((out["opacity"].cpu().numpy()[..., None] * 255 + 0.5).astype(np.uint8), 3, axis=2)
        return (out["rgb"].cpu().numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)


def _next_free(pattern: Path) -> Path:
    for k in range(1, 100000):
        p = Path(str(pattern).format(k))
        if not p.exists():
            return p
    raise ValueError(f"no free file name like {pattern}")
