// Torch-facing hash-grid encoding: checks, allocation, dispatch.
#include "pnerf/hashgrid.h"

#include "pnerf/torch_utils.h"

namespace pnerf {

namespace {

// Fills the level table of `a` and checks `params` against it. Layout rule (shared with
// pnerf_fast/ops/hashgrid.py:level_layout): level l holds (R_l+1)^3 rows when that fits
// in 2^log2_table, else 2^log2_table rows (hashed).
template <typename T>
void fill_levels(HashGridArgs<T>& a, const std::vector<int64_t>& resolutions, int64_t log2_table,
                 const std::vector<double>& aabb, const at::Tensor& params) {
  const int64_t L = (int64_t)resolutions.size();
  TORCH_CHECK(L >= 1 && L <= kHashMaxLevels, "pnerf: argument 'resolutions' must have 1..", kHashMaxLevels,
              " entries, got ", L);
  TORCH_CHECK(log2_table >= 4 && log2_table <= 30, "pnerf: argument 'log2_table' must be in [4, 30], got ",
              log2_table);
  TORCH_CHECK(aabb.size() == 6, "pnerf: argument 'aabb' must have 6 numbers (min xyz, max xyz), got ",
              aabb.size());
  const int64_t T_size = int64_t(1) << log2_table;
  int64_t off = 0, word = 0;
  for (int64_t l = 0; l < L; ++l) {
    const int64_t R = resolutions[l];
    TORCH_CHECK(R >= 1 && R <= 1 << 20, "pnerf: argument 'resolutions' has an invalid entry ", R, " at level ", l);
    const int64_t dense_rows = (R + 1) * (R + 1) * (R + 1);
    const bool dense = dense_rows <= T_size;
    a.level_offset[l] = off;
    a.level_res[l] = (int32_t)R;
    a.level_dense[l] = dense ? 1 : 0;
    a.level_word[l] = word;
    const int64_t level_rows = dense ? dense_rows : T_size;
    off += level_rows;
    word += (level_rows + 63) / 64;
  }
  a.level_word[L] = word;
  a.n_levels = (int32_t)L;
  a.hash_mask = (uint32_t)(T_size - 1);
  for (int d = 0; d < 3; ++d) {
    const double ext = aabb[3 + d] - aabb[d];
    TORCH_CHECK(ext > 0, "pnerf: argument 'aabb' must have max > min on every axis");
    a.aabb_min[d] = (T)aabb[d];
    a.inv_extent[d] = (T)(1.0 / ext);
  }
  TORCH_CHECK(params.size(0) == off, "pnerf: argument 'params' must have ", off,
              " rows for these levels and table size, got ", params.size(0));
}

void check_inputs(const at::Tensor& x, const at::Tensor& params) {
  check_float(params, "params");
  check_tensor(params, "params", params.scalar_type(), params.device());
  check_tensor(x, "x", params.scalar_type(), params.device());
  check_shape(x, "x", {-1, 3});
  check_shape(params, "params", {-1, -1});
  TORCH_CHECK(params.size(1) >= 1 && params.size(1) <= kHashMaxFeatures, "pnerf: argument 'params' must have 1..",
              kHashMaxFeatures, " features per row, got ", params.size(1));
}

}  // namespace

// x [n,3], params [rows,F] -> [n, L*F]; into `out` ([n, L*F], contiguous) when given, so
// that a caller evaluating in blocks can keep one buffer.
at::Tensor hashgrid_forward(at::Tensor x, at::Tensor params, std::vector<int64_t> resolutions, int64_t log2_table,
                            std::vector<double> aabb, c10::optional<at::Tensor> out_opt) {
  check_inputs(x, params);
  const int64_t n = x.size(0), F = params.size(1), L = (int64_t)resolutions.size();
  at::Tensor out;
  if (out_opt.has_value() && out_opt->defined()) {
    out = *out_opt;
    check_tensor(out, "out", params.scalar_type(), params.device());
    check_shape(out, "out", {n, L * F});
  } else {
    out = at::empty({n, L * F}, params.options());
  }
  AT_DISPATCH_FLOATING_TYPES(params.scalar_type(), "hashgrid_forward", [&] {
    HashGridArgs<scalar_t> a{};
    fill_levels(a, resolutions, log2_table, aabb, params);
    a.n = n;
    a.n_features = (int32_t)F;
    a.x = x.data_ptr<scalar_t>();
    a.params = params.data_ptr<scalar_t>();
    a.out = out.data_ptr<scalar_t>();
    PNERF_LAUNCH(params, hashgrid_forward<scalar_t>, a);
  });
  return out;
}

// -> (grad_params [rows,F] or undefined, grad_x [n,3] or undefined)
std::vector<at::Tensor> hashgrid_backward(at::Tensor grad_out, at::Tensor x, at::Tensor params,
                                          std::vector<int64_t> resolutions, int64_t log2_table,
                                          std::vector<double> aabb, bool want_params, bool want_x) {
  check_inputs(x, params);
  const int64_t n = x.size(0), F = params.size(1), L = (int64_t)resolutions.size();
  check_tensor(grad_out, "grad_out", params.scalar_type(), params.device());
  check_shape(grad_out, "grad_out", {n, L * F});
  const at::Tensor g_lm = grad_out.view({n, L, F}).permute({1, 0, 2}).contiguous();  // [L, n, F]
  at::Tensor gp, gx;
  if (want_params) gp = at::zeros_like(params);
  if (want_x) gx = at::zeros_like(x);
  AT_DISPATCH_FLOATING_TYPES(params.scalar_type(), "hashgrid_backward", [&] {
    HashGridArgs<scalar_t> a{};
    fill_levels(a, resolutions, log2_table, aabb, params);
    a.n = n;
    a.n_features = (int32_t)F;
    a.x = x.data_ptr<scalar_t>();
    a.params = params.data_ptr<scalar_t>();
    a.grad_out = g_lm.data_ptr<scalar_t>();
    a.grad_params = want_params ? gp.data_ptr<scalar_t>() : nullptr;
    a.grad_x = want_x ? gx.data_ptr<scalar_t>() : nullptr;
    PNERF_LAUNCH(params, hashgrid_backward<scalar_t>, a, want_params, want_x);
  });
  return {gp, gx};
}

// The same backward with a row-sparse table gradient. `acc` [rows,F] (all zero) and
// `touched` int64 [words] (all zero, words = hashgrid_bitmap_words) persist across calls
// and are all zero again on return (pnerf_fast/ops/hashgrid.py:bitmap_words). -> (rows int64 [k] ascending, values [k,F], grad_x
// [n,3] or undefined): the touched rows and their gradient.
std::vector<at::Tensor> hashgrid_backward_sparse(at::Tensor grad_out, at::Tensor x, at::Tensor params,
                                                 std::vector<int64_t> resolutions, int64_t log2_table,
                                                 std::vector<double> aabb, at::Tensor acc, at::Tensor touched,
                                                 bool want_x) {
  check_inputs(x, params);
  const int64_t n = x.size(0), F = params.size(1), L = (int64_t)resolutions.size();
  check_tensor(grad_out, "grad_out", params.scalar_type(), params.device());
  check_shape(grad_out, "grad_out", {n, L * F});
  check_tensor(acc, "acc", params.scalar_type(), params.device());
  check_shape(acc, "acc", {params.size(0), F});
  check_tensor(touched, "touched", at::kLong, params.device());
  const at::Tensor g_lm = grad_out.view({n, L, F}).permute({1, 0, 2}).contiguous();  // [L, n, F]
  at::Tensor gx, rows, values;
  if (want_x) gx = at::zeros_like(x);
  AT_DISPATCH_FLOATING_TYPES(params.scalar_type(), "hashgrid_backward_sparse", [&] {
    HashGridArgs<scalar_t> a{};
    fill_levels(a, resolutions, log2_table, aabb, params);
    check_shape(touched, "touched", {a.level_word[L]});
    a.n = n;
    a.n_features = (int32_t)F;
    a.x = x.data_ptr<scalar_t>();
    a.params = params.data_ptr<scalar_t>();
    a.grad_out = g_lm.data_ptr<scalar_t>();
    a.grad_params = acc.data_ptr<scalar_t>();
    a.grad_x = want_x ? gx.data_ptr<scalar_t>() : nullptr;
    a.touched = reinterpret_cast<uint64_t*>(touched.data_ptr<int64_t>());
    PNERF_LAUNCH(params, hashgrid_backward<scalar_t>, a, true, want_x);
    HashGridRows<scalar_t> r{};
    r.a = a;
    at::Tensor count = at::empty({a.level_word[L]}, touched.options());
    r.count = count.data_ptr<int64_t>();
    PNERF_LAUNCH(params, hashgrid_rows<scalar_t>, r, false);
    const at::Tensor end = count.cumsum(0);
    const int64_t k = a.level_word[L] ? end[-1].item<int64_t>() : 0;
    const at::Tensor start = end - count;
    rows = at::empty({k}, touched.options());
    values = at::empty({k, F}, params.options());
    r.start = start.data_ptr<int64_t>();
    r.rows = rows.data_ptr<int64_t>();
    r.values = values.data_ptr<scalar_t>();
    PNERF_LAUNCH(params, hashgrid_rows<scalar_t>, r, true);
  });
  return {rows, values, gx};
}

void bind_hashgrid(pybind11::module_& m) {
  m.def("hashgrid_simd_supported", &cpu::hashgrid_simd_supported,
        "Whether this CPU runs the AVX-512 hash-grid path (float tables, 2 features)");
  m.def("hashgrid_simd_enabled", &cpu::hashgrid_simd_enabled,
        "Whether the AVX-512 hash-grid path is in use (supported, and not switched off)");
  m.def("hashgrid_simd_calls", &cpu::hashgrid_simd_calls,
        "How many hash-grid forward / table-backward calls took the AVX-512 path (for tests)");
  m.def("hashgrid_set_simd", &cpu::hashgrid_set_simd,
        "Switch the AVX-512 hash-grid path on or off (same results bit for bit; for benchmarks and tests)",
        pybind11::arg("on"));
  m.def("hashgrid_forward", &hashgrid_forward, "Multi-resolution hash-grid encoding (forward)", pybind11::arg("x"),
        pybind11::arg("params"), pybind11::arg("resolutions"), pybind11::arg("log2_table"), pybind11::arg("aabb"),
        pybind11::arg("out") = pybind11::none());
  m.def("hashgrid_backward", &hashgrid_backward, "Multi-resolution hash-grid encoding (backward)",
        pybind11::arg("grad_out"), pybind11::arg("x"), pybind11::arg("params"), pybind11::arg("resolutions"),
        pybind11::arg("log2_table"), pybind11::arg("aabb"), pybind11::arg("want_params"), pybind11::arg("want_x"));
  m.def("hashgrid_backward_sparse", &hashgrid_backward_sparse,
        "Hash-grid backward with a row-sparse table gradient (touched rows, their gradient)", pybind11::arg("grad_out"),
        pybind11::arg("x"), pybind11::arg("params"), pybind11::arg("resolutions"), pybind11::arg("log2_table"),
        pybind11::arg("aabb"), pybind11::arg("acc"), pybind11::arg("touched"), pybind11::arg("want_x"));
}

}  // namespace pnerf
