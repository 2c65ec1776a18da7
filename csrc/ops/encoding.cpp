// Torch-facing spherical-harmonics encoding: checks, allocation, dispatch.
#include "pnerf/encoding.h"

#include "pnerf/torch_utils.h"

namespace pnerf {

// dirs [n,3] (unit) -> [n, degree^2]
at::Tensor sh_encode_forward(at::Tensor dirs, int64_t degree) {
  check_float(dirs, "dirs");
  PNERF_DEVICE_GUARD(dirs);
  check_tensor(dirs, "dirs", dirs.scalar_type(), dirs.device());
  check_shape(dirs, "dirs", {-1, 3});
  TORCH_CHECK(degree >= 1 && degree <= 4, "pnerf: argument 'degree' must be in [1, 4], got ", degree);
  const int64_t n = dirs.size(0);
  auto out = at::empty({n, degree * degree}, dirs.options());
  AT_DISPATCH_FLOATING_TYPES(dirs.scalar_type(), "sh_encode_forward", [&] {
    SHEncodeArgs<scalar_t> a{};
    a.n = n;
    a.degree = (int32_t)degree;
    a.dirs = dirs.data_ptr<scalar_t>();
    a.out = out.data_ptr<scalar_t>();
    PNERF_LAUNCH(dirs, sh_encode_forward<scalar_t>, a);
  });
  return out;
}

void bind_encoding(pybind11::module_& m) {
  m.def("sh_encode_forward", &sh_encode_forward, "Spherical-harmonics direction encoding (forward)",
        pybind11::arg("dirs"), pybind11::arg("degree"));
}

}  // namespace pnerf
