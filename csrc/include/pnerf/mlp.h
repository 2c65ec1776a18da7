// Fully fused MLP: every layer of a small MLP for a block of rows in one pass, the
// activations kept in a per-task scratch buffer (CPU: L1/L2; GPU: per-thread local
// memory sized by the layer widths) and never written out between layers. The math is written once here.
//
// Layers l = 0..L-1: z_l = a_l W_l^T + b_l, a_{l+1} = relu(z_l) for hidden layers, and
// y = act(z_{L-1}) with act in {none, relu, sigmoid}. Widths are padded to multiples of
// kMlpPad with zero weights (the padding stays exactly zero through every layer).
//
// Packed parameters (built by pnerf_fast/ops/mlp.py:pack_params):
//   pf ("forward"):  per layer, Wt_l [dims[l]][dims[l+1]] (W transposed) then b_l [dims[l+1]]
//   pb ("backward"): per layer, W_l [dims[l+1]][dims[l]]
// The weight gradient comes back in pf's layout, one slot per CPU worker (partial sums
// merged by the caller); on the GPU each thread block sums its rows' gradient in shared
// memory and adds it to one slot with one atomic per parameter (csrc/cuda/mlp.cu).
//
// Backward recomputes the block's forward (only x is kept between passes), then walks
// back: gWt_l += a_l^T dz_l, gb_l += sum_rows dz_l, da_l = dz_l W_l, dz_{l-1} = da_l * [a_l > 0].
#pragma once
#include "pnerf/common.h"

#if defined(__CUDACC__)
#define PNERF_UNROLL _Pragma("unroll")
#else
#define PNERF_UNROLL _Pragma("GCC unroll 16")
#endif

namespace pnerf {

constexpr int kMlpMaxLayers = 8;   // linear layers
constexpr int kMlpMaxWidth = 128;  // padded width of any layer's input or output
constexpr int kMlpPad = 16;        // widths are padded to a multiple of this

enum MlpOutAct : int32_t { kMlpActNone = 0, kMlpActRelu = 1, kMlpActSigmoid = 2 };

template <typename T>
struct MlpArgs {
  int64_t n_rows;
  int32_t n_layers;
  int32_t in_dim;   // unpadded columns of x
  int32_t out_dim;  // unpadded columns of y
  int32_t out_act;  // MlpOutAct
  int32_t block_rows;
  int32_t dims[kMlpMaxLayers + 1];  // padded widths: dims[0] = pad(in_dim), dims[l+1] = pad(out of layer l)
  int64_t fwd_off[kMlpMaxLayers];   // offset of Wt_l in pf (b_l follows it)
  int64_t bwd_off[kMlpMaxLayers];   // offset of W_l in pb
  int64_t n_params;                 // size of pf (= one gradient slot)
  const T* x;        // [n_rows, in_dim]
  const T* pf;       // [n_params]
  const T* pb;       // packed W_l
  T* y;              // [n_rows, out_dim]
  const T* gy;       // [n_rows, out_dim]
  T* gx;             // [n_rows, in_dim] or null
  T* gparams;        // [slots, n_params]
};

// Scratch needed by one block of `rows` rows: all activations plus two gradient buffers.
template <typename T>
PNERF_HD int64_t mlp_scratch_size(const MlpArgs<T>& a, int64_t rows) {
  int64_t s = 0, mx = 0;
  for (int l = 0; l <= a.n_layers; ++l) {
    s += a.dims[l];
    mx = a.dims[l] > mx ? a.dims[l] : mx;
  }
  return rows * (s + 2 * mx);
}

// C[r][n] (=|+=) sum_k A(r,k) B[k][n] (+ bias[n]) for r < R, n < N (R % TR == 0,
// N % TN == 0), with A(r,k) = A[r*sar + k*sak]. kMode 0: store (with bias when not null),
// 1: accumulate, 2: accumulate with atomic_add.
#if !defined(__CUDACC__) && defined(__GNUC__)
// Host float path: the same tile with GCC vector types, which lower to one zmm (AVX-512),
// two ymm (AVX2) or four xmm (SSE) per 16 floats, in whatever ISA the caller targets.
typedef float mlp_v16f __attribute__((vector_size(64), aligned(4)));

template <int TR, int kMode>
inline void mlp_gemm_f32x16(const float* A, int64_t sar, int64_t sak, const float* B, int64_t ldb,
                            const float* bias, float* C, int64_t ldc, int R, int K, int N) {
  for (int r0 = 0; r0 < R; r0 += TR) {
    for (int n0 = 0; n0 < N; n0 += 16) {
      mlp_v16f acc[TR];
      const mlp_v16f init = (kMode == 0 && bias) ? *(const mlp_v16f*)(bias + n0) : mlp_v16f{};
      PNERF_UNROLL for (int i = 0; i < TR; ++i) acc[i] = init;
      const float* a0 = A + (int64_t)r0 * sar;
      for (int k = 0; k < K; ++k) {
        const mlp_v16f bv = *(const mlp_v16f*)(B + (int64_t)k * ldb + n0);
        PNERF_UNROLL for (int i = 0; i < TR; ++i) acc[i] += a0[i * sar + (int64_t)k * sak] * bv;
      }
      PNERF_UNROLL for (int i = 0; i < TR; ++i) {
        mlp_v16f* c = (mlp_v16f*)(C + (int64_t)(r0 + i) * ldc + n0);
        if constexpr (kMode == 0) {
          *c = acc[i];
        } else {
          *c += acc[i];
        }
      }
    }
  }
}
#endif

template <int TR, int TN, int kMode, typename T>
PNERF_HD void mlp_gemm(const T* A, int64_t sar, int64_t sak, const T* B, int64_t ldb, const T* bias, T* C,
                       int64_t ldc, int R, int K, int N) {
#if !defined(__CUDACC__) && defined(__GNUC__)
  if constexpr (sizeof(T) == 4 && TN == 16 && kMode != 2) {
    mlp_gemm_f32x16<TR, kMode>(A, sar, sak, B, ldb, bias, C, ldc, R, K, N);
    return;
  }
#endif
  for (int r0 = 0; r0 < R; r0 += TR) {
    for (int n0 = 0; n0 < N; n0 += TN) {
      T acc[TR][TN];
      PNERF_UNROLL for (int i = 0; i < TR; ++i) {
        PNERF_UNROLL for (int j = 0; j < TN; ++j) acc[i][j] = (kMode == 0 && bias) ? bias[n0 + j] : T(0);
      }
      const T* a0 = A + (int64_t)r0 * sar;
      for (int k = 0; k < K; ++k) {
        const T* b = B + (int64_t)k * ldb + n0;
        T bv[TN];
        PNERF_UNROLL for (int j = 0; j < TN; ++j) bv[j] = b[j];
        PNERF_UNROLL for (int i = 0; i < TR; ++i) {
          const T av = a0[i * sar + (int64_t)k * sak];
          PNERF_UNROLL for (int j = 0; j < TN; ++j) acc[i][j] += av * bv[j];
        }
      }
      PNERF_UNROLL for (int i = 0; i < TR; ++i) {
        T* c = C + (int64_t)(r0 + i) * ldc + n0;
        PNERF_UNROLL for (int j = 0; j < TN; ++j) {
          if constexpr (kMode == 0) {
            c[j] = acc[i][j];
          } else if constexpr (kMode == 1) {
            c[j] += acc[i][j];
          } else {
            atomic_add(c + j, acc[i][j]);
          }
        }
      }
    }
  }
}

template <typename T>
PNERF_HD T mlp_sigmoid(T z) {
  return T(1) / (T(1) + exp(-z));
}

// The block kernels. TR x TN is the register tile of mlp_gemm; block_rows % TR == 0.
template <typename T, int TR, int TN, bool kAtomic>
struct MlpBlock {
  MlpArgs<T> a;

