// Torch-facing trilinear feature-volume read: checks, allocation, dispatch.
#include "pnerf/volume.h"

#include "pnerf/torch_utils.h"

namespace pnerf {

// x [n, 3], vol [R0, R1, R2, C] (channels last), box = (lo0, lo1, lo2, hi0, hi1, hi2) -> [n, C]
at::Tensor volume_read(at::Tensor x, at::Tensor vol, std::vector<double> box) {
  check_float(x, "x");
  PNERF_DEVICE_GUARD(x);
  check_tensor(x, "x", x.scalar_type(), x.device());
  check_shape(x, "x", {-1, 3});
  check_tensor(vol, "vol", x.scalar_type(), x.device());
  TORCH_CHECK(vol.dim() == 4, "pnerf: argument 'vol' must have shape [R0, R1, R2, C], got ", shape_str(vol));
  TORCH_CHECK(box.size() == 6, "pnerf: argument 'box' must have 6 numbers, got ", box.size());
  for (int k = 0; k < 3; ++k) {
    TORCH_CHECK(vol.size(k) >= 2 && vol.size(k) <= (1 << 20), "pnerf: argument 'vol' must have 2 or more vertices per axis, got ",
                shape_str(vol));
    TORCH_CHECK(box[k + 3] > box[k], "pnerf: argument 'box' must have max > min on every axis");
  }
  TORCH_CHECK(vol.size(3) >= 1 && vol.size(3) <= 4096, "pnerf: argument 'vol' must have 1 to 4096 channels, got ",
              vol.size(3));
  const int64_t n = x.size(0), C = vol.size(3);
  auto out = at::empty({n, C}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "volume_read", [&] {
    VolumeReadArgs<scalar_t> a{};
    a.n = n;
    a.x = x.data_ptr<scalar_t>();
    a.vol = vol.data_ptr<scalar_t>();
    for (int k = 0; k < 3; ++k) {
      a.res[k] = (int32_t)vol.size(k);
      a.lo[k] = (scalar_t)box[k];
      a.scale[k] = (scalar_t)((double)(vol.size(k) - 1) / (box[k + 3] - box[k]));
    }
    a.channels = (int32_t)C;
    a.out = out.data_ptr<scalar_t>();
    PNERF_LAUNCH(x, volume_read<scalar_t>, a);
  });
  return out;
}

void bind_volume(pybind11::module_& m) {
  m.def("volume_read", &volume_read,
        "Trilinear read of a channels-last feature volume spanning a box (grid_sample, align_corners=True, "
        "zero padding; forward)",
        pybind11::arg("x"), pybind11::arg("vol"), pybind11::arg("box"));
}

}  // namespace pnerf
