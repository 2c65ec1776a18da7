"""Photo -> subject folder (pnerf_fast.face.align) on the scikit-image astronaut portrait.

MediaPipe runs offline (its models ship in the wheel). One alignment of the astronaut
(with its segmentation mask) is shared by most tests (module fixture); the
input-handling tests each run one more detection (~0.1 s each after the first import).
"""
import json
import warnings

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("mediapipe")
skimage_data = pytest.importorskip("skimage.data")

from pnerf_fast.data.format import load_subject  # noqa: E402
from pnerf_fast.data.photo import photo_subject, write_photo_subject  # noqa: E402
from pnerf_fast.face import landmarks as lm  # noqa: E402
from pnerf_fast.face.align import (  # noqa: E402
    FaceAlignmentError,
    align_photo,
    detect_landmarks,
    draw_landmarks,
    draw_mask,
    load_photo,
    segment_foreground,
)
from pnerf_fast.face.mediapipe_map import MAPPING, MEDIAPIPE_TO_PNERF24  # noqa: E402
from pnerf_fast.geometry import rig  # noqa: E402

I = lm.INDEX


@pytest.fixture(scope="module")
def astronaut():
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def aligned(astronaut):
    return align_photo(astronaut)


@pytest.fixture(scope="module")
def astronaut_png(tmp_path_factory, astronaut):
    p = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(astronaut).save(p)
    return p


# ---------------------------------------------------------------- the mapping table

def test_mediapipe_map_is_complete_and_ordered():
    assert len(MEDIAPIPE_TO_PNERF24) == lm.NUM_LANDMARKS
    assert len(set(MEDIAPIPE_TO_PNERF24)) == lm.NUM_LANDMARKS
    assert all(0 <= i < 468 for i in MEDIAPIPE_TO_PNERF24)
    assert [m[0] for m in MAPPING] == list(lm.NAMES)


# ---------------------------------------------------------------- the astronaut

def test_astronaut_one_face_and_output_shapes(aligned):
    assert aligned.num_faces == 1
    assert aligned.image.shape == (128, 128, 3) and aligned.image.dtype == np.float32
    assert 0.0 <= aligned.image.min() and aligned.image.max() <= 1.0
    assert aligned.alpha.shape == (128, 128) and aligned.alpha.dtype == np.float32
    assert aligned.mask_source == "segmentation"
    assert aligned.landmarks_world.shape == (24, 3)
    assert aligned.landmarks_2d.shape == (24, 2)
    assert aligned.mediapipe_2d.shape == (468, 2)
    assert aligned.photo_size == (512, 512)
    cam = rig.frontal_camera(128)
    assert (aligned.camera.fx, aligned.camera.cx, aligned.camera.width) == (cam.fx, cam.cx, cam.width)
    np.testing.assert_array_equal(aligned.camera.c2w, cam.c2w)


def test_astronaut_landmarks_sit_in_plausible_places(aligned):
    uv = aligned.landmarks_2d  # image pixels, v grows downwards
    eyes_v = uv[[I["eye_right_outer"], I["eye_right_inner"], I["eye_left_inner"], I["eye_left_outer"]], 1]
    brows_v = uv[[I["brow_right_mid"], I["brow_left_mid"]], 1]
    nose_v = uv[I["nose_tip"], 1]
    mouth_v = uv[[I["upper_lip_top"], I["lower_lip_bottom"]], 1]
    assert brows_v.max() < eyes_v.min()
    assert eyes_v.max() < nose_v < uv[I["subnasale"], 1] < mouth_v.min()
    assert mouth_v.max() < uv[I["chin"], 1]
    # The subject's right eye is on the image left; the mouth corners too.
    assert uv[I["eye_right_outer"], 0] < uv[I["eye_right_inner"], 0] < uv[I["eye_left_inner"], 0] < uv[I["eye_left_outer"], 0]
    assert uv[I["mouth_right_corner"], 0] < uv[I["upper_lip_top"], 0] < uv[I["mouth_left_corner"], 0]
    assert uv[I["jaw_right_top"], 0] < uv[I["eye_right_outer"], 0]
    assert uv[I["eye_left_outer"], 0] < uv[I["jaw_left_top"], 0]
    # Everything inside the crop.
    assert (uv > 0).all() and (uv < 128).all()
    # In 3D: the nose tip is the landmark nearest the camera, the subject's right is -x.
    w = aligned.landmarks_world
    assert w[I["nose_tip"], 2] == w[:, 2].max()
    assert w[I["eye_right_outer"], 0] < 0 < w[I["eye_left_outer"], 0]


