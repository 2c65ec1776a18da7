// CPU launcher for the row-sparse optimizer step: rows are unique, so threads never
// write the same row.
#include "pnerf/sparse_adam.h"
#include "pnerf/launch_cpu.h"

namespace pnerf {
namespace cpu {

template <typename T>
void sparse_adam_step(const SparseAdamArgs<T>& a, bool adam) {
  if (adam) {
    parallel_for(a.k, SparseAdamStep<T>{a}, 2048);
  } else {
    parallel_for(a.k, SparseSgdStep<T>{a}, 4096);
  }
}

template void sparse_adam_step<float>(const SparseAdamArgs<float>&, bool);
template void sparse_adam_step<double>(const SparseAdamArgs<double>&, bool);

}  // namespace cpu
}  // namespace pnerf
