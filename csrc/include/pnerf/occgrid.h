// Occupancy-grid maintenance: jittered cell positions for density queries, the EMA
// update (d <- max(d * decay, new), as instant-ngp does) and thresholding into the
// occupancy bytes.
#pragma once
#include "pnerf/common.h"
#include "pnerf/grid.h"

namespace pnerf {

template <typename T>
struct OccGridArgs {
  int64_t n;                // number of cells addressed
  GridSpec<T> grid;         // geometry only (bits unused)
  const int64_t* indices;   // [n] flat cell indices, or nullptr (cell i for i < n)
  const T* jitter;          // [n, 3] in [0,1), or nullptr (cell centres)
  T* positions;             // [n, 3] out
  T* density;               // [levels * res^3] EMA density
  const T* new_density;     // [n]
  T decay;
  T threshold;
  uint8_t* bits;            // [levels * res^3]
};

template <typename T>
struct OccCellPositions {
  OccGridArgs<T> a;
  PNERF_HD void operator()(int64_t i) const {
    const int64_t idx = a.indices ? a.indices[i] : i;
    const Vec3<T> j = a.jitter ? load3(a.jitter + 3 * i) : make_vec3(T(0.5), T(0.5), T(0.5));
    store3(a.positions + 3 * i, grid_cell_position(a.grid, idx, j));
  }
};

// Indices must be unique within one call.
template <typename T>
struct OccEmaUpdate {
  OccGridArgs<T> a;
  PNERF_HD void operator()(int64_t i) const {
    const int64_t idx = a.indices ? a.indices[i] : i;
    a.density[idx] = max_(a.density[idx] * a.decay, a.new_density[i]);
  }
};

template <typename T>
struct OccThreshold {
  OccGridArgs<T> a;
  PNERF_HD void operator()(int64_t i) const { a.bits[i] = a.density[i] > a.threshold ? 1 : 0; }
};

namespace cpu {
template <typename T> void occ_cell_positions(const OccGridArgs<T>& a);
template <typename T> void occ_ema_update(const OccGridArgs<T>& a);
template <typename T> void occ_threshold(const OccGridArgs<T>& a);
}  // namespace cpu
namespace cuda {
template <typename T> void occ_cell_positions(const OccGridArgs<T>& a, void* stream);
template <typename T> void occ_ema_update(const OccGridArgs<T>& a, void* stream);
template <typename T> void occ_threshold(const OccGridArgs<T>& a, void* stream);
}  // namespace cuda

}  // namespace pnerf
