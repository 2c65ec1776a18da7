// CUDA launchers for occupancy-grid maintenance.
#include "pnerf/launch_cuda.cuh"
#include "pnerf/occgrid.h"

namespace pnerf {
namespace cuda {

template <typename T>
void occ_cell_positions(const OccGridArgs<T>& a, void* s) { parallel_for(a.n, OccCellPositions<T>{a}, static_cast<cudaStream_t>(s)); }
template <typename T>
void occ_ema_update(const OccGridArgs<T>& a, void* s) { parallel_for(a.n, OccEmaUpdate<T>{a}, static_cast<cudaStream_t>(s)); }
template <typename T>
void occ_threshold(const OccGridArgs<T>& a, void* s) { parallel_for(a.n, OccThreshold<T>{a}, static_cast<cudaStream_t>(s)); }

#define PNERF_INSTANTIATE(T)                                           \
  template void occ_cell_positions<T>(const OccGridArgs<T>&, void*);  \
  template void occ_ema_update<T>(const OccGridArgs<T>&, void*);      \
  template void occ_threshold<T>(const OccGridArgs<T>&, void*);
PNERF_INSTANTIATE(float)
PNERF_INSTANTIATE(double)
#undef PNERF_INSTANTIATE

}  // namespace cuda
}  // namespace pnerf
