// Multi-resolution hash-grid encoding (instant-ngp style): the per-element math, once,
// for CPU and CUDA.
//
// A point x (canonical coordinates) is mapped to u = clamp((x - aabb_min) / extent, 0, 1)
// (points outside the box take the features of the nearest point on its surface and get
// no position gradient along the clamped axes). Level l has resolution R_l: the grid has
// (R_l + 1)^3 vertices, p = u * R_l, cell i0 = min(floor(p), R_l - 1), w = p - i0.
// Vertex (cx, cy, cz) is stored at row  offset_l + index, with
//   dense level (R_l + 1)^3 <= table size:  index = cx + (R_l+1) * (cy + (R_l+1) * cz)
//   hashed level:                           index = (cx ^ cy*2654435761 ^ cz*805459861) mod 2^T
// (uint32 arithmetic; the table size is a power of two). The level's F features are the
// trilinear blend of its 8 corner rows. The forward writes the op's output layout
// directly, point-major out[p, l*F + f] (a level-major [L, n, F] and a transpose after
// it cost a strided copy as large as the output: a third of a no-grad render); the
// backward takes its gradient level-major, grad_out[l, p, f].
//
// One element = one (level, point) pair: level-major i = l * n + p for the backward
// (the CPU launcher hands whole levels to threads, so the table backward needs no
// atomics there: each level owns its rows; on the GPU the same functor adds with
// atomics), point-major i = p * L + l for the forward on the GPU (neighbouring threads
// write neighbouring features). The scalar CPU forward stays level-major (run(l, p)): one
// level's pass over all points keeps that level's rows hot, which matters more there
// than the strided writes. The CPU's AVX-512 path for float tables with F = 2
// (csrc/cpu/hashgrid_avx512.cpp) computes the same per-lane math, bit for bit, 16 points
// at a time, in tiles of points through all levels.
//
// Row-sparse table gradient (for the fused optimizer step, pnerf/sparse_adam.h): the
// backward adds into a persistent accumulator that is all zero between steps and sets
// one bit per touched row in a bitmap (level l's bits start on word level_word[l], so
// on the CPU each level also owns its bitmap words). HashGridRowsCount/Emit then turn
// the bitmap into the sorted list of touched rows and their gradients, and zero exactly
// those accumulator rows and bitmap words again: nothing table-sized is cleared.
#pragma once
#include "pnerf/common.h"

