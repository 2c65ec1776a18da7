// AVX-512 paths of the CPU hash-grid encoding: float tables with 2 features per row
// (the fast preset's layout), 16 points of one level per step.
//
// The math is hashgrid.h's (hash_corners, HashGridForward, HashGridBackwardParams),
// lane by lane, with the same operations in the same order and no fused multiply-adds
// (-ffp-contract=off in the build flags), so the results are bit for bit those of the
// scalar functors; tests/test_hashgrid_simd.py checks that. The scalar functors stay the
// reference and the only path for doubles, other feature counts, CUDA and CPUs without
// AVX-512F. What changes is how the work is issued: the cell, the 8 corner indices
// (dense or hashed) and the trilinear weights of 16 points come out of a handful of
// vector instructions instead of ~80 scalar ones per (level, point), and each corner's
// two features for 8 points come in one 64-bit gather.
//
// The functions carry a target attribute, so this file compiles with the baseline flags
// and the rest of the extension runs on any x86-64; hashgrid_simd_supported() asks the
// CPU at run time before anything here is called. PNERF_SIMD=0 is read on first use.
#include "pnerf/hashgrid.h"
#include "pnerf/env.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PNERF_HAVE_AVX512_PATH 1
// GCC 12 warns that its own _mm512_undefined_* helpers (inside the gather and extract
// intrinsics) are "used uninitialized"; they are meant to be.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define PNERF_AVX512 __attribute__((target("avx512f")))
#else
#define PNERF_HAVE_AVX512_PATH 0
#endif

namespace pnerf {
namespace cpu {

namespace {
// Whether the path is wanted (PNERF_SIMD, read on first use; hashgrid_set_simd).
std::atomic<bool>& simd_wanted() {
  static std::atomic<bool> flag(env_switch("PNERF_SIMD", true));
  return flag;
}
// Calls that took this path (forward and table backward), for tests that must know it ran.
std::atomic<int64_t> g_simd_calls{0};
}  // namespace

bool hashgrid_simd_supported() {
#if PNERF_HAVE_AVX512_PATH
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
#else
  return false;
#endif
}

void hashgrid_set_simd(bool on) { simd_wanted().store(on, std::memory_order_relaxed); }

int64_t hashgrid_simd_calls() { return g_simd_calls.load(); }

bool hashgrid_simd_enabled() { return simd_wanted().load(std::memory_order_relaxed) && hashgrid_simd_supported(); }

#if PNERF_HAVE_AVX512_PATH

namespace {

constexpr int kLanes = 16;

// Points as three float arrays (structure of arrays), so a level's pass loads 16
// coordinates of an axis at once.
std::vector<float> to_soa(const HashGridArgs<float>& a, int64_t n_pad) {
  std::vector<float> s((size_t)(3 * n_pad), 0.f);
  float* xs = s.data();
  at::parallel_for(0, a.n, 16384, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p)
      for (int d = 0; d < 3; ++d) xs[d * n_pad + p] = a.x[3 * p + d];
  });
  return s;
}

// The 8 corners of 16 points at level l: row indices relative to the level's first row,
// and trilinear weights; hash_corners() lane by lane.
struct Corners16 {
  __m512i idx[8];
  __m512 wts[8];
};

// xs: the 16 points' x coordinates, their y at xs + axis_stride, z at xs + 2 * axis_stride.
PNERF_AVX512 inline void corners16(const HashGridArgs<float>& a, int l, const float* xs, int64_t axis_stride,
                                   Corners16& c) {
  const int32_t R = a.level_res[l];
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.f), Rf = _mm512_set1_ps((float)R);
  const __m512i Rm1 = _mm512_set1_epi32(R - 1);
  __m512i i0[3];
  __m512 w[3];
  for (int d = 0; d < 3; ++d) {
    const __m512 x = _mm512_loadu_ps(xs + d * axis_stride);
    __m512 u = _mm512_mul_ps(_mm512_sub_ps(x, _mm512_set1_ps(a.aabb_min[d])), _mm512_set1_ps(a.inv_extent[d]));
    // clamp_(u, 0, 1); a NaN coordinate becomes 0 here (max returns its second operand)
    // where the scalar cast of NaN is undefined.
    u = _mm512_min_ps(_mm512_max_ps(u, zero), one);
    const __m512 pos = _mm512_mul_ps(u, Rf);
    const __m512i ci = _mm512_min_epi32(_mm512_cvttps_epi32(pos), Rm1);  // pos >= 0: truncation = floor
    i0[d] = ci;
    w[d] = _mm512_sub_ps(pos, _mm512_cvtepi32_ps(ci));
  }
  __m512i ax[2], ay[2], az[2];  // per axis, the index term of the low (0) and high (1) corner
  if (a.level_dense[l]) {
    const int32_t s = R + 1;
    ax[0] = i0[0];
    ay[0] = _mm512_mullo_epi32(i0[1], _mm512_set1_epi32(s));
    az[0] = _mm512_mullo_epi32(i0[2], _mm512_set1_epi32(s * s));
    ax[1] = _mm512_add_epi32(ax[0], _mm512_set1_epi32(1));
    ay[1] = _mm512_add_epi32(ay[0], _mm512_set1_epi32(s));
    az[1] = _mm512_add_epi32(az[0], _mm512_set1_epi32(s * s));
  } else {
    // (cy + 1) * K = cy * K + K in uint32 arithmetic.
    const __m512i k1 = _mm512_set1_epi32((int32_t)2654435761u), k2 = _mm512_set1_epi32((int32_t)805459861u);
    ax[0] = i0[0];
    ay[0] = _mm512_mullo_epi32(i0[1], k1);
    az[0] = _mm512_mullo_epi32(i0[2], k2);
    ax[1] = _mm512_add_epi32(ax[0], _mm512_set1_epi32(1));
    ay[1] = _mm512_add_epi32(ay[0], k1);
    az[1] = _mm512_add_epi32(az[0], k2);
  }
  const __m512 wx[2] = {_mm512_sub_ps(one, w[0]), w[0]};
  const __m512 wy[2] = {_mm512_sub_ps(one, w[1]), w[1]};
  const __m512 wz[2] = {_mm512_sub_ps(one, w[2]), w[2]};
  const __m512i mask = _mm512_set1_epi32((int32_t)a.hash_mask);
  for (int k = 0; k < 8; ++k) {
    const int bx = k & 1, by = (k >> 1) & 1, bz = (k >> 2) & 1;
    if (a.level_dense[l]) {
      c.idx[k] = _mm512_add_epi32(_mm512_add_epi32(ax[bx], ay[by]), az[bz]);
    } else {
      c.idx[k] = _mm512_and_si512(_mm512_xor_si512(_mm512_xor_si512(ax[bx], ay[by]), az[bz]), mask);
    }
    c.wts[k] = _mm512_mul_ps(_mm512_mul_ps(wx[bx], wy[by]), wz[bz]);
  }
}

