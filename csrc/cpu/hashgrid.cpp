// CPU launchers for the hash-grid encoding. The forward works through tiles of points,
// level by level inside a tile; the backward's elements are (level, point) pairs in
// level-major order, so a thread works through whole levels and one level's table
// stays hot in cache. The table backward is split by level: each level owns its rows,
// so threads never write the same row and no atomics are needed.
#include "pnerf/hashgrid.h"
#include "pnerf/launch_cpu.h"

namespace pnerf {
namespace cpu {

template <typename T>
void hashgrid_forward(const HashGridArgs<T>& a) {
  // Tiles of kTile points, all levels of a tile before the next: a tile's output
  // (kTile * L * F values, 32 KB for 16 levels of 2 float features) stays in cache
  // while each level's pass over it reads that level's rows.
  constexpr int64_t kTile = 128;
  const HashGridForward<T> f{a};
  const int64_t n = a.n;
  if (n <= 0) return;
  at::parallel_for(0, (n + kTile - 1) / kTile, 8, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t p0 = t * kTile, p1 = p0 + kTile < n ? p0 + kTile : n;
      for (int l = 0; l < a.n_levels; ++l)
        for (int64_t p = p0; p < p1; ++p) f.run(l, p);
    }
  });
}

template <typename T>
void hashgrid_backward(const HashGridArgs<T>& a, bool want_params, bool want_x) {
  if (want_params) {
    const HashGridBackwardParams<T, false> f{a};
    const int64_t n = a.n;
    at::parallel_for(0, a.n_levels, 1, [&](int64_t l0, int64_t l1) {
      for (int64_t l = l0; l < l1; ++l)
        for (int64_t p = 0; p < n; ++p) f.run((int)l, p);
    });
  }
  if (want_x) parallel_for(a.n, HashGridBackwardInput<T>{a}, 1024);
}

template <typename T>
void hashgrid_rows(const HashGridRows<T>& r, bool emit) {
  const int64_t words = r.a.level_word[r.a.n_levels];
  if (emit) {
    parallel_for(words, HashGridRowsEmit<T>{r}, 256);
  } else {
    parallel_for(words, HashGridRowsCount<T>{r}, 4096);
  }
}

template void hashgrid_rows<float>(const HashGridRows<float>&, bool);
template void hashgrid_rows<double>(const HashGridRows<double>&, bool);
template void hashgrid_forward<float>(const HashGridArgs<float>&);
template void hashgrid_forward<double>(const HashGridArgs<double>&);
template void hashgrid_backward<float>(const HashGridArgs<float>&, bool, bool);
template void hashgrid_backward<double>(const HashGridArgs<double>&, bool, bool);

}  // namespace cpu
}  // namespace pnerf
