// Torch-facing occupancy-grid maintenance.
#include "pnerf/occgrid.h"

#include <optional>

#include "pnerf/torch_utils.h"

namespace pnerf {

template <typename T>
GridSpec<T> make_grid_spec(const std::optional<at::Tensor>& bits, const std::vector<double>& aabb, int64_t levels,
                           int64_t res, const at::Device& device);

namespace {
// indices [n] int64 in [0, n_cells) (bounds: see check_index_range); `unique`: the kernel
// writes through them, so duplicates would race (checked in debug mode).
int64_t check_indices(const std::optional<at::Tensor>& indices, int64_t n_cells, const at::Device& dev, int64_t n_default,
                      bool unique) {
  if (!(indices.has_value() && indices->defined())) return n_default;
  check_tensor(*indices, "indices", at::kLong, dev);
  check_shape(*indices, "indices", {-1});
  check_index_range(*indices, "indices", n_cells);
  if (unique) check_unique(*indices, "indices");
  return indices->numel();
}
}  // namespace

// Jittered (or centre) positions of grid cells -> [n, 3]
at::Tensor occ_cell_positions(std::optional<at::Tensor> indices, std::optional<at::Tensor> jitter,
                              std::vector<double> aabb, int64_t levels, int64_t res, at::Tensor like) {
  check_float(like, "like");
  PNERF_DEVICE_GUARD(like);
  const auto dev = like.device();
  const int64_t n_cells = levels * res * res * res;
  const int64_t n = check_indices(indices, n_cells, dev, n_cells, false);
  if (jitter.has_value() && jitter->defined()) {
    check_tensor(*jitter, "jitter", like.scalar_type(), dev);
    check_shape(*jitter, "jitter", {n, 3});
  }
  auto positions = at::empty({n, 3}, like.options());
  AT_DISPATCH_FLOATING_TYPES(like.scalar_type(), "occ_cell_positions", [&] {
    OccGridArgs<scalar_t> a{};
    a.n = n;
    a.grid = make_grid_spec<scalar_t>(std::nullopt, aabb, levels, res, dev);
    a.indices = (indices.has_value() && indices->defined()) ? indices->data_ptr<int64_t>() : nullptr;
    a.jitter = (jitter.has_value() && jitter->defined()) ? jitter->data_ptr<scalar_t>() : nullptr;
    a.positions = positions.data_ptr<scalar_t>();
    PNERF_LAUNCH(like, occ_cell_positions<scalar_t>, a);
  });
  return positions;
}

// In place: density[idx] = max(density[idx] * decay, new_density); then bits = density > threshold
// over the whole grid when threshold >= 0. Preconditions: indices unique and in range
// (verified in debug mode on CUDA; see csrc/ops/checks.cpp).
void occ_update(at::Tensor density, at::Tensor bits, std::optional<at::Tensor> indices, at::Tensor new_density,
                double decay, double threshold) {
  check_float(density, "density");
  PNERF_DEVICE_GUARD(density);
  const auto dev = density.device();
  check_tensor(density, "density", density.scalar_type(), dev);
  check_tensor(bits, "bits", at::kByte, dev);
  check_tensor(new_density, "new_density", density.scalar_type(), dev);
  TORCH_CHECK(bits.numel() == density.numel(), "pnerf: argument 'bits' must have as many elements as 'density' (",
              density.numel(), "), got ", bits.numel());
  const int64_t n = check_indices(indices, density.numel(), dev, density.numel(), true);
  check_shape(new_density, "new_density", {n});
  TORCH_CHECK(decay >= 0 && decay <= 1, "pnerf: argument 'decay' must be in [0, 1], got ", decay);
  AT_DISPATCH_FLOATING_TYPES(density.scalar_type(), "occ_update", [&] {
    OccGridArgs<scalar_t> a{};
    a.n = n;
    a.indices = (indices.has_value() && indices->defined()) ? indices->data_ptr<int64_t>() : nullptr;
    a.density = density.data_ptr<scalar_t>();
    a.new_density = new_density.data_ptr<scalar_t>();
    a.decay = (scalar_t)decay;
    a.bits = bits.data_ptr<uint8_t>();
    PNERF_LAUNCH(density, occ_ema_update<scalar_t>, a);
    if (threshold >= 0) {
      a.n = density.numel();
      a.threshold = (scalar_t)threshold;
      PNERF_LAUNCH(density, occ_threshold<scalar_t>, a);
    }
  });
}

void bind_occgrid(pybind11::module_& m) {
  using pybind11::arg;
  m.def("occ_cell_positions", &occ_cell_positions, "Jittered positions of occupancy-grid cells", arg("indices"),
        arg("jitter"), arg("aabb"), arg("levels"), arg("res"), arg("like"));
  m.def("occ_update", &occ_update, "EMA density update and thresholding (in place)", arg("density"), arg("bits"),
        arg("indices"), arg("new_density"), arg("decay"), arg("threshold"));
}

}  // namespace pnerf