// Forward of the 16 points p0.. at level l, F = 2: out[p, l*2 + f].
PNERF_AVX512 void forward16(const HashGridArgs<float>& a, int l, const float* xs, int64_t axis_stride, int64_t p0) {
  Corners16 c;
  corners16(a, l, xs, axis_stride, c);
  const long long* table = reinterpret_cast<const long long*>(a.params + a.level_offset[l] * 2);
  // Weight k of lane j goes to lanes 2j and 2j+1 (points 0-7 in lo, 8-15 in hi), next to
  // the two features that one 64-bit gather brings per point.
  const __m512i dup_lo = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  const __m512i dup_hi = _mm512_set_epi32(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8);
  __m512 acc_lo = _mm512_setzero_ps(), acc_hi = _mm512_setzero_ps();
  for (int k = 0; k < 8; ++k) {
    const __m512 g_lo = _mm512_castsi512_ps(_mm512_i32gather_epi64(_mm512_castsi512_si256(c.idx[k]), table, 8));
    const __m512 g_hi = _mm512_castsi512_ps(_mm512_i32gather_epi64(_mm512_extracti64x4_epi64(c.idx[k], 1), table, 8));
    acc_lo = _mm512_add_ps(acc_lo, _mm512_mul_ps(_mm512_permutexvar_ps(dup_lo, c.wts[k]), g_lo));
    acc_hi = _mm512_add_ps(acc_hi, _mm512_mul_ps(_mm512_permutexvar_ps(dup_hi, c.wts[k]), g_hi));
  }
  const int64_t stride = (int64_t)a.n_levels * 2;
  float* o = a.out + (p0 * a.n_levels + l) * 2;
  const __m512 halves[2] = {acc_lo, acc_hi};
  for (int h = 0; h < 2; ++h) {
    for (int q = 0; q < 4; ++q) {  // 128-bit quarter q holds 2 points
      const __m128 v = (q == 0)   ? _mm512_extractf32x4_ps(halves[h], 0)
                       : (q == 1) ? _mm512_extractf32x4_ps(halves[h], 1)
                       : (q == 2) ? _mm512_extractf32x4_ps(halves[h], 2)
                                  : _mm512_extractf32x4_ps(halves[h], 3);
      const int64_t j = h * 8 + q * 2;
      _mm_storel_pi(reinterpret_cast<__m64*>(o + j * stride), v);
      _mm_storeh_pi(reinterpret_cast<__m64*>(o + (j + 1) * stride), v);
    }
  }
}