  // Rows [r0, r0 + rows) of the batch; `act` receives every layer's activations.
  PNERF_HD int forward_block(int64_t blk, T* scratch, T** act) const {
    const int B = a.block_rows;
    const int64_t r0 = blk * B;
    const int64_t left = a.n_rows - r0;
    const int valid = (int)(left < B ? left : B);
    const int R = (valid + TR - 1) / TR * TR;  // rows computed (tail padded with zeros)
    T* p = scratch;
    for (int l = 0; l <= a.n_layers; ++l) {
      act[l] = p;
      p += (int64_t)B * a.dims[l];
    }
    // load x (zero padding columns and tail rows)
    const int K0 = a.dims[0];
    for (int r = 0; r < R; ++r) {
      T* dst = act[0] + (int64_t)r * K0;
      const T* src = a.x + (r0 + r) * a.in_dim;
      const bool ok = r < valid;
      for (int k = 0; k < K0; ++k) dst[k] = (ok && k < a.in_dim) ? src[k] : T(0);
    }
    for (int l = 0; l < a.n_layers; ++l) {
      const int K = a.dims[l], N = a.dims[l + 1];
      const T* Wt = a.pf + a.fwd_off[l];
      const T* bias = Wt + (int64_t)K * N;
      mlp_gemm<TR, TN, 0>(act[l], K, 1, Wt, N, bias, act[l + 1], N, R, K, N);
      T* z = act[l + 1];
      const int64_t cnt = (int64_t)R * N;
      if (l + 1 < a.n_layers || a.out_act == kMlpActRelu) {
        for (int64_t i = 0; i < cnt; ++i) z[i] = z[i] > T(0) ? z[i] : T(0);
      } else if (a.out_act == kMlpActSigmoid) {
        for (int64_t i = 0; i < cnt; ++i) z[i] = mlp_sigmoid(z[i]);
      }
    }
    return valid;
  }

