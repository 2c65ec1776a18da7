"""pnerf view (issue 16 part 3): viser camera conversion, the dolly-zoom slider, the
keyframe recorder, bad arguments, and the viewer opened in headless Chromium."""
import contextlib
import math
import os
import re
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

viser = pytest.importorskip("viser", reason="pnerf view needs viser (scripts/setup_env.sh installs it)")

from pnerf_fast.cli import main as pnerf  # noqa: E402
from pnerf_fast.render import paths  # noqa: E402
from pnerf_fast.render.camera_path import read_camera_path  # noqa: E402
from pnerf_fast.viewer.app import (Viewer, ViewerConfig, dolly_client, focal_mm,  # noqa: E402
                                   fov_from_focal_mm)
from pnerf_fast.viewer.camera import camera_from_viser, image_size, viser_pose  # noqa: E402
from pnerf_fast.viewer.headless import HeadlessChromium, find_chromium, head_visible  # noqa: E402
from pnerf_fast.viewer.keyframes import KeyframeRecorder  # noqa: E402

from test_export import head_portrait  # noqa: E402,F401  (the shipped prior finetuned on a tiny subject: a real head)
from test_render_cli import tiny_portrait  # noqa: E402,F401  (a module-scoped fixture: tiny light stage + portrait)

ROOT = Path(__file__).resolve().parents[1]


def viser_camera(pose=None, width=640, height=480):
    """A real viser CameraHandle, as if the browser had sent ``pose`` (a ViserPose);
    what the server would send back is dropped."""
    conn = types.SimpleNamespace(queue_message=lambda m: None)
    client = types.SimpleNamespace(_websock_connection=conn, atomic=contextlib.nullcontext)
    cam = viser.CameraHandle(client)
    st = cam._state
    st.image_width, st.image_height, st.update_timestamp = width, height, time.time()
    if pose is not None:
        st.wxyz, st.position, st.fov = pose.wxyz.copy(), pose.position.copy(), pose.fov
        st.look_at, st.up_direction = pose.look_at.copy(), pose.up.copy()
    client.camera = cam
    return client


@pytest.mark.parametrize("yaw,pitch", [(0, 0), (35, -12), (-60, 25), (170, 5)])
def test_viser_camera_round_trip(yaw, pitch):
    cam = paths.camera_on_sphere(yaw, pitch, 96, radius=3.7, fov_deg=24.0, target=(0.1, -0.2, 0.05))
    pose = viser_pose(cam, (0.1, -0.2, 0.05))
    np.testing.assert_allclose(pose.look_at, [0.1, -0.2, 0.05], atol=1e-9)
    back = camera_from_viser(pose.wxyz, pose.position, pose.fov, 1.0, 96 * 96)
    np.testing.assert_allclose(back.c2w, cam.c2w, atol=1e-9)
    assert (back.width, back.height) == (96, 96) and back.fy == pytest.approx(cam.fy)
    # viser's own camera, given that position, look-at and up, has our orientation.
    handle = viser_camera().camera
    handle._state.position, handle._state.look_at, handle._state.up_direction = pose.position, pose.look_at, pose.up
    handle._update_wxyz()  # what viser runs when a camera is set by position, look-at and up
    q = np.asarray(handle.wxyz)
    assert min(np.abs(q - pose.wxyz).max(), np.abs(q + pose.wxyz).max()) < 1e-6
    # A world point lands on the same pixel through both, on a wide canvas too.
    wide = camera_from_viser(pose.wxyz, pose.position, pose.fov, 16 / 9, 96 * 96)
    assert wide.width * wide.height == pytest.approx(96 * 96, rel=0.03) and wide.width / wide.height == pytest.approx(16 / 9, rel=0.03)
    uv, _ = cam.project(np.array([0.1, -0.2, 0.05]))
    uv_wide, _ = wide.project(np.array([0.1, -0.2, 0.05]))
    np.testing.assert_allclose(uv, [48, 48], atol=1e-6)
    np.testing.assert_allclose(uv_wide, [wide.width / 2, wide.height / 2], atol=1e-6)


def test_image_size_and_focal_conversion():
    assert image_size(128 * 128, 1.0) == (128, 128)
    w, h = image_size(128 * 128, 2.0)
    assert abs(w * h - 128 * 128) < 200 and abs(w / h - 2.0) < 0.02
    assert focal_mm(fov_from_focal_mm(50.0)) == pytest.approx(50.0)
    with pytest.raises(ValueError):
        image_size(0, 1.0)


