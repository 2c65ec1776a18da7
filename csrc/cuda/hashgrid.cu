// CUDA launchers for the hash-grid encoding: grid-stride kernels over (level, point)
// pairs; the table backward adds with atomics.
#include "pnerf/hashgrid.h"
#include "pnerf/launch_cuda.cuh"

namespace pnerf {
namespace cuda {

template <typename T>
void hashgrid_forward(const HashGridArgs<T>& a, void* stream) {
  parallel_for(a.n * a.n_levels, HashGridForward<T>{a}, static_cast<cudaStream_t>(stream));
}

template <typename T>
void hashgrid_backward(const HashGridArgs<T>& a, bool want_params, bool want_x, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (want_params) parallel_for(a.n * a.n_levels, HashGridBackwardParams<T, true>{a}, s);
  if (want_x) parallel_for(a.n, HashGridBackwardInput<T>{a}, s);
}

template <typename T>
void hashgrid_rows(const HashGridRows<T>& r, bool emit, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t words = r.a.level_word[r.a.n_levels];
  if (emit) {
    parallel_for(words, HashGridRowsEmit<T>{r}, s);
  } else {
    parallel_for(words, HashGridRowsCount<T>{r}, s);
  }
}

template void hashgrid_rows<float>(const HashGridRows<float>&, bool, void*);
template void hashgrid_rows<double>(const HashGridRows<double>&, bool, void*);
template void hashgrid_forward<float>(const HashGridArgs<float>&, void*);
template void hashgrid_forward<double>(const HashGridArgs<double>&, void*);
template void hashgrid_backward<float>(const HashGridArgs<float>&, bool, bool, void*);
template void hashgrid_backward<double>(const HashGridArgs<double>&, bool, bool, void*);

}  // namespace cuda
}  // namespace pnerf