  PNERF_HD void forward(int64_t blk, T* scratch) const {
    T* act[kMlpMaxLayers + 1] = {};
    const int valid = forward_block(blk, scratch, act);
    const int64_t r0 = blk * a.block_rows;
    const int NL = a.dims[a.n_layers];
    const T* out = act[a.n_layers];
    for (int r = 0; r < valid; ++r)
      for (int j = 0; j < a.out_dim; ++j) a.y[(r0 + r) * a.out_dim + j] = out[(int64_t)r * NL + j];
  }

  PNERF_HD void backward(int64_t blk, T* gslot, T* scratch) const {
    T* act[kMlpMaxLayers + 1] = {};
    const int valid = forward_block(blk, scratch, act);
    const int B = a.block_rows;
    const int R = (valid + TR - 1) / TR * TR;
    const int64_t r0 = blk * B;
    int mx = 0;
    for (int l = 0; l <= a.n_layers; ++l) mx = a.dims[l] > mx ? a.dims[l] : mx;
    T* dz = act[a.n_layers] + (int64_t)B * a.dims[a.n_layers];
    T* da = dz + (int64_t)B * mx;
    // dz of the output layer
    const int NL = a.dims[a.n_layers];
    const T* out = act[a.n_layers];
    for (int r = 0; r < R; ++r) {
      for (int j = 0; j < NL; ++j) {
        const int64_t i = (int64_t)r * NL + j;
        T g = (r < valid && j < a.out_dim) ? a.gy[(r0 + r) * a.out_dim + j] : T(0);
        if (a.out_act == kMlpActRelu) {
          g = out[i] > T(0) ? g : T(0);
        } else if (a.out_act == kMlpActSigmoid) {
          g = g * out[i] * (T(1) - out[i]);
        }
        dz[i] = g;
      }
    }
    for (int l = a.n_layers - 1; l >= 0; --l) {
      const int K = a.dims[l], N = a.dims[l + 1];
      // weight and bias gradients
      T* gWt = gslot + a.fwd_off[l];
      mlp_gemm<TR, TN, kAtomic ? 2 : 1>(act[l], 1, K, dz, N, (const T*)nullptr, gWt, N, K, R, N);
      T* gb = gWt + (int64_t)K * N;
      T s[kMlpMaxWidth];
      for (int j = 0; j < N; ++j) s[j] = T(0);
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < N; ++j) s[j] += dz[(int64_t)r * N + j];
      for (int j = 0; j < N; ++j) {
        if constexpr (kAtomic) {
          atomic_add(gb + j, s[j]);
        } else {
          gb[j] += s[j];
        }
      }
      if (l == 0 && a.gx == nullptr) break;
      // da_l = dz_l W_l  ([R][N] x [N][K])
      const T* W = a.pb + a.bwd_off[l];
      mlp_gemm<TR, TN, 0>(dz, N, 1, W, K, (const T*)nullptr, da, K, R, N, K);
      if (l == 0) {
        for (int r = 0; r < valid; ++r)
          for (int k = 0; k < a.in_dim; ++k) a.gx[(r0 + r) * a.in_dim + k] = da[(int64_t)r * K + k];
        break;
      }
      // through the hidden ReLU: a_l = relu(z_{l-1})
      const T* al = act[l];
      const int64_t cnt = (int64_t)R * K;
      for (int64_t i = 0; i < cnt; ++i) da[i] = al[i] > T(0) ? da[i] : T(0);
      T* t = dz;
      dz = da;
      da = t;
    }
  }
};

// GPU: one block of kMlpCudaRows rows per thread (csrc/cuda/mlp.cu). Each thread's
// activations live in a local array of the smallest capacity in kMlpCudaScratchCaps that
// holds mlp_scratch_size(a, kMlpCudaRows), so the scratch follows the layer widths
// (4 KB a thread for 32-64-16, 8 KB for 32-64-64-16, 22 KB only for 8 layers of 128);
// the driver reserves that local memory for every resident thread.
constexpr int kMlpCudaRows = 4;
constexpr int kMlpCudaScratchMax = kMlpCudaRows * ((kMlpMaxLayers + 1) * kMlpMaxWidth + 2 * kMlpMaxWidth);
constexpr int kMlpCudaScratchCaps[] = {1024, 2048, kMlpCudaScratchMax};

namespace cpu {
int mlp_block_rows();
int mlp_num_slots(int64_t n_rows);
template <typename T> void mlp_forward(const MlpArgs<T>& a);
template <typename T> void mlp_backward(const MlpArgs<T>& a, int n_slots);
}  // namespace cpu
namespace cuda {
// Gradient slots the backward fills (gparams [slots, n_params], summed by the caller): 1
// when a block's gradient fits in shared memory on the current device (each block
// reduces there, then adds it with one atomic per parameter), more otherwise (blocks
// spread their global atomics over the slots).
template <typename T> int mlp_num_slots(const MlpArgs<T>& a);
template <typename T> void mlp_forward(const MlpArgs<T>& a, void* stream);
template <typename T> void mlp_backward(const MlpArgs<T>& a, int n_slots, void* stream);
}  // namespace cuda

}  // namespace pnerf
