// CUDA launchers for the fused MLP: one thread per kMlpCudaRows rows (grid-stride), the
// shared block code of pnerf/mlp.h, activations in per-thread local memory sized by the
// layer widths (a few capacities, see kMlpCudaScratchCaps), weights read through L1.
//
// Backward: when n_params values fit in a block's shared memory, every block sums its
// threads' weight gradients there (shared-memory atomics), then adds the block's sum to
// the output with one global atomic per block and parameter; otherwise (widths past
// what fits) blocks spread their global atomics over several slots that the caller sums.
//
// This is a correctness-first port: backend "auto" uses tcnn or torch (cuBLAS) on GPUs
// (reasons in pnerf_fast/field/backends.py); "fused" on CUDA runs this code.
#include "pnerf/launch_cuda.cuh"
#include "pnerf/mlp.h"

namespace pnerf {
namespace cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kGlobalSlots = 16;  // gradient slots when a block's gradient does not fit in shared memory

template <typename T, int kCap>
__global__ void __launch_bounds__(kThreads) mlp_forward_kernel(MlpArgs<T> a, int64_t n_blocks) {
  const MlpBlock<T, kMlpCudaRows, kMlpPad, true> k{a};
  T scratch[kCap];
  for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < n_blocks; b += (int64_t)blockDim.x * gridDim.x)
    k.forward(b, scratch);
}

template <typename T, int kCap>
__global__ void __launch_bounds__(kThreads) mlp_backward_kernel(MlpArgs<T> a, int64_t n_blocks, int n_slots,
                                                                bool shared) {
  extern __shared__ __align__(16) unsigned char pnerf_mlp_smem[];
  T* g = shared ? reinterpret_cast<T*>(pnerf_mlp_smem) : a.gparams + (int64_t)(blockIdx.x % n_slots) * a.n_params;
  if (shared) {
    for (int64_t i = threadIdx.x; i < a.n_params; i += blockDim.x) g[i] = T(0);
    __syncthreads();
  }
  const MlpBlock<T, kMlpCudaRows, kMlpPad, true> k{a};
  T scratch[kCap];
  for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < n_blocks; b += (int64_t)blockDim.x * gridDim.x)
    k.backward(b, g, scratch);  // atomic_add into g: shared memory, or this block's global slot
  if (shared) {
    __syncthreads();
    for (int64_t i = threadIdx.x; i < a.n_params; i += blockDim.x) {
      const T v = g[i];
      if (v != T(0)) atomicAdd(a.gparams + i, v);  // padding entries stay zero: no atomic
    }
  }
}

int current_device() {
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  return dev;
}

int device_attr(cudaDeviceAttr attr) {
  int v = 0;
  check(cudaDeviceGetAttribute(&v, attr, current_device()), "cudaDeviceGetAttribute");
  return v;
}

template <typename T>
size_t shared_bytes(const MlpArgs<T>& a) {
  return (size_t)a.n_params * sizeof(T);
}

template <typename T>
bool use_shared(const MlpArgs<T>& a) {
  return shared_bytes(a) <= (size_t)device_attr(cudaDevAttrMaxSharedMemoryPerBlockOptin);
}

int scratch_cap_index(int64_t need) {
  constexpr int n = sizeof(kMlpCudaScratchCaps) / sizeof(kMlpCudaScratchCaps[0]);
  for (int i = 0; i < n; ++i)
    if (need <= kMlpCudaScratchCaps[i]) return i;
  throw std::runtime_error("pnerf: fused MLP scratch of " + std::to_string(need) + " elements exceeds " +
                           std::to_string(kMlpCudaScratchMax));
}

// At most as many blocks as can be resident at once (the grid-stride loop covers the
// rest), so a block's shared-memory sum covers many rows before its atomics.
template <typename K>
int64_t grid_for(K kernel, int64_t n_blocks, size_t smem) {
  int per_sm = 0;
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem), "occupancy query");
  const int64_t resident = (int64_t)(per_sm > 0 ? per_sm : 1) * device_attr(cudaDevAttrMultiProcessorCount);
  const int64_t need = (n_blocks + kThreads - 1) / kThreads;
  return need < resident ? need : resident;
}

template <typename T, int kCap>
void forward_cap(const MlpArgs<T>& a, int64_t n_blocks, cudaStream_t stream) {
  auto kernel = mlp_forward_kernel<T, kCap>;
  const int64_t grid = grid_for(kernel, n_blocks, 0);
  kernel<<<(unsigned)grid, kThreads, 0, stream>>>(a, n_blocks);
  check(cudaGetLastError(), "mlp_forward launch");
}

template <typename T, int kCap>
void backward_cap(const MlpArgs<T>& a, int64_t n_blocks, int n_slots, cudaStream_t stream) {
  auto kernel = mlp_backward_kernel<T, kCap>;
  const bool shared = n_slots == 1 && use_shared(a);
  const size_t smem = shared ? shared_bytes(a) : 0;
  if (smem > 48 * 1024)
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), "shared memory opt-in");
  const int64_t grid = grid_for(kernel, n_blocks, smem);
  kernel<<<(unsigned)grid, kThreads, smem, stream>>>(a, n_blocks, n_slots, shared);
  check(cudaGetLastError(), "mlp_backward launch");
}

}  // namespace

template <typename T>
int mlp_num_slots(const MlpArgs<T>& a) {
  return use_shared(a) ? 1 : kGlobalSlots;
}

template <typename T>
void mlp_forward(const MlpArgs<T>& a, void* stream) {
  const int64_t n_blocks = (a.n_rows + a.block_rows - 1) / a.block_rows;
  if (n_blocks <= 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  switch (scratch_cap_index(mlp_scratch_size(a, a.block_rows))) {
    case 0: return forward_cap<T, kMlpCudaScratchCaps[0]>(a, n_blocks, s);
    case 1: return forward_cap<T, kMlpCudaScratchCaps[1]>(a, n_blocks, s);
    default: return forward_cap<T, kMlpCudaScratchCaps[2]>(a, n_blocks, s);
  }
}

template <typename T>
void mlp_backward(const MlpArgs<T>& a, int n_slots, void* stream) {
  const int64_t n_blocks = (a.n_rows + a.block_rows - 1) / a.block_rows;
  if (n_blocks <= 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  switch (scratch_cap_index(mlp_scratch_size(a, a.block_rows))) {
    case 0: return backward_cap<T, kMlpCudaScratchCaps[0]>(a, n_blocks, n_slots, s);
    case 1: return backward_cap<T, kMlpCudaScratchCaps[1]>(a, n_blocks, n_slots, s);
    default: return backward_cap<T, kMlpCudaScratchCaps[2]>(a, n_blocks, n_slots, s);
  }
}

template int mlp_num_slots<float>(const MlpArgs<float>&);
template int mlp_num_slots<double>(const MlpArgs<double>&);
template void mlp_forward<float>(const MlpArgs<float>&, void*);
template void mlp_forward<double>(const MlpArgs<double>&, void*);
template void mlp_backward<float>(const MlpArgs<float>&, int, void*);
template void mlp_backward<double>(const MlpArgs<double>&, int, void*);

}  // namespace cuda
}  // namespace pnerf
