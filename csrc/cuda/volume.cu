// CUDA launcher for the trilinear feature-volume read.
#include "pnerf/volume.h"
#include "pnerf/launch_cuda.cuh"

namespace pnerf {
namespace cuda {

template <typename T>
void volume_read(const VolumeReadArgs<T>& a, void* stream) {
  if (a.channels == 4) parallel_for(a.n, VolumeRead<T, 4>{a}, static_cast<cudaStream_t>(stream));
  else parallel_for(a.n, VolumeRead<T>{a}, static_cast<cudaStream_t>(stream));
}

template void volume_read<float>(const VolumeReadArgs<float>&, void*);
template void volume_read<double>(const VolumeReadArgs<double>&, void*);

}  // namespace cuda
}  // namespace pnerf