namespace pnerf {

// Row bitmaps (which table rows a backward pass touched): set bit `i` of `words`. The
// word is read first, so a bit that is already set (most corners of a batch) costs one
// load and no read-modify-write; kAtomic for writers that may share a word.
PNERF_HD int popcount64(uint64_t w) {
#if defined(__CUDA_ARCH__)
  return __popcll(w);
#else
  return __builtin_popcountll(w);
#endif
}

PNERF_HD int ctz64(uint64_t w) {  // w != 0
#if defined(__CUDA_ARCH__)
  return __ffsll((long long)w) - 1;
#else
  return __builtin_ctzll(w);
#endif
}

template <bool kAtomic>
PNERF_HD void bitmap_set(uint64_t* words, int64_t i) {
  uint64_t* w = words + (i >> 6);
  const uint64_t m = uint64_t(1) << (i & 63);
  if (*w & m) return;
  if constexpr (kAtomic) {
#if defined(__CUDA_ARCH__)
    atomicOr(reinterpret_cast<unsigned long long*>(w), (unsigned long long)m);
#else
    __atomic_fetch_or(w, m, __ATOMIC_RELAXED);
#endif
  } else {
    *w |= m;
  }
}

constexpr int kHashMaxLevels = 32;
constexpr int kHashMaxFeatures = 8;

PNERF_HD uint32_t hash_corner(uint32_t cx, uint32_t cy, uint32_t cz) {
  return cx ^ (cy * 2654435761u) ^ (cz * 805459861u);
}

template <typename T>
struct HashGridArgs {
  int64_t n;           // points
  int32_t n_levels;    // L
  int32_t n_features;  // F
  int64_t level_offset[kHashMaxLevels];  // first row of level l in params
  int32_t level_res[kHashMaxLevels];     // R_l
  int32_t level_dense[kHashMaxLevels];   // 1: dense indexing, 0: hashed
  uint32_t hash_mask;                    // 2^T - 1
  T aabb_min[3];
  T inv_extent[3];
  const T* x;           // [n, 3]
  const T* params;      // [rows, F]
  T* out;               // [n, L*F] (point-major)
  const T* grad_out;    // [L, n, F]
  T* grad_params;       // [rows, F]
  T* grad_x;            // [n, 3]
  uint64_t* touched;    // [level_word[L]] row bitmap, or nullptr (dense gradient)
  int64_t level_word[kHashMaxLevels + 1];  // first bitmap word of level l; [L] = words in all
};

// The 8 corners of point p at level l: rows (absolute, in params) and trilinear weights.
// Also returns the cell fractions w and whether each axis is inside the box (for d/dx).
template <typename T>
PNERF_HD void hash_corners(const HashGridArgs<T>& a, int l, int64_t p, int64_t rows[8], T wts[8], T w[3],
                           bool inside[3]) {
  const int32_t R = a.level_res[l];
  const T* xp = a.x + 3 * p;
  int32_t i0[3];
  for (int d = 0; d < 3; ++d) {
    T u = (xp[d] - a.aabb_min[d]) * a.inv_extent[d];
    inside[d] = (u >= T(0)) && (u <= T(1));
    // Clamp to [0, 1] with NaN (and -0) going to +0: written as the comparisons that the
    // AVX-512 path's max/min perform, so both give the same bits for every input, and a
    // NaN coordinate reads cell 0 instead of casting NaN to an index (undefined; INT_MIN).
    u = u > T(0) ? u : T(0);
    u = u < T(1) ? u : T(1);
    const T pos = u * T(R);
    // pos >= 0 after the clamp, so truncation is floor; on baseline x86-64 host code
    // floor() is a library call, three per (level, point), a measurable share of the pass.
    int32_t c = (int32_t)pos;
    c = c > R - 1 ? R - 1 : c;
    i0[d] = c;
    w[d] = pos - T(c);
  }
  const bool dense = a.level_dense[l] != 0;
  const int64_t stride = (int64_t)R + 1;
  for (int c = 0; c < 8; ++c) {
    const int bx = c & 1, by = (c >> 1) & 1, bz = (c >> 2) & 1;
    const uint32_t cx = (uint32_t)(i0[0] + bx), cy = (uint32_t)(i0[1] + by), cz = (uint32_t)(i0[2] + bz);
    int64_t idx;
    if (dense) {
      idx = (int64_t)cx + stride * ((int64_t)cy + stride * (int64_t)cz);
    } else {
      idx = (int64_t)(hash_corner(cx, cy, cz) & a.hash_mask);
    }
    rows[c] = a.level_offset[l] + idx;
    const T wx = bx ? w[0] : T(1) - w[0];
    const T wy = by ? w[1] : T(1) - w[1];
    const T wz = bz ? w[2] : T(1) - w[2];
    wts[c] = wx * wy * wz;
  }
}

// f.run_f<F>(l, p) with the common feature counts as compile-time constants, so that the
// feature loops unroll (1.7x on the CPU forward for F = 2); 0 = the count at run time.
// The same sums in the same order either way, bit for bit.
template <typename Fn>
PNERF_HD void run_features(const Fn& f, int n_features, int l, int64_t p) {
  switch (n_features) {
    case 1: f.template run_f<1>(l, p); return;
    case 2: f.template run_f<2>(l, p); return;
    case 4: f.template run_f<4>(l, p); return;
    case 8: f.template run_f<8>(l, p); return;
    default: f.template run_f<0>(l, p); return;
  }
}

template <typename T>
struct HashGridForward {
  HashGridArgs<T> a;
  PNERF_HD void operator()(int64_t i) const {  // point-major element order
    const int64_t p = i / a.n_levels;
    run((int)(i - p * a.n_levels), p);
  }
  PNERF_HD void run(int l, int64_t p) const { run_features(*this, a.n_features, l, p); }
  template <int kF>  // 0: a.n_features at run time
  PNERF_HD void run_f(int l, int64_t p) const {
    int64_t rows[8];
    T wts[8], w[3];
    bool inside[3];
    hash_corners(a, l, p, rows, wts, w, inside);
    const int F = kF > 0 ? kF : a.n_features;
    T acc[kHashMaxFeatures];
    for (int f = 0; f < F; ++f) acc[f] = T(0);
    for (int c = 0; c < 8; ++c) {
      const T* row = a.params + rows[c] * F;
      for (int f = 0; f < F; ++f) acc[f] += wts[c] * row[f];
    }
    T* o = a.out + (p * a.n_levels + l) * F;
    for (int f = 0; f < F; ++f) o[f] = acc[f];
  }
};

// d out / d params: grad_params[row_c, f] += w_c * grad_out[p, l*F + f].
template <typename T, bool kAtomic>
struct HashGridBackwardParams {
  HashGridArgs<T> a;
  PNERF_HD void operator()(int64_t i) const {
    const int l = (int)(i / a.n);
    run(l, i - (int64_t)l * a.n);
  }
  PNERF_HD void run(int l, int64_t p) const { run_features(*this, a.n_features, l, p); }
  template <int kF>
  PNERF_HD void run_f(int l, int64_t p) const {
    const int F = kF > 0 ? kF : a.n_features;
    const T* g = a.grad_out + ((int64_t)l * a.n + p) * F;
    bool any = false;
    for (int f = 0; f < F; ++f) any = any || (g[f] != T(0));
    if (!any) return;
    int64_t rows[8];
    T wts[8], w[3];
    bool inside[3];
    hash_corners(a, l, p, rows, wts, w, inside);
    if (a.touched != nullptr) {
      const int64_t bit0 = a.level_word[l] * 64 - a.level_offset[l];
      for (int c = 0; c < 8; ++c) bitmap_set<kAtomic>(a.touched, bit0 + rows[c]);
    }
    for (int c = 0; c < 8; ++c) {
      T* row = a.grad_params + rows[c] * F;
      for (int f = 0; f < F; ++f) {
        if constexpr (kAtomic) {
          atomic_add(row + f, wts[c] * g[f]);
        } else {
          row[f] += wts[c] * g[f];
        }
      }
    }
  }
};

// d out / d x, one point per element (all levels inside): no reduction needed.
template <typename T>
struct HashGridBackwardInput {
  HashGridArgs<T> a;
  PNERF_HD void operator()(int64_t p) const {
    const int F = a.n_features;
    T gx[3] = {T(0), T(0), T(0)};
    for (int l = 0; l < a.n_levels; ++l) {
      const T* g = a.grad_out + ((int64_t)l * a.n + p) * F;
      int64_t rows[8];
      T wts[8], w[3];
      bool inside[3];
      hash_corners(a, l, p, rows, wts, w, inside);
      const T scale = T(a.level_res[l]);
      for (int c = 0; c < 8; ++c) {
        const int b[3] = {c & 1, (c >> 1) & 1, (c >> 2) & 1};
        T gv = T(0);  // grad_out . row_c
        const T* row = a.params + rows[c] * F;
        for (int f = 0; f < F; ++f) gv += g[f] * row[f];
        T f1[3];  // the 1-D weight of each axis for this corner
        for (int d = 0; d < 3; ++d) f1[d] = b[d] ? w[d] : T(1) - w[d];
        for (int d = 0; d < 3; ++d) {
          const T dw = b[d] ? T(1) : T(-1);
          const T other = f1[(d + 1) % 3] * f1[(d + 2) % 3];
          gx[d] += gv * dw * other * scale;
        }
      }
    }
    for (int d = 0; d < 3; ++d) {
      // u = clamp((x - min) * inv_extent): the clamp passes no gradient outside the box.
      bool in = true;
      const T u = (a.x[3 * p + d] - a.aabb_min[d]) * a.inv_extent[d];
      in = (u >= T(0)) && (u <= T(1));
      a.grad_x[3 * p + d] = in ? gx[d] * a.inv_extent[d] : T(0);
    }
  }
};

// Bitmap -> rows. Pass 1, one element per bitmap word: count[w] = its set bits. The op
// turns the counts into exclusive offsets (start). Pass 2, one element per word: write
// its rows (ascending) and their accumulated gradients at start[w], zero those
// accumulator rows, zero the word.
template <typename T>
struct HashGridRows {
  HashGridArgs<T> a;     // levels, grad_params = the accumulator [rows, F], touched
  int64_t* count;        // [words]
  const int64_t* start;  // [words]
  int64_t* rows;         // [k] out
  T* values;             // [k, F] out
};

template <typename T>
struct HashGridRowsCount {
  HashGridRows<T> r;
  PNERF_HD void operator()(int64_t w) const { r.count[w] = popcount64(r.a.touched[w]); }
};

template <typename T>
struct HashGridRowsEmit {
  HashGridRows<T> r;
  PNERF_HD void operator()(int64_t w) const {
    uint64_t bits = r.a.touched[w];
    if (bits == 0) return;
    r.a.touched[w] = 0;
    int l = 0;
    while (l + 1 < r.a.n_levels && r.a.level_word[l + 1] <= w) ++l;
    const int F = r.a.n_features;
    const int64_t row0 = r.a.level_offset[l] + (w - r.a.level_word[l]) * 64;
    int64_t j = r.start[w];
    for (; bits != 0; bits &= bits - 1) {  // set bits, lowest first
      const int64_t row = row0 + ctz64(bits);
      r.rows[j] = row;
      T* acc = r.a.grad_params + row * F;
      for (int f = 0; f < F; ++f) {
        r.values[j * F + f] = acc[f];
        acc[f] = T(0);
      }
      ++j;
    }
  }
};

namespace cpu {
// AVX-512 paths (csrc/cpu/hashgrid_avx512.cpp) for float tables with 2 features: the
// same results bit for bit, chosen at run time. Each returns false, having done nothing,
// where it does not apply (another feature count, no AVX-512F, or switched off by
// hashgrid_set_simd(false) or PNERF_SIMD=0), and the scalar functors run instead.
bool hashgrid_simd_supported();
bool hashgrid_simd_enabled();
void hashgrid_set_simd(bool on);
int64_t hashgrid_simd_calls();  // calls that took the AVX-512 path so far (for tests)
bool hashgrid_forward_simd(const HashGridArgs<float>& a);
bool hashgrid_backward_params_simd(const HashGridArgs<float>& a);
template <typename T> void hashgrid_rows(const HashGridRows<T>& r, bool emit);
template <typename T> void hashgrid_forward(const HashGridArgs<T>& a);
template <typename T> void hashgrid_backward(const HashGridArgs<T>& a, bool want_params, bool want_x);
}  // namespace cpu
namespace cuda {
template <typename T> void hashgrid_rows(const HashGridRows<T>& r, bool emit, void* stream);
template <typename T> void hashgrid_forward(const HashGridArgs<T>& a, void* stream);
template <typename T> void hashgrid_backward(const HashGridArgs<T>& a, bool want_params, bool want_x, void* stream);
}  // namespace cuda

}  // namespace pnerf