def test_focal_slider_is_a_dolly_zoom_keeping_the_face_size():
    home = paths.camera_on_sphere(20, 5, 128)
    client = viser_camera(viser_pose(home, (0, 0, 0)), width=128, height=128)
    face = np.array([[0.5, 0.0, 0.0], [-0.5, 0.0, 0.0], [0.0, 0.6, 0.0], [0.0, -0.6, 0.0]])
    # The face plane: through the orbit centre, facing the camera.
    face = face @ home.c2w[:3, :3].T
    nose = face[0] + 0.6 * home.c2w[:3, 2]  # in front of that plane, towards the camera

    def shown(c):
        cam = camera_from_viser(c.camera.wxyz, c.camera.position, c.camera.fov, 1.0, 128 * 128)
        return cam, cam.project(face)[0], cam.project(nose)[0]

    cam0, face0, nose0 = shown(client)
    spread0 = np.linalg.norm(nose0 - 64)
    for f_mm in (30.0, 90.0, 150.0):
        got = dolly_client(client, fov_from_focal_mm(f_mm))
        assert focal_mm(got) == pytest.approx(f_mm)
        cam, face1, nose1 = shown(client)
        np.testing.assert_allclose(face1, face0, atol=1e-6)  # the face keeps its size and place
        np.testing.assert_allclose(client.camera.look_at, [0, 0, 0], atol=1e-9)  # still orbiting the head
        np.testing.assert_allclose(cam.c2w[:3, :3], cam0.c2w[:3, :3], atol=1e-9)  # along the view axis
        d = np.linalg.norm(cam.position)
        assert d == pytest.approx(np.linalg.norm(cam0.position) * f_mm / focal_mm(home_fov(home)))
        # Perspective: the nose sticks out more the closer (wider) the camera.
        assert (np.linalg.norm(nose1 - 64) > spread0) == (f_mm < focal_mm(home_fov(home)))
    # Never closer than DOLLY_NEAR: the slider stops there.
    got = dolly_client(client, fov_from_focal_mm(5.0))
    assert np.linalg.norm(client.camera.position) == pytest.approx(paths.DOLLY_NEAR)
    assert focal_mm(got) > 5.0
    np.testing.assert_allclose(shown(client)[1], face0, atol=1e-6)


def home_fov(cam):
    return 2 * math.atan(0.5 * cam.height / cam.fy)


