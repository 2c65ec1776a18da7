// Torch-facing row-sparse optimizer step (Adam or SGD on the touched rows of a table):
// checks, dispatch. Updates params (and, for Adam, exp_avg, exp_avg_sq, row_step) in place.
#include "pnerf/sparse_adam.h"

#include "pnerf/torch_utils.h"

namespace pnerf {

namespace {

template <typename scalar_t>
SparseAdamArgs<scalar_t> common_args(const at::Tensor& params, const at::Tensor& rows, const at::Tensor& grad,
                                     double lr) {
  check_float(params, "params");
  check_tensor(params, "params", params.scalar_type(), params.device());
  check_shape(params, "params", {-1, -1});
  check_tensor(rows, "rows", at::kLong, params.device());
  check_shape(rows, "rows", {-1});
  check_tensor(grad, "grad", params.scalar_type(), params.device());
  check_shape(grad, "grad", {rows.size(0), params.size(1)});
  SparseAdamArgs<scalar_t> a{};
  a.k = rows.size(0);
  a.n_features = (int32_t)params.size(1);
  a.rows = rows.data_ptr<int64_t>();
  a.grad = grad.data_ptr<scalar_t>();
  a.params = params.data_ptr<scalar_t>();
  a.lr = lr;
  return a;
}

}  // namespace

// params [R,F], rows [k] int64 (unique, in [0, R)), grad [k,F], exp_avg/exp_avg_sq [R,F],
// row_step [R] int32, bias [n,2] float64 (1 - beta1^t, sqrt(1 - beta2^t)).
void sparse_adam_step(at::Tensor params, at::Tensor rows, at::Tensor grad, at::Tensor exp_avg, at::Tensor exp_avg_sq,
                      at::Tensor row_step, at::Tensor bias, double lr, double beta1, double beta2, double eps,
                      double weight_decay) {
  check_tensor(exp_avg, "exp_avg", params.scalar_type(), params.device());
  check_shape(exp_avg, "exp_avg", {params.size(0), params.size(1)});
  check_tensor(exp_avg_sq, "exp_avg_sq", params.scalar_type(), params.device());
  check_shape(exp_avg_sq, "exp_avg_sq", {params.size(0), params.size(1)});
  check_tensor(row_step, "row_step", at::kInt, params.device());
  check_shape(row_step, "row_step", {params.size(0)});
  check_tensor(bias, "bias", at::kDouble, params.device());
  check_shape(bias, "bias", {-1, 2});
  AT_DISPATCH_FLOATING_TYPES(params.scalar_type(), "sparse_adam_step", [&] {
    SparseAdamArgs<scalar_t> a = common_args<scalar_t>(params, rows, grad, lr);
    a.exp_avg = exp_avg.data_ptr<scalar_t>();
    a.exp_avg_sq = exp_avg_sq.data_ptr<scalar_t>();
    a.row_step = row_step.data_ptr<int32_t>();
    a.bias = bias.data_ptr<double>();
    a.n_bias = bias.size(0);
    a.beta1 = beta1;
    a.beta2 = beta2;
    a.eps = eps;
    a.weight_decay = weight_decay;
    PNERF_LAUNCH(params, sparse_adam_step<scalar_t>, a, true);
  });
}

void sparse_sgd_step(at::Tensor params, at::Tensor rows, at::Tensor grad, double lr) {
  AT_DISPATCH_FLOATING_TYPES(params.scalar_type(), "sparse_sgd_step", [&] {
    SparseAdamArgs<scalar_t> a = common_args<scalar_t>(params, rows, grad, lr);
    PNERF_LAUNCH(params, sparse_adam_step<scalar_t>, a, false);
  });
}

void bind_sparse_adam(pybind11::module_& m) {
  m.def("sparse_adam_step", &sparse_adam_step, "Lazy Adam step on the touched rows of a table (in place)",
        pybind11::arg("params"), pybind11::arg("rows"), pybind11::arg("grad"), pybind11::arg("exp_avg"),
        pybind11::arg("exp_avg_sq"), pybind11::arg("row_step"), pybind11::arg("bias"), pybind11::arg("lr"),
        pybind11::arg("beta1"), pybind11::arg("beta2"), pybind11::arg("eps"), pybind11::arg("weight_decay"));
  m.def("sparse_sgd_step", &sparse_sgd_step, "SGD step on the touched rows of a table (in place)",
        pybind11::arg("params"), pybind11::arg("rows"), pybind11::arg("grad"), pybind11::arg("lr"));
}

}  // namespace pnerf
