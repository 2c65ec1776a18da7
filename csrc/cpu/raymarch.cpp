// CPU launchers for ray/box intersection and fused canonical-warp marching.
#include "pnerf/launch_cpu.h"
#include "pnerf/raymarch.h"

namespace pnerf {
namespace cpu {

template <typename T>
void march_count(const MarchArgs<T>& a) {
  parallel_for(a.n_rays, MarchRay<T, false>{a}, 64);
}
template <typename T>
void march_fill(const MarchArgs<T>& a) {
  parallel_for(a.n_rays, MarchRay<T, true>{a}, 64);
}
template <typename T>
void ray_aabb_intersect(const RayAabbArgs<T>& a) {
  parallel_for(a.n_rays, RayAabbFunctor<T>{a}, 1024);
}

#define PNERF_INSTANTIATE(T)                          \
  template void march_count<T>(const MarchArgs<T>&);  \
  template void march_fill<T>(const MarchArgs<T>&);   \
  template void ray_aabb_intersect<T>(const RayAabbArgs<T>&);
PNERF_INSTANTIATE(float)
PNERF_INSTANTIATE(double)
#undef PNERF_INSTANTIATE

}  // namespace cpu
}  // namespace pnerf
