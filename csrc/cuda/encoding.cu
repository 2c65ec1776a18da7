// CUDA launcher for the spherical-harmonics direction encoding.
#include "pnerf/encoding.h"
#include "pnerf/launch_cuda.cuh"

namespace pnerf {
namespace cuda {

template <typename T>
void sh_encode_forward(const SHEncodeArgs<T>& a, void* stream) {
  parallel_for(a.n, SHEncodeForward<T>{a}, static_cast<cudaStream_t>(stream));
}

template void sh_encode_forward<float>(const SHEncodeArgs<float>&, void*);
template void sh_encode_forward<double>(const SHEncodeArgs<double>&, void*);

}  // namespace cuda
}  // namespace pnerf
