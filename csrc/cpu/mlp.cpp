// CPU launchers for the fused MLP. Rows go in blocks of kBlockRows (activations of a
// block stay in L1/L2); each worker ("slot") takes a contiguous range of blocks and
// sums its weight gradient into its own slot, merged by the caller.
//
// The shared block code is compiled three times here: for AVX-512, for AVX2+FMA and
// for the baseline ISA, and the fastest one the CPU supports is picked at run time
// (the extension itself is built without -march flags). float64 uses the baseline.
#include <ATen/Parallel.h>

#include <vector>

#include "pnerf/launch_cpu.h"
#include "pnerf/mlp.h"

namespace pnerf {
namespace cpu {

namespace {

constexpr int kBlockRows = 32;

template <typename T, int TR, int TN>
inline void fwd_range(const MlpArgs<T>& a, int64_t b0, int64_t b1, T* scratch) {
  const MlpBlock<T, TR, TN, false> k{a};
  for (int64_t b = b0; b < b1; ++b) k.forward(b, scratch);
}

template <typename T, int TR, int TN>
inline void bwd_range(const MlpArgs<T>& a, int64_t b0, int64_t b1, T* gslot, T* scratch) {
  const MlpBlock<T, TR, TN, false> k{a};
  for (int64_t b = b0; b < b1; ++b) k.backward(b, gslot, scratch);
}

#define PNERF_MLP_TARGET(suffix, isa, TR, TN)                                                         \
  __attribute__((target(isa), flatten, optimize("fp-contract=fast"))) void fwd_##suffix(                \
      const MlpArgs<float>& a, int64_t b0, int64_t b1, float* s) {                                       \
    fwd_range<float, TR, TN>(a, b0, b1, s);                                                              \
  }                                                                                                      \
  __attribute__((target(isa), flatten, optimize("fp-contract=fast"))) void bwd_##suffix(                \
      const MlpArgs<float>& a, int64_t b0, int64_t b1, float* g, float* s) {                             \
    bwd_range<float, TR, TN>(a, b0, b1, g, s);                                                           \
  }

PNERF_MLP_TARGET(avx512, "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma", 8, 16)
PNERF_MLP_TARGET(avx2, "avx2,fma", 4, 16)

enum class Isa { kAvx512, kAvx2, kBase };

Isa detect_isa() {
  static const Isa isa = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
      return Isa::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
    return Isa::kBase;
  }();
  return isa;
}

void fwd_dispatch(const MlpArgs<float>& a, int64_t b0, int64_t b1, float* s) {
  switch (detect_isa()) {
    case Isa::kAvx512: return fwd_avx512(a, b0, b1, s);
    case Isa::kAvx2: return fwd_avx2(a, b0, b1, s);
    default: return fwd_range<float, 4, 16>(a, b0, b1, s);
  }
}
void bwd_dispatch(const MlpArgs<float>& a, int64_t b0, int64_t b1, float* g, float* s) {
  switch (detect_isa()) {
    case Isa::kAvx512: return bwd_avx512(a, b0, b1, g, s);
    case Isa::kAvx2: return bwd_avx2(a, b0, b1, g, s);
    default: return bwd_range<float, 4, 16>(a, b0, b1, g, s);
  }
}
void fwd_dispatch(const MlpArgs<double>& a, int64_t b0, int64_t b1, double* s) { fwd_range<double, 4, 16>(a, b0, b1, s); }
void bwd_dispatch(const MlpArgs<double>& a, int64_t b0, int64_t b1, double* g, double* s) {
  bwd_range<double, 4, 16>(a, b0, b1, g, s);
}

}  // namespace

int mlp_block_rows() { return kBlockRows; }

int mlp_num_slots(int64_t n_rows) {
  const int64_t blocks = (n_rows + kBlockRows - 1) / kBlockRows;
  const int64_t t = at::get_num_threads();
  return (int)(blocks < t ? (blocks < 1 ? 1 : blocks) : t);
}

template <typename T>
void mlp_forward(const MlpArgs<T>& a) {
  const int64_t blocks = (a.n_rows + a.block_rows - 1) / a.block_rows;
  if (blocks <= 0) return;
  const int64_t scratch = mlp_scratch_size(a, a.block_rows);
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> s((size_t)scratch);
    fwd_dispatch(a, b0, b1, s.data());
  });
}

template <typename T>
void mlp_backward(const MlpArgs<T>& a, int n_slots) {
  const int64_t blocks = (a.n_rows + a.block_rows - 1) / a.block_rows;
  if (blocks <= 0) return;
  const int64_t scratch = mlp_scratch_size(a, a.block_rows);
  at::parallel_for(0, n_slots, 1, [&](int64_t s0, int64_t s1) {
    std::vector<T> s((size_t)scratch);
    for (int64_t slot = s0; slot < s1; ++slot) {
      const int64_t b0 = blocks * slot / n_slots, b1 = blocks * (slot + 1) / n_slots;
      bwd_dispatch(a, b0, b1, a.gparams + slot * a.n_params, s.data());
    }
  });
}

template void mlp_forward<float>(const MlpArgs<float>&);
template void mlp_forward<double>(const MlpArgs<double>&);
template void mlp_backward<float>(const MlpArgs<float>&, int);
template void mlp_backward<double>(const MlpArgs<double>&, int);

}  // namespace cpu
}  // namespace pnerf
