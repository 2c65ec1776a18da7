// CPU launcher: at::parallel_for over a functor with `void operator()(int64_t i) const`.
#pragma once
#include <ATen/Parallel.h>

#include <cstdint>

namespace pnerf {
namespace cpu {

template <typename F>
inline void parallel_for(int64_t n, const F& f, int64_t grain = 64) {
  if (n <= 0) return;
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) f(i);
  });
}

}  // namespace cpu
}  // namespace pnerf
