"""Similarity transforms, Umeyama and generalized Procrustes (pnerf_fast.face.procrustes)."""
import json

import numpy as np
import pytest

from pnerf_fast.face import landmarks
from pnerf_fast.face.procrustes import (
    SimilarityTransform,
    alignment_residual,
    canonical_transform,
    generalized_procrustes,
    umeyama,
)

TEMPLATE = landmarks.TEMPLATE


def random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_similarity(rng, scale_range=(0.2, 5.0), trans=3.0) -> SimilarityTransform:
    s = float(np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1]))))
    return SimilarityTransform(s, random_rotation(rng), rng.uniform(-trans, trans, 3))


# ---------------------------------------------------------------- SimilarityTransform

def test_apply_inverse_compose_matrix_roundtrip():
    rng = np.random.default_rng(0)
    a, b = random_similarity(rng), random_similarity(rng)
    x = rng.normal(size=(50, 3))
    np.testing.assert_allclose(a.inverse().apply(a.apply(x)), x, atol=1e-12)
    np.testing.assert_allclose(a.compose(b).apply(x), a.apply(b.apply(x)), atol=1e-12)
    assert a.compose(a.inverse()).allclose(SimilarityTransform.identity(), atol=1e-12)
    xh = np.concatenate([x, np.ones((50, 1))], 1)
    np.testing.assert_allclose((xh @ a.to_matrix().T)[:, :3], a.apply(x), atol=1e-12)
    assert SimilarityTransform.from_matrix(a.to_matrix()).allclose(a, atol=1e-12)
    # Batched points keep their leading shape.
    assert a.apply(x.reshape(5, 10, 3)).shape == (5, 10, 3)


def test_warp_row_layout_matches_kernel_format():
    rng = np.random.default_rng(1)
    a = random_similarity(rng)
    row = a.to_warp_row()
    assert row.dtype == np.float32 and row.shape == (12,)
    x = rng.normal(size=(20, 3))
    # x'_i = sum_j row[3i+j] x_j + row[9+i]  (row-major s*R, then t)
    manual = x @ row[:9].reshape(3, 3).astype(np.float64).T + row[9:]
    np.testing.assert_allclose(manual, a.apply(x), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(row[:9], (a.scale * a.rotation).ravel(), rtol=1e-6)
    assert SimilarityTransform.from_warp_row(row).allclose(a, atol=1e-5)


def test_dict_roundtrip_through_json():
    a = random_similarity(np.random.default_rng(2))
    b = SimilarityTransform.from_dict(json.loads(json.dumps(a.to_dict())))
    assert b.allclose(a, atol=1e-15)
    with pytest.raises(ValueError, match="translation"):
        SimilarityTransform.from_dict({"scale": 1.0, "rotation": np.eye(3).tolist()})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(scale=0.0, rotation=np.eye(3), translation=np.zeros(3)), "scale"),
        (dict(scale=np.nan, rotation=np.eye(3), translation=np.zeros(3)), "scale"),
        (dict(scale=1.0, rotation=np.diag([1.0, 1.0, -1.0]), translation=np.zeros(3)), "reflection"),
        (dict(scale=1.0, rotation=2 * np.eye(3), translation=np.zeros(3)), "orthonormal"),
        (dict(scale=1.0, rotation=np.eye(2), translation=np.zeros(3)), "rotation"),
        (dict(scale=1.0, rotation=np.eye(3), translation=np.zeros(2)), "translation"),
    ],
)
def test_invalid_transform_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SimilarityTransform(**kwargs)


# ---------------------------------------------------------------- umeyama

@pytest.mark.parametrize("seed", range(20))
def test_umeyama_recovers_random_similarity(seed):
    rng = np.random.default_rng(100 + seed)
    truth = random_similarity(rng)
    src = rng.normal(size=(rng.integers(3, 40), 3))
    est = umeyama(src, truth.apply(src))
    assert abs(est.scale - truth.scale) <= 1e-6 * truth.scale
    np.testing.assert_allclose(est.rotation, truth.rotation, atol=1e-6)
    np.testing.assert_allclose(est.translation, truth.translation, atol=1e-6)
    assert np.linalg.det(est.rotation) == pytest.approx(1.0, abs=1e-12)