def test_keyframes_write_a_camera_path_that_reads_back(tmp_path):
    rec = KeyframeRecorder()
    with pytest.raises(ValueError, match="no keyframes"):
        rec.frames()
    keys = paths.orbit(3, 64)
    for k in keys:
        rec.add(k)
    rec.add(paths.dolly(keys[0].scaled(2.0), 40.0))  # another canvas size: stored at the first's
    path = rec.save(tmp_path / "camera_path.json", frames_per_segment=4, fps=12)
    cams, fps = read_camera_path(path)
    assert fps == 12 and len(cams) == 3 * 4 + 1
    assert all((c.width, c.height) == (64, 64) for c in cams)
    for i, k in enumerate(rec.keyframes):
        np.testing.assert_allclose(cams[4 * i].c2w, k.c2w, atol=1e-9)
        assert cams[4 * i].fy == pytest.approx(k.fy)
    assert cams[-1].fy == pytest.approx(paths.focal_from_fov(64, 40.0))
    # In between: rotations, and positions on the way from one keyframe to the next.
    mid = cams[2]
    np.testing.assert_allclose(mid.c2w[:3, :3].T @ mid.c2w[:3, :3], np.eye(3), atol=1e-9)
    np.testing.assert_allclose(mid.position, (keys[0].position + keys[1].position) / 2, atol=1e-9)
    with pytest.raises(ValueError, match="frames_per_segment"):
        rec.frames(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_view_bad_arguments(tiny_portrait, tmp_path, capsys):
    model = str(tiny_portrait["model"])

    def fails(argv, words):
        assert pnerf(["view"] + argv) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err

    fails([str(tmp_path / "nope.pt")], "not found")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    fails([str(tmp_path / "bad.pt"), "--port", "0"], "cannot read checkpoint")
    fails([str(tiny_portrait["prior"]), "--port", "0"], "not a finetuned portrait")
    fails([model, "--port", "70000"], "--port")
    fails([model, "--port", "-1"], "--port")
    fails([model, "--port", "http"], "--port")
    fails([model, "--res", "8"], "--res")
    fails([model, "--preview-res", "512"], "--preview-res")
    fails([model, "--fps", "0"], "--fps")
    fails([model, "--host", "no-such-host.invalid", "--port", "0"], "--host")
    fails([model, "--out-dir", "/proc/nope"], "--out-dir")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        fails([model, "--port", str(busy.getsockname()[1])], "in use")


def test_viewer_renders_each_mode_and_saves_views(head_portrait, tmp_path):
    from pnerf_fast.api import load

    viewer = Viewer(load(head_portrait), ViewerConfig(res=32, preview_res=16, out_dir=tmp_path, name="me",
                                                               verbose=False))
    assert 16 <= viewer.preview_side() <= 16 and viewer.s_per_ray > 0
    client = viser_camera(viser_pose(viewer.home, viewer.target), width=200, height=100)
    client.client_id = 0
    from pnerf_fast.viewer.app import _View

    v = _View(client, gui={"status": types.SimpleNamespace(content=""), "per": types.SimpleNamespace(value=3)})
    for mode in ("RGB", "Depth", "Opacity"):
        v.mode = mode
        img = viewer._image(viewer.current_camera(v, 32 * 32), mode, None, viewer._key(v))
        assert img.dtype == np.uint8 and img.shape[2] == 3 and img.shape[1] == pytest.approx(2 * img.shape[0], abs=1)
    assert "me_view_001.png" in viewer.save_png(v) and "me_view_002.png" in viewer.save_png(v)
    from PIL import Image

    assert Image.open(tmp_path / "me_view_001.png").size == image_size(32 * 32, 2.0)  # ~32² pixels, the canvas's 2:1
    viewer.add_keyframe(v)
    client.camera.position = client.camera.position + np.array([0.3, 0.1, 0.0])
    assert viewer.add_keyframe(v) == "2 keyframes"
    assert "4 frames" in viewer.save_camera_path(v)  # 3 per segment, and the last keyframe
    cams, _ = read_camera_path(tmp_path / "me_camera_path.json")
    assert len(cams) == 4


# -- the viewer in a browser ------------------------------------------------------------


def _chromium_or_skip() -> str:
    exe = find_chromium()
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no Chromium: .ci/run installs Debian's chromium package")
        pytest.skip("no Chromium installed (apt-get install chromium); CI runs this test")
    return exe


def _logs_dir(tmp_path) -> Path:
    logs = ROOT / ".ci-logs"  # .ci/run's LOGS: kept as CI artifacts
    return logs if logs.is_dir() else tmp_path


def test_viewer_shows_the_head_in_headless_chromium(head_portrait, tmp_path):
    exe = _chromium_or_skip()
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.Popen([sys.executable, "-m", "pnerf_fast.cli", "view", str(head_portrait), "--port", "0",
                             "--res", "64", "--out-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    log = []
    try:
        url = None
        t_end = time.monotonic() + 120
        while url is None and time.monotonic() < t_end:
            line = proc.stdout.readline()
            if not line:
                break
            log.append(line)
            m = re.search(r"pnerf view: (http://127\.0\.0\.1:\d+)", line)
            url = m.group(1) if m else None
        assert url, "pnerf view printed no URL:\n" + "".join(log)
        with HeadlessChromium(exe, window=(1024, 768)) as browser:
            try:
                shot = browser.screenshot_when(url, head_visible, timeout=90)
                img = shot.image
            except TimeoutError as e:
                img = e.image
                raise
            finally:
                if img is not None:
                    from PIL import Image

                    out = _logs_dir(tmp_path) / "viewer_screenshot.png"
                    Image.fromarray(img).save(out)
                    print(f"viewer screenshot: {out}")
        # head_visible held: the centre is the rendered portrait, not the (white) empty canvas.
        print(f"first frame in the browser {shot.seconds:.1f} s after opening the page ({shot.shots} screenshots)")
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        log.append(out or "")
        print("".join(log))
    assert proc.returncode == 0, "".join(log)
    assert "first frame" in "".join(log)
