// CPU launcher for the spherical-harmonics direction encoding.
#include "pnerf/encoding.h"
#include "pnerf/launch_cpu.h"

namespace pnerf {
namespace cpu {

template <typename T>
void sh_encode_forward(const SHEncodeArgs<T>& a) {
  parallel_for(a.n, SHEncodeForward<T>{a}, 2048);
}

template void sh_encode_forward<float>(const SHEncodeArgs<float>&);
template void sh_encode_forward<double>(const SHEncodeArgs<double>&);

}  // namespace cpu
}  // namespace pnerf
