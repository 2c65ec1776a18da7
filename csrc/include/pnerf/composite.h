// Alpha compositing over packed samples: the per-ray math, once, for CPU and CUDA.
//
// Samples of ray r are [start, start + count) with (start, count) = packed_info[r].
// T_i = exp(-sum_{j<i} sigma_j * delta_j) (kept as the running product of the
// exp(-sigma_j * delta_j), one exp per sample), alpha_i = 1 - exp(-sigma_i * delta_i),
// w_i = T_i * alpha_i. A ray stops (early termination) at the first sample whose
// T_i < t_thresh; that sample and all later ones get weight 0 and transmittance 0.
// rgb = sum w_i c_i, depth = sum w_i (t_start_i + t_end_i) / 2, opacity = sum w_i.
#pragma once
#include "pnerf/common.h"

namespace pnerf {

template <typename T>
struct CompositeArgs {
  int64_t n_rays;
  const int64_t* packed_info;  // [n_rays, 2] (start, count)
  const T* sigmas;             // [S]
  const T* rgbs;               // [S, 3]
  const T* t_starts;           // [S]
  const T* t_ends;             // [S]
  T t_thresh;
  // forward outputs
  T* weights;       // [S]
  T* trans;         // [S]
  T* out_rgb;       // [n_rays, 3]
  T* out_depth;     // [n_rays]
  T* out_opacity;   // [n_rays]
  // backward inputs / outputs
  const T* grad_rgb;      // [n_rays, 3]
  const T* grad_depth;    // [n_rays]
  const T* grad_opacity;  // [n_rays]
  T* grad_sigmas;         // [S]
  T* grad_rgbs;           // [S, 3]
};

template <typename T>
struct CompositeForward {
  CompositeArgs<T> a;
  PNERF_HD void operator()(int64_t r) const {
    const int64_t start = a.packed_info[2 * r], count = a.packed_info[2 * r + 1];
    T Ti = T(1), cr = T(0), cg = T(0), cb = T(0), d = T(0), o = T(0);
    bool done = false;
    for (int64_t k = 0; k < count; ++k) {
      const int64_t i = start + k;
      if (done || Ti < a.t_thresh) {
        done = true;
        a.weights[i] = T(0);
        a.trans[i] = T(0);
        continue;
      }
      const T tau = a.sigmas[i] * (a.t_ends[i] - a.t_starts[i]);
      const T e = exp(-tau);  // one exp per sample: T_{i+1} = T_i exp(-tau_i)
      const T alpha = T(1) - e;
      const T w = Ti * alpha;
      a.weights[i] = w;
      a.trans[i] = Ti;
      cr += w * a.rgbs[3 * i + 0];
      cg += w * a.rgbs[3 * i + 1];
      cb += w * a.rgbs[3 * i + 2];
      d += w * (T(0.5) * (a.t_starts[i] + a.t_ends[i]));
      o += w;
      Ti *= e;
      // exp(-sum) reached exactly 0; the product would stick at the smallest subnormal
      // (1 ulp times e > 1/2 rounds back to 1 ulp), which only a threshold of 0 ever sees
      if (Ti < T(1e-30)) Ti = T(0);
    }
    a.out_rgb[3 * r + 0] = cr;
    a.out_rgb[3 * r + 1] = cg;
    a.out_rgb[3 * r + 2] = cb;
    a.out_depth[r] = d;
    a.out_opacity[r] = o;
  }
};

// dL/dsigma_k = delta_k * (T_{k+1} v_k - sum_{i>k} w_i v_i),  dL/dc_k = w_k g_rgb,
// with v_i = g_rgb . c_i + g_depth * mid_i + g_opacity. The suffix sum is the ray's
// total (from the forward outputs) minus a running prefix.
template <typename T>
struct CompositeBackward {
  CompositeArgs<T> a;
  PNERF_HD void operator()(int64_t r) const {
    const int64_t start = a.packed_info[2 * r], count = a.packed_info[2 * r + 1];
    const T gr = a.grad_rgb[3 * r], gg = a.grad_rgb[3 * r + 1], gb = a.grad_rgb[3 * r + 2];
    const T gd = a.grad_depth[r], go = a.grad_opacity[r];
    const T total = gr * a.out_rgb[3 * r] + gg * a.out_rgb[3 * r + 1] + gb * a.out_rgb[3 * r + 2] +
                    gd * a.out_depth[r] + go * a.out_opacity[r];
    T prefix = T(0);
    for (int64_t k = 0; k < count; ++k) {
      const int64_t i = start + k;
      const T w = a.weights[i];
      const T Ti = a.trans[i];
      if (Ti == T(0) && w == T(0)) {  // terminated (or fully blocked): no gradient
        a.grad_sigmas[i] = T(0);
        a.grad_rgbs[3 * i] = a.grad_rgbs[3 * i + 1] = a.grad_rgbs[3 * i + 2] = T(0);
        continue;
      }
      const T v = gr * a.rgbs[3 * i] + gg * a.rgbs[3 * i + 1] + gb * a.rgbs[3 * i + 2] +
                  gd * (T(0.5) * (a.t_starts[i] + a.t_ends[i])) + go;
      prefix += w * v;
      const T delta = a.t_ends[i] - a.t_starts[i];
      a.grad_sigmas[i] = delta * ((Ti - w) * v - (total - prefix));
      a.grad_rgbs[3 * i + 0] = w * gr;
      a.grad_rgbs[3 * i + 1] = w * gg;
      a.grad_rgbs[3 * i + 2] = w * gb;
    }
  }
};

namespace cpu {
template <typename T> void composite_forward(const CompositeArgs<T>& a);
template <typename T> void composite_backward(const CompositeArgs<T>& a);
}  // namespace cpu
namespace cuda {
template <typename T> void composite_forward(const CompositeArgs<T>& a, void* stream);
template <typename T> void composite_backward(const CompositeArgs<T>& a, void* stream);
}  // namespace cuda

}  // namespace pnerf