def test_umeyama_on_template_landmarks_and_rigid_mode():
    rng = np.random.default_rng(7)
    truth = SimilarityTransform(1.0, random_rotation(rng), rng.normal(size=3))
    est = umeyama(TEMPLATE, truth.apply(TEMPLATE), with_scale=False)
    assert est.allclose(truth, atol=1e-9)
    # Rigid mode keeps s = 1 even when the target is bigger.
    big = umeyama(TEMPLATE, 3.0 * TEMPLATE, with_scale=False)
    assert big.scale == 1.0
    np.testing.assert_allclose(big.rotation, np.eye(3), atol=1e-9)


def test_umeyama_coplanar_points_are_fine():
    rng = np.random.default_rng(3)
    src = np.concatenate([rng.normal(size=(10, 2)), np.zeros((10, 1))], 1)
    truth = random_similarity(rng)
    assert umeyama(src, truth.apply(src)).allclose(truth, atol=1e-8)


def test_umeyama_excludes_reflections():
    """A mirrored target: the best *proper* rotation, never det = -1."""
    rng = np.random.default_rng(4)
    src = rng.normal(size=(30, 3))
    dst = src * np.array([-1.0, 1.0, 1.0])
    est = umeyama(src, dst)
    assert np.linalg.det(est.rotation) == pytest.approx(1.0, abs=1e-12)
    # A reflection cannot be fitted exactly, so the residual is clearly non-zero.
    assert alignment_residual(est, src, dst) > 0.1


@pytest.mark.parametrize("noise", [1e-3, 1e-2, 3e-2])
def test_umeyama_noisy_landmarks_have_bounded_error(noise):
    rng = np.random.default_rng(int(noise * 1e4))
    errs_r, errs_s, errs_t = [], [], []
    for _ in range(50):
        truth = random_similarity(rng, scale_range=(0.5, 2.0))
        dst = truth.apply(TEMPLATE) + rng.normal(scale=noise, size=TEMPLATE.shape)
        est = umeyama(TEMPLATE, dst)
        dr = est.rotation @ truth.rotation.T
        errs_r.append(np.degrees(np.arccos(np.clip((np.trace(dr) - 1) / 2, -1, 1))))
        errs_s.append(abs(est.scale / truth.scale - 1))
        # Error of the mapped points, measured on the template, in target units / scale.
        errs_t.append(np.abs(est.apply(TEMPLATE) - truth.apply(TEMPLATE)).max() / truth.scale)
    # Template is ~1.6 wide, 24 points: errors grow linearly with the noise level.
    # Observed worst cases over 50 draws (docs/FACE.md): rotation ~200*noise deg,
    # scale ~1.5*noise, points ~2.4*noise. Bounds are 2.5-5x those.
    assert max(errs_r) < 500 * noise  # degrees
    assert max(errs_s) < 5 * noise
    assert max(errs_t) < 8 * noise
    assert max(errs_r) > 0                     # noise does show up


@pytest.mark.parametrize(
    "src, dst, match",
    [
        (np.zeros((5, 2)), np.zeros((5, 2)), "src must have shape"),
        (TEMPLATE, TEMPLATE[:10], "same shape"),
        (TEMPLATE[:2], TEMPLATE[:2], "at least 3"),
        (np.outer(np.arange(6.0), [1, 2, 3]), np.outer(np.arange(6.0), [1, 2, 3]), "src.*collinear"),
        (np.ones((4, 3)), TEMPLATE[:4], "src.*identical"),
        (TEMPLATE, np.outer(np.arange(24.0), [1, 0, 0]), "dst.*collinear"),
    ],
)
def test_umeyama_degenerate_input_is_a_clear_error(src, dst, match):
    with pytest.raises(ValueError, match=match):
        umeyama(src, dst)


def test_umeyama_nan_names_the_argument():
    bad = TEMPLATE.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"dst has non-finite.*\[3\]"):
        umeyama(TEMPLATE, bad)
    with pytest.raises(ValueError, match=r"src has non-finite"):
        umeyama(bad, TEMPLATE)


