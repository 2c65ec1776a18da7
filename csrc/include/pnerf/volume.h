// Trilinear read of a dense feature volume (the latent code's feature volume), the
// sampling of torch.nn.functional.grid_sample with align_corners=True and zero padding:
// the volume's vertices span the box [lo, hi] (vertex 0 at lo, vertex R-1 at hi per axis),
// and a corner outside the volume contributes zero. Forward only (rendering; training
// reads the volume through grid_sample, which autograd differentiates).
#pragma once
#include "pnerf/common.h"

namespace pnerf {

template <typename T>
struct VolumeReadArgs {
  int64_t n;
  const T* x;       // [n, 3] points
  const T* vol;     // [R0, R1, R2, C] channels last
  int32_t res[3];   // R0, R1, R2 (each >= 2)
  int32_t channels; // C
  T lo[3];          // the box's corner (vertex 0)
  T scale[3];       // (R_a - 1) / (hi_a - lo_a)
  T* out;           // [n, C]
};

// kC > 0: the channel count known at compile time (the launchers use 4, the fields' count),
// with a branch-free path for points whose 8 corners all lie inside; 0: any count.
template <typename T, int kC = 0>
struct VolumeRead {
  VolumeReadArgs<T> a;
  PNERF_HD void operator()(int64_t i) const {
    const int C = kC > 0 ? kC : a.channels;
    T* o = a.out + i * (int64_t)C;
    int i0[3];
    T f[3];
    bool interior = true;
    for (int k = 0; k < 3; ++k) {
      T u = (a.x[3 * i + k] - a.lo[k]) * a.scale[k];
      if (!(u > T(-2))) u = T(-2);  // (NaN too) far outside: every corner is out
      if (u > T(a.res[k] + 1)) u = T(a.res[k] + 1);
      // floor(u) for u >= -2 by truncation (no library floor on the host); u + 2 can round up
      // to the next integer just below one, which the check undoes, so 0 <= f < 1
      int j = (int)(u + T(2)) - 2;
      if (T(j) > u) --j;
      i0[k] = j;
      f[k] = u - T(j);
      interior = interior && j >= 0 && j < a.res[k] - 1;
    }
    if (kC > 0 && interior) {
      // the same products and the same corner order as below, without the checks
      const int64_t sz = C, sy = (int64_t)a.res[2] * C, sx = (int64_t)a.res[1] * sy;
      const T* base = a.vol + i0[0] * sx + i0[1] * sy + i0[2] * sz;
      const T wx[2] = {T(1) - f[0], f[0]}, wy[2] = {T(1) - f[1], f[1]}, wz[2] = {T(1) - f[2], f[2]};
      T acc[kC > 0 ? kC : 1];
      for (int c = 0; c < kC; ++c) acc[c] = T(0);
      for (int dx = 0; dx < 2; ++dx)
        for (int dy = 0; dy < 2; ++dy)
          for (int dz = 0; dz < 2; ++dz) {
            const T w = wx[dx] * wy[dy] * wz[dz];
            const T* v = base + dx * sx + dy * sy + dz * sz;
            for (int c = 0; c < kC; ++c) acc[c] += w * v[c];
          }
      for (int c = 0; c < kC; ++c) o[c] = acc[c];
      return;
    }
    for (int c = 0; c < C; ++c) o[c] = T(0);
    for (int corner = 0; corner < 8; ++corner) {
      int64_t idx = 0;
      T w = T(1);
      bool inside = true;
      for (int k = 0; k < 3; ++k) {
        const int up = (corner >> (2 - k)) & 1;
        const int j = i0[k] + up;
        if (j < 0 || j >= a.res[k]) inside = false;
        idx = idx * a.res[k] + j;
        w *= up ? f[k] : T(1) - f[k];
      }
      if (!inside) continue;
      const T* v = a.vol + idx * C;
      for (int c = 0; c < C; ++c) o[c] += w * v[c];
    }
  }
};

namespace cpu {
template <typename T> void volume_read(const VolumeReadArgs<T>& a);
}  // namespace cpu
namespace cuda {
template <typename T> void volume_read(const VolumeReadArgs<T>& a, void* stream);
}  // namespace cuda

}  // namespace pnerf
