// Torch-facing helpers for csrc/ops/*.cpp: argument checks that name the argument,
// device dispatch, and the current CUDA stream. Only host code includes this.
#pragma once
#include <ATen/ATen.h>
#include <torch/extension.h>
#include <ATen/DeviceGuard.h>

#ifdef PNERF_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <string>
#include <vector>

namespace pnerf {

inline std::string shape_str(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

// `name` must be a floating tensor of `dtype` on `device`, contiguous. Non-contiguous
// inputs are rejected here; the Python wrappers call .contiguous() first.
inline void check_tensor(const at::Tensor& t, const char* name, at::ScalarType dtype, const at::Device& device) {
  TORCH_CHECK(t.defined(), "pnerf: argument '", name, "' is undefined");
  TORCH_CHECK(t.scalar_type() == dtype, "pnerf: argument '", name, "' must have dtype ", dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.device() == device, "pnerf: argument '", name, "' must be on ", device, ", got ", t.device());
  TORCH_CHECK(t.is_contiguous(), "pnerf: argument '", name, "' must be contiguous");
}

// Shape check: -1 in `shape` means any size.
inline void check_shape(const at::Tensor& t, const char* name, std::vector<int64_t> shape) {
  bool ok = t.dim() == (int64_t)shape.size();
  for (size_t d = 0; ok && d < shape.size(); ++d) ok = shape[d] < 0 || t.size(d) == shape[d];
  std::string want = "[";
  for (size_t d = 0; d < shape.size(); ++d)
    want += (d ? ", " : "") + (shape[d] < 0 ? std::string("*") : std::to_string(shape[d]));
  want += "]";
  TORCH_CHECK(ok, "pnerf: argument '", name, "' must have shape ", want, ", got ", shape_str(t));
}

inline void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "pnerf: argument '", name,
              "' must be float32 or float64, got ", t.scalar_type());
}

// A fresh output tensor like at::empty. On the CPU, one of 2 MiB or more is placed on
// 2 MiB-aligned memory advised for transparent huge pages (MADV_HUGEPAGE), so that first
// touching it costs one page fault per 2 MiB instead of one per 4 KiB (csrc/ops/memory.cpp;
// PNERF_HUGEPAGES=0 or _C.set_huge_page_outputs(False) turns it off). Such a tensor owns
// its own mapping: it cannot be resized in place, and torch's allocator does not count it.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& opt);
// The same, filled with zeros: a fresh huge-page mapping already is (the kernel zeroes
// pages on first touch), so only the at::zeros fallback writes them. The compositing
// kernels' per-sample outputs are zero where no ray's segment covers a sample.
at::Tensor zeroed_output(at::IntArrayRef sizes, const at::TensorOptions& opt);

// Preconditions whose check costs a device sync (csrc/ops/checks.cpp): on the CPU the
// bounds are always checked; on CUDA only in debug mode (PNERF_DEBUG_CHECKS=1 or
// _C.set_debug_checks(True)), which also checks uniqueness and packed_info overlaps.
bool debug_checks();
void check_index_range(const at::Tensor& idx, const char* name, int64_t hi);  // 0 <= idx < hi
void check_unique(const at::Tensor& idx, const char* name);                   // debug mode only
void check_packed_info(const at::Tensor& packed_info, int64_t n_samples);     // segments within [0, n_samples)

// The tensor's device made current for the scope: a generic guard, so it is a no-op for
// CPU tensors in a CUDA build too (c10::cuda::OptionalCUDAGuard throws on a CPU device).
#define PNERF_DEVICE_GUARD(t) const at::OptionalDeviceGuard _pnerf_guard(at::device_of(t))

#ifdef PNERF_WITH_CUDA
inline void* current_stream(const at::Tensor& t) { return (void*)c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }
#endif

// Calls cpu::FN(args) or cuda::FN(args, stream) for the device of `t`.
#ifdef PNERF_WITH_CUDA
#define PNERF_LAUNCH(t, FN, ...)                          \
  do {                                                    \
    if ((t).is_cuda()) {                                  \
      PNERF_DEVICE_GUARD(t);                              \
      ::pnerf::cuda::FN(__VA_ARGS__, current_stream(t));  \
    } else {                                              \
      ::pnerf::cpu::FN(__VA_ARGS__);                      \
    }                                                     \
  } while (0)
#else
#define PNERF_LAUNCH(t, FN, ...)                                                                     \
  do {                                                                                               \
    TORCH_CHECK(!(t).is_cuda(), "pnerf: this build has no CUDA kernels (built with BUILD_NO_CUDA=1 " \
                                "or without nvcc); move the tensors to the CPU or rebuild");          \
    ::pnerf::cpu::FN(__VA_ARGS__);                                                                   \
  } while (0)
#endif

}  // namespace pnerf