def test_astronaut_is_framed_like_the_rig_template(aligned):
    tmpl_uv, _ = aligned.camera.project(lm.TEMPLATE)
    rms = np.sqrt(((aligned.landmarks_2d - tmpl_uv) ** 2).sum(1).mean())
    assert rms < 0.06 * 128          # measured ~4 px at 128
    # Least-squares framing: the centroids coincide.
    np.testing.assert_allclose(aligned.landmarks_2d.mean(0), tmpl_uv.mean(0), atol=1e-9)


def test_astronaut_landmarks_lift_consistently(aligned):
    uv, depth = aligned.camera.project(aligned.landmarks_world)
    np.testing.assert_allclose(uv, aligned.landmarks_2d, atol=1e-9)
    _, tmpl_depth = aligned.camera.project(lm.TEMPLATE)
    assert depth.mean() == pytest.approx(tmpl_depth.mean(), abs=1e-9)
    # Relative depth comes through: the nose tip is in front of the eyes, which are in front of the jaw top.
    assert depth[I["nose_tip"]] < depth[I["eye_right_outer"]] < depth[I["jaw_right_top"]]


def test_astronaut_canonical_transform_is_sane(aligned):
    t = aligned.canonical_transform()
    assert np.linalg.det(t.rotation) == pytest.approx(1.0, abs=1e-9)
    assert 0.75 < t.scale < 1.33
    angle = np.degrees(np.arccos(np.clip((np.trace(t.rotation) - 1) / 2, -1, 1)))
    assert angle < 25.0              # a frontal portrait; measured ~11.5 deg (mostly pitch)
    assert np.linalg.norm(t.translation) < 0.3
    assert aligned.template_fit_rms() < 0.15  # measured 0.087 (template head is 1.6 wide)


def test_astronaut_subject_folder_roundtrip(aligned, tmp_path):
    out = write_photo_subject(aligned, tmp_path / "astro")
    s = load_subject(out)
    assert s.num_views == 1 and s.frontal_index == 0
    np.testing.assert_allclose(s.masks[0], aligned.alpha, atol=1 / 255)
    np.testing.assert_allclose(s.images[0], aligned.image, atol=1 / 255)
    np.testing.assert_allclose(s.landmarks, aligned.landmarks_world, atol=1e-12)
    np.testing.assert_array_equal(s.cameras[0].c2w, rig.frontal_camera(128).c2w)
    assert s.cameras[0].fx == pytest.approx(rig.frontal_camera(128).fx)
    (l2d,) = s.landmarks_2d.values()
    np.testing.assert_allclose(l2d, aligned.landmarks_2d, atol=1e-9)
    assert s.meta["photo_size"] == [512, 512]
    assert s.meta["crop_box"] == pytest.approx(list(aligned.crop_box))
    assert s.meta["num_faces"] == 1
    assert s.meta["alpha_mask"] is True and s.meta["mask_source"] == "segmentation"
    # Refuses to replace a folder that is not a subject folder.
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a subject folder"):
        write_photo_subject(aligned, other)
    assert (other / "keep.txt").read_text() == "mine"


def test_preview_drawing(aligned, tmp_path):
    img = draw_landmarks(aligned, tmp_path / "p.png", scale=3)
    assert img.shape == (384, 384, 3) and img.dtype == np.uint8
    assert Image.open(tmp_path / "p.png").size == (384, 384)


