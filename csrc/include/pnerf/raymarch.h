// Fused canonical-warp ray marching through the occupancy grid. Per ray:
//   1. warp the world ray into canonical space (x' = A x + t, one table row per batch
//      or per ray),
//   2. clip it to the grid's outer box (and the near/far planes, in world units),
//   3. step through it, t_k = near + (k + u) * dt in canonical units (u = per-ray
//      jitter in [0,1)); with cone_angle > 0, dt_k = clamp(t_k * cone_angle, dt, dt_max)
//      and t_{k+1} = t_k + dt_k,
//   4. keep sample k when its midpoint lies in an occupied cell, until the midpoint
//      passes far. With cone_angle == 0 an empty cell is skipped in one jump to the
//      first sample whose midpoint may lie beyond the cell (same samples as stepping),
//      and with the grid's level-0 block summary (GridSpec::coarse) an empty block of
//      cells in one jump likewise; inside a full block every sample is kept up to the
//      block's exit without a lookup, as inside an occupied cell.
// Two passes: count (writes counts[r]) and fill (writes at offsets[r]). Emitted
// t_start / t_end are world units; positions and directions are canonical. With
// `first_step` (constant steps), the count pass also keeps the step index of each ray's
// first sample, and the fill pass starts there and skips the rays with no samples: it
// does not walk the empty space in front of the head (and around it) a second time. The
// first sample is always found by a grid lookup (the lookup-free shortcut needs an
// occupied cell found before), so starting there gives the same samples.
#pragma once
#include "pnerf/common.h"
#include "pnerf/grid.h"
#include "pnerf/rays.h"

