// Multi-resolution occupancy grid in canonical space (nerfacc / instant-ngp style).
// Level l covers the level-0 box scaled by 2^l about its centre; every level has
// res^3 cells, stored as bytes (0 empty, 1 occupied) in [levels, res, res, res]
// order, x slowest. A point's level is the smallest l with max_i |p_i - c_i| / h_i < 2^l.
#pragma once
#include "pnerf/common.h"

namespace pnerf {

template <typename T>
struct GridSpec {
  const uint8_t* bits;  // [levels * res^3] or nullptr (every cell occupied)
  int levels;
  int res;
  T center[3];
  T half[3];      // level-0 half extent per axis
  T inv_half[3];  // 1 / half, rounded once from double
  // Optional (marching only): level 0's blocks of 2^coarse_shift cells per axis, [(res >>
  // shift)^3] in the cells' order: 0 where every cell of the block is empty, 2 where every
  // one is occupied, 1 otherwise; nullptr = none. grid_occupied_exit then answers for a
  // whole empty or full block in one lookup.
  const uint8_t* coarse;
  int coarse_shift;
  // Level 0's cell size (2 h / res) and lower corner (c - h) per axis, computed once
  // (grid_spec_derive) by the same expressions as cells_exit_t's for any level, so the
  // same bits.
  T cell0[3];
  T lo0[3];
};

// Sets the derived fields (cell0, lo0) from center, half and res: call once they are set.
template <typename T>
PNERF_HD void grid_spec_derive(GridSpec<T>& g) {
  for (int a = 0; a < 3; ++a) {
    g.cell0[a] = T(2) * g.half[a] * T(1) / T(g.res);  // cells_exit_t's expressions at level 0
    g.lo0[a] = g.center[a] - g.half[a] * T(1);
  }
}

// Normalised level-0 coordinates: q = (p - c) / h, as a product with 1/h.
template <typename T>
PNERF_HD Vec3<T> grid_normalise(const GridSpec<T>& g, Vec3<T> p) {
  return {(p.x - g.center[0]) * g.inv_half[0], (p.y - g.center[1]) * g.inv_half[1],
          (p.z - g.center[2]) * g.inv_half[2]};
}

// Level of normalised point q, or -1 outside the coarsest level.
template <typename T>
PNERF_HD int grid_level_q(const GridSpec<T>& g, Vec3<T> q) {
  const T mx = max_(max_(fabs(q.x), fabs(q.y)), fabs(q.z));
  T bound = T(1);
  for (int l = 0; l < g.levels; ++l, bound *= T(2)) {
    if (mx < bound) return l;
  }
  return -1;
}

template <typename T>
PNERF_HD int grid_level(const GridSpec<T>& g, Vec3<T> p) {
  return grid_level_q(g, grid_normalise(g, p));
}

// Cell coordinate along one axis: floor((q * 2^-l + 1) * res / 2), clamped. Exact
// powers of two keep this bit-identical to the PyTorch reference.
// (Truncation equals floor on [0, res); avoiding floor() matters on the host, where
// baseline x86-64 has no rounding instruction and floor is a library call.)
template <typename T>
PNERF_HD int cell_coord_q(T q, T inv_scale, int res) {
  const T u = (q * inv_scale + T(1)) * (T(0.5) * T(res));
  if (!(u >= T(0))) return 0;
  if (u >= T(res)) return res - 1;
  return (int)u;
}

// Level and cell coordinates of p (-1 outside the grid, idx untouched).
template <typename T>
PNERF_HD int grid_cell_coords(const GridSpec<T>& g, Vec3<T> p, int idx[3]) {
  const Vec3<T> q = grid_normalise(g, p);
  const int l = grid_level_q(g, q);
  if (l < 0) return l;
  const T inv_scale = T(1) / T(int64_t(1) << l);
  idx[0] = cell_coord_q(q.x, inv_scale, g.res);
  idx[1] = cell_coord_q(q.y, inv_scale, g.res);
  idx[2] = cell_coord_q(q.z, inv_scale, g.res);
  return l;
}

// Flat index of level l's cell idx.
template <typename T>
PNERF_HD int64_t cell_index(const GridSpec<T>& g, int l, const int idx[3]) {
  return ((int64_t(l) * g.res + idx[0]) * g.res + idx[1]) * g.res + idx[2];
}

// Flat cell index of p, or -1 outside the grid.
template <typename T>
PNERF_HD int64_t grid_cell(const GridSpec<T>& g, Vec3<T> p, int* level_out = nullptr) {
  int idx[3];
  const int l = grid_cell_coords(g, p, idx);
  if (level_out) *level_out = l;
  return l < 0 ? -1 : cell_index(g, l, idx);
}

template <typename T>
PNERF_HD bool grid_occupied(const GridSpec<T>& g, Vec3<T> p) {
  if (g.bits == nullptr) return grid_level(g, p) >= 0;
  const int64_t c = grid_cell(g, p);
  return c >= 0 && g.bits[c] != 0;
}

// Parametric distance along (o, d) at which the ray leaves the box of level-l cells
// [lo_i, lo_i + n_i) per axis (n_i = 1: one cell); inv_d = 1 / d per component.
template <typename T>
PNERF_HD T cells_exit_t(const GridSpec<T>& g, int l, const int lo_i[3], int n_i, Vec3<T> o, Vec3<T> d,
                        Vec3<T> inv_d) {
  const T scale = T(int64_t(1) << l);
  const T oc[3] = {o.x, o.y, o.z}, dc[3] = {d.x, d.y, d.z}, ic[3] = {inv_d.x, inv_d.y, inv_d.z};
  T t_exit = T(1e30);
  for (int a = 0; a < 3; ++a) {
    const T size = l == 0 ? g.cell0[a] : T(2) * g.half[a] * scale / T(g.res);
    const T lo = l == 0 ? g.lo0[a] : g.center[a] - g.half[a] * scale;
    if (dc[a] > T(0)) t_exit = min_(t_exit, (lo + T(lo_i[a] + n_i) * size - oc[a]) * ic[a]);
    else if (dc[a] < T(0)) t_exit = min_(t_exit, (lo + T(lo_i[a]) * size - oc[a]) * ic[a]);
  }
  return t_exit;
}

// Parametric distance along (o, d) at which the ray leaves the cell holding p;
// inv_d = 1 / d per component (inf for zero components).
template <typename T>
PNERF_HD T cell_exit_t(const GridSpec<T>& g, Vec3<T> p, Vec3<T> o, Vec3<T> d, Vec3<T> inv_d) {
  int idx[3];
  const int l = grid_cell_coords(g, p, idx);
  return l < 0 ? T(0) : cells_exit_t(g, l, idx, 1, o, d, inv_d);
}

// grid_occupied(g, p) and cell_exit_t(g, p, o, d, inv_d) in one lookup: the level and the
// cell coordinates are found once (the same arithmetic, so the same results bit for bit).
// Returns the occupancy; *t_exit = the exit parameter (0 outside the grid). With
// g.coarse, a level-0 point in an empty or a full block gets the block's exit instead of
// its cell's (every cell the ray crosses before it is empty, or occupied, too; the block's
// faces are cell faces, computed by the same expression). The march then emits the same
// samples, except possibly on a ray that runs along a block's face within rounding, where
// stepping cell by cell could place a midpoint in the neighbouring block.
template <typename T>
PNERF_HD_HOT bool grid_occupied_exit(const GridSpec<T>& g, Vec3<T> p, Vec3<T> o, Vec3<T> d, Vec3<T> inv_d,
                                 T* t_exit) {
  int idx[3];
  const int l = grid_cell_coords(g, p, idx);
  if (l < 0) {
    *t_exit = T(0);
    return false;
  }
  if (l == 0 && g.coarse != nullptr) {
    const int sh = g.coarse_shift, cr = g.res >> sh;
    const uint8_t c = g.coarse[((int64_t)(idx[0] >> sh) * cr + (idx[1] >> sh)) * cr + (idx[2] >> sh)];
    if (c != 1) {  // 0: every cell of the block empty; 2: every cell occupied
      const int lo_i[3] = {(idx[0] >> sh) << sh, (idx[1] >> sh) << sh, (idx[2] >> sh) << sh};
      *t_exit = cells_exit_t(g, 0, lo_i, 1 << sh, o, d, inv_d);
      return c != 0;
    }
  }
  *t_exit = cells_exit_t(g, l, idx, 1, o, d, inv_d);
  if (g.bits == nullptr) return true;
  return g.bits[cell_index(g, l, idx)] != 0;
}

// Centre of flat cell `idx` plus a jitter in [0,1)^3 (0.5 = the centre).
template <typename T>
PNERF_HD Vec3<T> grid_cell_position(const GridSpec<T>& g, int64_t idx, Vec3<T> jitter) {
  const int64_t r = g.res;
  const int64_t iz = idx % r, iy = (idx / r) % r, ix = (idx / (r * r)) % r, l = idx / (r * r * r);
  const T scale = T(int64_t(1) << l);
  Vec3<T> out;
  out.x = g.center[0] - g.half[0] * scale + (T(ix) + jitter.x) * (T(2) * g.half[0] * scale / T(g.res));
  out.y = g.center[1] - g.half[1] * scale + (T(iy) + jitter.y) * (T(2) * g.half[1] * scale / T(g.res));
  out.z = g.center[2] - g.half[2] * scale + (T(iz) + jitter.z) * (T(2) * g.half[2] * scale / T(g.res));
  return out;
}

}  // namespace pnerf
