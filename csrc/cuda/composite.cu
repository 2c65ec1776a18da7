// CUDA launchers for alpha compositing: grid-stride kernels over rays.
#include "pnerf/composite.h"
#include "pnerf/launch_cuda.cuh"

namespace pnerf {
namespace cuda {

template <typename T>
void composite_forward(const CompositeArgs<T>& a, void* stream) {
  parallel_for(a.n_rays, CompositeForward<T>{a}, static_cast<cudaStream_t>(stream));
}
template <typename T>
void composite_backward(const CompositeArgs<T>& a, void* stream) {
  parallel_for(a.n_rays, CompositeBackward<T>{a}, static_cast<cudaStream_t>(stream));
}

template void composite_forward<float>(const CompositeArgs<float>&, void*);
template void composite_forward<double>(const CompositeArgs<double>&, void*);
template void composite_backward<float>(const CompositeArgs<float>&, void*);
template void composite_backward<double>(const CompositeArgs<double>&, void*);

}  // namespace cuda
}  // namespace pnerf
