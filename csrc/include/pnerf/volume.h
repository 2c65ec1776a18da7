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

template <typename T>
struct VolumeRead {
  VolumeReadArgs<T> a;
  PNERF_HD void operator()(int64_t i) const {
    const int C = a.channels;
    T* o = a.out + i * (int64_t)C;
    for (int c = 0; c < C; ++c) o[c] = T(0);
    int i0[3];
    T f[3];
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
    }
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
      if (!inside || w == T(0)) continue;
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
