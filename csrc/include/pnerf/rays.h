// Ray / axis-aligned box intersection (slab method) and the similarity warp.
#pragma once
#include "pnerf/common.h"

namespace pnerf {

// Returns true on a hit with t_far > max(t_near, 0); near is clamped to >= 0.
// aabb = (xmin, ymin, zmin, xmax, ymax, zmax). Zero direction components are handled.
template <typename T>
PNERF_HD bool ray_aabb(Vec3<T> o, Vec3<T> d, const T* aabb, T* near_out, T* far_out) {
  T tmin = T(-1e30), tmax = T(1e30);
  const T oc[3] = {o.x, o.y, o.z}, dc[3] = {d.x, d.y, d.z};
  for (int a = 0; a < 3; ++a) {
    const T lo = aabb[a], hi = aabb[a + 3];
    if (dc[a] == T(0)) {
      if (oc[a] < lo || oc[a] > hi) {
        *near_out = *far_out = T(0);
        return false;
      }
      continue;
    }
    const T t1 = (lo - oc[a]) / dc[a], t2 = (hi - oc[a]) / dc[a];
    tmin = max_(tmin, min_(t1, t2));
    tmax = min_(tmax, max_(t1, t2));
  }
  tmin = max_(tmin, T(0));
  if (tmax <= tmin) {
    *near_out = *far_out = T(0);
    return false;
  }
  *near_out = tmin;
  *far_out = tmax;
  return true;
}

// World -> canonical similarity, stored as a row of 12: A = s R (row-major 3x3), t.
// x' = A x + t. Directions map by A and are renormalised; `len` = |A d| converts
// canonical ray parameters back to world ones (t_world = t_canonical / len).
template <typename T>
PNERF_HD void warp_ray(const T* row, Vec3<T> o, Vec3<T> d, Vec3<T>* o_c, Vec3<T>* d_c, T* len) {
  if (row == nullptr) {
    const T n = norm(d);
    *o_c = o;
    *d_c = d * (T(1) / n);
    *len = n;
    return;
  }
  Vec3<T> oc = matvec3(row, o);
  *o_c = make_vec3(oc.x + row[9], oc.y + row[10], oc.z + row[11]);
  Vec3<T> dc = matvec3(row, d);
  const T n = norm(dc);
  *d_c = dc * (T(1) / n);
  *len = n;
}

}  // namespace pnerf
