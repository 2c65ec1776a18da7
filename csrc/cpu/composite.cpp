// CPU launchers for alpha compositing: at::parallel_for over rays.
#include "pnerf/composite.h"
#include "pnerf/launch_cpu.h"

namespace pnerf {
namespace cpu {

template <typename T>
void composite_forward(const CompositeArgs<T>& a) {
  parallel_for(a.n_rays, CompositeForward<T>{a}, 256);
}
template <typename T>
void composite_backward(const CompositeArgs<T>& a) {
  parallel_for(a.n_rays, CompositeBackward<T>{a}, 256);
}

template void composite_forward<float>(const CompositeArgs<float>&);
template void composite_forward<double>(const CompositeArgs<double>&);
template void composite_backward<float>(const CompositeArgs<float>&);
template void composite_backward<double>(const CompositeArgs<double>&);

}  // namespace cpu
}  // namespace pnerf
