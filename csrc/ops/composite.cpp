// Torch-facing alpha compositing: checks, allocation, dispatch.
#include "pnerf/composite.h"

#include "pnerf/torch_utils.h"

namespace pnerf {

namespace {
void check_common(const at::Tensor& packed_info, const at::Tensor& sigmas, const at::Tensor& rgbs,
                  const at::Tensor& t_starts, const at::Tensor& t_ends) {
  check_float(sigmas, "sigmas");
  const auto dt = sigmas.scalar_type();
  const auto dev = sigmas.device();
  check_tensor(sigmas, "sigmas", dt, dev);
  check_tensor(rgbs, "rgbs", dt, dev);
  check_tensor(t_starts, "t_starts", dt, dev);
  check_tensor(t_ends, "t_ends", dt, dev);
  check_tensor(packed_info, "packed_info", at::kLong, dev);
  const int64_t S = sigmas.size(0);
  check_shape(sigmas, "sigmas", {S});
  check_shape(rgbs, "rgbs", {S, 3});
  check_shape(t_starts, "t_starts", {S});
  check_shape(t_ends, "t_ends", {S});
  check_shape(packed_info, "packed_info", {-1, 2});
  check_packed_info(packed_info, S);
}
}  // namespace

// -> (rgb [N,3], depth [N], opacity [N], weights [S], trans [S])
// Precondition: packed_info rows (start, count) are disjoint segments of [0, S) (bounds
// checked on the CPU, everything in debug mode; see csrc/ops/checks.cpp).
std::vector<at::Tensor> composite_forward(at::Tensor packed_info, at::Tensor sigmas, at::Tensor rgbs,
                                          at::Tensor t_starts, at::Tensor t_ends, double t_thresh) {
  check_common(packed_info, sigmas, rgbs, t_starts, t_ends);
  PNERF_DEVICE_GUARD(sigmas);
  const int64_t N = packed_info.size(0), S = sigmas.size(0);
  auto opts = sigmas.options();
  auto rgb = at::zeros({N, 3}, opts), depth = at::zeros({N}, opts), opacity = at::zeros({N}, opts);
  auto weights = zeroed_output({S}, opts), trans = zeroed_output({S}, opts);
  AT_DISPATCH_FLOATING_TYPES(sigmas.scalar_type(), "composite_forward", [&] {
    CompositeArgs<scalar_t> a{};
    a.n_rays = N;
    a.packed_info = packed_info.data_ptr<int64_t>();
    a.sigmas = sigmas.data_ptr<scalar_t>();
    a.rgbs = rgbs.data_ptr<scalar_t>();
    a.t_starts = t_starts.data_ptr<scalar_t>();
    a.t_ends = t_ends.data_ptr<scalar_t>();
    a.t_thresh = (scalar_t)t_thresh;
    a.weights = weights.data_ptr<scalar_t>();
    a.trans = trans.data_ptr<scalar_t>();
    a.out_rgb = rgb.data_ptr<scalar_t>();
    a.out_depth = depth.data_ptr<scalar_t>();
    a.out_opacity = opacity.data_ptr<scalar_t>();
    PNERF_LAUNCH(sigmas, composite_forward<scalar_t>, a);
  });
  return {rgb, depth, opacity, weights, trans};
}

// -> (grad_sigmas [S], grad_rgbs [S,3])
std::vector<at::Tensor> composite_backward(at::Tensor packed_info, at::Tensor sigmas, at::Tensor rgbs,
                                           at::Tensor t_starts, at::Tensor t_ends, at::Tensor weights,
                                           at::Tensor trans, at::Tensor rgb, at::Tensor depth, at::Tensor opacity,
                                           at::Tensor grad_rgb, at::Tensor grad_depth, at::Tensor grad_opacity) {
  check_common(packed_info, sigmas, rgbs, t_starts, t_ends);
  PNERF_DEVICE_GUARD(sigmas);
  const int64_t N = packed_info.size(0), S = sigmas.size(0);
  const auto dt = sigmas.scalar_type();
  const auto dev = sigmas.device();
  check_tensor(weights, "weights", dt, dev);
  check_tensor(trans, "trans", dt, dev);
  check_tensor(rgb, "rgb", dt, dev);
  check_tensor(depth, "depth", dt, dev);
  check_tensor(opacity, "opacity", dt, dev);
  check_tensor(grad_rgb, "grad_rgb", dt, dev);
  check_tensor(grad_depth, "grad_depth", dt, dev);
  check_tensor(grad_opacity, "grad_opacity", dt, dev);
  check_shape(weights, "weights", {S});
  check_shape(trans, "trans", {S});
  check_shape(rgb, "rgb", {N, 3});
  check_shape(grad_rgb, "grad_rgb", {N, 3});
  check_shape(depth, "depth", {N});
  check_shape(grad_depth, "grad_depth", {N});
  check_shape(opacity, "opacity", {N});
  check_shape(grad_opacity, "grad_opacity", {N});
  auto grad_sigmas = zeroed_output({S}, sigmas.options());
  auto grad_rgbs = zeroed_output({S, 3}, sigmas.options());
  AT_DISPATCH_FLOATING_TYPES(dt, "composite_backward", [&] {
    CompositeArgs<scalar_t> a{};
    a.n_rays = N;
    a.packed_info = packed_info.data_ptr<int64_t>();
    a.sigmas = sigmas.data_ptr<scalar_t>();
    a.rgbs = rgbs.data_ptr<scalar_t>();
    a.t_starts = t_starts.data_ptr<scalar_t>();
    a.t_ends = t_ends.data_ptr<scalar_t>();
    a.weights = weights.data_ptr<scalar_t>();
    a.trans = trans.data_ptr<scalar_t>();
    a.out_rgb = rgb.data_ptr<scalar_t>();
    a.out_depth = depth.data_ptr<scalar_t>();
    a.out_opacity = opacity.data_ptr<scalar_t>();
    a.grad_rgb = grad_rgb.data_ptr<scalar_t>();
    a.grad_depth = grad_depth.data_ptr<scalar_t>();
    a.grad_opacity = grad_opacity.data_ptr<scalar_t>();
    a.grad_sigmas = grad_sigmas.data_ptr<scalar_t>();
    a.grad_rgbs = grad_rgbs.data_ptr<scalar_t>();
    PNERF_LAUNCH(sigmas, composite_backward<scalar_t>, a);
  });
  return {grad_sigmas, grad_rgbs};
}

void bind_composite(pybind11::module_& m) {
  m.def("composite_forward", &composite_forward, "Alpha compositing over packed samples (forward)",
        pybind11::arg("packed_info"), pybind11::arg("sigmas"), pybind11::arg("rgbs"), pybind11::arg("t_starts"),
        pybind11::arg("t_ends"), pybind11::arg("t_thresh"));
  m.def("composite_backward", &composite_backward, "Alpha compositing over packed samples (backward)");
}

}  // namespace pnerf
