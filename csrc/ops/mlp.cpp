// Torch-facing fused MLP: checks, allocation, dispatch. Parameters arrive packed by
// pnerf_fast/ops/mlp.py:pack_params (layouts in pnerf/mlp.h).
#include "pnerf/mlp.h"

#include "pnerf/torch_utils.h"

namespace pnerf {

namespace {

template <typename T>
void fill_layout(MlpArgs<T>& a, const std::vector<int64_t>& dims, int64_t in_dim, int64_t out_dim,
                 int64_t out_act, const at::Tensor& pf, const at::Tensor& pb) {
  const int64_t L = (int64_t)dims.size() - 1;
  TORCH_CHECK(L >= 1 && L <= kMlpMaxLayers, "pnerf: argument 'dims' must describe 1..", kMlpMaxLayers,
              " layers, got ", L);
  for (int64_t l = 0; l <= L; ++l) {
    TORCH_CHECK(dims[l] >= kMlpPad && dims[l] <= kMlpMaxWidth && dims[l] % kMlpPad == 0, "pnerf: argument 'dims' entry ",
                l, " must be a multiple of ", kMlpPad, " in [", kMlpPad, ", ", kMlpMaxWidth, "], got ", dims[l]);
    a.dims[l] = (int32_t)dims[l];
  }
  TORCH_CHECK(in_dim >= 1 && in_dim <= dims[0] && dims[0] - in_dim < kMlpPad,
              "pnerf: argument 'x' has ", in_dim, " columns, which does not match dims[0] = ", dims[0]);
  TORCH_CHECK(out_dim >= 1 && out_dim <= dims[L] && dims[L] - out_dim < kMlpPad, "pnerf: argument 'out_dim' (",
              out_dim, ") does not match dims[-1] = ", dims[L]);
  TORCH_CHECK(out_act >= 0 && out_act <= 2, "pnerf: argument 'out_act' must be 0 (none), 1 (relu) or 2 (sigmoid), got ",
              out_act);
  int64_t f = 0, b = 0;
  for (int64_t l = 0; l < L; ++l) {
    a.fwd_off[l] = f;
    a.bwd_off[l] = b;
    f += dims[l] * dims[l + 1] + dims[l + 1];
    b += dims[l] * dims[l + 1];
  }
  TORCH_CHECK(pf.numel() == f, "pnerf: argument 'params_fwd' must have ", f, " elements, got ", pf.numel());
  TORCH_CHECK(pb.numel() == b, "pnerf: argument 'params_bwd' must have ", b, " elements, got ", pb.numel());
  a.n_layers = (int32_t)L;
  a.in_dim = (int32_t)in_dim;
  a.out_dim = (int32_t)out_dim;
  a.out_act = (int32_t)out_act;
  a.n_params = f;
}

void check_inputs(const at::Tensor& x, const at::Tensor& pf, const at::Tensor& pb) {
  check_float(x, "x");
  check_tensor(x, "x", x.scalar_type(), x.device());
  check_tensor(pf, "params_fwd", x.scalar_type(), x.device());
  check_tensor(pb, "params_bwd", x.scalar_type(), x.device());
  check_shape(x, "x", {-1, -1});
  check_shape(pf, "params_fwd", {-1});
  check_shape(pb, "params_bwd", {-1});
}

int block_rows_for(const at::Tensor& x) { return x.is_cuda() ? kMlpCudaRows : cpu::mlp_block_rows(); }

}  // namespace

// x [n, in_dim] -> y [n, out_dim]
at::Tensor mlp_forward(at::Tensor x, at::Tensor params_fwd, at::Tensor params_bwd, std::vector<int64_t> dims,
                       int64_t out_dim, int64_t out_act) {
  check_inputs(x, params_fwd, params_bwd);
  PNERF_DEVICE_GUARD(x);
  const int64_t n = x.size(0);
  auto y = at::empty({n, out_dim}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlp_forward", [&] {
    MlpArgs<scalar_t> a{};
    fill_layout(a, dims, x.size(1), out_dim, out_act, params_fwd, params_bwd);
    a.n_rows = n;
    a.block_rows = block_rows_for(x);
    a.x = x.data_ptr<scalar_t>();
    a.pf = params_fwd.data_ptr<scalar_t>();
    a.pb = params_bwd.data_ptr<scalar_t>();
    a.y = y.data_ptr<scalar_t>();
    PNERF_LAUNCH(x, mlp_forward<scalar_t>, a);
  });
  return y;
}

// Gradient slots for the backward: one per CPU worker; on CUDA 1 (a shared-memory sum per
// block) or a few (when the gradient does not fit in shared memory).
template <typename T>
int grad_slots(const at::Tensor& x, const MlpArgs<T>& a) {
#ifdef PNERF_WITH_CUDA
  if (x.is_cuda()) return cuda::mlp_num_slots(a);
#endif
  return x.is_cuda() ? 1 : cpu::mlp_num_slots(a.n_rows);
}

// -> (grad_params_fwd [P] in params_fwd's layout, grad_x [n, in_dim] or undefined)
std::vector<at::Tensor> mlp_backward(at::Tensor grad_y, at::Tensor x, at::Tensor params_fwd, at::Tensor params_bwd,
                                     std::vector<int64_t> dims, int64_t out_dim, int64_t out_act, bool want_x) {
  check_inputs(x, params_fwd, params_bwd);
  PNERF_DEVICE_GUARD(x);
  const int64_t n = x.size(0);
  check_tensor(grad_y, "grad_y", x.scalar_type(), x.device());
  check_shape(grad_y, "grad_y", {n, out_dim});
  at::Tensor gx, gslots;
  if (want_x) gx = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlp_backward", [&] {
    MlpArgs<scalar_t> a{};
    fill_layout(a, dims, x.size(1), out_dim, out_act, params_fwd, params_bwd);
    a.n_rows = n;
    a.block_rows = block_rows_for(x);
    const int n_slots = grad_slots(x, a);
    gslots = at::zeros({n_slots, params_fwd.numel()}, x.options());
    a.x = x.data_ptr<scalar_t>();
    a.pf = params_fwd.data_ptr<scalar_t>();
    a.pb = params_bwd.data_ptr<scalar_t>();
    a.gy = grad_y.data_ptr<scalar_t>();
    a.gx = want_x ? gx.data_ptr<scalar_t>() : nullptr;
    a.gparams = gslots.data_ptr<scalar_t>();
    PNERF_LAUNCH(x, mlp_backward<scalar_t>, a, n_slots);
  });
  return {gslots.size(0) == 1 ? gslots[0] : gslots.sum(0), gx};
}

void bind_mlp(pybind11::module_& m) {
  m.def("mlp_forward", &mlp_forward, "Fused MLP (forward)", pybind11::arg("x"), pybind11::arg("params_fwd"),
        pybind11::arg("params_bwd"), pybind11::arg("dims"), pybind11::arg("out_dim"), pybind11::arg("out_act"));
  m.def("mlp_backward", &mlp_backward, "Fused MLP (backward; recomputes the forward)", pybind11::arg("grad_y"),
        pybind11::arg("x"), pybind11::arg("params_fwd"), pybind11::arg("params_bwd"), pybind11::arg("dims"),
        pybind11::arg("out_dim"), pybind11::arg("out_act"), pybind11::arg("want_x"));
}

}  // namespace pnerf
