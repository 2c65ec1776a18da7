// CUDA launcher: a grid-stride kernel over a functor with
// `PNERF_HD void operator()(int64_t i) const`, on the caller's stream. No torch headers.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace pnerf {
namespace cuda {

template <typename F>
__global__ void for_each_kernel(F f, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
    f(i);
  }
}

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("pnerf CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

template <typename F>
inline void parallel_for(int64_t n, const F& f, cudaStream_t stream, int threads = 256) {
  if (n <= 0) return;
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks > 65535 * 4) blocks = 65535 * 4;
  for_each_kernel<F><<<(unsigned)blocks, threads, 0, stream>>>(f, n);
  check(cudaGetLastError(), "kernel launch");
}

}  // namespace cuda
}  // namespace pnerf
