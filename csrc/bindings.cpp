// The pybind11 module pnerf_fast._C. Each kernel family registers itself through a
// bind_<family> function defined next to its torch-facing op in csrc/ops/.
#include <torch/extension.h>

namespace pnerf {
void bind_composite(pybind11::module_& m);
void bind_raymarch(pybind11::module_& m);
void bind_occgrid(pybind11::module_& m);
void bind_hashgrid(pybind11::module_& m);
void bind_mlp(pybind11::module_& m);
void bind_encoding(pybind11::module_& m);
void bind_sparse_adam(pybind11::module_& m);
void bind_volume(pybind11::module_& m);
void bind_checks(pybind11::module_& m);
void bind_memory(pybind11::module_& m);
}  // namespace pnerf

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pnerf_fast native kernels (single-source CPU/CUDA)";
#ifdef PNERF_WITH_CUDA
  m.def("compiled_with_cuda", [] { return true; });
  m.def("cuda_archs", [] { return std::string(PNERF_CUDA_ARCHS); });
#else
  m.def("compiled_with_cuda", [] { return false; });
  m.def("cuda_archs", [] { return std::string(); });
#endif
  pnerf::bind_composite(m);
  pnerf::bind_raymarch(m);
  pnerf::bind_occgrid(m);
  pnerf::bind_hashgrid(m);
  pnerf::bind_mlp(m);
  pnerf::bind_encoding(m);
  pnerf::bind_sparse_adam(m);
  pnerf::bind_volume(m);
  pnerf::bind_checks(m);
  pnerf::bind_memory(m);
}
