"""Subject folder format: round trips and the validating loader's error messages."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pnerf_fast.data import format as F
from pnerf_fast.geometry import rig
from pnerf_fast.face import landmarks as lm
from pnerf_fast.geometry.cameras import pixel_rays

RES = 12


def _images(n, channels=4, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random((RES, RES, channels)).astype(np.float32) for _ in range(n)]


@pytest.fixture
def subject_dir(tmp_path):
    cams = rig.rig_cameras(RES)[:3]
    d = tmp_path / "s0"
    F.write_subject(d, cameras=cams, images=_images(3), frontal_index=1, landmarks=lm.TEMPLATE,
                    landmarks_2d={0: np.arange(48.0).reshape(24, 2)}, meta={"pose": np.eye(3), "k": 1})
    return d


def _edit_json(path, fn):
    obj = json.loads(Path(path).read_text())
    fn(obj)
    Path(path).write_text(json.dumps(obj))


def test_roundtrip_cameras_images_landmarks(subject_dir):
    cams = rig.rig_cameras(RES)[:3]
    s = F.load_subject(subject_dir)
    assert s.name == "s0" and s.num_views == 3 and s.frontal_index == 1
    assert s.support_indices() == [1] and s.query_indices() == [0, 2]
    assert s.file_paths == ["images/view_00.png", "images/view_01.png", "images/view_02.png"]
    for a, b in zip(s.cameras, cams):
        np.testing.assert_allclose(a.c2w, b.c2w, atol=1e-12)
        assert (a.fx, a.fy, a.cx, a.cy, a.width, a.height) == (b.fx, b.fy, b.cx, b.cy, b.width, b.height)
    imgs = _images(3)
    assert s.images.shape == (3, RES, RES, 3) and s.images.dtype == np.float32
    assert s.masks.shape == (3, RES, RES)
    np.testing.assert_allclose(s.images, np.stack(imgs)[..., :3], atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(s.masks, np.stack(imgs)[..., 3], atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(s.landmarks, lm.TEMPLATE)
    np.testing.assert_allclose(s.landmarks_2d["images/view_00.png"], np.arange(48.0).reshape(24, 2))
    assert s.meta == {"pose": np.eye(3).tolist(), "k": 1}
    face = json.loads((subject_dir / "face.json").read_text())
    assert face["landmark_order"] == lm.LANDMARK_ORDER_NAME and face["names"] == list(lm.NAMES)
    assert face["ibug_indices"] == list(lm.IBUG_INDICES)
    tf = json.loads((subject_dir / "transforms.json").read_text())
    assert tf["frontal_frame"] == "images/view_01.png" and {"fl_x", "fl_y", "cx", "cy", "w", "h"} <= set(tf)


def test_composite_and_rgb_subjects(tmp_path):
    cams = rig.rig_cameras(RES)[:2]
    rgba = _images(2)
    F.write_subject(tmp_path / "a", cameras=cams, images=rgba, landmarks=lm.TEMPLATE)
    s = F.load_subject(tmp_path / "a")
    comp = s.composite((0.0, 0.5, 1.0))
    expect = s.images * s.masks[..., None] + np.array([0.0, 0.5, 1.0]) * (1 - s.masks[..., None])
    np.testing.assert_allclose(comp, expect, atol=1e-6)
    u8 = [(im[..., :3] * 255).astype(np.uint8) for im in rgba]
    F.write_subject(tmp_path / "b", cameras=cams, images=u8, landmarks=lm.TEMPLATE, file_names=["x", "y.png"])
    s = F.load_subject(tmp_path / "b")
    assert s.masks is None and s.file_paths == ["images/x.png", "images/y.png"]
    np.testing.assert_array_equal(s.composite(0.3), s.images)
    np.testing.assert_array_equal((s.images * 255).round().astype(np.uint8), np.stack(u8))


def test_project_and_rays_consistent_after_roundtrip(subject_dir):
    s = F.load_subject(subject_dir, load_images=False)
    assert s.images is None and s.masks is None
    rng = np.random.default_rng(1)
    for cam in s.cameras:
        pix = torch.tensor(rng.uniform(0, RES, (20, 2)))
        o, d = pixel_rays(cam, pix, dtype=torch.float64)
        pts = (o + d * torch.tensor(rng.uniform(2, 6, (20, 1)))).numpy()
        uv, depth = cam.project(pts)
        np.testing.assert_allclose(uv, pix.numpy(), atol=1e-8)
        assert np.all(depth > 0)
        # the camera looks down its -z axis (OpenGL): the centre ray is -c2w[:3, 2]
        o, d = pixel_rays(cam, torch.tensor([[cam.cx, cam.cy]], dtype=torch.float64), dtype=torch.float64)
        np.testing.assert_allclose(d[0].numpy(), -cam.c2w[:3, 2], atol=1e-12)


def test_overwrite_is_atomic_and_leaves_no_temp(tmp_path, subject_dir):
    with pytest.raises(FileExistsError, match="s0"):
        F.write_subject(subject_dir, cameras=rig.rig_cameras(RES)[:1], images=_images(1), landmarks=lm.TEMPLATE,
                        overwrite=False)
    F.write_subject(subject_dir, cameras=rig.rig_cameras(RES)[:2], images=_images(2), landmarks=lm.TEMPLATE)
    assert F.load_subject(subject_dir).num_views == 2
    assert not (subject_dir / "images" / "view_02.png").exists()
    # a failing write (bad image) leaves neither a subject nor a temp folder
    with pytest.raises(ValueError, match=r"images\[1\]"):
        F.write_subject(tmp_path / "bad", cameras=rig.rig_cameras(RES)[:2],
                        images=[_images(1)[0], np.zeros((RES, RES))], landmarks=lm.TEMPLATE)
    assert sorted(os.listdir(tmp_path)) == ["s0"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(images=_images(2)), "3 cameras but 2 images"),
        (dict(landmarks=np.zeros((23, 3))), r"landmarks must be a finite \[24, 3\]"),
        (dict(frontal_index=3), "frontal_index"),
        (dict(images=_images(2) + [np.zeros((RES, RES, 3), np.float32)]), "mix RGB and RGBA"),
        (dict(images=[np.zeros((RES + 1, RES, 4))] * 3), r"images\[0\] is 12x13 but cameras\[0\] is 12x12"),
        (dict(landmarks_2d={"nope": np.zeros((24, 2))}), "landmarks_2d key 'nope'"),
        (dict(file_names=["a", "a", "b"]), "duplicates"),
    ],
)
def test_write_subject_rejects_bad_arguments(tmp_path, kwargs, match):
    args = dict(cameras=rig.rig_cameras(RES)[:3], images=_images(3), landmarks=lm.TEMPLATE)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        F.write_subject(tmp_path / "x", **args)
    assert not (tmp_path / "x").exists()


def _del(key):
    return lambda o: o.pop(key)


def _set(path, value):
    def f(o):
        cur = o
        for k in path[:-1]:
            cur = cur[k]
        cur[path[-1]] = value
    return f


TRANSFORMS_CASES = [
    (_del("fl_x"), "fl_x", "required field is missing"),
    (_set(["fl_y"], -3.0), "fl_y", "must be positive"),
    (_set(["w"], 12.5), "w", "positive integer"),
    (_set(["cx"], "12"), "cx", "finite number"),
    (_del("frames"), "frames", "required field is missing"),
    (_set(["frames"], []), "frames", "non-empty list"),
    (_del("frontal_frame"), "frontal_frame", "required field is missing"),
    (_set(["frontal_frame"], "images/nope.png"), "frontal_frame", "file_path of one of the frames"),
    (lambda o: o["frames"][2].pop("file_path"), "frames[2].file_path", "required field is missing"),
    (lambda o: o["frames"][1].pop("transform_matrix"), "frames[1].transform_matrix", "required field is missing"),
    (_set(["frames", 1, "transform_matrix"], [[1, 0, 0], [0, 1, 0], [0, 0, 1]]), "frames[1].transform_matrix", r"shape \[4, 4\], got \[3, 3\]"),
    (_set(["frames", 0, "transform_matrix"], [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "frames[0].transform_matrix", "proper rotation"),
    (_set(["frames", 0, "transform_matrix"], [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]), "frames[0].transform_matrix", "last row"),
    (_set(["frames", 2, "file_path"], "images/view_00.png"), "frames[2].file_path", "duplicate frame"),
    (_set(["frames", 2, "file_path"], "../escape.png"), "frames[2].file_path", "relative"),
    (_set(["frames", 2, "file_path"], "images/missing.png"), "frames[2].file_path", "missing"),
    (_set(["frames", 1, "w"], 13), "size", "is 12x12 but transforms.json says w=13"),
]


@pytest.mark.parametrize("edit, field, problem", TRANSFORMS_CASES)
def test_loader_names_transforms_file_and_field(subject_dir, edit, field, problem):
    _edit_json(subject_dir / "transforms.json", edit)
    with pytest.raises(F.SubjectFormatError, match=problem) as ei:
        F.load_subject(subject_dir)
    msg = str(ei.value)
    assert field in msg, msg
    if field == "size":  # the image file is at fault
        assert "view_01.png" in msg
        assert ei.value.file.endswith("view_01.png")
    else:
        assert "transforms.json" in msg
        assert ei.value.file.endswith("transforms.json") and ei.value.field == field


FACE_CASES = [
    (_del("landmarks_3d"), "landmarks_3d", "required field is missing"),
    (_set(["landmarks_3d"], np.zeros((23, 3)).tolist()), "landmarks_3d", r"shape \[24, 3\], got \[23, 3\]"),
    (_set(["landmarks_3d"], [[0, 0]] * 24), "landmarks_3d", "shape"),
    (_set(["landmarks_3d"], [[0, 0, "a"]] * 24), "landmarks_3d", "numeric array"),
    (_set(["landmark_order"], "ibug68"), "landmark_order", "pnerf24-ibug68"),
    (_set(["names"], list(reversed(lm.NAMES))), "names", "in order"),
    (_set(["landmarks_2d"], {"images/other.png": np.zeros((24, 2)).tolist()}), "landmarks_2d['images/other.png']", "not the file_path"),
    (_set(["landmarks_2d"], {"images/view_00.png": np.zeros((24, 3)).tolist()}), "landmarks_2d['images/view_00.png']", r"\[24, 2\]"),
    (_set(["meta"], [1, 2]), "meta", "must be an object"),
]


@pytest.mark.parametrize("edit, field, problem", FACE_CASES)
def test_loader_names_face_file_and_field(subject_dir, edit, field, problem):
    _edit_json(subject_dir / "face.json", edit)
    with pytest.raises(F.SubjectFormatError, match=problem) as ei:
        F.load_subject(subject_dir)
    assert "face.json" in str(ei.value) and field in str(ei.value)
    assert ei.value.field == field


def test_loader_rejects_broken_files(subject_dir):
    (subject_dir / "face.json").write_text("{ not json")
    with pytest.raises(F.SubjectFormatError, match=r"face.json: not valid JSON \(line 1"):
        F.load_subject(subject_dir)
    (subject_dir / "transforms.json").unlink()
    with pytest.raises(F.SubjectFormatError, match="transforms.json: file is missing"):
        F.load_subject(subject_dir)
    with pytest.raises(F.SubjectFormatError, match="subject folder does not exist"):
        F.load_subject(subject_dir.parent / "nobody")


def test_loader_rejects_bad_images(subject_dir):
    from PIL import Image

    img = subject_dir / "images" / "view_02.png"
    Image.fromarray(np.zeros((RES, RES), np.uint8), "L").save(img)
    with pytest.raises(F.SubjectFormatError, match=r"view_02.png: mode: must be RGB or RGBA, got L"):
        F.load_subject(subject_dir)
    Image.fromarray(np.zeros((RES, RES, 3), np.uint8)).save(img)
    with pytest.raises(F.SubjectFormatError, match=r"view_02.png: mode: is RGB but other frames are RGBA"):
        F.load_subject(subject_dir)
    Image.fromarray(np.zeros((RES, RES + 2, 4), np.uint8)).save(img)
    with pytest.raises(F.SubjectFormatError, match=r"view_02.png: size: is 14x12"):
        F.load_subject(subject_dir, load_images=False)
    img.write_bytes(b"not a png")
    with pytest.raises(F.SubjectFormatError, match=r"view_02.png: cannot be read as an image"):
        F.load_subject(subject_dir)
    Image.fromarray(np.zeros((RES, RES, 3), np.uint8)).save(img.with_suffix(".jpg"))
    os.replace(img.with_suffix(".jpg"), img)
    with pytest.raises(F.SubjectFormatError, match=r"view_02.png: must be a PNG file, got JPEG"):
        F.load_subject(subject_dir)


def _dataset(tmp_path, names=("a", "b", "c", "d")):
    for n in names:
        F.write_subject(tmp_path / n, cameras=rig.rig_cameras(RES)[:1], images=_images(1), landmarks=lm.TEMPLATE)
    return tmp_path


def test_dataset_roundtrip(tmp_path):
    root = _dataset(tmp_path)
    F.write_splits(root, ["a", "b"], ["c"], ["d"])
    ds = F.load_dataset(root)
    assert ds.splits == {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    assert ds.subjects("train") == ["a", "b"] and len(ds) == 4
    assert ds.subject("c").name == "c" and ds.subject("d", load_images=False).images is None
    with pytest.raises(ValueError, match="split must be one of"):
        ds.subjects("holdout")
    with pytest.raises(ValueError, match="'zz' is not in"):
        ds.subject("zz")


@pytest.mark.parametrize(
    "splits, field, problem",
    [
        ({"train": ["a"], "val": ["b"]}, "test", "required field is missing"),
        ({"train": ["a"], "val": ["b"], "test": ["zz"]}, "test", "unknown subject 'zz'"),
        ({"train": ["a", "b"], "val": ["b"], "test": []}, "val", "in both 'train' and 'val'"),
        ({"train": ["a", "a"], "val": [], "test": []}, "train", "listed twice"),
        ({"train": "a", "val": [], "test": []}, "train", "list of subject folder names"),
        ({"train": [], "val": [], "test": [], "extra": []}, "extra", "unknown split"),
    ],
)
def test_splits_validation(tmp_path, splits, field, problem):
    root = _dataset(tmp_path)
    (root / "splits.json").write_text(json.dumps(splits))
    with pytest.raises(F.SubjectFormatError, match=problem) as ei:
        F.load_dataset(root)
    assert "splits.json" in str(ei.value) and ei.value.field == field


def test_write_splits_validates(tmp_path):
    root = _dataset(tmp_path)
    with pytest.raises(F.SubjectFormatError, match="in both 'train' and 'test'"):
        F.write_splits(root, ["a"], [], ["a"])
    assert not (root / "splits.json").exists()