namespace pnerf {

template <typename T>
struct MarchArgs {
  int64_t n_rays;
  const T* rays_o;              // [N, 3] world
  const T* rays_d;              // [N, 3] world
  const T* warp_table;          // [n_warps, 12] or nullptr (identity)
  const int64_t* warp_index;    // [N] or nullptr (row 0 for every ray)
  const T* jitter;              // [N] in [0,1) or nullptr (0)
  const T* t_min;               // [N] world units or nullptr: start no earlier than this
  const T* t_max;               // [N] world units or nullptr: stop before this
  GridSpec<T> grid;
  T box[6];                     // marching box (canonical), normally the coarsest level's
  T near_plane, far_plane;      // world units
  T step;                       // canonical step size
  T cone_angle;                 // 0: constant steps
  T max_step;                   // cap on dt with cone_angle > 0
  int64_t max_samples;          // per ray; <= 0: no cap
  int64_t max_steps;            // safety cap on candidates per ray
  // count pass
  int64_t* counts;              // [N] (the fill pass reads it with first_step)
  int64_t* first_step;          // [N] or nullptr: count pass writes, fill pass reads
  // fill pass
  const int64_t* offsets;       // [N] start of each ray's samples
  int64_t* ray_indices;         // [S]
  T* t_starts;                  // [S] world
  T* t_ends;                    // [S] world
  T* positions;                 // [S, 3] canonical midpoints
  T* dirs;                      // [S, 3] canonical unit directions
};

template <typename T, bool kFill>
struct MarchRay {
  MarchArgs<T> a;
  PNERF_HD void operator()(int64_t r) const {
    const T* row = nullptr;
    if (a.warp_table != nullptr) row = a.warp_table + 12 * (a.warp_index ? a.warp_index[r] : 0);
    Vec3<T> o, d;
    T len;
    warp_ray(row, load3(a.rays_o + 3 * r), load3(a.rays_d + 3 * r), &o, &d, &len);
    T near, far;
    int64_t n = 0;
    if (kFill && a.first_step != nullptr && a.counts[r] == 0) return;
    if (ray_aabb(o, d, a.box, &near, &far) && len > T(0)) {
      near = max_(near, a.near_plane * len);
      far = min_(far, a.far_plane * len);
      if (a.t_min != nullptr) near = max_(near, a.t_min[r] * len);
      if (a.t_max != nullptr) far = min_(far, a.t_max[r] * len);
      const T u = a.jitter ? a.jitter[r] : T(0);
      const T inv_len = T(1) / len;
      int64_t out = kFill ? a.offsets[r] : 0;
      if (a.cone_angle <= T(0)) {
        // `known` = a parameter below which samples are known to lie in the occupied
        // cell found last (its exit minus a small margin), so they need no lookup.
        T known = T(-1);
        const Vec3<T> inv_d = make_vec3(T(1) / d.x, T(1) / d.y, T(1) / d.z);
        const T inv_step = T(1) / a.step;
        int64_t k = (kFill && a.first_step != nullptr) ? a.first_step[r] : 0;
        while (k < a.max_steps) {
          const T t0 = near + (T(k) + u) * a.step;
          const T t1 = near + (T(k + 1) + u) * a.step;
          const T mid = T(0.5) * (t0 + t1);
          if (!(mid < far)) break;
          if (mid < known) {
            if (kFill) emit(out++, r, t0, t1, o + d * mid, d, inv_len);
            ++n;
            if (a.max_samples > 0 && n >= a.max_samples) break;
            ++k;
            continue;
          }
          const Vec3<T> p = o + d * mid;
          T t_exit;
          const bool occ = grid_occupied_exit(a.grid, p, o, d, inv_d, &t_exit);
          if (occ) {
            known = t_exit - (T(1e-5) * (fabs(t_exit) + T(1)) + T(1e-3) * a.step);
            if (!kFill && n == 0 && a.first_step != nullptr) a.first_step[r] = k;
            if (kFill) emit(out++, r, t0, t1, p, d, inv_len);
            ++n;
            if (a.max_samples > 0 && n >= a.max_samples) break;
            ++k;
          } else {
            // Jump to one sample before the first midpoint past the cell's exit.
            // (k* = ceil((t_exit - near) / step - u - 1/2); ceil by truncation after clamping.)
            const T x = clamp_((t_exit - near) * inv_step - u - T(0.5), T(0), T(a.max_steps));
            int64_t kk = (int64_t)x;
            if (T(kk) < x) ++kk;
            kk -= 1;
            k = kk > k + 1 ? kk : k + 1;
          }
        }
      } else {
        T t0 = near + u * clamp_(near * a.cone_angle, a.step, a.max_step);
        for (int64_t k = 0; k < a.max_steps; ++k) {
          const T dt = clamp_(t0 * a.cone_angle, a.step, a.max_step);
          const T t1 = t0 + dt;
          const T mid = T(0.5) * (t0 + t1);
          if (!(mid < far)) break;
          const Vec3<T> p = o + d * mid;
          if (grid_occupied(a.grid, p)) {
            if (kFill) emit(out++, r, t0, t1, p, d, inv_len);
            ++n;
            if (a.max_samples > 0 && n >= a.max_samples) break;
          }
          t0 = t1;
        }
      }
    }
    if (!kFill) a.counts[r] = n;
  }

  PNERF_HD void emit(int64_t i, int64_t r, T t0, T t1, Vec3<T> p, Vec3<T> d, T inv_len) const {
    a.ray_indices[i] = r;
    a.t_starts[i] = t0 * inv_len;
    a.t_ends[i] = t1 * inv_len;
    store3(a.positions + 3 * i, p);
    store3(a.dirs + 3 * i, d);
  }
};

template <typename T>
struct RayAabbArgs {
  int64_t n_rays;
  const T* rays_o;
  const T* rays_d;
  T box[6];
  T* near;
  T* far;
  bool* hit;
};

template <typename T>
struct RayAabbFunctor {
  RayAabbArgs<T> a;
  PNERF_HD void operator()(int64_t r) const {
    a.hit[r] = ray_aabb(load3(a.rays_o + 3 * r), load3(a.rays_d + 3 * r), a.box, a.near + r, a.far + r);
  }
};

namespace cpu {
template <typename T> void march_count(const MarchArgs<T>& a);
template <typename T> void march_fill(const MarchArgs<T>& a);
template <typename T> void ray_aabb_intersect(const RayAabbArgs<T>& a);
}  // namespace cpu
namespace cuda {
template <typename T> void march_count(const MarchArgs<T>& a, void* stream);
template <typename T> void march_fill(const MarchArgs<T>& a, void* stream);
template <typename T> void ray_aabb_intersect(const RayAabbArgs<T>& a, void* stream);
}  // namespace cuda

}  // namespace pnerf
