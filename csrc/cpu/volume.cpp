// CPU launcher for the trilinear feature-volume read.
#include "pnerf/volume.h"
#include "pnerf/launch_cpu.h"

namespace pnerf {
namespace cpu {

template <typename T>
void volume_read(const VolumeReadArgs<T>& a) {
  if (a.channels == 4) parallel_for(a.n, VolumeRead<T, 4>{a}, 2048);
  else parallel_for(a.n, VolumeRead<T>{a}, 2048);
}

template void volume_read<float>(const VolumeReadArgs<float>&);
template void volume_read<double>(const VolumeReadArgs<double>&);

}  // namespace cpu
}  // namespace pnerf