def test_cli_align_writes_a_valid_subject(astronaut_png, tmp_path, capsys):
    from pnerf_fast.cli import main

    out = tmp_path / "subj"
    rc = main(["align", str(astronaut_png), "--out", str(out), "--res", "64", "--preview", str(tmp_path / "prev.png")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "1 face" in text and "crop:" in text and str(out) in text
    s = load_subject(out)
    assert s.images.shape == (1, 64, 64, 3)
    assert s.cameras[0].width == 64 and s.cameras[0].fx == pytest.approx(rig.frontal_camera(64).fx)
    assert (tmp_path / "prev.png").is_file()
    face = json.loads((out / "face.json").read_text())
    assert face["meta"]["photo"] == str(astronaut_png)


def _same_subject(folder, mem):
    """A subject folder (8-bit PNG) and an in-memory Subject hold the same view."""
    assert (folder.name, folder.file_paths, folder.frontal_index) == (mem.name, mem.file_paths, mem.frontal_index)
    assert len(folder.cameras) == len(mem.cameras) == 1
    a, b = folder.cameras[0], mem.cameras[0]
    assert (a.fx, a.fy, a.cx, a.cy, a.width, a.height) == (b.fx, b.fy, b.cx, b.cy, b.width, b.height)
    np.testing.assert_array_equal(a.c2w, b.c2w)
    np.testing.assert_allclose(folder.images, mem.images, atol=0.5 / 255 + 1e-6)
    assert (folder.masks is None) == (mem.masks is None)
    if mem.masks is not None:
        np.testing.assert_allclose(folder.masks, mem.masks, atol=0.5 / 255 + 1e-6)
    np.testing.assert_array_equal(folder.landmarks, mem.landmarks)
    assert folder.landmarks_2d.keys() == mem.landmarks_2d.keys()
    for k in mem.landmarks_2d:
        np.testing.assert_array_equal(folder.landmarks_2d[k], mem.landmarks_2d[k])
    assert folder.meta == json.loads(json.dumps(mem.meta))


def test_cli_align_and_the_api_make_the_same_subject(astronaut_png, tmp_path, capsys):
    """One photo -> Subject path: `pnerf align` then load_subject, and what finetune fits
    (as_subject on the photo, the API's and `pnerf finetune`'s way in), agree."""
    from pnerf_fast.cli import main
    from pnerf_fast.train.finetune import as_subject

    out = tmp_path / astronaut_png.stem
    assert main(["align", str(astronaut_png), "--out", str(out), "--res", "64"]) == 0
    capsys.readouterr()
    folder, mem = load_subject(out), as_subject(str(astronaut_png), res=64)
    assert mem.path == str(astronaut_png) and mem.meta["photo"] == str(astronaut_png)
    _same_subject(folder, mem)
    assert as_subject(out).meta == folder.meta  # a folder is loaded as it is


def test_photo_subject_round_trips_through_a_folder(aligned, tmp_path):
    mem = photo_subject(aligned, name="astro")
    assert mem.images.shape == (1, 128, 128, 3) and mem.masks.shape == (1, 128, 128)
    _same_subject(load_subject(write_photo_subject(aligned, tmp_path / "astro")), mem)


def test_cli_no_segment_writes_no_mask(astronaut_png, tmp_path, capsys):
    from pnerf_fast.cli import main

    out = tmp_path / "subj"
    assert main(["align", str(astronaut_png), "--out", str(out), "--res", "64", "--no-segment"]) == 0
    assert "alpha:     none" in capsys.readouterr().out
    s = load_subject(out)
    assert s.masks is None and s.meta["alpha_mask"] is False


def test_cli_reports_bad_photo_with_its_name(tmp_path, capsys):
    from pnerf_fast.cli import main

    bad = tmp_path / "notes.jpg"
    bad.write_text("hello")
    assert main(["align", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "notes.jpg" in err and "not a readable image" in err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- foreground mask

def test_astronaut_mask_covers_the_person_not_the_background(aligned):
    a = aligned.alpha
    assert 0.0 <= a.min() and a.max() <= 1.0
    u, v = aligned.landmarks_2d[I["nose_tip"]]
    assert a[int(v), int(u)] > 0.9
    # Every landmark inside the face is foreground (the jaw points sit on the face's
    # outline, where the mask may already be soft).
    inner = [i for i, n in enumerate(lm.NAMES) if not n.startswith("jaw")]
    uv = aligned.landmarks_2d[inner].astype(int)
    assert a[uv[:, 1], uv[:, 0]].min() > 0.9
    # Hair above the forehead is foreground (the crop top cuts through the hair).
    assert a[4, 64] > 0.9
    # Clear background in the crop (docs/images/astronaut_mask.png): the wall at the top
    # left and top right corners, left of the jaw, right of the neck.
    for y, x in [(1, 1), (1, 126), (80, 4), (96, 124), (84, 122)]:
        assert a[y, x] < 0.1, (y, x, a[y, x])
    # Soft but decisive: most pixels are (nearly) 0 or 1.
    assert ((a < 0.05) | (a > 0.95)).mean() > 0.9


def test_segment_foreground_remaps_confidences(astronaut):
    m = segment_foreground(astronaut)
    assert m.shape == (512, 512) and m.dtype == np.float32
    assert m.min() == 0.0 and m.max() == 1.0
    assert m[120, 225] == 1.0 and m[20, 480] == 0.0   # the face; the wall right of the rocket
    with pytest.raises(ValueError, match="uint8 RGB"):
        segment_foreground(astronaut.astype(np.float32))


def test_segment_false_gives_no_mask(astronaut):
    r = align_photo(astronaut, segment=False)
    assert r.alpha is None and r.mask_source is None


def test_mask_outside_the_photo_is_zero(astronaut, aligned):
    # Shift the face to the photo's left edge: part of the crop box leaves the photo.
    shifted = np.ascontiguousarray(astronaut[:, 165:])
    r = align_photo(shifted)
    assert r.outside_fraction > 0.05 and r.mask_source == "segmentation"
    outside_cols = int(np.floor((0 - r.crop_box[0]) * r.crop_scale)) - 1
    assert outside_cols >= 2
    assert r.alpha[:, :outside_cols].max() < 1e-3
    u, v = r.landmarks_2d[I["nose_tip"]]
    assert r.alpha[int(v), int(u)] > 0.9


@pytest.mark.parametrize("failure", ["raises", "empty"])
def test_segmentation_failure_falls_back_to_no_mask(astronaut, monkeypatch, failure):
    import pnerf_fast.face.align.segment as segment_mod  # where align_photo's mask step looks the name up

    def fake(rgb, **kw):
        if failure == "raises":
            raise RuntimeError("boom")
        return np.zeros(rgb.shape[:2], np.float32)

    monkeypatch.setattr(segment_mod, "segment_foreground", fake)
    with pytest.warns(UserWarning, match="boom" if failure == "raises" else "empty"):
        r = align_photo(astronaut)
    assert r.alpha is None and r.mask_source is None


def test_mask_preview(aligned, tmp_path):
    img = draw_mask(aligned, tmp_path / "m.png", scale=1)
    assert img.shape == (128, 384, 3) and (tmp_path / "m.png").is_file()
    # The middle panel is the mask itself.
    np.testing.assert_allclose(img[:, 128:256, 0] / 255.0, aligned.alpha, atol=1 / 255 + 1e-6)


# ---------------------------------------------------------------- input handling

def test_exif_rotated_photo_is_turned_upright(astronaut, aligned, tmp_path):
    # Store the pixels rotated 90 deg counter-clockwise with orientation 6
    # ("rotate 90 CW to display"): a correct loader shows the upright face.
    im = Image.fromarray(astronaut).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "rotated.jpg"
    im.save(p, exif=exif, quality=95)
    rgb, _, _ = load_photo(p)
    assert rgb.shape == (512, 512, 3)
    r = align_photo(p)
    np.testing.assert_allclose(r.crop_box, aligned.crop_box, atol=3.0)
    assert r.landmarks_2d[I["nose_tip"], 1] > r.landmarks_2d[I["eye_right_outer"], 1]


def test_grayscale_photo(astronaut, tmp_path):
    p = tmp_path / "gray.png"
    Image.fromarray(astronaut).convert("L").save(p)
    r = align_photo(p)
    assert r.num_faces == 1 and r.image.shape == (128, 128, 3)
    np.testing.assert_array_equal(r.image[..., 0], r.image[..., 1])


def test_rgba_photo_keeps_alpha_as_mask(astronaut, tmp_path):
    alpha = np.full(astronaut.shape[:2], 255, np.uint8)
    alpha[:70] = 0              # the top of the photo (hair, above the crop box top at y~42) is transparent
    p = tmp_path / "cutout.png"
    Image.fromarray(np.dstack([astronaut, alpha]), "RGBA").save(p)
    r = align_photo(p)
    write_photo_subject(r, tmp_path / "subj")
    assert r.alpha is not None and r.alpha.shape == (128, 128)
    assert r.alpha.max() == pytest.approx(1.0) and r.alpha.min() < 0.5
    s = load_subject(tmp_path / "subj")
    assert s.masks is not None and r.mask_source == "photo"
    np.testing.assert_allclose(s.masks[0], r.alpha, atol=1 / 255)
    # The photo's own alpha wins over segmentation: the opaque part is fully 1, hair and wall alike.
    assert r.alpha[-1, 0] == pytest.approx(1.0) and r.alpha[100, 2] == pytest.approx(1.0)


def test_tiny_photo_is_upscaled_and_too_tiny_is_refused(astronaut):
    import cv2

    small = cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA)  # face ~35 px wide
    r = align_photo(small)
    assert r.num_faces == 1 and r.crop_scale > 1.0
    np.testing.assert_allclose(np.array(r.crop_box) * 4, align_photo(astronaut).crop_box, atol=6.0)
    tiny = cv2.resize(astronaut, (40, 40), interpolation=cv2.INTER_AREA)
    with pytest.raises(FaceAlignmentError, match="too small"):
        align_photo(tiny)


def test_huge_photo_is_downscaled_for_detection(astronaut, aligned):
    import cv2

    big = cv2.resize(astronaut, (2560, 2560), interpolation=cv2.INTER_LINEAR)
    r = align_photo(big)
    assert r.photo_size == (2560, 2560)
    np.testing.assert_allclose(np.array(r.crop_box) / 5.0, aligned.crop_box, atol=2.0)


def test_several_faces_take_the_largest_with_a_warning(astronaut):
    import cv2

    canvas = np.full((512, 1024, 3), 200, np.uint8)
    canvas[:, :512] = astronaut
    canvas[56:456, 568:968] = cv2.resize(astronaut[:, ::-1], (400, 400), interpolation=cv2.INTER_AREA)
    with pytest.warns(UserWarning, match="found 2 faces; using the largest"):
        det = detect_landmarks(canvas)
    assert det.num_faces == 2
    assert det.bbox[2] < 512                       # the left (full-size) astronaut
    assert len(det.all_bboxes) == 2 and det.all_bboxes[1][0] > 512


def test_flat_gray_image_has_no_face(tmp_path):
    p = tmp_path / "flat_gray.png"
    Image.fromarray(np.full((300, 300, 3), 128, np.uint8)).save(p)
    with pytest.raises(FaceAlignmentError, match=r"flat_gray\.png: no face found"):
        align_photo(p)


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("empty.png", b"", "empty"),
        ("text.png", b"this is not an image", "not a readable image"),
        ("truncated.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "not a readable image|cannot decode"),
    ],
)
def test_bad_files_are_clear_errors_naming_the_file(tmp_path, name, content, match):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(FaceAlignmentError, match=match) as e:
        align_photo(p)
    assert name in str(e.value)


def test_missing_file_and_bad_arrays(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        align_photo(tmp_path / "nowhere.png")
    with pytest.raises(FaceAlignmentError, match="HxWx3"):
        align_photo(np.zeros((10, 10, 5), np.uint8))
    with pytest.raises(FaceAlignmentError, match="uint8 RGB"):
        detect_landmarks(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="res"):
        align_photo(np.zeros((64, 64, 3), np.uint8), res=4)
