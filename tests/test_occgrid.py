import pytest
import torch

from pnerf_fast.ops.occgrid import OccupancyGrid, cell_positions, ema_update_
from pnerf_fast.ops.raymarch import GridGeometry, grid_cells_torch

GRID = GridGeometry((-1.0, -2.0, -1.0, 1.0, 2.0, 1.0), levels=2, res=8)


def test_cell_positions_match_reference_and_round_trip(C):
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(GRID.n_cells, generator=g)[:500]
    jit = torch.rand(500, 3, generator=g)
    a = cell_positions(GRID, idx, jit, impl="native")
    b = cell_positions(GRID, idx, jit, impl="torch")
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # Every centre lies in its own cell (level 1's inner cells overlap level 0 and map there).
    centres = cell_positions(GRID)
    cells = grid_cells_torch(centres, GRID)
    lvl0 = torch.arange(GRID.n_cells) < GRID.res ** 3
    assert torch.equal(cells[lvl0], torch.arange(GRID.n_cells)[lvl0])
    assert (cells >= 0).all()


def test_ema_update_and_threshold_match_reference(C):
    g = torch.Generator().manual_seed(1)
    d0 = torch.rand(GRID.n_cells, generator=g)
    idx = torch.randperm(GRID.n_cells, generator=g)[:300]
    new = torch.rand(300, generator=g) * 2
    outs = []
    for impl in ("native", "torch"):
        d = d0.clone()
        bits = torch.zeros(GRID.n_cells, dtype=torch.uint8)
        ema_update_(d, bits, idx, new, 0.9, 0.5, impl=impl)
        outs.append((d, bits))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    assert torch.equal(outs[0][1], outs[1][1])
    expect = d0.clone()
    expect[idx] = torch.maximum(d0[idx] * 0.9, new)
    torch.testing.assert_close(outs[0][0], expect)


def test_grid_marks_a_sphere():
    grid = OccupancyGrid((-1.5,) * 3 + (1.5,) * 3, levels=1, res=16)

    def sphere(p):
        return (p.norm(dim=-1) < 0.8).float() * 10.0

    grid.mark_from_density(sphere, threshold=1.0)
    centres = cell_positions(grid.geometry)
    inside = centres.norm(dim=-1) < 0.8 - 0.15
    outside = centres.norm(dim=-1) > 0.8 + 0.15
    assert grid.bits[inside].all() and not grid.bits[outside].any()
    # EMA updates decay a region that became empty, geometrically.
    for _ in range(60):
        grid.update(lambda p: torch.zeros(p.shape[0]), fraction=1.0)
    torch.testing.assert_close(grid.density[inside], torch.full((int(inside.sum()),), 10.0 * 0.95 ** 60))
    # Once it falls below the threshold, min(mean, 0.01), it is no longer occupied,
    # while a region that became dense is.
    for _ in range(100):
        grid.update(lambda p: (p[:, 0] > 1.0).float() * 10.0, fraction=1.0)
    assert not grid.bits[inside].any()
    assert grid.bits[centres[:, 0] > 1.1].all()


def test_update_partial_and_state_dict_round_trip():
    grid = OccupancyGrid((-1.0,) * 3 + (1.0,) * 3, levels=2, res=8)
    gen = torch.Generator().manual_seed(0)
    grid.update(lambda p: (p[:, 0] > 0).float(), fraction=0.5, generator=gen)
    assert 0 < grid.occupancy < 1
    other = OccupancyGrid((-1.0,) * 3 + (1.0,) * 3, levels=2, res=8)
    other.load_state_dict(grid.state_dict())
    assert torch.equal(other.bits, grid.bits)


def test_bad_arguments():
    with pytest.raises(ValueError, match="levels"):
        OccupancyGrid((-1.0,) * 3 + (1.0,) * 3, levels=0)
    with pytest.raises(ValueError, match="aabb"):
        OccupancyGrid((1.0,) * 3 + (-1.0,) * 3)
    with pytest.raises(ValueError, match="decay"):
        OccupancyGrid((-1.0,) * 3 + (1.0,) * 3, decay=2.0)
    with pytest.raises(ValueError, match="'jitter'"):
        cell_positions(GRID, torch.arange(4), torch.rand(3, 3))


def test_native_checks_name_arguments(C):
    d = torch.zeros(GRID.n_cells)
    with pytest.raises(RuntimeError, match="'bits'"):
        C.occ_update(d, torch.zeros(3, dtype=torch.uint8), None, d, 0.9, 0.1)
    with pytest.raises(RuntimeError, match="'indices'"):
        C.occ_update(d, torch.zeros(GRID.n_cells, dtype=torch.uint8), torch.tensor([GRID.n_cells]), torch.zeros(1), 0.9, 0.1)


def test_debug_mode_checks_unique_indices(C):
    # Preconditions of occ_update: indices in range (always checked on the CPU) and unique
    # (checked in debug mode: PNERF_DEBUG_CHECKS=1 or _C.set_debug_checks(True)).
    d = torch.rand(GRID.n_cells)
    bits = torch.zeros(GRID.n_cells, dtype=torch.uint8)
    dup = torch.tensor([3, 5, 3])
    prev = C.debug_checks()
    try:
        C.set_debug_checks(False)
        C.occ_update(d, bits, dup, torch.zeros(3), 0.9, 0.1)  # not checked: no sort per call
        C.occ_cell_positions(dup, None, list(GRID.aabb), GRID.levels, GRID.res, d)  # positions may repeat
        C.set_debug_checks(True)
        with pytest.raises(RuntimeError, match="'indices' must hold unique"):
            C.occ_update(d, bits, dup, torch.zeros(3), 0.9, 0.1)
        C.occ_cell_positions(dup, None, list(GRID.aabb), GRID.levels, GRID.res, d)
        C.occ_update(d, bits, torch.tensor([3, 5]), torch.zeros(2), 0.9, 0.1)
    finally:
        C.set_debug_checks(prev)
