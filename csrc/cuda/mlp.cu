// CUDA launchers for the fused MLP: one thread per kMlpCudaRows rows, activations in
// per-thread local memory, weights read through the L1/read-only cache, weight
// gradients reduced with atomics. A correctness-first port of the shared block code;
// on GPUs with tiny-cuda-nn the "tcnn" backend is the fast path.
#include "pnerf/launch_cuda.cuh"
#include "pnerf/mlp.h"

namespace pnerf {
namespace cuda {

template <typename T>
void mlp_forward(const MlpArgs<T>& a, void* stream) {
  const int64_t blocks = (a.n_rows + a.block_rows - 1) / a.block_rows;
  parallel_for(blocks, MlpForwardElem<T>{{a}}, static_cast<cudaStream_t>(stream), 128);
}

template <typename T>
void mlp_backward(const MlpArgs<T>& a, int /*n_slots*/, void* stream) {
  const int64_t blocks = (a.n_rows + a.block_rows - 1) / a.block_rows;
  parallel_for(blocks, MlpBackwardElem<T>{{a}}, static_cast<cudaStream_t>(stream), 128);
}

template void mlp_forward<float>(const MlpArgs<float>&, void*);
template void mlp_forward<double>(const MlpArgs<double>&, void*);
template void mlp_backward<float>(const MlpArgs<float>&, int, void*);
template void mlp_backward<double>(const MlpArgs<double>&, int, void*);

}  // namespace cuda
}  // namespace pnerf
