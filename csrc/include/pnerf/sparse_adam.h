// A fused, row-sparse optimizer step for tables (the hash grid): the per-row math, once,
// for CPU and CUDA. One element = one touched row r (rows[i], unique), with its
// gradient grad[i, :] (from the hash-grid backward's touched-row list).
//
// Adam, the lazy convention of instant-ngp / tiny-cuda-nn: only touched rows change.
// An untouched row keeps its parameters AND its moments exactly as they were (no decay
// of m and v, no momentum drift), and has its own step counter row_step[r], which
// counts the steps that touched it; its bias correction uses that count. A row touched
// by every step therefore follows torch.optim.Adam exactly, in the same operation order:
//   t = ++row_step[r];  g += weight_decay * p
//   m = lerp(m, g, 1 - beta1);  v = beta2 v + (1 - beta2) g^2
//   p += -(lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// The bias corrections (1 - beta1^t, sqrt(1 - beta2^t)) come from a table in double,
// bias[t] for t < n_bias (the optimizer computes it with Python's pow, as torch does);
// beyond it, pow on the spot.
//
// SGD: p -= lr * g on the touched rows (exact: untouched rows have g = 0).
#pragma once
#include "pnerf/common.h"

namespace pnerf {

template <typename T>
struct SparseAdamArgs {
  int64_t k;           // touched rows
  int32_t n_features;  // F
  const int64_t* rows;  // [k] unique row indices
  const T* grad;        // [k, F]
  T* params;            // [rows, F]
  T* exp_avg;           // [rows, F] (Adam)
  T* exp_avg_sq;        // [rows, F] (Adam)
  int32_t* row_step;    // [rows]    (Adam)
  const double* bias;   // [n_bias, 2] (Adam)
  int64_t n_bias;
  double lr, beta1, beta2, eps, weight_decay;
};

template <typename T>
struct SparseAdamStep {
  SparseAdamArgs<T> a;
  PNERF_HD void operator()(int64_t i) const {
    const int64_t r = a.rows[i];
    const int32_t t = ++a.row_step[r];
    double bc1, bc2_sqrt;
    if (t < a.n_bias) {
      bc1 = a.bias[2 * t];
      bc2_sqrt = a.bias[2 * t + 1];
    } else {
      bc1 = 1.0 - pow(a.beta1, (double)t);
      bc2_sqrt = sqrt(1.0 - pow(a.beta2, (double)t));
    }
    // torch casts these Python scalars to the tensor's type: so do we.
    const T neg_step = (T)(-(a.lr / bc1)), bc2s = (T)bc2_sqrt, eps = (T)a.eps;
    const T w1 = (T)(1.0 - a.beta1), b2 = (T)a.beta2, w2 = (T)(1.0 - a.beta2), wd = (T)a.weight_decay;
    const int F = a.n_features;
    T* p = a.params + r * F;
    T* m = a.exp_avg + r * F;
    T* v = a.exp_avg_sq + r * F;
    const T* g = a.grad + i * F;
    for (int f = 0; f < F; ++f) {
      const T gf = a.weight_decay != 0.0 ? g[f] + wd * p[f] : g[f];
      const T mf = m[f] + w1 * (gf - m[f]);  // torch's lerp for weights < 0.5
      const T vf = v[f] * b2 + w2 * gf * gf;
      m[f] = mf;
      v[f] = vf;
      p[f] = p[f] + neg_step * (mf / (sqrt(vf) / bc2s + eps));
    }
  }
};

template <typename T>
struct SparseSgdStep {
  SparseAdamArgs<T> a;
  PNERF_HD void operator()(int64_t i) const {
    const int64_t r = a.rows[i];
    const T neg_lr = (T)(-a.lr);
    const int F = a.n_features;
    T* p = a.params + r * F;
    const T* g = a.grad + i * F;
    for (int f = 0; f < F; ++f) p[f] = p[f] + neg_lr * g[f];
  }
};

namespace cpu {
template <typename T> void sparse_adam_step(const SparseAdamArgs<T>& a, bool adam);
}  // namespace cpu
namespace cuda {
template <typename T> void sparse_adam_step(const SparseAdamArgs<T>& a, bool adam, void* stream);
}  // namespace cuda

}  // namespace pnerf