def test_umeyama_mismatched_order_is_detected_via_residual_or_error():
    """Reversing the order of the target scrambles correspondences: either an error
    (non-positive scale) or a large residual, never a silent good fit."""
    rng = np.random.default_rng(5)
    dst = random_similarity(rng).apply(TEMPLATE)
    try:
        est = umeyama(TEMPLATE, dst[::-1])
    except ValueError as e:
        assert "same order" in str(e)
    else:
        assert alignment_residual(est, TEMPLATE, dst[::-1]) > 0.1 * est.scale


# ---------------------------------------------------------------- GPA and canonical space

def synthetic_subjects(rng, m=12, noise=0.02, shape_var=0.04):
    """Random similarities of a jittered TEMPLATE. Returns (world landmarks [M,24,3],
    the per-subject 'true' shapes before the similarity [M,24,3], the similarities)."""
    base_offset = rng.normal(scale=shape_var, size=TEMPLATE.shape)  # a population mean != TEMPLATE
    shapes, world, sims = [], [], []
    for _ in range(m):
        shape = TEMPLATE + base_offset + rng.normal(scale=noise, size=TEMPLATE.shape)
        sim = random_similarity(rng, scale_range=(0.5, 2.0))
        shapes.append(shape)
        world.append(sim.apply(shape))
        sims.append(sim)
    return np.stack(world), np.stack(shapes), sims


def test_gpa_gauge_is_fixed_to_template():
    rng = np.random.default_rng(10)
    world, shapes, _ = synthetic_subjects(rng)
    mean = generalized_procrustes(world)
    assert mean.shape == (24, 3)
    # Gauge: the best similarity from the mean onto TEMPLATE is the identity.
    g = umeyama(mean, TEMPLATE)
    assert g.allclose(SimilarityTransform.identity(), atol=1e-8)
    # The mean is the population's shape (not TEMPLATE's): it matches the average
    # of the un-transformed shapes after gauge fixing, to within the noise.
    avg = shapes.mean(0)
    avg = umeyama(avg, TEMPLATE).apply(avg)
    assert np.abs(mean - avg).max() < 0.01
    assert np.abs(mean - TEMPLATE).max() > 0.02


def test_gpa_of_exact_copies_is_template_shape():
    rng = np.random.default_rng(11)
    world = np.stack([random_similarity(rng).apply(TEMPLATE) for _ in range(5)])
    np.testing.assert_allclose(generalized_procrustes(world), TEMPLATE, atol=1e-8)


def test_gpa_is_invariant_to_subject_poses():
    rng = np.random.default_rng(12)
    world, _, _ = synthetic_subjects(rng)
    moved = np.stack([random_similarity(rng).apply(w) for w in world])
    np.testing.assert_allclose(generalized_procrustes(world), generalized_procrustes(moved), atol=1e-7)


def test_synthetic_subjects_land_on_the_mean_face_after_alignment():
    rng = np.random.default_rng(13)
    world, shapes, sims = synthetic_subjects(rng, m=16, noise=0.01)
    mean = generalized_procrustes(world)
    for w, sim in zip(world, sims):
        t = canonical_transform(w, mean)
        canon = t.apply(w)
        rms = np.sqrt(((canon - mean) ** 2).sum(1).mean())
        assert rms < 0.05                                 # noise 0.01/axis, shape var 0 around the mean
        assert np.linalg.det(t.rotation) == pytest.approx(1.0)
        # The recovered world->canonical transform undoes the subject's pose
        # (up to the gauge offset between TEMPLATE and the mean, which is ~identity).
        undo = t.compose(sim)
        assert abs(undo.scale - 1) < 0.05
        assert np.abs(undo.rotation - np.eye(3)).max() < 0.05
    # Identity check: the mean face maps to itself.
    assert canonical_transform(mean, mean).allclose(SimilarityTransform.identity(), atol=1e-9)


def test_gpa_bad_input():
    with pytest.raises(ValueError, match=r"shapes must have shape \[M, N, 3\]"):
        generalized_procrustes(np.zeros((24, 3)))
    with pytest.raises(ValueError, match="template has 24 points"):
        generalized_procrustes(np.zeros((2, 10, 3)))
    bad = np.stack([TEMPLATE, TEMPLATE]).copy()
    bad[1, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"shapes\[1\]"):
        generalized_procrustes(bad)
    with pytest.raises(ValueError, match="landmarks_world"):
        canonical_transform(TEMPLATE[:, :2], TEMPLATE)
