// CPU launchers for occupancy-grid maintenance.
#include "pnerf/launch_cpu.h"
#include "pnerf/occgrid.h"

namespace pnerf {
namespace cpu {

template <typename T> void occ_cell_positions(const OccGridArgs<T>& a) { parallel_for(a.n, OccCellPositions<T>{a}, 4096); }
template <typename T> void occ_ema_update(const OccGridArgs<T>& a) { parallel_for(a.n, OccEmaUpdate<T>{a}, 4096); }
template <typename T> void occ_threshold(const OccGridArgs<T>& a) { parallel_for(a.n, OccThreshold<T>{a}, 4096); }

#define PNERF_INSTANTIATE(T)                                    \
  template void occ_cell_positions<T>(const OccGridArgs<T>&);  \
  template void occ_ema_update<T>(const OccGridArgs<T>&);      \
  template void occ_threshold<T>(const OccGridArgs<T>&);
PNERF_INSTANTIATE(float)
PNERF_INSTANTIATE(double)
#undef PNERF_INSTANTIATE

}  // namespace cpu
}  // namespace pnerf
