// Torch-facing ray/box intersection and fused canonical-warp marching.
#include "pnerf/raymarch.h"

#include <optional>
#include <vector>

#include "pnerf/torch_utils.h"

namespace pnerf {

template <typename T>
GridSpec<T> make_grid_spec(const std::optional<at::Tensor>& bits, const std::vector<double>& aabb, int64_t levels,
                           int64_t res, const at::Device& device) {
  TORCH_CHECK(aabb.size() == 6, "pnerf: argument 'aabb' must have 6 numbers, got ", aabb.size());
  TORCH_CHECK(levels >= 1 && levels <= 16, "pnerf: argument 'levels' must be in [1, 16], got ", levels);
  TORCH_CHECK(res >= 1 && res <= 1024, "pnerf: argument 'res' must be in [1, 1024], got ", res);
  TORCH_CHECK(levels == 1 || res % 2 == 0, "pnerf: argument 'res' must be even when levels > 1, got ", res);
  GridSpec<T> g{};
  g.levels = (int)levels;
  g.res = (int)res;
  for (int a = 0; a < 3; ++a) {
    TORCH_CHECK(aabb[a + 3] > aabb[a], "pnerf: argument 'aabb' must have max > min on every axis");
    g.center[a] = T(0.5 * (aabb[a] + aabb[a + 3]));
    g.half[a] = T(0.5 * (aabb[a + 3] - aabb[a]));
    g.inv_half[a] = T(1.0 / (0.5 * (aabb[a + 3] - aabb[a])));
  }
  grid_spec_derive(g);
  g.bits = nullptr;
  if (bits.has_value() && bits->defined()) {
    check_tensor(*bits, "grid_bits", at::kByte, device);
    TORCH_CHECK(bits->numel() == levels * res * res * res, "pnerf: argument 'grid_bits' must have levels*res^3 = ",
                levels * res * res * res, " elements, got ", bits->numel(), " (shape ", shape_str(*bits), ")");
    g.bits = bits->data_ptr<uint8_t>();
  }
  return g;
}

namespace {
// Level 0's blocks of 2^sh cells per axis, [(res >> sh)^3] in the cells' order: 0 where every
// cell of the block is empty, 2 where every one is occupied, 1 otherwise (grid.h, GridSpec::coarse).
at::Tensor block_summary(const at::Tensor& grid_bits, int64_t res, int sh) {
  const int64_t cr = res >> sh, b = int64_t(1) << sh;
  if (grid_bits.is_cpu()) {
    // One pass over the bytes (~0.1 ms for 64^3), where torch's reductions take ~0.3 ms.
    auto coarse = at::empty({cr, cr, cr}, grid_bits.options());
    const uint8_t* bits = grid_bits.data_ptr<uint8_t>();
    uint8_t* c = coarse.data_ptr<uint8_t>();
    std::vector<uint8_t> any((size_t)(cr * cr * cr), 0), all((size_t)(cr * cr * cr), 1);
    for (int64_t x = 0; x < res; ++x)
      for (int64_t y = 0; y < res; ++y) {
        const uint8_t* row = bits + (x * res + y) * res;
        const int64_t base = ((x >> sh) * cr + (y >> sh)) * cr;
        for (int64_t z = 0; z < res; ++z) {
          const uint8_t v = row[z] != 0;
          any[base + (z >> sh)] |= v;
          all[base + (z >> sh)] &= v;
        }
      }
    for (int64_t i = 0; i < cr * cr * cr; ++i) c[i] = uint8_t(any[i] + all[i]);
    return coarse;
  }
  // (three single-axis reductions, innermost first: 2x faster than one over three axes)
  auto v = grid_bits.reshape(-1).narrow(0, 0, res * res * res).reshape({cr, b, cr, b, cr, b});
  auto any = v.amax(5).amax(3).amax(1).ne(0), all = v.amin(5).amin(3).amin(1).ne(0);
  return (any.to(at::kByte) + all.to(at::kByte)).contiguous();
}
}  // namespace

std::vector<at::Tensor> ray_aabb_intersect(at::Tensor rays_o, at::Tensor rays_d, std::vector<double> aabb) {
  check_float(rays_o, "rays_o");
  PNERF_DEVICE_GUARD(rays_o);
  check_tensor(rays_o, "rays_o", rays_o.scalar_type(), rays_o.device());
  check_tensor(rays_d, "rays_d", rays_o.scalar_type(), rays_o.device());
  check_shape(rays_o, "rays_o", {-1, 3});
  check_shape(rays_d, "rays_d", {rays_o.size(0), 3});
  TORCH_CHECK(aabb.size() == 6, "pnerf: argument 'aabb' must have 6 numbers, got ", aabb.size());
  const int64_t N = rays_o.size(0);
  auto near = at::empty({N}, rays_o.options()), far = at::empty({N}, rays_o.options());
  auto hit = at::empty({N}, rays_o.options().dtype(at::kBool));
  AT_DISPATCH_FLOATING_TYPES(rays_o.scalar_type(), "ray_aabb_intersect", [&] {
    RayAabbArgs<scalar_t> a{};
    a.n_rays = N;
    a.rays_o = rays_o.data_ptr<scalar_t>();
    a.rays_d = rays_d.data_ptr<scalar_t>();
    for (int i = 0; i < 6; ++i) a.box[i] = (scalar_t)aabb[i];
    a.near = near.data_ptr<scalar_t>();
    a.far = far.data_ptr<scalar_t>();
    a.hit = hit.data_ptr<bool>();
    PNERF_LAUNCH(rays_o, ray_aabb_intersect<scalar_t>, a);
  });
  return {near, far, hit};
}

// -> (packed_info [N,2], ray_indices [S], t_starts [S], t_ends [S], positions [S,3], dirs [S,3])
std::vector<at::Tensor> march_rays(at::Tensor rays_o, at::Tensor rays_d, std::optional<at::Tensor> warp_table,
                                   std::optional<at::Tensor> warp_index, std::optional<at::Tensor> jitter,
                                   std::optional<at::Tensor> t_min, std::optional<at::Tensor> t_max,
                                   std::optional<at::Tensor> grid_bits, std::vector<double> aabb,
                                   std::vector<double> box, int64_t levels,
                                   int64_t res, double near_plane, double far_plane, double step, double cone_angle,
                                   double max_step, int64_t max_samples, int64_t max_steps) {
  check_float(rays_o, "rays_o");
  PNERF_DEVICE_GUARD(rays_o);
  const auto dt = rays_o.scalar_type();
  const auto dev = rays_o.device();
  check_tensor(rays_o, "rays_o", dt, dev);
  check_tensor(rays_d, "rays_d", dt, dev);
  check_shape(rays_o, "rays_o", {-1, 3});
  const int64_t N = rays_o.size(0);
  check_shape(rays_d, "rays_d", {N, 3});
  TORCH_CHECK(step > 0, "pnerf: argument 'step' must be > 0, got ", step);
  TORCH_CHECK(cone_angle >= 0, "pnerf: argument 'cone_angle' must be >= 0, got ", cone_angle);
  TORCH_CHECK(far_plane > near_plane, "pnerf: argument 'far_plane' must be > near_plane");
  TORCH_CHECK(max_steps > 0, "pnerf: argument 'max_steps' must be > 0");
  TORCH_CHECK(box.size() == 6, "pnerf: argument 'box' must have 6 numbers, got ", box.size());
  int64_t n_warps = 0;
  if (warp_table.has_value() && warp_table->defined()) {
    check_tensor(*warp_table, "warp_table", dt, dev);
    check_shape(*warp_table, "warp_table", {-1, 12});
    n_warps = warp_table->size(0);
    TORCH_CHECK(n_warps >= 1, "pnerf: argument 'warp_table' must have at least one row");
  }
  if (warp_index.has_value() && warp_index->defined()) {
    TORCH_CHECK(n_warps > 0, "pnerf: argument 'warp_index' given without 'warp_table'");
    check_tensor(*warp_index, "warp_index", at::kLong, dev);
    check_shape(*warp_index, "warp_index", {N});
    check_index_range(*warp_index, "warp_index", n_warps);
  }
  if (jitter.has_value() && jitter->defined()) {
    check_tensor(*jitter, "jitter", dt, dev);
    check_shape(*jitter, "jitter", {N});
  }
  const bool has_tmin = t_min.has_value() && t_min->defined(), has_tmax = t_max.has_value() && t_max->defined();
  if (has_tmin) {
    check_tensor(*t_min, "t_min", dt, dev);
    check_shape(*t_min, "t_min", {N});
  }
  if (has_tmax) {
    check_tensor(*t_max, "t_max", dt, dev);
    check_shape(*t_max, "t_max", {N});
  }
  auto counts = at::zeros({N}, rays_o.options().dtype(at::kLong));
  at::Tensor packed_info, ray_indices, t_starts, t_ends, positions, dirs;
  AT_DISPATCH_FLOATING_TYPES(dt, "march_rays", [&] {
    MarchArgs<scalar_t> a{};
    a.n_rays = N;
    a.rays_o = rays_o.data_ptr<scalar_t>();
    a.rays_d = rays_d.data_ptr<scalar_t>();
    a.warp_table = n_warps ? warp_table->data_ptr<scalar_t>() : nullptr;
    a.warp_index = (warp_index.has_value() && warp_index->defined()) ? warp_index->data_ptr<int64_t>() : nullptr;
    a.jitter = (jitter.has_value() && jitter->defined()) ? jitter->data_ptr<scalar_t>() : nullptr;
    a.t_min = has_tmin ? t_min->data_ptr<scalar_t>() : nullptr;
    a.t_max = has_tmax ? t_max->data_ptr<scalar_t>() : nullptr;
    a.grid = make_grid_spec<scalar_t>(grid_bits, aabb, levels, res, dev);
    // Level 0's blocks of 4 cells per axis, for crossing empty space, and runs of occupied
    // cells, a block at a time (grid.h, grid_occupied_exit: the same samples). Kept alive
    // through both passes. On a 64^3 grid, a 256² frame's first segment: blocks of 2 / 4 /
    // 8 / 16 cells marched in 32 / 25 / 31 / 38 ms, 49 ms without (benchmarks/README.md,
    // "Session 23"); full blocks took a quarter off bench_kernels' march (session 29).
    at::Tensor coarse;
    const int sh = res % 4 == 0 && res >= 8 ? 2 : 0;
    if (cone_angle <= 0 && a.grid.bits != nullptr && sh > 0) {
      coarse = block_summary(*grid_bits, res, sh);
      a.grid.coarse = coarse.data_ptr<uint8_t>();
      a.grid.coarse_shift = sh;
    }
    for (int i = 0; i < 6; ++i) a.box[i] = scalar_t(box[i]);
    a.near_plane = (scalar_t)near_plane;
    a.far_plane = (scalar_t)far_plane;
    a.step = (scalar_t)step;
    a.cone_angle = (scalar_t)cone_angle;
    a.max_step = (scalar_t)std::max(max_step, step);
    a.max_samples = max_samples;
    a.max_steps = max_steps;
    a.counts = counts.data_ptr<int64_t>();
    auto first_step = at::empty({N}, counts.options());  // written for every ray with a sample
    a.first_step = cone_angle > 0 ? nullptr : first_step.data_ptr<int64_t>();
    PNERF_LAUNCH(rays_o, march_count<scalar_t>, a);
    auto cum = at::cumsum(counts, 0);
    // The one sync of a march: the sample count sizes the outputs (as in nerfacc).
    const int64_t S = N > 0 ? cum[N - 1].item<int64_t>() : 0;
    auto offsets = (cum - counts).contiguous();
    packed_info = at::stack({offsets, counts}, 1).contiguous();
    ray_indices = empty_output({S}, counts.options());
    t_starts = empty_output({S}, rays_o.options());
    t_ends = empty_output({S}, rays_o.options());
    positions = empty_output({S, 3}, rays_o.options());
    dirs = empty_output({S, 3}, rays_o.options());
    a.offsets = offsets.data_ptr<int64_t>();
    a.ray_indices = ray_indices.data_ptr<int64_t>();
    a.t_starts = t_starts.data_ptr<scalar_t>();
    a.t_ends = t_ends.data_ptr<scalar_t>();
    a.positions = positions.data_ptr<scalar_t>();
    a.dirs = dirs.data_ptr<scalar_t>();
    PNERF_LAUNCH(rays_o, march_fill<scalar_t>, a);
  });
  return {packed_info, ray_indices, t_starts, t_ends, positions, dirs};
}

void bind_raymarch(pybind11::module_& m) {
  using pybind11::arg;
  m.def("ray_aabb_intersect", &ray_aabb_intersect, "near/far/hit of rays against a box", arg("rays_o"),
        arg("rays_d"), arg("aabb"));
  m.def("march_rays", &march_rays, "Fused canonical-warp marching through an occupancy grid", arg("rays_o"),
        arg("rays_d"), arg("warp_table"), arg("warp_index"), arg("jitter"), arg("t_min"), arg("t_max"), arg("grid_bits"), arg("aabb"),
        arg("box"), arg("levels"), arg("res"), arg("near_plane"), arg("far_plane"), arg("step"), arg("cone_angle"),
        arg("max_step"), arg("max_samples"), arg("max_steps"));
}

// Used by occgrid.cpp.
template GridSpec<float> make_grid_spec<float>(const std::optional<at::Tensor>&, const std::vector<double>&, int64_t,
                                               int64_t, const at::Device&);
template GridSpec<double> make_grid_spec<double>(const std::optional<at::Tensor>&, const std::vector<double>&,
                                                 int64_t, int64_t, const at::Device&);

}  // namespace pnerf
