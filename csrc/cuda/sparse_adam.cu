// CUDA launcher for the row-sparse optimizer step: one thread per touched row.
#include "pnerf/sparse_adam.h"
#include "pnerf/launch_cuda.cuh"

namespace pnerf {
namespace cuda {

template <typename T>
void sparse_adam_step(const SparseAdamArgs<T>& a, bool adam, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (adam) {
    parallel_for(a.k, SparseAdamStep<T>{a}, s);
  } else {
    parallel_for(a.k, SparseSgdStep<T>{a}, s);
  }
}

template void sparse_adam_step<float>(const SparseAdamArgs<float>&, bool, void*);
template void sparse_adam_step<double>(const SparseAdamArgs<double>&, bool, void*);

}  // namespace cuda
}  // namespace pnerf
