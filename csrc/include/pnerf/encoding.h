// Spherical-harmonics direction encoding (real SH, bands 0..degree-1, degree <= 4, so
// degree^2 outputs), the same polynomials and signs as instant-ngp / tiny-cuda-nn, but
// taking unit directions in [-1, 1]^3 directly. Forward only: directions come from the
// rays and carry no gradient in training (the Python wrapper uses the differentiable
// reference when they do).
#pragma once
#include "pnerf/common.h"

namespace pnerf {

template <typename T>
PNERF_HD void sh_encode(int degree, T x, T y, T z, T* out) {
  const T xy = x * y, xz = x * z, yz = y * z, x2 = x * x, y2 = y * y, z2 = z * z;
  out[0] = T(0.28209479177387814);
  if (degree <= 1) return;
  out[1] = T(-0.48860251190291987) * y;
  out[2] = T(0.48860251190291987) * z;
  out[3] = T(-0.48860251190291987) * x;
  if (degree <= 2) return;
  out[4] = T(1.0925484305920792) * xy;
  out[5] = T(-1.0925484305920792) * yz;
  out[6] = T(0.94617469575755997) * z2 - T(0.31539156525251999);
  out[7] = T(-1.0925484305920792) * xz;
  out[8] = T(0.54627421529603959) * x2 - T(0.54627421529603959) * y2;
  if (degree <= 3) return;
  out[9] = T(0.59004358992664352) * y * (T(-3) * x2 + y2);
  out[10] = T(2.8906114426405538) * xy * z;
  out[11] = T(0.45704579946446572) * y * (T(1) - T(5) * z2);
  out[12] = T(0.3731763325901154) * z * (T(5) * z2 - T(3));
  out[13] = T(0.45704579946446572) * x * (T(1) - T(5) * z2);
  out[14] = T(1.4453057213202769) * z * (x2 - y2);
  out[15] = T(0.59004358992664352) * x * (-x2 + T(3) * y2);
}

template <typename T>
struct SHEncodeArgs {
  int64_t n;
  int32_t degree;
  const T* dirs;  // [n, 3]
  T* out;         // [n, degree^2]
};

template <typename T>
struct SHEncodeForward {
  SHEncodeArgs<T> a;
  PNERF_HD void operator()(int64_t i) const {
    const T* d = a.dirs + 3 * i;
    sh_encode(a.degree, d[0], d[1], d[2], a.out + i * (int64_t)(a.degree * a.degree));
  }
};

namespace cpu {
template <typename T> void sh_encode_forward(const SHEncodeArgs<T>& a);
}  // namespace cpu
namespace cuda {
template <typename T> void sh_encode_forward(const SHEncodeArgs<T>& a, void* stream);
}  // namespace cuda

}  // namespace pnerf
