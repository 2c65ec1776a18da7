// CUDA launchers for ray/box intersection and fused canonical-warp marching.
#include "pnerf/launch_cuda.cuh"
#include "pnerf/raymarch.h"

namespace pnerf {
namespace cuda {

template <typename T>
void march_count(const MarchArgs<T>& a, void* stream) {
  parallel_for(a.n_rays, MarchRay<T, false>{a}, static_cast<cudaStream_t>(stream), 128);
}
template <typename T>
void march_fill(const MarchArgs<T>& a, void* stream) {
  parallel_for(a.n_rays, MarchRay<T, true>{a}, static_cast<cudaStream_t>(stream), 128);
}
template <typename T>
void ray_aabb_intersect(const RayAabbArgs<T>& a, void* stream) {
  parallel_for(a.n_rays, RayAabbFunctor<T>{a}, static_cast<cudaStream_t>(stream));
}

#define PNERF_INSTANTIATE(T)                                 \
  template void march_count<T>(const MarchArgs<T>&, void*);  \
  template void march_fill<T>(const MarchArgs<T>&, void*);   \
  template void ray_aabb_intersect<T>(const RayAabbArgs<T>&, void*);
PNERF_INSTANTIATE(float)
PNERF_INSTANTIATE(double)
#undef PNERF_INSTANTIATE

}  // namespace cuda
}  // namespace pnerf