// Table backward of 16 points at level l, F = 2: the corners come from corners16, the
// scatter-add runs lane by lane in the scalar functor's order (points ascending, then
// corners 0..7), so the sums are the same bit for bit. One thread owns the level.
PNERF_AVX512 void backward_params16(const HashGridArgs<float>& a, int l, const float* soa, int64_t n_pad, int64_t p0,
                                    int lanes) {
  Corners16 c;
  corners16(a, l, soa + p0, n_pad, c);
  alignas(64) int32_t idx[8][kLanes];
  alignas(64) float wts[8][kLanes];
  for (int k = 0; k < 8; ++k) {
    _mm512_store_si512(reinterpret_cast<__m512i*>(idx[k]), c.idx[k]);
    _mm512_store_ps(wts[k], c.wts[k]);
  }
  const int64_t off = a.level_offset[l];
  const float* g0 = a.grad_out + ((int64_t)l * a.n + p0) * 2;
  const int64_t bit0 = a.touched != nullptr ? a.level_word[l] * 64 : 0;
  for (int j = 0; j < lanes; ++j) {
    const float* g = g0 + 2 * j;
    if (!(g[0] != 0.f || g[1] != 0.f)) continue;
    if (a.touched != nullptr)
      for (int k = 0; k < 8; ++k) bitmap_set<false>(a.touched, bit0 + idx[k][j]);
    for (int k = 0; k < 8; ++k) {
      float* row = a.grad_params + (off + idx[k][j]) * 2;
      row[0] += wts[k][j] * g[0];
      row[1] += wts[k][j] * g[1];
    }
  }
}

}  // namespace

bool hashgrid_forward_simd(const HashGridArgs<float>& a) {
  if (a.n_features != 2 || !hashgrid_simd_enabled()) return false;
  const int64_t n = a.n, nb = n / kLanes, L = a.n_levels;
  if (nb == 0) return false;
  // Point tiles of kTileBlocks x 16 points, all levels of a tile before the next tile:
  // the tile's output rows (512 points x L x 2 floats, 64 KiB for 16 levels) stay in
  // cache while every level adds its pair to them. Level-major passes (the scalar
  // launcher's order) stream the whole output once per level instead. On the 751 k
  // samples of a 256^2 frame of the astronaut's portrait, 2 threads: scalar 149 ms,
  // this path level-major 106 ms, in tiles of 8 / 32 / 128 blocks 70 / 69 / 72 ms.
  constexpr int64_t kTileBlocks = 32;
  const int64_t nt = (nb + kTileBlocks - 1) / kTileBlocks;
  at::parallel_for(0, nt, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b0 = t * kTileBlocks, b1 = std::min(nb, b0 + kTileBlocks);
      const int64_t p0 = b0 * kLanes, m = (b1 - b0) * kLanes;
      alignas(64) float soa[3 * kTileBlocks * kLanes];  // the tile's points, axis by axis
      for (int64_t j = 0; j < m; ++j)
        for (int d = 0; d < 3; ++d) soa[d * kTileBlocks * kLanes + j] = a.x[3 * (p0 + j) + d];
      for (int l = 0; l < L; ++l)
        for (int64_t b = b0; b < b1; ++b)
          forward16(a, l, soa + (b - b0) * kLanes, kTileBlocks * kLanes, b * kLanes);
    }
  });
  const HashGridForward<float> f{a};
  for (int l = 0; l < L; ++l)
    for (int64_t p = nb * kLanes; p < n; ++p) f.run(l, p);
  g_simd_calls.fetch_add(1);
  return true;
}

bool hashgrid_backward_params_simd(const HashGridArgs<float>& a) {
  if (a.n_features != 2 || !hashgrid_simd_enabled()) return false;
  const int64_t n = a.n, nb = (n + kLanes - 1) / kLanes;
  if (n == 0) return false;
  const int64_t n_pad = nb * kLanes;
  const std::vector<float> soa = to_soa(a, n_pad);  // padding points sit at 0: computed, never used
  const float* s = soa.data();
  at::parallel_for(0, a.n_levels, 1, [&](int64_t l0, int64_t l1) {
    for (int64_t l = l0; l < l1; ++l)
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t p0 = b * kLanes;
        backward_params16(a, (int)l, s, n_pad, p0, (int)std::min<int64_t>(kLanes, n - p0));
      }
  });
  g_simd_calls.fetch_add(1);
  return true;
}

#else  // no AVX-512 path in this build

bool hashgrid_forward_simd(const HashGridArgs<float>&) { return false; }
bool hashgrid_backward_params_simd(const HashGridArgs<float>&) { return false; }

#endif

}  // namespace cpu
}  // namespace pnerf
